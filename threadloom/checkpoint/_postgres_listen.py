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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from threadloom.checkpoint._signals import WORK, Dispatcher

__all__ = ["PgSignals", "channel_name"]

log = logging.getLogger("threadloom.checkpoint.postgres")

_POLL = 0.5  # seconds between checks for close() while waiting for notifications
_BACKOFF_MAX = 2.0
_READY_WAIT = 5.0  # how long the first subscribe waits for the LISTEN to be in place


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
            try:
                while not self._stop.is_set():
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
        self._listening.clear()
