"""Records and constants the queue conformance suites share
(:mod:`threadloom.testing.queue_conformance`, :mod:`threadloom.testing._admin_conformance`)."""

from __future__ import annotations

from typing import Any

from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.queue import (
    QueuedRun,
    RuntimeStore,
)

__all__ = ["END", "EXPIRED", "HOUR", "NS", "WAIT", "ids", "pending", "put", "queued"]

NS = "default"
WAIT = 20.0  # seconds to wait for a signal before failing
EXPIRED = -1.0  # a ttl that makes a claim lapse at once
HOUR = 3600.0
END = ("end", b"null")  # the control event that ends a finished run's stream


def pending(run_id: str, thread_id: str, namespace: str = NS, **fields: Any) -> RunRecord:
    """A ``pending`` run record, as the API writes it when it queues a run."""
    graph, status = fields.pop("graph", "g"), fields.pop("status", "pending")
    return RunRecord(run_id, thread_id, graph, status, namespace, **fields)


def queued(run_id: str, thread_id: str, namespace: str = NS, **fields: Any) -> QueuedRun:
    """A queue row for :func:`pending`'s record."""
    fields.setdefault("graph", "g")
    fields.setdefault("payload", b'{"input": 1}')
    return QueuedRun(namespace, run_id, thread_id, **fields)


def put(store: RuntimeStore, run_id: str, thread_id: str, namespace: str = NS,
        strategy: Any = "enqueue", **fields: Any) -> list[str]:
    """Enqueue run ``run_id`` on ``thread_id``."""
    record = pending(run_id, thread_id, namespace, graph=fields.get("graph", "g"))
    return store.enqueue(record, queued(run_id, thread_id, namespace, **fields), strategy)


def ids(claims: list[QueuedRun]) -> list[str]:
    return [c.run_id for c in claims]
