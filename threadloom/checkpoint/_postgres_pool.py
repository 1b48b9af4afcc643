"""The Postgres store's connections: a ``psycopg_pool`` pool opened on first use, lent one
connection at a time, and what becomes of a connection that comes back broken, or of the
pool after a fork.

Private to :mod:`threadloom.checkpoint.postgres`, its only importer (so psycopg is still
loaded only with the Postgres store). The store decides what to retry; this module only
hands connections out, takes them back idle or closed, and turns the pool's own failures
into threadloom's errors.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from typing import Any, TypeAlias

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from threadloom.errors import StoreError, StoreUnavailableError

Connection: TypeAlias = "psycopg.Connection[Any]"
Pool: TypeAlias = "ConnectionPool[psycopg.Connection[Any]]"

# Pools a forked child inherited: never used there (their connections are the parent's
# sessions), and kept referenced so that nothing of them runs in the child.
_INHERITED: list[Any] = []


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
        self.closed = False
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _forget_in_child(ref))

    def pool(self) -> Pool:
        """The pool, opened (without waiting for its connections) on first use.

        Raises:
            StoreError: the store is closed.
        """
        pool = self._pool
        if pool is None:
            with self._lock:
                if self.closed:
                    raise StoreError("the store is closed")
                if self._pool is None:
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

    def get(self) -> Connection:
        """A connection for the caller alone, until :meth:`put` takes it back.

        Raises:
            StoreUnavailableError: none came free (or could be opened) within ``timeout``.
            StoreError: the store is closed.
        """
        if self.closed:
            raise StoreError("the store is closed")
        try:
            return self.pool().getconn()
        except PoolTimeout as exc:
            raise StoreUnavailableError(
                f"no connection to Postgres {self.label} within {self._timeout:g}s: {exc}"
            ) from exc
        except PoolClosed as exc:
            raise StoreError("the store is closed") from exc

    def put(self, conn: Connection, *, discard: bool = False) -> None:
        """Give ``conn`` back to the pool, idle, or closed (then the pool replaces it)."""
        if not discard and not conn.closed:
            try:
                if conn.pgconn.transaction_status != TransactionStatus.IDLE:
                    conn.rollback()
            except psycopg.Error:
                discard = True
        if discard or conn.broken:
            conn.close()
        pool = self._pool
        if pool is not None:
            pool.putconn(conn)
        else:  # pragma: no cover - a connection outlived its pool
            conn.close()

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
