"""Run events on their way to the store: buffered per run, written in batches.

A run's thread adds events (:meth:`EventBuffer.add`) and never waits for the store while the
run streams: one :class:`EventPump` thread per worker writes every buffer that has something
pending, as soon as it has (so the first event of a run is visible at once), folding whatever
piled up during the previous write into the next one. :meth:`EventBuffer.flush` writes what is
pending from the caller's thread (at the end of a run, before its ``end`` event), in order with
the pump's writes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from threadloom._json import dumps
from threadloom.checkpoint.queue import RuntimeStore

__all__ = ["EventBuffer", "EventPump"]

log = logging.getLogger("threadloom.worker")


class EventBuffer:
    """The pending events of one run attempt, in order."""

    __slots__ = ("store", "namespace", "run_id", "_pending", "_lock", "_write", "_pump",
                 "failed")

    def __init__(self, store: RuntimeStore, namespace: str, run_id: str,
                 pump: EventPump | None) -> None:
        self.store = store
        self.namespace = namespace
        self.run_id = run_id
        self._pending: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()  # guards _pending
        self._write = threading.Lock()  # one write at a time, in order
        self._pump = pump
        self.failed = False  # a write failed: events are lost, the run is not

    def add(self, event: str, data: Any) -> None:
        """Queue one event (``data`` as JSON; bytes are taken as JSON already)."""
        raw = data if isinstance(data, bytes) else dumps(data)
        with self._lock:
            first = not self._pending
            self._pending.append((event, raw))
        if first and self._pump is not None:
            self._pump.mark(self)

    def flush(self) -> None:
        """Write everything pending now (from the caller's thread)."""
        with self._write:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self.store.append_events(self.namespace, self.run_id, batch)
            except Exception:
                # a stream is a view of the run: losing events must not fail the run itself
                self.failed = True
                log.exception("could not record %d events of run %r", len(batch), self.run_id)


class EventPump:
    """A worker's thread that writes the buffers with pending events (see the module
    docstring)."""

    def __init__(self, name: str = "threadloom-events") -> None:
        self._cond = threading.Condition()
        self._dirty: dict[int, EventBuffer] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def mark(self, buffer: EventBuffer) -> None:
        """``buffer`` has events to write."""
        with self._cond:
            self._dirty[id(buffer)] = buffer
            self._cond.notify()

    def close(self) -> None:
        """Write what is pending and stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(10.0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closed:
                    self._cond.wait()
                batch = list(self._dirty.values())
                self._dirty.clear()
                if not batch and self._closed:
                    return
            for buffer in batch:
                buffer.flush()
