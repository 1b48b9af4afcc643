"""Signals over Redis pub/sub, for deployments with many API processes.

Postgres ``LISTEN/NOTIFY`` already wakes every process sharing a database; Redis is optional
(``threadloom serve --redis URL``, ``threadloom worker --redis URL``) and only moves the
wake-ups off the database: SSE fan-out (``"event"``), cancellation (``"cancel"``), new work
(``"work"``) and finished runs (``"done"``). It never holds the only copy of anything: the
rows in the store are the truth, a signal is a hint to re-read them, and a lost message costs
latency (the readers' periodic re-check), never a run or an event.

:class:`RedisSignals` publishes to Redis, and delivers what arrives from Redis and from the
store's own signals (the store still announces what it commits, e.g. a queued run, itself).
Every process of a deployment must then use the same Redis.
Needs the ``redis`` extra (``pip install 'threadloom[redis]'``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from threadloom.checkpoint.queue import Signals

__all__ = ["RedisSignals"]

log = logging.getLogger("threadloom.signals")
_PREFIX = "threadloom:"


class RedisSignals:
    """A :class:`~threadloom.checkpoint.queue.Signals` bus over Redis pub/sub.

    Args:
        url: ``redis://host:port/db``.
        local: the store's own signals, listened on too, or ``None``.
        prefix: channel prefix, so that several deployments can share one Redis.

    Example:
        >>> signals = RedisSignals("redis://127.0.0.1:6379/0", store.signals())
        >>> off = signals.subscribe("done", print)
        >>> signals.publish("done", "default/run-1")
    """

    def __init__(self, url: str, local: Signals | None = None, prefix: str = _PREFIX) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "Redis signals need the redis extra: pip install 'threadloom[redis]'"
            ) from exc
        self._redis: Any = redis.Redis.from_url(url)
        self._local = local
        self._prefix = prefix
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._pubsub: Any = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def publish(self, topic: str, message: str) -> None:
        """Send to every subscriber, over Redis."""
        try:
            self._redis.publish(self._prefix + topic, message)
        except Exception as exc:  # noqa: BLE001 - a hint was lost; readers re-check rows
            log.warning("redis publish on %s failed: %s", topic, exc)

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(message)`` for messages on ``topic`` from Redis or the store."""
        off_local = self._local.subscribe(topic, callback) if self._local is not None else None
        with self._lock:
            first = topic not in self._callbacks
            self._callbacks.setdefault(topic, []).append(callback)
            if first:
                self._listen(topic)

        def unsubscribe() -> None:
            if off_local is not None:
                off_local()
            with self._lock:
                callbacks = self._callbacks.get(topic, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return unsubscribe

    def close(self) -> None:
        """Stop listening and close the Redis connections."""
        self._closed.set()
        with self._lock:
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._redis.close()

    # -- the listener -----------------------------------------------------------------------

    def _listen(self, topic: str) -> None:
        """Subscribe the listener to ``topic`` (called with the lock held)."""
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self._prefix + topic)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="threadloom-redis-signals",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._closed.is_set():
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                message = pubsub.get_message(timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - reconnect on the next round
                if self._closed.is_set():
                    return
                log.warning("redis signals listener failed, retrying: %s", exc)
                self._closed.wait(0.5)
                self._resubscribe()
                continue
            if message is None or message.get("type") != "message":
                continue
            self._dispatch(message)

    def _resubscribe(self) -> None:
        with self._lock:
            topics = list(self._callbacks)
            try:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                for topic in topics:
                    self._pubsub.subscribe(self._prefix + topic)
            except Exception as exc:  # noqa: BLE001 - the loop tries again
                log.warning("redis resubscribe failed: %s", exc)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        data = message["data"]
        text = data.decode() if isinstance(data, bytes) else str(data)
        topic = channel[len(self._prefix):]
        with self._lock:
            callbacks = list(self._callbacks.get(topic, ()))
        for callback in callbacks:
            try:
                callback(text)
            except Exception:  # noqa: BLE001 - one subscriber must not stop the others
                log.exception("signal callback for %s failed", topic)
