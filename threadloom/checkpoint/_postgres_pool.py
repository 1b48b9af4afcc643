"""The Postgres store's connections: a ``psycopg_pool`` pool opened on first use, lent one
connection at a time, and what becomes of a connection that comes back broken, or of the
pool after a fork.

Private to :mod:`threadloom.checkpoint.postgres`, its only importer (so psycopg is still
loaded only with the Postgres store). The store decides what to retry; this module only
hands connections out, takes them back idle or closed, and turns the pool's own failures
into threadloom's errors.

Before a pool is opened, one connection is made in the caller's thread: when the server
answers that it will never accept it (the database or role does not exist, authentication
failed, no permission), :class:`~threadloom.errors.StoreAccessError` is raised at once
instead of the pool retrying in the background until its timeout. Any other failure (the
server is down, starting up, full) is left to the pool's retries, as before.

Logging. psycopg_pool logs its background connection attempts on the ``psycopg.pool``
logger; with no logging configured, Python would print its warnings to stderr. Its records
about threadloom's pools (named ``threadloom:<schema>``) are logged on the
``threadloom.checkpoint.postgres`` logger instead, which has a ``NullHandler``: nothing is
printed unless the application configures logging.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import weakref
from typing import Any, TypeAlias

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from threadloom.errors import StoreAccessError, StoreError, StoreUnavailableError

Connection: TypeAlias = "psycopg.Connection[Any]"
Pool: TypeAlias = "ConnectionPool[psycopg.Connection[Any]]"

# Pools a forked child inherited: never used there (their connections are the parent's
# sessions), and kept referenced so that nothing of them runs in the child.
_INHERITED: list[Any] = []

POOL_PREFIX = "threadloom:"
"""How the names of threadloom's pools (and so of their threads) begin."""

log = logging.getLogger("threadloom.checkpoint.postgres")
log.addHandler(logging.NullHandler())

# What a server (or libpq) says when it refuses a connection for a reason that retrying
# cannot fix. libpq gives no SQLSTATE for a failed connection, only the message, and these
# are the server's English texts (3D000, 28000, 28P01, 42501, 42704, 22023); a message in
# another language is not recognised and is retried, as any unknown failure.
_REFUSALS = (
    "does not exist",  # the database or the role
    "authentication failed",  # password, peer, ident, ...
    "no pg_hba.conf entry",
    "is not permitted to log in",
    "permission denied",  # no CONNECT privilege on the database
    "unrecognized configuration parameter",  # options=-c... in the URL
    "invalid value for parameter",
    "no password supplied",  # the server asks for one and the URL has none
    "no such database",  # PgBouncer's own answers
    "no such user",
)


def refusal(exc: psycopg.Error) -> str | None:
    """What the server said, if ``exc`` is a connection refused for good (see _REFUSALS)."""
    if not isinstance(exc, psycopg.OperationalError):
        return None
    message = str(exc).strip()
    if not any(text in message for text in _REFUSALS):
        return None
    _, fatal, said = message.rpartition("FATAL:")
    return said.strip() if fatal else message


# Set while a thread hands a pool a connection to discard: psycopg_pool warns about it.
_discarding = threading.local()


