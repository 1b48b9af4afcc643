"""Queue workers: execute the runs the API queues in the store.

``Worker(store, graphs, concurrency=8)`` claims queued runs (``FOR UPDATE SKIP LOCKED`` on
Postgres), executes them with the engine, streams their events into the store, renews its
claims with heartbeats, reacts to cancellation, and hands its runs back on a graceful stop.
``threadloom worker`` and ``threadloom dev`` run one.

:mod:`threadloom.worker.registry` reads ``threadloom.toml`` and binds its graphs to a store
(the API and the workers share it).
"""

from __future__ import annotations

from threadloom.worker._worker import Worker

__all__ = ["Worker"]
