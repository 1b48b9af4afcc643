"""Waking the requests that wait for runs: one ``"done"`` subscription per store, shared by
every waiting request of the process.

A request that waits for a run registers before it looks (:meth:`DoneWatcher.watch`) and is
woken on its event loop when the ``"done"`` signal names its run. The watcher also remembers
the runs that finished lately, so a request that registers just after its run finished (a
fast run of this process's own worker) is woken at once instead of at its next re-read.
Signals are hints: a woken request still reads the run's row.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict

from threadloom.checkpoint.queue import RuntimeStore

__all__ = ["DoneWatcher", "done_watcher"]

_RECENT = 4096  # finished runs remembered for requests that register late

_WATCHERS: weakref.WeakKeyDictionary[RuntimeStore, DoneWatcher] = weakref.WeakKeyDictionary()
_WATCHERS_LOCK = threading.Lock()


def done_watcher(store: RuntimeStore) -> DoneWatcher:
    """The process's watcher of ``store``'s ``"done"`` signals (subscribed on first use)."""
    with _WATCHERS_LOCK:
        watcher = _WATCHERS.get(store)
        if watcher is None:
            watcher = _WATCHERS[store] = DoneWatcher()
            store.signals().subscribe("done", watcher.on_done)
        return watcher


class DoneWatcher:
    """Waiters by ``"namespace/run_id"``, woken by the ``"done"`` signal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()

    def on_done(self, name: str) -> None:
        """The ``"done"`` signal's callback (any thread)."""
        with self._lock:
            self._recent[name] = None
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
            waiters = self._waiters.pop(name, ())
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its request is gone
                pass

    def watch(self, name: str) -> asyncio.Event:
        """An event (of the running loop) set when ``name`` is signalled done; set already
        when it was lately. Call :meth:`forget` with it when done waiting."""
        event = asyncio.Event()
        with self._lock:
            if name in self._recent:
                event.set()
            else:
                self._waiters.setdefault(name, []).append((asyncio.get_running_loop(), event))
        return event

    def rearm(self, name: str, event: asyncio.Event) -> None:
        """Wait for the next signal of ``name`` with ``event`` (after a wake-up whose re-read
        found the run still running: a signal of an earlier attempt)."""
        event.clear()
        with self._lock:
            self._recent.pop(name, None)
            entries = self._waiters.setdefault(name, [])
            if not any(e is event for _, e in entries):
                entries.append((asyncio.get_running_loop(), event))

    def forget(self, name: str, event: asyncio.Event) -> None:
        """Stop waiting with ``event``."""
        with self._lock:
            entries = self._waiters.get(name)
            if entries is None:
                return
            entries[:] = [(loop, e) for loop, e in entries if e is not event]
            if not entries:
                del self._waiters[name]
