"""Signals over Redis pub/sub, for deployments with many API processes (``--redis URL``).

Without Redis, the Postgres store's own signals are ``NOTIFY`` inside the transaction that
changed the rows, and every process holds a ``LISTEN`` connection. With ``threadloom dev``,
``serve`` and ``worker --redis URL`` (or ``THREADLOOM_REDIS_URL``), the CLI installs a
:class:`RedisSignals` bus in the store (``RuntimeStore.use_signals``): the store publishes
what it commits (new work, cancellations, appended events for SSE fan-out, finished runs) to
Redis once the change has committed, and every process subscribes through Redis, so that the
database neither notifies nor keeps a listening session per process. On SQLite, processes
sharing the file then wake each other too.

Redis never holds the only copy of anything: the rows in the store are the truth, a signal is
a hint to re-read them, and a lost message (Redis restarting, a network failure) costs latency
(the readers' periodic re-check), never a run or an event. After the listener reconnects it
delivers one ``"work"`` signal with an empty message, as anything may have been missed. Every
process of a deployment must use the same Redis (and prefix). Needs the ``redis`` extra
(``pip install 'threadloom[redis]'``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from threadloom.checkpoint._signals import unsubscriber
from threadloom.errors import InvalidConfigError, StoreUnavailableError

__all__ = ["RedisSignals", "redact"]

log = logging.getLogger("threadloom.signals")
_PREFIX = "threadloom:"
_POLL = 1.0  # seconds between checks for close() while waiting for messages
_READY_WAIT = 5.0  # how long a first subscription to a topic waits for Redis to confirm it
_BACKOFF_MAX = 2.0
_WORK = "work"


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisSignals:
    """A :class:`~threadloom.checkpoint.queue.Signals` bus over Redis pub/sub.

    Args:
        url: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS).
        prefix: channel prefix, so that several deployments can share one Redis.
        connect_timeout: seconds to wait for Redis, at start and per reconnection.

    Raises:
        InvalidConfigError: ``url`` is not a Redis URL.
        StoreUnavailableError: Redis does not answer at ``url`` (checked at once).
        ImportError: the ``redis`` extra is not installed.

    Example:
        >>> signals = RedisSignals("redis://127.0.0.1:6379/0")
        >>> store.use_signals(signals)
        >>> off = store.signals().subscribe("done", print)
    """

    def __init__(self, url: str, prefix: str = _PREFIX, *,
                 connect_timeout: float = 5.0) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "Redis signals need the redis extra: pip install 'threadloom[redis]'"
            ) from exc
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise InvalidConfigError(
                f"not a Redis URL: {redact(url)!r} (use redis://host:6379/0)")
        self.url = redact(url)
        try:
            self._redis: Any = redis.Redis.from_url(
                url, socket_connect_timeout=connect_timeout, health_check_interval=30)
            self._redis.ping()
        except (redis.RedisError, ValueError, OSError) as exc:
            raise StoreUnavailableError(
                f"cannot reach Redis at {self.url}: {exc}") from None
        self._prefix = prefix
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._confirmed: dict[str, threading.Event] = {}
        self._pubsub: Any = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._publish_failing = False

    def publish(self, topic: str, message: str) -> None:
        """Send ``message`` on ``topic`` to every subscriber in every process, over Redis.
        A failure is logged (once per outage) and otherwise ignored: readers re-read rows."""
        try:
            self._redis.publish(self._prefix + topic, message)
        except Exception as exc:  # noqa: BLE001 - a hint was lost; readers re-check rows
            if not self._publish_failing:
                log.warning("redis publish on %s failed (signals are lost until it answers"
                            " again; readers fall back on re-reading): %s", topic, exc)
            self._publish_failing = True
        else:
            self._publish_failing = False

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(message)`` (from the listener thread) for each message on ``topic``
        until the returned function is called. The first subscription to a topic waits (a
        few seconds at most) until Redis confirms it, so what is published after this
        returns is delivered."""
        with self._lock:
            first = topic not in self._callbacks
            self._callbacks[topic] = [*self._callbacks.get(topic, ()), callback]
            if first:
                confirmed = self._confirmed[topic] = threading.Event()
                self._listen(topic)
        if first and not confirmed.wait(_READY_WAIT):
            log.warning("redis did not confirm the subscription to %s in time", topic)
        return unsubscriber(self._lock, self._callbacks, topic, callback)

    def close(self) -> None:
        """Stop listening and close the Redis connections."""
        self._closed.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_POLL * 3)
        with self._lock:
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self._redis.close()

    # -- the listener -----------------------------------------------------------------------

    def _listen(self, topic: str) -> None:
        """Subscribe the listener to ``topic`` (called with the lock held)."""
        if self._closed.is_set():
            return
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
        try:
            self._pubsub.subscribe(self._prefix + topic)
        except Exception as exc:  # noqa: BLE001 - the listener resubscribes when it reconnects
            log.warning("redis subscribe to %s failed (retrying): %s", topic, exc)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="threadloom-redis-signals",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        backoff = 0.05
        while not self._closed.is_set():
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                message = pubsub.get_message(timeout=_POLL)
            except Exception as exc:  # noqa: BLE001 - reconnect, then say work may be missed
                if self._closed.is_set():
                    return
                log.warning("redis signals listener failed (reconnecting): %s", exc)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                if self._resubscribe():
                    backoff = 0.05
                    self._dispatch(_WORK, "")
                continue
            if message is not None:
                self._received(message)

    def _resubscribe(self) -> bool:
        with self._lock:
            if self._closed.is_set():
                return False
            old, topics = self._pubsub, list(self._callbacks)
            try:
                pubsub = self._redis.pubsub()
                for topic in topics:
                    pubsub.subscribe(self._prefix + topic)
            except Exception as exc:  # noqa: BLE001 - the loop tries again
                log.warning("redis resubscribe failed: %s", exc)
                return False
            self._pubsub = pubsub
        if old is not None:
            try:
                old.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
        return True

    def _received(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        topic = channel[len(self._prefix):]
        if message.get("type") == "subscribe":
            with self._lock:
                confirmed = self._confirmed.get(topic)
            if confirmed is not None:
                confirmed.set()
            return
        if message.get("type") != "message":
            return
        data = message["data"]
        self._dispatch(topic, data.decode() if isinstance(data, bytes) else str(data))

    def _dispatch(self, topic: str, text: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(topic, ()))
        for callback in callbacks:
            try:
                callback(text)
            except Exception:  # one subscriber must not stop the others
                log.exception("a %r signal subscriber failed", topic)
