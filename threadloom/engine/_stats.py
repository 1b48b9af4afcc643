"""Per-run statistics of a durable run, kept in memory while it runs and written with the run's
record when it ends or pauses (``RunRecord.stats``): no write of their own, per step or
otherwise.

The stored dict (JSON):

- ``retries``: node attempts and ``@task`` attempts that failed and were retried;
- ``nodes``: per node name, ``count`` (executions that finished), ``total_ms`` and ``max_ms``
  (wall time from the execution's start to its end, attempts and waits included);
- ``bytes_written``: serialized bytes of the commits the run wrote (checkpoints, blobs,
  writes, execution and run inputs and outputs; :meth:`Commit.serialized_bytes`);
- ``queue_wait_ms``: for a run that was queued, from when it was queued to its first start
  (a delay asked for at creation included).

A run that continues (resumed after an interrupt, a failure or a crash) adds to what its
record holds; what a process did after the run's last record write and before it crashed is
not counted.
"""

from __future__ import annotations

import threading
from typing import Any

from threadloom.checkpoint.base import Commit

__all__ = ["RunStats"]


class RunStats:
    """What one invocation of a durable run did, added to its record's ``stats``."""

    __slots__ = ("_lock", "retries", "bytes_written", "nodes", "queue_wait_ms", "_base")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.bytes_written = 0
        self.nodes: dict[str, list[float]] = {}  # name -> [count, total_ms, max_ms]
        self.queue_wait_ms: float | None = None
        self._base: dict[str, Any] | None = None  # the record's stats before this invocation

    def node(self, name: str, seconds: float) -> None:
        """A node execution of ``name`` finished after ``seconds``."""
        ms = seconds * 1000.0
        with self._lock:
            entry = self.nodes.get(name)
            if entry is None:
                self.nodes[name] = [1, ms, ms]
            else:
                entry[0] += 1
                entry[1] += ms
                if ms > entry[2]:
                    entry[2] = ms

    def retry(self, count: int = 1) -> None:
        """``count`` failed attempts will be (or were) retried."""
        with self._lock:
            self.retries += count

    def count(self, commit: Commit, run_id: str) -> None:
        """The run submitted ``commit``; if it carries the record of run ``run_id``, set the
        record's stats (so they are written with it, never on their own)."""
        self.wrote(commit)
        for run in commit.runs:
            if run.run_id == run_id:
                if self._base is None:  # the first record written: its stats as loaded
                    self._base = dict(run.stats)
                run.stats = self.added_to(self._base)

    def wrote(self, commit: Commit) -> None:
        """The run submitted ``commit`` to its store."""
        size = commit.serialized_bytes()
        with self._lock:
            self.bytes_written += size

    def added_to(self, previous: dict[str, Any]) -> dict[str, Any]:
        """The record's stats: ``previous`` (what earlier invocations recorded) plus this."""
        with self._lock:
            out = dict(previous)
            out["retries"] = int(previous.get("retries", 0)) + self.retries
            out["bytes_written"] = int(previous.get("bytes_written", 0)) + self.bytes_written
            nodes = {name: dict(entry) for name, entry in previous.get("nodes", {}).items()}
            for name, (count, total, peak) in self.nodes.items():
                before = nodes.get(name)
                if before is None:
                    nodes[name] = {"count": int(count), "total_ms": round(total, 3),
                                   "max_ms": round(peak, 3)}
                else:
                    before["count"] = int(before.get("count", 0)) + int(count)
                    before["total_ms"] = round(float(before.get("total_ms", 0.0)) + total, 3)
                    before["max_ms"] = round(max(float(before.get("max_ms", 0.0)), peak), 3)
            out["nodes"] = nodes
            if self.queue_wait_ms is not None and "queue_wait_ms" not in out:
                out["queue_wait_ms"] = round(self.queue_wait_ms, 3)
            return out