class _PoolRecords(logging.Filter):
    """Moves psycopg_pool's records about threadloom's pools to threadloom's logger: those
    of the pools' own threads, those that name a pool, and those logged while
    :meth:`Connections.put` discards a connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = getattr(_discarding, "active", False) or (
            record.threadName is not None and record.threadName.startswith(POOL_PREFIX)
        )
        if not ours and isinstance(record.args, tuple):
            ours = any(isinstance(a, str) and a.startswith(POOL_PREFIX) for a in record.args)
        if not ours:
            return True
        if log.isEnabledFor(record.levelno):
            log.handle(logging.makeLogRecord({**record.__dict__, "name": log.name}))
        return False


for _name in ("psycopg.pool", "psycopg_pool.sched"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _PoolRecords) for f in _logger.filters):
        _logger.addFilter(_PoolRecords())


class Connections:
    """The pool of one store.

    Args:
        dsn: the libpq connection string.
        label: how errors name the server (``user@host/dbname``).
        name: the pool's name (in psycopg_pool's logs).
        min_size, max_size: connections the pool keeps open, and may open.
        timeout: seconds to wait for a connection before ``StoreUnavailableError``.
        kwargs: the connections' options (``autocommit``, ``prepare_threshold``, ...).
    """

    def __init__(
        self,
        dsn: str,
        *,
        label: str,
        name: str,
        min_size: int,
        max_size: int,
        timeout: float,
        kwargs: dict[str, Any],
    ) -> None:
        self.label = label
        self._dsn = dsn
        self._name = name
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._kwargs = kwargs
        self._pool: Pool | None = None
        self._lock = threading.Lock()
        self._first_error: psycopg.Error | None = None  # of the connection made before the pool
        self.closed = False
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _forget_in_child(ref))

    def pool(self) -> Pool:
        """The pool, opened (without waiting for its connections) on first use, after one
        connection made here has shown that the server does not refuse them.

        Raises:
            StoreAccessError: the server refused the connection for good.
            StoreError: the store is closed.
        """
        pool = self._pool
        if pool is None:
            with self._lock:
                if self.closed:
                    raise StoreError("the store is closed")
                if self._pool is None:
                    self._try_connect()
                    created: Pool = ConnectionPool(
                        self._dsn,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        timeout=self._timeout,
                        kwargs=self._kwargs,
                        name=self._name,
                        open=False,
                    )
                    created.open(wait=False)
                    self._pool = created
                pool = self._pool
        return pool

    def _try_connect(self) -> None:
        """Connect once; raise if the server refuses for good, note any other failure."""
        kwargs = dict(self._kwargs)  # no longer than the pool would wait (libpq: >= 2 s)
        kwargs["connect_timeout"] = max(2, min(kwargs.get("connect_timeout", 10),
                                               math.ceil(self._timeout)))  # fmt: skip
        try:
            psycopg.Connection.connect(self._dsn, **kwargs).close()
        except psycopg.Error as exc:
            said = refusal(exc)
            if said is not None:
                raise StoreAccessError(
                    f"Postgres {self.label} refused the connection: {said} (retrying "
                    "cannot help: check the database, user, password and options of the URL)"
                ) from exc
            log.warning("cannot connect to Postgres %s yet, retrying: %s", self.label, exc)
            self._first_error = exc
        else:
            self._first_error = None

    def get(self) -> Connection:
        """A connection for the caller alone, until :meth:`put` takes it back.

        Raises:
            StoreUnavailableError: none came free (or could be opened) within ``timeout``.
            StoreError: the store is closed.
        """
        if self.closed:
            raise StoreError("the store is closed")
        try:
            conn = self.pool().getconn()
        except PoolTimeout as exc:
            first = self._first_error
            why = f" (the first attempt failed: {str(first).strip()})" if first else ""
            raise StoreUnavailableError(
                f"no connection to Postgres {self.label} within {self._timeout:g}s: {exc}{why}"
            ) from exc
        except PoolClosed as exc:
            raise StoreError("the store is closed") from exc
        if self._first_error is not None:  # the pool connected since: it is no reason now
            self._first_error = None
        return conn

    def put(self, conn: Connection, *, discard: bool = False) -> None:
        """Give ``conn`` back to the pool, idle, or closed (then the pool replaces it)."""
        if not discard and not conn.closed:
            try:
                if conn.pgconn.transaction_status != TransactionStatus.IDLE:
                    conn.rollback()
            except psycopg.Error:
                discard = True
        pool = self._pool
        if pool is None:  # pragma: no cover - a connection outlived its pool
            conn.close()
        elif discard or conn.closed or conn.broken:
            conn.close()
            _discarding.active = True
            try:
                pool.putconn(conn)  # the pool replaces it
            finally:
                _discarding.active = False
        else:
            pool.putconn(conn)

    def recover(self, conn: Connection | None, attempt: int) -> None:
        """Before another attempt: purge dead pooled connections, then back off."""
        if conn is not None and (conn.broken or conn.closed) and self._pool is not None:
            try:
                self._pool.check()
            except psycopg.Error:
                pass  # check() replaces what it cannot use; nothing more to do here
        delay = min(0.05 * 2 ** (attempt - 1), 2.0)
        time.sleep(random.uniform(0.5 * delay, 1.5 * delay))

    def close(self) -> None:
        """Close the pool and its connections; later calls raise ``StoreError``."""
        with self._lock:
            self.closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _forget_in_child(ref: weakref.ref[Connections]) -> None:
    """After a fork, make the child open a pool of its own on first use."""
    connections = ref()
    if connections is not None and connections._pool is not None:
        _INHERITED.append(connections._pool)
        connections._pool = None
        connections._lock = threading.Lock()
