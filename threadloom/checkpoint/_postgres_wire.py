"""The Postgres store's statement runner: psycopg's low-level interface, for the write path.

Private to :mod:`threadloom.checkpoint.postgres`, its only importer (so psycopg is still
loaded only with the Postgres store). A psycopg cursor does a good deal of Python work per
statement around the few libpq calls that matter: it builds a cursor and a transformer,
converts the query, consults the connection's prepared-statement cache twice, then builds
and selects result objects. A ``sync`` step is one commit statement, and on a fast server
that Python time is a fair share of the step (more than its own cost on a busy two-core
machine, where a client that thinks longer lets the server's CPU go idle and pays to wake it).
:class:`Runner` runs a statement with only the necessary calls: dump the parameters, send
(prepared or not), wait for the results, raise the error a cursor would.

Prepared statements follow psycopg's rules: a statement is prepared on a connection after
``prepare_threshold`` executions there (``None``: never, for transaction poolers), keyed by
the SQL and its parameters' types (a prepared statement's types are fixed, and psycopg picks
an integer's type by its size), and at most :data:`PREPARED_MAX` per connection. If the
server lost one (``DISCARD ALL`` by a pooler, say), the connection's are forgotten and the
statement is run again unprepared: it had not started.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any, TypeAlias

import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq
from psycopg.adapt import PyFormat, Transformer

from threadloom.checkpoint._postgres_sql import failure_error
from threadloom.errors import ThreadloomError

Connection: TypeAlias = "psycopg.Connection[Any]"

PREPARED_MAX = 100
"""Statements prepared on one connection at most; more run unprepared."""

_COUNTED_MAX = 1000  # distinct statements counted per connection before the counts restart
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_UNKNOWN_STATEMENT = "26000"  # invalid_sql_statement_name: the prepared statement is gone

# SQLSTATEs worth another attempt (besides every connection exception, class 08): the
# transaction was rolled back by the server and may simply be run again.
_RETRY_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down)
        "53300",  # too_many_connections
    }
)


def is_transient(exc: BaseException, conn: Connection | None = None) -> bool:
    """Whether ``exc`` is worth retrying: the connection is gone, or the server rolled the
    transaction back for a reason that may not recur."""
    if not isinstance(exc, psycopg.Error) or isinstance(exc, pg_errors.PipelineAborted):
        return False
    if conn is not None and (conn.broken or conn.closed):
        return True
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _RETRY_STATES


def check_failure(exc: psycopg.Error) -> ThreadloomError | None:
    """The check failure a commit statement raised through ``fail()``, if that is what
    ``exc`` is."""
    return failure_error(exc.sqlstate, exc.diag.message_primary or str(exc))


class _Session:
    """What :class:`Runner` keeps per connection (used by one thread at a time, as the
    pool lends a connection to one caller)."""

    __slots__ = ("counts", "names", "serial", "transformer")

    def __init__(self, conn: Connection) -> None:
        self.transformer = Transformer(conn)
        self.serial = 0  # names are never reused on a connection
        self.counts: dict[tuple[bytes, tuple[int, ...]], int] = {}
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}


class Runner:
    """Runs single statements with ``$n`` placeholders on pooled autocommit connections.

    Args:
        prepare_threshold: executions of a statement on a connection before it is prepared
            there; ``None`` never prepares.
    """

    def __init__(self, prepare_threshold: int | None) -> None:
        self._threshold = prepare_threshold
        self._sessions: weakref.WeakKeyDictionary[Connection, _Session] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # guards adding sessions, not using them

    def execute(self, conn: Connection, sql: bytes, params: Sequence[Any]) -> None:
        """Run ``sql`` with ``params`` on ``conn``, an idle autocommit connection that the
        caller holds, and discard its rows.

        Raises:
            psycopg.Error: what a cursor's ``execute`` would raise.
        """
        session = self._sessions.get(conn)
        if session is None:
            session = _Session(conn)
            with self._lock:
                self._sessions[conn] = session
        tx = session.transformer
        values = tx.dump_sequence(params, [PyFormat.AUTO] * len(params))
        pgconn = conn.pgconn
        name = self._name(conn, session, (sql, tuple(tx.types or ())))
        while True:
            if name is None:
                pgconn.send_query_params(
                    sql, values, param_formats=tx.formats, param_types=tx.types, result_format=1
                )
            else:
                pgconn.send_query_prepared(
                    name, values, param_formats=tx.formats, result_format=1
                )
            try:
                self._check(conn, conn.wait(generators.execute(pgconn)))
                return
            except psycopg.Error as exc:
                if name is None or exc.sqlstate != _UNKNOWN_STATEMENT:
                    raise
                session.names.clear()  # the server forgot them: prepare them again when due
                session.counts.clear()
                name = None

    def _name(
        self, conn: Connection, session: _Session, key: tuple[bytes, tuple[int, ...]]
    ) -> bytes | None:
        """The name ``key``'s statement is prepared under on the connection, preparing it
        now if it is due; ``None``: run it unprepared."""
        name = session.names.get(key)
        if name is not None or self._threshold is None or len(session.names) >= PREPARED_MAX:
            return name
        seen = session.counts.get(key, 0)
        if seen < self._threshold:
            if len(session.counts) >= _COUNTED_MAX:
                session.counts.clear()
            session.counts[key] = seen + 1
            return None
        session.serial += 1
        name = f"_threadloom_{session.serial}".encode()
        conn.pgconn.send_prepare(name, key[0], param_types=key[1])
        self._check(conn, conn.wait(generators.execute(conn.pgconn)))
        session.names[key] = name
        session.counts.pop(key, None)
        return name

    @staticmethod
    def _check(conn: Connection, results: list[pq.abc.PGresult]) -> None:
        for result in results:
            if result.status not in _OK:
                raise pg_errors.error_from_result(result, encoding=conn.info.encoding)
