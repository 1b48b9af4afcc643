"""The engine's per-node cost with OpenTelemetry tracing off, on, and before it existed.

    .venv/bin/python bench/tracing_overhead.py [--rounds 7] [--base DIR | --base-rev REV]
                                               [--on-before-rev REV]

Each round runs one child process per mode, in turn (so load on the machine hits every mode
alike), timing the seed loop (1000 rounds = 2000 node executions, no checkpointer) and the
same loop on SQLite with ``durability="sync"`` (200 rounds); each mode's figure is the median
over the rounds of its best invoke, in µs per node execution (and ``best``: the best round,
the figure to read when other work loads the machine). Modes:

* ``off``: opentelemetry-api importable, no tracer provider installed (the library's default
  state: it creates nothing);
* ``missing``: opentelemetry not importable at all (a ``PYTHONPATH`` shim whose import fails);
* ``on``: the OpenTelemetry SDK installed as the application would, a ``BatchSpanProcessor``
  (what a deployment uses, and what the runtime installs from ``OTEL_*`` variables: a
  ``SimpleSpanProcessor`` exports on the thread that ends the span, one call per span) and an
  exporter that drops what it is given, with ``INFO`` logs (to a handler that writes to
  ``os.devnull``): every run, node and task span is created;
* ``on_before`` (with ``--on-before-rev REV``): ``on`` with the package at ``REV``, to compare
  a change to the tracing path against what it changes, in the same run;
* ``base`` (with ``--base DIR`` or ``--base-rev REV``): the package from before tracing
  (``--base-rev`` extracts it with ``git archive REV threadloom``), i.e. "today";
* ``langgraph``: the same seed loop on LangGraph (no checkpointer), the reference per-node
  time.

The report (JSON): per workload and mode, µs per node and the ratio to ``off`` (and to
``base``); ``span_us``: the cost of one node span (``on`` minus ``off`` on the seed loop);
``targets``: ``off`` within 3% of ``base`` on the seed loop, ``on`` within 5% of ``off`` on
SQLite ``sync``, and ``on`` at most 1/5 of LangGraph's per-node time on the seed loop. Prometheus
metrics are on in every threadloom mode when prometheus-client is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import SEED_LOOP  # noqa: E402

CHILD = r"""
import json, os, sys, tempfile, time
from typing import TypedDict

engine = sys.argv[1]
if engine == "langgraph":
    from langgraph.graph import StateGraph, END
else:
    from threadloom.graph import StateGraph, END
if engine == "on":
    import logging
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)

""" + SEED_LOOP + r"""
out = {}
g = build(1000).compile()
config = {"recursion_limit": 10_000}
out["seed_loop"] = best(lambda: g.invoke({"step": 0, "done": False}, config), 5) / 2000 * 1e6
if engine != "langgraph":
    from threadloom.checkpoint.sqlite import SqliteSaver
    d = tempfile.mkdtemp()
    saver = SqliteSaver(os.path.join(d, "b.db")); saver.setup()
    gs = build(200).compile(checkpointer=saver, durability="sync")
    n = [0]
    def durable():
        n[0] += 1
        gs.invoke({"step": 0, "done": False},
                  {"configurable": {"thread_id": f"t{n[0]}"}, "recursion_limit": 10_000})
    out["seed_loop_sqlite_sync"] = best(durable, 3) / 400 * 1e6
    import threadloom
    if os.path.exists(os.path.join(threadloom.__path__[0], "_tracing.py")):
        from threadloom import _tracing
        out["traced"] = _tracing.run_trace() is not None
    else:
        out["traced"] = None  # a package from before tracing
print(json.dumps(out))
"""

WORKLOADS = ("seed_loop", "seed_loop_sqlite_sync")


def _base_from_rev(rev: str) -> str:
    """A copy of the package at ``rev`` (its parent directory), for ``base`` and ``on_before``."""
    repo = Path(__file__).resolve().parent.parent
    target = tempfile.mkdtemp(prefix="tracing-base-")
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "threadloom"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--base", help="a pre-tracing copy of the package (its parent dir)")
    parser.add_argument("--base-rev", help="a git revision from before tracing")
    parser.add_argument("--on-before-rev", help="also run `on` with the package at this revision")
    args = parser.parse_args()
    shim = Path(tempfile.mkdtemp()) / "opentelemetry"
    shim.mkdir()
    (shim / "__init__.py").write_text("raise ImportError('opentelemetry is hidden')\n")
    repo = str(Path(__file__).resolve().parent.parent)
    modes = {"off": ("off", {"PYTHONPATH": repo}),
             "missing": ("missing", {"PYTHONPATH": f"{shim.parent}{os.pathsep}{repo}"}),
             "on": ("on", {"PYTHONPATH": repo}),
             "langgraph": ("langgraph", {})}
    base = args.base or (_base_from_rev(args.base_rev) if args.base_rev else None)
    if base:
        modes["base"] = ("base", {"PYTHONPATH": base})
    if args.on_before_rev:
        modes["on_before"] = ("on", {"PYTHONPATH": _base_from_rev(args.on_before_rev)})
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode, (engine, env) in modes.items():
            done = subprocess.run([sys.executable, "-c", CHILD, engine],
                                  env={**os.environ, **env}, capture_output=True, text=True,
                                  check=True, cwd="/")
            results[mode].append(json.loads(done.stdout))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    report: dict[str, object] = {"rounds": args.rounds}
    medians: dict[str, dict[str, float]] = {}
    for workload in WORKLOADS:
        med = {m: statistics.median(x[workload] for x in rs)
               for m, rs in results.items() if workload in rs[0]}
        medians[workload] = med
        report[workload] = {
            m: {"us_per_node": round(v, 3), "vs_off": round(v / med["off"], 3),
                **({"vs_base": round(v / med["base"], 3)} if "base" in med else {}),
                "best": round(min(x[workload] for x in results[m]), 3)}
            for m, v in med.items()}
    loop, sync = medians["seed_loop"], medians["seed_loop_sqlite_sync"]
    report["span_us"] = round(loop["on"] - loop["off"], 3)
    if "on_before" in loop:
        report["span_us_before"] = round(loop["on_before"] - loop["off"], 3)
    report["traced"] = {m: rs[0].get("traced") for m, rs in results.items()}
    targets: dict[str, object] = {
        "on_sqlite_sync_vs_off": {"ratio": round(sync["on"] / sync["off"], 3), "max": 1.05},
        "on_seed_loop_vs_langgraph": {"ratio": round(loop["on"] / loop["langgraph"], 3),
                                      "max": 0.2},
    }
    if "base" in loop:
        targets["off_seed_loop_vs_base"] = {"ratio": round(loop["off"] / loop["base"], 3),
                                            "max": 1.03}
    for target in targets.values():
        assert isinstance(target, dict)
        target["met"] = target["ratio"] <= target["max"]
    report["targets"] = targets
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
