"""Prometheus metrics of the library, in ``prometheus_client``'s default registry.

The engine calls the small functions below where it already knows the facts: a run's end and
duration (:func:`run_finished`), a node execution's duration and retries (through the
:class:`GraphMetrics` its run context carries), each commit written to a store
(:func:`committed`), a lease taken over from a dead holder (:func:`lease_takeover`) and a
queued run's wait at its claim (:func:`queue_wait`).

``prometheus_client`` is imported on first use, not with ``threadloom``. Without it (or with
``THREADLOOM_METRICS=0``) every function returns at once and :func:`for_graph` returns
``None``, so the engine's hot path pays one ``is None`` test per node. The metrics are created
once per process, however many graphs or apps it builds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from threadloom.checkpoint.base import Commit

__all__ = [
    "DISABLE_ENV", "GraphMetrics", "available", "committed", "for_graph", "lease_takeover",
    "queue_wait", "run_finished",
]

DISABLE_ENV = "THREADLOOM_METRICS"
"""Set to ``0`` (or ``off``/``false``/``no``) to switch the library's metrics off even when
``prometheus_client`` is installed."""


class _Library:
    """The library's metric families (created once, in the default registry)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.runs = Counter("threadloom_runs", "Runs that ended, by graph and status.",
                            ["graph", "status"])
        self.run_duration = Histogram("threadloom_run_duration_seconds",
                                      "Wall time of a run, from its start to its end or pause.",
                                      ["graph"])
        self.node_duration = Histogram(
            "threadloom_node_duration_seconds",
            "Wall time of a node execution, all attempts included.", ["graph", "node"],
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0, float("inf")))
        self.retries = Counter("threadloom_retries", "Node attempts that failed and were retried.",
                               ["graph", "node"])
        self.commits = Counter("threadloom_checkpoint_commits",
                               "Commits (steps, task results, run records) written to a store.")
        self.commit_bytes = Counter(
            "threadloom_checkpoint_bytes",
            "Bytes of serialized values (blobs, writes, execution and run inputs and outputs) "
            "written by commits.")
        self.takeovers = Counter("threadloom_lease_takeovers",
                                 "Thread leases taken over from a holder process that is gone.")
        self.queue_wait = Histogram(
            "threadloom_queue_wait_seconds",
            "Seconds a queued run waited, from when it could start to when a worker claimed it.",
            buckets=(.005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                     float("inf")))
        self.graphs: dict[str, GraphMetrics] = {}


class GraphMetrics:
    """The labelled children of one graph's metrics, cached per node."""

    __slots__ = ("_lib", "graph", "_nodes", "_retries", "_duration")

    def __init__(self, lib: _Library, graph: str) -> None:
        self._lib = lib
        self.graph = graph
        self._nodes: dict[str, Any] = {}
        self._retries: dict[str, Any] = {}
        self._duration = lib.run_duration.labels(graph)

    def node(self, node: str, seconds: float) -> None:
        """Observe one node execution's duration."""
        child = self._nodes.get(node)
        if child is None:
            child = self._nodes[node] = self._lib.node_duration.labels(self.graph, node)
        child.observe(seconds)

    def retry(self, node: str) -> None:
        """Count a failed attempt of ``node`` that will be retried."""
        child = self._retries.get(node)
        if child is None:
            child = self._retries[node] = self._lib.retries.labels(self.graph, node)
        child.inc()

    def run(self, status: str, seconds: float) -> None:
        """Count a run that ended (or paused) with ``status`` after ``seconds``."""
        self._lib.runs.labels(self.graph, status).inc()
        self._duration.observe(seconds)


_lib: _Library | None = None
_loaded = False
_lock = threading.Lock()


def _load() -> _Library | None:
    global _lib, _loaded
    if _loaded:
        return _lib
    with _lock:
        if not _loaded:
            if os.environ.get(DISABLE_ENV, "").strip().lower() not in ("0", "off", "false", "no"):
                try:
                    _lib = _Library()
                except ImportError:
                    _lib = None
            _loaded = True
    return _lib


def available() -> bool:
    """Whether the library records metrics (``prometheus_client`` importable and not
    switched off by ``THREADLOOM_METRICS``)."""
    return _load() is not None


def for_graph(graph: str) -> GraphMetrics | None:
    """The metrics of graph ``graph`` (``None`` when metrics are off)."""
    lib = _lib if _loaded else _load()
    if lib is None:
        return None
    found = lib.graphs.get(graph)
    if found is None:
        with _lock:
            found = lib.graphs.setdefault(graph, GraphMetrics(lib, graph))
    return found


def run_finished(metrics: GraphMetrics | None, status: str, seconds: float) -> None:
    """Count a top-level run that ended with ``status``."""
    if metrics is not None:
        metrics.run(status, seconds)


def committed(commits: Iterable[Commit]) -> None:
    """Count commits a store has just written, and the serialized bytes they carried."""
    lib = _lib if _loaded else _load()
    if lib is None:
        return
    count = size = 0
    for commit in commits:
        count += 1
        size += commit.serialized_bytes()
    lib.commits.inc(count)
    lib.commit_bytes.inc(size)


def lease_takeover() -> None:
    """Count a thread lease taken over from a holder that is gone."""
    lib = _lib if _loaded else _load()
    if lib is not None:
        lib.takeovers.inc()


def queue_wait(seconds: float) -> None:
    """Observe how long a queued run waited for its claim."""
    lib = _lib if _loaded else _load()
    if lib is not None:
        lib.queue_wait.observe(max(0.0, seconds))
