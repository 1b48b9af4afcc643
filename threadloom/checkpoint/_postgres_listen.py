"""The Postgres store's signals: ``NOTIFY`` to publish, one ``LISTEN`` connection to receive.

Private to the Postgres store (imports psycopg). Every process sharing a schema sends and
receives on one channel, ``threadloom:<schema>``; a notification's payload is the topic, a
newline and the message. Publishing is ``pg_notify`` through the store's pool, usually inside
the transaction that changed the rows (Postgres delivers it when that commits, and not at all
if it rolls back), so it works behind a transaction pooler too.

Receiving needs a session of its own: :class:`PgSignals` opens one dedicated connection, in a
daemon thread started by the first :meth:`~PgSignals.subscribe` (which waits, a few seconds at
most, until the ``LISTEN`` is in place, so that what is published after it returns is
delivered), and hands what arrives to a
:class:`~threadloom.checkpoint._signals.Dispatcher`, whose thread calls the subscribers. If
the connection breaks (a server restart, a network failure) it reconnects with a backoff, and
then delivers one ``"work"`` signal with an empty message, since anything may have been
missed meanwhile. ``LISTEN`` does not survive a transaction pooler (PgBouncer in transaction
mode hands the session to other clients between statements): give the store a ``listen_url``
that reaches the server directly. Without one, behind such a pooler, nothing fails but no
signal arrives; readers fall back on re-reading rows at their own pace.

Liveness. The same session vouches that this process lives: once :meth:`PgSignals.hold` is
called, the listening thread takes a session-level advisory lock, ``(LIVENESS_CLASS, key)``
with a random ``key``, right after each (re)connection. The lock lasts exactly as long as the
session: when the process dies (SIGKILL, a crash, a power cut of its machine once the server
notices) its backend exits and the lock is gone at once, where other processes see it
(``pg_locks``). A reconnection takes a new key, never the old one (the old one, gone, said the
process was dead, and its claims may have been taken since); losing the connection calls the
``on_lost`` callbacks. The lock is taken only when the session reaches the server directly (the
address and port the client connected to are the ones the server sees itself on:
``inet_server_addr()``, none for a Unix socket, and its ``port`` setting): through a pooler or
a proxy the lock would sit on a server session the pooler shares or closes as it likes, so it
says nothing about this process and is not taken (:attr:`PgSignals.live_key` stays ``None``).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from threadloom.checkpoint._signals import WORK, Dispatcher

__all__ = ["LIVENESS_CLASS", "PgSignals", "channel_name"]

log = logging.getLogger("threadloom.checkpoint.postgres")

_POLL = 0.5  # seconds between checks for close() while waiting for notifications
_BACKOFF_MAX = 2.0
_READY_WAIT = 5.0  # how long the first subscribe waits for the LISTEN to be in place
LIVENESS_CLASS = 0x746C6976  # "tliv": the first half of every liveness lock's key
_KEY_TRIES = 8  # random keys tried when one is taken (by another live session)


def channel_name(schema: str) -> str:
    """The notification channel of a schema (at most 63 bytes, Postgres' limit)."""
    return f"threadloom:{schema}"[:63]


class PgSignals:
    """:class:`~threadloom.checkpoint.queue.Signals` over ``LISTEN/NOTIFY``.

    Args:
        dsn: where the listening connection goes (the store's ``listen_url``, else its own).
        channel: the schema's channel (:func:`channel_name`).
        notify: sends one notification (``pg_notify`` through the store's pool).
        connect_timeout: seconds (whole, >= 2) to wait for the listening connection.
    """

    def __init__(self, dsn: str, channel: str, notify: Callable[[str, str], None],
                 connect_timeout: int) -> None:
        self._dsn = dsn
        self._channel = channel
        self._notify = notify
        self._connect_timeout = connect_timeout
        self._dispatcher = Dispatcher(f"threadloom-signals:{channel}")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._on_lost: list[Callable[[], None]] = []  # liveness holders, see hold()
        self._live_key: int | None = None
        self._last_key: int | None = None  # never taken again (see the module docstring)
        self._live_tried = threading.Event()  # this session's attempt at the lock was made

    def publish(self, topic: str, message: str) -> None:
        """Send ``message`` on ``topic`` to every subscriber of the schema, in every process."""
        self._notify(self._channel, f"{topic}\n{message}")

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(message)`` from a background thread for each message on ``topic``
        until the returned function is called."""
        unsubscribe = self._dispatcher.subscribe(topic, callback)
        with self._lock:
            started = self._thread is None and not self._stop.is_set()
            if started:
                self._thread = threading.Thread(
                    target=self._listen, name=f"threadloom-listen:{self._channel}", daemon=True
                )
                self._thread.start()
        if started:  # later subscribers do not wait for a connection that is down
            self._listening.wait(_READY_WAIT)
        return unsubscribe

    def hold(self, on_lost: Callable[[], None]) -> Callable[[], None]:
        """Vouch for this process's liveness with a session lock (see the module docstring)
        until the returned function is called; ``on_lost()`` is called, from the listening
        thread, when the session is lost (it must return quickly). The lock is taken in the
        background: :attr:`live_key` says when it is held."""
        with self._lock:
            self._on_lost.append(on_lost)
            started = self._thread is None and not self._stop.is_set()
            if started:
                self._thread = threading.Thread(
                    target=self._listen, name=f"threadloom-listen:{self._channel}", daemon=True
                )
                self._thread.start()
        if started:  # as subscribe does: later subscribers find the LISTEN in place
            self._listening.wait(_READY_WAIT)

        def release() -> None:
            with self._lock:
                if on_lost in self._on_lost:
                    self._on_lost.remove(on_lost)

        return release

    @property
    def live_key(self) -> int | None:
        """The key of the liveness lock this process holds now (the lock is
        ``(LIVENESS_CLASS, live_key)``), or ``None``: not held (nobody asked, the session is
        down, or it does not reach the server directly)."""
        return self._live_key

    def wait_liveness(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds until the current session has tried to take the
        liveness lock (after :meth:`hold`); return :attr:`live_key`."""
        self._live_tried.wait(timeout)
        return self._live_key

    @property
    def listening(self) -> bool:
        """Whether the ``LISTEN`` connection is up."""
        return self._listening.is_set()

    def close(self) -> None:
        """Stop listening (the thread ends within a fraction of a second) and dispatching."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_POLL * 4 + self._connect_timeout)
        self._dispatcher.close()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=self._connect_timeout,
            application_name="threadloom-listen",
        )  # fmt: skip
        try:
            conn.execute(f'LISTEN "{self._channel}"')
        except BaseException:
            conn.close()
            raise
        return conn

    def _listen(self) -> None:
        backoff = 0.05
        missed = False  # whether signals may have been lost (a reconnection)
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                log.warning("cannot LISTEN on %s (retrying): %s", self._channel, exc)
                missed = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = 0.05
            self._listening.set()
            if missed:
                self._dispatcher.deliver(WORK, "")
            tried = False  # the liveness lock, on this session (once: see _take_liveness)
            try:
                while not self._stop.is_set():
                    if not tried and self._on_lost:
                        tried = True
                        self._live_key = _take_liveness(conn, avoid=self._last_key)
                        self._last_key = self._live_key or self._last_key
                        self._live_tried.set()
                    for notice in conn.notifies(timeout=_POLL):
                        topic, _, message = notice.payload.partition("\n")
                        self._dispatcher.deliver(topic, message)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning("lost the LISTEN connection on %s (reconnecting): %s",
                                self._channel, exc)
                missed = True
                self._listening.clear()
            finally:
                conn.close()
                self._lost_liveness()
        self._listening.clear()

    def _lost_liveness(self) -> None:
        """The session is gone, and with it the liveness lock (if it was held)."""
        self._live_tried.clear()
        if self._live_key is None:
            return
        self._live_key = None
        if self._stop.is_set():
            return  # closing: nobody needs telling
        with self._lock:
            callbacks = list(self._on_lost)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a liveness-lost callback failed")


def _take_liveness(conn: psycopg.Connection[Any], avoid: int | None) -> int | None:
    """Take a liveness lock with a random key on ``conn`` (a session, autocommit) and return
    the key; ``None`` if the session does not reach the server directly (see the module
    docstring) or every key tried was taken. The key is never ``avoid``."""
    row = conn.execute("SELECT current_setting('port'), host(inet_server_addr())").fetchone()
    server = (str(row[0]), row[1] or "") if row is not None else None
    if server != (str(conn.info.port), conn.info.hostaddr or ""):
        log.info("the LISTEN session may go through a pooler or proxy (it reached %s port %s,"
                 " the server says %s): no liveness lock, claims of this process lapse by"
                 " their ttl", conn.info.hostaddr or "a socket", conn.info.port, server)
        return None
    for _ in range(_KEY_TRIES):
        key = random.randint(1, 2**31 - 1)
        if key == avoid:
            continue
        taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                             (LIVENESS_CLASS, key)).fetchone()
        if taken is not None and taken[0]:
            return key
    log.warning("could not take a liveness lock (%d keys taken)", _KEY_TRIES)
    return None
