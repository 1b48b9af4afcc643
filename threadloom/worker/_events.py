"""Run events on their way to the store: buffered per run, written in batches.

A run's thread adds events (:meth:`EventBuffer.add`) and never waits for the store while the
run streams: one :class:`EventPump` thread per worker writes every buffer that has something
pending, folding whatever piled up during the previous write into the next one - for every run
at once, in one transaction, when the store can (``append_events_many``). A run someone asked
to stream has its events written as soon as they come (its first event is visible at once);
the others after ``delay`` seconds (:data:`UNWATCHED_DELAY`), so that a run that ends sooner
writes all its events once, with the end of its claim, and a stream joined later still sees
them within that delay. :meth:`EventBuffer.flush` writes what is
pending from the caller's thread, in order with the pump's writes; :meth:`EventBuffer.finish`
writes the last events (the ``end`` event with them) in the transaction that ends the claim.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Any

from threadloom._json import dumps
from threadloom.checkpoint.queue import QueuedRun, RuntimeStore

__all__ = ["UNWATCHED_DELAY", "EventBuffer", "EventPump"]

UNWATCHED_DELAY = 0.2
"""Seconds the events of a run nobody asked to stream (a ``wait`` or background run) may wait
before they are written: most such runs end sooner and write them with their claim's end."""

log = logging.getLogger("threadloom.worker")


class EventBuffer:
    """The pending events of one run attempt, in order."""

    __slots__ = ("store", "namespace", "run_id", "_pending", "_lock", "_write", "_pump",
                 "failed", "delay")

    def __init__(self, store: RuntimeStore, namespace: str, run_id: str,
                 pump: EventPump | None, delay: float = 0.0) -> None:
        self.store = store
        self.namespace = namespace
        self.run_id = run_id
        self._pending: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()  # guards _pending
        self._write = threading.Lock()  # one write at a time, in order
        self._pump = pump
        self.failed = False  # a write failed: events are lost, the run is not
        self.delay = delay  # how long the pump may leave pending events unwritten

    def add(self, event: str, data: Any) -> None:
        """Queue one event (``data`` as JSON; bytes are taken as JSON already)."""
        raw = data if isinstance(data, bytes) else dumps(data)
        with self._lock:
            first = not self._pending
            self._pending.append((event, raw))
        if first and self._pump is not None:
            self._pump.mark(self, self.delay)

    def flush(self) -> None:
        """Write everything pending now (from the caller's thread)."""
        with self._write:
            batch = self._take()
            if not batch:
                return
            try:
                self.store.append_events(self.namespace, self.run_id, batch)
            except Exception:
                self._lost(len(batch))

    def finish(self, claim: QueuedRun) -> bool:
        """Write what is pending with the end of ``claim``, in one transaction
        (:meth:`~threadloom.checkpoint.queue.RuntimeStore.finish_claim`); ``False`` if the
        claim was lost (the events are dropped then: the run is another worker's)."""
        with self._write:
            return self.store.finish_claim(claim, self._take())

    def _take(self) -> list[tuple[str, bytes]]:
        with self._lock:
            batch, self._pending = self._pending, []
        return batch

    def _lost(self, count: int) -> None:
        # a stream is a view of the run: losing events must not fail the run itself
        self.failed = True
        log.exception("could not record %d events of run %r", count, self.run_id)


def _flush_all(buffers: list[EventBuffer]) -> None:
    """Write the pending events of ``buffers`` (of one store) in one transaction if the store
    has ``append_events_many``; else one by one. Each buffer's write lock is held throughout,
    so a run's own :meth:`EventBuffer.flush` stays in order with it."""
    many = getattr(buffers[0].store, "append_events_many", None) if buffers else None
    if many is None or len(buffers) == 1:
        for buffer in buffers:
            buffer.flush()
        return
    held: list[EventBuffer] = []
    try:
        for buffer in buffers:
            buffer._write.acquire()
            held.append(buffer)
        batches = [(b, b._take()) for b in buffers]
        batches = [(b, events) for b, events in batches if events]
        if not batches:
            return
        try:
            many([(b.namespace, b.run_id, events) for b, events in batches])
        except Exception:
            for b, events in batches:
                b._lost(len(events))
    finally:
        for buffer in held:
            buffer._write.release()


class EventPump:
    """A worker's thread that writes the buffers with pending events (see the module
    docstring)."""

    def __init__(self, name: str = "threadloom-events") -> None:
        self._cond = threading.Condition()
        self._dirty: dict[int, EventBuffer] = {}  # to write now
        self._later: list[tuple[float, int, EventBuffer]] = []  # a heap: (due, seq, buffer)
        self._seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def mark(self, buffer: EventBuffer, delay: float = 0.0) -> None:
        """``buffer`` has events to write, within ``delay`` seconds."""
        with self._cond:
            if delay <= 0:
                self._dirty[id(buffer)] = buffer
            else:
                self._seq += 1
                heapq.heappush(self._later, (time.monotonic() + delay, self._seq, buffer))
                if self._later[0][2] is not buffer:
                    return  # the pump wakes for an earlier one first
            self._cond.notify()

    def close(self) -> None:
        """Write what is pending and stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(10.0)

    def _due(self) -> float | None:
        """Move the delayed buffers that are due to the dirty set; seconds until the next
        one is (``None``: none waits). Called with the condition held."""
        now = time.monotonic()
        later = self._later
        while later and (later[0][0] <= now or self._closed):
            _, _, buffer = heapq.heappop(later)
            self._dirty[id(buffer)] = buffer  # written already (finished)? then a no-op
        return later[0][0] - now if later else None

    def _loop(self) -> None:
        while True:
            with self._cond:
                wait = self._due()
                while not self._dirty and not self._closed:
                    self._cond.wait(wait)
                    wait = self._due()
                batch = list(self._dirty.values())
                self._dirty.clear()
                if not batch and self._closed:
                    return
            by_store: dict[int, list[EventBuffer]] = {}
            for buffer in batch:
                by_store.setdefault(id(buffer.store), []).append(buffer)
            for buffers in by_store.values():
                _flush_all(buffers)
