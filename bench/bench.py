"""Benchmark threadloom against LangGraph, side by side in one process.

Run it through ``bench/run.sh`` (which provides a venv holding both engines)::

    bench/run.sh                                 # every default workload
    bench/run.sh --workloads seed_loop,fanout --reps 5
    bench/run.sh --list                          # what there is to run

Every graph is defined once, as a function of an :class:`Engine` (the names a LangGraph-shaped
program imports: ``StateGraph``, ``START``, ``END``, ``Send``, ``Command``), so both engines run
literally the same code. For each workload the harness prepares both engines, warms each up
once (which also checks the result), then alternates them repetition by repetition (ABBA
order, ``gc.collect()`` before every sample) and reports per engine the median and minimum
time and the time per operation, plus ``ratio = threadloom / langgraph`` (lower is better;
``ratio_paired`` is the median of the per-repetition ratios, the least drift-sensitive).
The machine is noisy: read the ratios, not the absolute times.

The JSON report goes to stdout; progress and a summary table go to stderr. An engine that
cannot be imported, or a workload that raises, returns a wrong result or overruns
``--sample-timeout`` on one engine, becomes an ``{"error": ...}`` entry for that engine; the
run goes on.

The measuring machinery is in ``harness.py``; the graphs, the workloads and how to add one
are in ``workloads.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import workloads  # noqa: F401 - registers the workloads
from harness import (
    CANDIDATE,
    ENGINE_NAMES,
    REFERENCE,
    WORKLOADS,
    Engine,
    Workload,
    describe,
    groups,
    load_engine,
    log,
    measure,
)

DEFAULT_REPS = 15
DEFAULT_SAMPLE_TIMEOUT_S = 120.0


def git_revision() -> str | None:
    """The checked-out commit (read-only: never touches the index)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    packages = [
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "psycopg",
        "threadloom",
    ]
    versions: dict[str, str | None] = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "threadloom_git_rev": git_revision(),
        "packages": versions,
    }


def print_summary(report: dict[str, Any]) -> None:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    def mb(value: float) -> str:
        return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"

    log("")
    log(
        f"{'workload':<28}{'op':<16}{REFERENCE + ' us/op':>18}{CANDIDATE + ' us/op':>18}"
        f"{'ratio':>8}{'paired':>8}  {'target':<26}ok"
    )
    for name, entry in report["workloads"].items():
        cells = []
        for engine in ENGINE_NAMES:
            res = entry["results"].get(engine)
            if res is None:
                cells.append("-")
            elif "us_per_op_median" in res:
                cells.append(num(res["us_per_op_median"], ".1f"))
            else:
                cells.append("error")
        ok = {True: "yes", False: "NO", None: "-"}[entry.get("meets_target")]
        log(
            f"{name:<28}{entry['op']:<16}{cells[0]:>18}{cells[1]:>18}"
            f"{num(entry['ratio'], '.3f'):>8}{num(entry['ratio_paired'], '.3f'):>8}"
            f"  {entry.get('target') or '-':<26}{ok}"
        )
        notes = []
        results = entry["results"]
        if "throughput" in entry.get("ratio_kind", ""):
            rates = [
                f"{eng} {results[eng]['ops_per_s_median']:.1f}/s"
                for eng in ENGINE_NAMES
                if "ops_per_s_median" in results.get(eng, {})
            ]
            notes.append(f"{entry['op']}s per second: " + ", ".join(rates))
        if entry.get("target_us_per_op") is not None:
            times = [
                f"{eng} {results[eng]['ms_per_op_median']:.3f} ms"
                for eng in ENGINE_NAMES
                if "ms_per_op_median" in results.get(eng, {})
            ]
            notes.append(f"per {entry['op']}: " + ", ".join(times))
        sizes = [
            f"{eng} {mb(results[eng]['metrics']['db_bytes'])}"
            for eng in ENGINE_NAMES
            if "db_bytes" in results.get(eng, {}).get("metrics", {})
        ]
        if sizes:
            size_ratio = entry.get("metric_ratios", {}).get("db_bytes")
            notes.append(f"db_bytes: {', '.join(sizes)} (ratio {num(size_ratio, '.4f')})")
        if "reps_note" in entry:
            notes.append(f"reps {entry['reps']}: {entry['reps_note']}")
        for note in notes:
            log(f"{'':<4}{note}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="threadloom vs LangGraph, side by side; JSON report on stdout.",
    )
    parser.add_argument(
        "--workloads",
        default="",
        help="comma-separated workload or group names, e.g. 'durable' (default: every "
        "default workload; 'all' for all)",
    )
    parser.add_argument(
        "--engines",
        default=",".join(ENGINE_NAMES),
        help=f"comma-separated engines to run (default: {','.join(ENGINE_NAMES)})",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=DEFAULT_REPS,
        help=f"timed samples per engine per workload (default: {DEFAULT_REPS})",
    )
    parser.add_argument(
        "--sample-timeout",
        type=float,
        default=DEFAULT_SAMPLE_TIMEOUT_S,
        help="seconds one sample may take before that engine is marked failed (0: no limit)",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def select_workloads(spec: str) -> list[Workload]:
    """Workloads named in ``spec`` (names and group names, comma-separated, in that order,
    each once); the default ones when ``spec`` is empty; every one for ``all``."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        return [wl for wl in WORKLOADS.values() if wl.default]
    known_groups = {"all": list(WORKLOADS), **groups()}
    unknown = [n for n in names if n not in WORKLOADS and n not in known_groups]
    if unknown:
        raise SystemExit(f"unknown workload(s) or group(s): {', '.join(unknown)} (see --list)")
    chosen: dict[str, Workload] = {}
    for name in names:
        for member in known_groups.get(name, [name]):
            chosen.setdefault(member, WORKLOADS[member])
    return list(chosen.values())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for wl in WORKLOADS.values():
            flag = "" if wl.default else "  [opt-in]"
            print(f"{wl.name:<28}{wl.description}{flag}")
        for group, members in groups().items():
            print(f"\ngroup {group!r} (--workloads {group}): {', '.join(members)}")
        return 0
    selected = select_workloads(args.workloads)
    engine_names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = [n for n in engine_names if n not in ENGINE_NAMES]
    if unknown:
        raise SystemExit(f"unknown engine(s): {', '.join(unknown)}")

    engines: dict[str, Engine | dict[str, Any]] = {}
    engine_info: dict[str, dict[str, Any]] = {}
    for name in engine_names:
        try:
            engine = load_engine(name)
        except Exception as exc:
            error = describe(exc)
            engines[name] = error
            engine_info[name] = {"ok": False, **error}
            log(f"{name}: unavailable: {error['error']}")
        else:
            engines[name] = engine
            engine_info[name] = {"ok": True, "version": engine.version}

    started = datetime.now(UTC)
    wall = time.perf_counter()
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "reps": args.reps,
        "ratio": (
            f"{CANDIDATE} / {REFERENCE}, from median time per op (lower is better); for "
            "throughput workloads (ratio_kind) ops/s over ops/s (higher is better)"
        ),
        "environment": environment(),
        "engines": engine_info,
        "workloads": {},
    }
    load_before = os.getloadavg()
    for wl in selected:
        log(f"[{wl.name}] {wl.description}")
        report["workloads"][wl.name] = measure(wl, engines, args.reps, args.sample_timeout)
    report["wall_s"] = round(time.perf_counter() - wall, 1)
    report["loadavg_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}

    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
