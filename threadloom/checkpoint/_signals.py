"""In-process signal delivery: the :class:`~threadloom.checkpoint.queue.Signals` of the memory
and SQLite stores, and the dispatching half of the Postgres store's (which feeds it what its
``LISTEN`` connection receives).

Subscribers are called from one daemon thread per bus, in the order the messages were
published, never from the publisher's thread (a publisher may hold a store's lock or be inside
a transaction). A callback that raises is logged on the ``threadloom.checkpoint.signals``
logger and the others still run; a slow callback delays the ones after it, so callbacks should
only wake something up (set an event, put to a queue). Publishing to a topic nobody subscribes
to costs a dictionary lookup, and the thread starts with the first subscription.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "CANCEL", "DONE", "EVENT", "TOPICS", "WORK", "AfterCommit", "Dispatcher", "LocalSignals",
    "unsubscriber",
]

WORK = "work"
CANCEL = "cancel"
EVENT = "event"
DONE = "done"
TOPICS = (WORK, CANCEL, EVENT, DONE)

log = logging.getLogger("threadloom.checkpoint.signals")
log.addHandler(logging.NullHandler())

Callback = Callable[[str], None]
_T = TypeVar("_T")
_STOP = ("", "")


class Dispatcher:
    """Calls the subscribers of each delivered message from a daemon thread of its own."""

    def __init__(self, name: str = "threadloom-signals") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Callback]] = {}
        self._queue: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def subscribe(self, topic: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(message)`` for each message delivered on ``topic`` until the
        returned function is called (calling it again does nothing)."""
        with self._lock:
            if self._closed:
                return _nothing
            self._subscribers[topic] = [*self._subscribers.get(topic, ()), callback]
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

        return unsubscriber(self._lock, self._subscribers, topic, callback)

    def subscribed(self, topic: str) -> bool:
        """Whether anybody listens on ``topic``."""
        return bool(self._subscribers.get(topic))

    def deliver(self, topic: str, message: str) -> None:
        """Queue ``message`` for the subscribers of ``topic`` (dropped if there are none)."""
        if self._subscribers.get(topic) and not self._closed:
            self._queue.put((topic, message))

    def close(self) -> None:
        """Stop the thread (after the messages already queued); later messages are dropped."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            self._subscribers.clear()
        if thread is not None:
            self._queue.put(_STOP)
            if thread is not threading.current_thread():
                thread.join(5.0)

    def _loop(self) -> None:
        while True:
            topic, message = self._queue.get()
            if (topic, message) == _STOP and self._closed:
                return
            for callback in self._subscribers.get(topic, ()):
                try:
                    callback(message)
                except Exception:  # a subscriber's bug must not stop the others
                    log.exception("a %r signal subscriber failed", topic)


def unsubscriber(lock: threading.Lock, table: dict[str, list[Callback]], topic: str,
                 callback: Callback) -> Callable[[], None]:
    """The function that takes ``callback`` off ``topic`` in ``table`` (each topic's list is
    replaced, never changed in place, under ``lock``); calling it again does nothing."""
    done = False

    def unsubscribe() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
            callbacks = list(table.get(topic, ()))
            for i, subscribed in enumerate(callbacks):
                if subscribed is callback:
                    del callbacks[i]
                    break
            table[topic] = callbacks

    return unsubscribe


def _nothing() -> None:
    return None


class LocalSignals(Dispatcher):
    """Signals within one process (the memory and SQLite stores): :meth:`publish` reaches
    the subscribers of this bus only."""

    def publish(self, topic: str, message: str) -> None:
        """Send ``message`` to every subscriber of ``topic`` (from the bus's thread)."""
        self.deliver(topic, message)


class AfterCommit:
    """The signals one store call publishes to an external bus once it has committed (a
    Postgres store with ``use_signals``): :meth:`collect` wraps the call's body, whose
    statements :meth:`add` what they announce (from the last attempt only: a retried attempt
    starts again); outside :meth:`collect`, :meth:`add` does nothing."""

    def __init__(self) -> None:
        self._local = threading.local()

    def add(self, topic: str, message: str) -> None:
        """Publish ``message`` on ``topic`` after the current call, if one is collecting."""
        sent = getattr(self._local, "sent", None)
        if sent is not None:
            sent.append((topic, message))

    def collect(self, fn: Callable[[Any], _T]
                ) -> tuple[Callable[[Any], _T], list[tuple[str, str]]]:
        """``fn`` wrapped to collect what each attempt adds, and the list that holds what
        the last attempt added."""
        sent: list[tuple[str, str]] = []

        def attempt(conn: Any) -> _T:
            sent.clear()
            self._local.sent = sent
            try:
                return fn(conn)
            finally:
                self._local.sent = None

        return attempt, sent
