"""The measuring machinery: engine adapter, workload registry, interleaved timing.

Nothing here knows a graph; ``workloads.py`` defines them and ``bench.py`` is the command line.

How a workload is measured (:func:`measure`): every engine's :class:`Trial` is prepared
(untimed), warmed up once (that result is checked too), then the engines take turns sample
by sample in ABBA order, with ``gc.collect()`` before each sample and
``time.perf_counter_ns()`` around ``Trial.run``. Every sample's result is checked, so a
wrong engine cannot look fast. An engine that fails to import, raises, returns a wrong
result or overruns the sample timeout becomes an ``{"error": ...}`` entry; the run goes on.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from types import FrameType, ModuleType
from typing import Any

REFERENCE = "langgraph"
CANDIDATE = "threadloom"
ENGINE_NAMES = (REFERENCE, CANDIDATE)
RECURSION_LIMIT = 10_000

# --------------------------------------------------------------------------------------------
# Engine adapter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """The names a LangGraph-shaped program imports, taken from one engine's package.

    ``Send`` and ``Command`` are imported on first use so that an engine still missing them
    can run the workloads that do not need them.
    """

    name: str
    version: str
    StateGraph: Any
    START: str
    END: str

    @property
    def Send(self) -> Any:
        return self.module("types").Send

    @property
    def Command(self) -> Any:
        return self.module("types").Command

    def module(self, path: str) -> ModuleType:
        """Import ``<engine package>.<path>``, e.g. ``engine.module("checkpoint.memory")``."""
        return importlib.import_module(f"{self.name}.{path}")


def load_engine(name: str) -> Engine:
    graph = importlib.import_module(f"{name}.graph")
    return Engine(
        name=name,
        version=package_version(name),
        StateGraph=graph.StateGraph,
        START=graph.START,
        END=graph.END,
    )


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return str(getattr(sys.modules.get(name), "__version__", "unknown"))


def invoke(
    graph: Any,
    state: dict[str, Any] | None,
    *,
    thread_id: str | None = None,
    durability: str | None = None,
) -> Any:
    """``graph.invoke`` as every workload calls it: a high recursion limit, optional thread."""
    config: dict[str, Any] = {"recursion_limit": RECURSION_LIMIT}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
    if durability is None:
        return graph.invoke(state, config)
    return graph.invoke(state, config, durability=durability)


def thread_ids(prefix: str = "bench") -> Iterator[str]:
    """A fresh thread id per call, so samples never share (and grow) one thread."""
    return (f"{prefix}-{i}" for i in itertools.count())


# --------------------------------------------------------------------------------------------
# Workload registry
# --------------------------------------------------------------------------------------------


def _no_check(result: Any) -> None:
    pass


def _no_metrics() -> dict[str, Any]:
    return {}


def _no_close() -> None:
    pass


def _no_reset() -> None:
    pass


@dataclass
class Trial:
    """One engine's prepared instance of a workload.

    Attributes:
        run: the timed operation; one call is one sample of ``ops_per_sample`` operations.
        check: raises (e.g. ``AssertionError``) if ``run``'s result is wrong; untimed.
        metrics: non-time figures reported once after timing (sizes, counts); untimed.
        close: releases what the trial opened (files, connections); always called.
        before_sample: untimed, before the warm-up and before every sample (e.g. give each
            sample a fresh database, so a size metric is one run's and the disk stays small).
    """

    run: Callable[[], Any]
    check: Callable[[Any], None] = _no_check
    metrics: Callable[[], dict[str, Any]] = _no_metrics
    close: Callable[[], None] = _no_close
    before_sample: Callable[[], None] = _no_reset


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    op: str
    ops_per_sample: int
    prepare: Callable[[Engine], Trial]
    target: float | None = None
    default: bool = True
    invokes_per_sample: int | None = None
    higher_is_better: bool = False
    target_metric: str | None = None
    target_us_per_op: float | None = None
    max_reps: int | None = None
    warmup: bool = True
    groups: tuple[str, ...] = ()


WORKLOADS: dict[str, Workload] = {}


def workload(
    name: str,
    *,
    op: str,
    ops_per_sample: int,
    target: float | None = None,
    default: bool = True,
    invokes_per_sample: int | None = None,
    higher_is_better: bool = False,
    target_metric: str | None = None,
    target_us_per_op: float | None = None,
    max_reps: int | None = None,
    warmup: bool = True,
    groups: tuple[str, ...] = (),
) -> Callable[[Callable[[Engine], Trial]], Callable[[Engine], Trial]]:
    """Register a workload. Its docstring's first paragraph is its description.

    Args:
        name: the name used by ``--workloads`` and as the key in the report.
        op: what one operation is ("node execution", "invoke", "compile", ...).
        ops_per_sample: operations performed by one call of ``Trial.run``.
        target: the ratio threadloom / langgraph that threadloom must reach, if any: at most
            this (time, or ``target_metric``), or at least this when ``higher_is_better``.
        default: whether it runs when ``--workloads`` is not given.
        invokes_per_sample: graph invocations in one ``Trial.run``, if the time per invoke
            is worth reporting too (``ms_per_invoke_median``).
        higher_is_better: the workload is about throughput: ``ratio`` is threadloom's
            operations per second over LangGraph's, and ``target`` is a lower bound.
        target_metric: apply ``target`` to the ratio of this ``Trial.metrics()`` figure
            (e.g. ``"db_bytes"``, lower is better) instead of to the time ratio.
        target_us_per_op: an absolute bound on threadloom's median µs per operation.
        max_reps: at most this many samples per engine whatever ``--reps`` says (slow ones).
        warmup: run the untimed warm-up sample (skip it when one sample is long anyway).
        groups: names under which ``--workloads`` selects it together with others.
    """

    def register(prepare: Callable[[Engine], Trial]) -> Callable[[Engine], Trial]:
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} registered twice")
        if higher_is_better and target_metric is not None:
            raise ValueError("higher_is_better applies to the time ratio, not a metric")
        doc = (prepare.__doc__ or "").strip().split("\n\n")[0]
        description = " ".join(doc.split())
        WORKLOADS[name] = Workload(
            name,
            description,
            op,
            ops_per_sample,
            prepare,
            target,
            default,
            invokes_per_sample,
            higher_is_better,
            target_metric,
            target_us_per_op,
            max_reps,
            warmup,
            tuple(groups),
        )
        return prepare

    return register


def groups() -> dict[str, list[str]]:
    """Every group name and the workloads in it, in registration order."""
    found: dict[str, list[str]] = {}
    for wl in WORKLOADS.values():
        for group in wl.groups:
            found.setdefault(group, []).append(wl.name)
    return found


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


class SampleTimeout(BaseException):
    """Raised in the main thread when one sample overruns; a BaseException so that engine
    code catching ``Exception`` cannot swallow it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise SampleTimeout


class time_limit:
    """Raise :class:`SampleTimeout` in the main thread after ``seconds`` (0 disables)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        if self.seconds > 0:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        if self.seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)


def describe(exc: BaseException) -> dict[str, Any]:
    """A short, JSON-able account of an error: type, message, innermost frame."""
    if isinstance(exc, SampleTimeout):
        message = "SampleTimeout: sample overran --sample-timeout"
    else:
        message = f"{type(exc).__name__}: {exc}".strip()
    entry: dict[str, Any] = {"error": message}
    frames = list(traceback.extract_tb(exc.__traceback__))
    if isinstance(exc, SampleTimeout):
        frames = frames[:-1]  # where the sample was interrupted, not the alarm handler
    if frames:
        last = frames[-1]
        entry["where"] = f"{last.filename}:{last.lineno} in {last.name}"
    return entry


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summarize(samples_ns: list[int], ops: int, invokes: int | None) -> dict[str, Any]:
    median_ns = statistics.median(samples_ns)
    min_ns = min(samples_ns)
    summary: dict[str, Any] = {
        "n": len(samples_ns),
        "median_s": median_ns / 1e9,
        "min_s": min_ns / 1e9,
        "max_s": max(samples_ns) / 1e9,
        "us_per_op_median": round(median_ns / ops / 1e3, 3),
        "us_per_op_min": round(min_ns / ops / 1e3, 3),
        "ms_per_op_median": round(median_ns / ops / 1e6, 4),
        "ops_per_s_median": round(ops * 1e9 / median_ns, 1),
        "ops_per_s_max": round(ops * 1e9 / min_ns, 1),
    }
    if invokes:
        summary["ms_per_invoke_median"] = round(median_ns / invokes / 1e6, 4)
    summary["samples_ms"] = [round(s / 1e6, 3) for s in samples_ns]
    return summary


def ratio(results: dict[str, dict[str, Any]], key: str) -> float | None:
    ref, cand = results.get(REFERENCE, {}), results.get(CANDIDATE, {})
    if key in ref and key in cand and ref[key] > 0:
        return round(float(cand[key]) / float(ref[key]), 4)
    return None


def paired_ratio(
    results: dict[str, dict[str, Any]], samples: dict[str, list[int]], higher_is_better: bool
) -> float | None:
    """Median over repetitions of candidate / reference, each pair timed back to back (for
    a throughput workload, reference time / candidate time: the ratio of throughputs).

    The machine's speed drifts over seconds; a pair shares the drift, so this is the ratio
    least disturbed by it.
    """
    ref, cand = samples.get(REFERENCE), samples.get(CANDIDATE)
    if not ref or not cand or len(ref) != len(cand):
        return None
    if "error" in results.get(REFERENCE, {}) or "error" in results.get(CANDIDATE, {}):
        return None
    pairs = zip(ref, cand, strict=True)
    if higher_is_better:
        return round(statistics.median(r / c for r, c in pairs), 4)
    return round(statistics.median(c / r for r, c in pairs), 4)


def metric_ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """threadloom / langgraph for every numeric metric both engines reported."""
    ref = results.get(REFERENCE, {}).get("metrics", {})
    cand = results.get(CANDIDATE, {}).get("metrics", {})
    found: dict[str, float] = {}
    for key, value in ref.items():
        other = cand.get(key)
        numeric = (int, float)
        if (
            isinstance(value, numeric)
            and isinstance(other, numeric)
            and not isinstance(value, bool)
            and not isinstance(other, bool)
            and value > 0
        ):
            found[key] = round(other / value, 4)
    return found


def target_text(wl: Workload) -> str | None:
    """The workload's target in words, as the summary table and the report show it."""
    parts = []
    if wl.target is not None:
        if wl.target_metric is not None:
            parts.append(f"{wl.target_metric} ratio <= {wl.target:.4g}")
        elif wl.higher_is_better:
            parts.append(f"throughput ratio >= {wl.target:.4g}")
        else:
            parts.append(f"ratio <= {wl.target:.4g}")
    if wl.target_us_per_op is not None:
        parts.append(f"{CANDIDATE} <= {wl.target_us_per_op:.4g} us/op")
    return " and ".join(parts) or None


def judge(wl: Workload, entry: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    """Add the target fields to ``entry``: ``meets_target`` is True only if every declared
    target is met, False if any is missed, None if a needed figure is missing."""
    verdicts: list[bool | None] = []
    if wl.target is not None:
        entry["target_ratio"] = round(wl.target, 4)
        if wl.target_metric is not None:
            entry["target_metric"] = wl.target_metric
            value = entry["metric_ratios"].get(wl.target_metric)
        else:
            value = entry["ratio"]
        if value is None:
            verdicts.append(None)
        else:
            verdicts.append(value >= wl.target if wl.higher_is_better else value <= wl.target)
    if wl.target_us_per_op is not None:
        entry["target_us_per_op"] = wl.target_us_per_op
        us = results.get(CANDIDATE, {}).get("us_per_op_median")
        verdicts.append(None if us is None else us <= wl.target_us_per_op)
    if not verdicts:
        return
    entry["target"] = target_text(wl)
    if False in verdicts:
        entry["meets_target"] = False
    elif None in verdicts:
        entry["meets_target"] = None
    else:
        entry["meets_target"] = True


def measure(
    wl: Workload,
    engines: dict[str, Engine | dict[str, Any]],
    reps: int,
    sample_timeout: float,
) -> dict[str, Any]:
    """Prepare, warm up and time one workload on every engine, interleaving the engines."""
    results: dict[str, dict[str, Any]] = {}
    trials: dict[str, Trial] = {}
    used_reps = reps if wl.max_reps is None else min(reps, wl.max_reps)

    def fail(name: str, exc: BaseException, phase: str) -> None:
        results[name] = {**describe(exc), "phase": phase}
        log(f"[{wl.name}] {name}: {phase} failed: {results[name]['error']}")
        trial = trials.pop(name, None)
        if trial is not None:
            _close(trial, name)

    for name, engine in engines.items():
        if not isinstance(engine, Engine):
            results[name] = {"error": f"engine unavailable: {engine['error']}"}
            continue
        try:
            with time_limit(sample_timeout):
                trial = wl.prepare(engine)
        except (Exception, SampleTimeout) as exc:
            fail(name, exc, "prepare")
            continue
        trials[name] = trial
        if not wl.warmup:
            continue
        try:
            with time_limit(sample_timeout):
                trial.before_sample()
                trial.check(trial.run())  # warm-up, and proof that the engine computes it
        except (Exception, SampleTimeout) as exc:
            fail(name, exc, "warm-up")

    samples: dict[str, list[int]] = {name: [] for name in trials}
    for rep in range(used_reps if trials else 0):
        order = list(trials) if rep % 2 == 0 else list(reversed(trials))
        line = []
        for name in order:
            if name not in trials:
                continue
            trial = trials[name]
            try:
                with time_limit(sample_timeout):
                    trial.before_sample()
                    gc.collect()
                    start = time.perf_counter_ns()
                    result = trial.run()
                    elapsed = time.perf_counter_ns() - start
                    trial.check(result)
            except (Exception, SampleTimeout) as exc:
                fail(name, exc, f"rep {rep + 1}")
                continue
            samples[name].append(elapsed)
            line.append(f"{name} {elapsed / 1e6:9.1f} ms")
        log(f"[{wl.name}] rep {rep + 1}/{used_reps}: " + "  ".join(line))

    for name, trial in list(trials.items()):
        results[name] = (
            summarize(samples[name], wl.ops_per_sample, wl.invokes_per_sample)
            if samples[name]
            else {}
        )
        try:
            extra = trial.metrics()
        except Exception as exc:
            extra = {"metrics_error": describe(exc)["error"]}
        if extra:
            results[name]["metrics"] = extra
        _close(trial, name)

    time_key = "ops_per_s" if wl.higher_is_better else "us_per_op"
    entry: dict[str, Any] = {
        "description": wl.description,
        "op": wl.op,
        "ops_per_sample": wl.ops_per_sample,
        "results": {name: results[name] for name in engines},
        "ratio_kind": (
            f"throughput: {CANDIDATE} ops/s / {REFERENCE} ops/s (higher is better)"
            if wl.higher_is_better
            else f"time: {CANDIDATE} / {REFERENCE} per op (lower is better)"
        ),
        "ratio": ratio(results, f"{time_key}_median"),
        "ratio_min": ratio(results, "ops_per_s_max" if wl.higher_is_better else "us_per_op_min"),
        "ratio_paired": paired_ratio(results, samples, wl.higher_is_better),
        "metric_ratios": metric_ratios(results),
    }
    if used_reps != reps:
        entry["reps"] = used_reps
        entry["reps_note"] = f"capped at {wl.max_reps} (asked for {reps}): one sample is slow"
    if not wl.warmup:
        entry["warmup"] = False
    judge(wl, entry, results)
    return entry


def _close(trial: Trial, name: str) -> None:
    try:
        trial.close()
    except Exception as exc:
        log(f"{name}: close failed: {describe(exc)['error']}")
