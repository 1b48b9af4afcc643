"""The Postgres store's statement runner: psycopg's low-level interface, for the write path.

Private to :mod:`threadloom.checkpoint.postgres`, its only importer (so psycopg is still
loaded only with the Postgres store). A psycopg cursor does a good deal of Python work per
statement around the few libpq calls that matter: it builds a cursor and a transformer,
converts the query, consults the connection's prepared-statement cache twice, then builds
and selects result objects. A ``sync`` step is one commit statement, and on a fast server
that Python time is a fair share of the step (more than its own cost on a busy two-core
machine, where a client that thinks longer lets the server's CPU go idle and pays to wake it).
:class:`Runner` runs a statement with only the necessary calls: dump the parameters, send
(prepared or not), wait for the results, raise the error a cursor would. A batch of
statements (``async`` durability's writer folds queued steps into one transaction) goes the
same way through libpq's pipeline mode, one round trip, where psycopg's pipeline and cursors
cost a fifth more per batch of two.

Waiting for the answer. A flushed commit's round trip is mostly the server's work and its
WAL flush (a few hundred microseconds on a local server). A thread that blocks on the socket
for that long lets its CPU go idle, and on a virtual machine an idle vCPU halts: waking it
when the answer arrives costs tens to hundreds of microseconds more, each step. So a
statement run with ``spin`` first polls its socket without blocking, for up to ``spin_wait``
seconds, then blocks as usual. It polls only while no other statement of the runner is
polling: concurrent writers keep the CPUs busy anyway and need them more than a spinning
poll does. Each poll is a system call that releases the GIL, but the poller takes it back
at once, so another Python thread that wants the GIL meanwhile may wait for it up to the
interpreter's switch interval (5 ms), or to the end of the polling if that comes first.
``spin_wait=0`` turns it off.

Prepared statements follow psycopg's rules: a statement is prepared on a connection after
``prepare_threshold`` executions there (``None``: never, for transaction poolers), keyed by
the SQL and its parameters' types (a prepared statement's types are fixed, and psycopg picks
an integer's type by its size), and at most :data:`PREPARED_MAX` per connection. If the
server lost one (``DISCARD ALL`` by a pooler, say), the connection's are forgotten and the
statement is run again unprepared: it had not started.
"""

from __future__ import annotations

import os
import select
import threading
import time
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
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED  # a statement after the one that failed
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
    if isinstance(exc, psycopg.DataError):  # the data cannot be sent (NUL in text, ...) or
        return False  # stored: never worth retrying, even if the connection went with it
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

    __slots__ = ("counts", "names", "poller", "serial", "socket", "transformer")

    def __init__(self, conn: Connection) -> None:
        self.transformer = Transformer(conn)
        self.serial = 0  # names are never reused on a connection
        self.counts: dict[tuple[bytes, tuple[int, ...]], int] = {}
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.socket = -1  # the descriptor the poller watches (a reset connection changes it)
        self.poller = select.poll()

    def readable(self, fd: int) -> bool:
        """Whether ``fd`` has something to read, without waiting."""
        if fd != self.socket:
            if self.socket >= 0:
                self.poller.unregister(self.socket)
            self.poller.register(fd, select.POLLIN)
            self.socket = fd
        return bool(self.poller.poll(0))

    def forget(self) -> None:
        """The server lost the connection's prepared statements: prepare them again when
        due."""
        self.names.clear()
        self.counts.clear()


class Runner:
    """Runs single statements with ``$n`` placeholders on pooled autocommit connections.

    Args:
        prepare_threshold: executions of a statement on a connection before it is prepared
            there; ``None`` never prepares.
        spin_wait: seconds a statement run with ``spin`` polls for its answer before it
            blocks (see the module docstring); 0 never spins.
    """

    def __init__(self, prepare_threshold: int | None, spin_wait: float = 0.0) -> None:
        self._threshold = prepare_threshold
        self._spin_wait = spin_wait
        self._sessions: weakref.WeakKeyDictionary[Connection, _Session] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # guards adding sessions and the count below
        self._in_flight = 0  # statements polling or about to
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _reset_in_child(ref))

    def execute(
        self, conn: Connection, sql: bytes, params: Sequence[Any], *, spin: bool = False
    ) -> None:
        """Run ``sql`` with ``params`` on ``conn``, an idle autocommit connection that the
        caller holds, and discard its rows. ``spin``: the caller waits for nothing else, so
        the answer may be waited for by polling (see the module docstring).

        Raises:
            psycopg.Error: what a cursor's ``execute`` would raise.
        """
        self._run(conn, [(sql, params)], spin)

    def execute_batch(
        self, conn: Connection, statements: Sequence[tuple[bytes, Sequence[Any]]], *,
        spin: bool = False,
    ) -> None:  # fmt: skip
        """Run ``statements`` on ``conn`` in one pipeline, in one round trip: they form the
        implicit transaction that ends at the pipeline's sync, so either all of them are
        applied or none is. Rows are discarded; ``spin`` as for :meth:`execute`.

        Raises:
            psycopg.Error: the first error (and nothing of the batch was applied).
        """
        self._run(conn, statements, spin)

    def _run(
        self, conn: Connection, statements: Sequence[tuple[bytes, Sequence[Any]]], spin: bool
    ) -> None:
        session = self._sessions.get(conn)
        if session is None:
            session = _Session(conn)
            with self._lock:
                self._sessions[conn] = session
        run = self._single if len(statements) == 1 else self._pipeline
        if not spin or self._spin_wait <= 0:
            run(conn, session, statements, False)
            return
        with self._lock:
            self._in_flight += 1
        try:
            run(conn, session, statements, True)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _single(
        self,
        conn: Connection,
        session: _Session,
        statements: Sequence[tuple[bytes, Sequence[Any]]],
        spin: bool,
    ) -> None:
        ((sql, params),) = statements
        tx = session.transformer
        values = tx.dump_sequence(params, [PyFormat.AUTO] * len(params))
        pgconn = conn.pgconn
        key = (sql, tuple(tx.types or ()))
        name = session.names.get(key)
        if name is None:
            name = self._due(session, key)
            if name is not None:
                pgconn.send_prepare(name, sql, param_types=key[1])
                self._check(conn, conn.wait(generators.execute(pgconn)))
                session.names[key] = name
        while True:
            _send(pgconn, tx, sql, name, values)
            try:
                self._flush(conn, session, spin)
                self._check(conn, conn.wait(generators.fetch_many(pgconn)))
                return
            except psycopg.Error as exc:
                if name is None or exc.sqlstate != _UNKNOWN_STATEMENT:
                    raise
                session.forget()
                name = None

    def _pipeline(
        self,
        conn: Connection,
        session: _Session,
        statements: Sequence[tuple[bytes, Sequence[Any]]],
        spin: bool,
    ) -> None:
        """The statements, each prepared first if due, then a sync; every result is
        collected before the pipeline ends, and the first error is raised."""
        pgconn = conn.pgconn
        tx = session.transformer
        prepare = True
        while True:
            queued: dict[tuple[bytes, tuple[int, ...]], tuple[bytes, int]] = {}
            used_names = False
            queries = 0
            pgconn.enter_pipeline_mode()
            try:
                for sql, params in statements:
                    values = tx.dump_sequence(params, [PyFormat.AUTO] * len(params))
                    key = (sql, tuple(tx.types or ()))
                    name = session.names.get(key)
                    used_names = used_names or name is not None
                    if name is None and key in queued:
                        name = queued[key][0]  # prepared earlier in this batch
                    elif name is None and prepare:
                        name = self._due(session, key)
                        if name is not None:
                            pgconn.send_prepare(name, sql, param_types=key[1])
                            queued[key] = (name, queries)
                            queries += 1
                    _send(pgconn, tx, sql, name, values)
                    queries += 1
                pgconn.pipeline_sync()
                self._flush(conn, session, spin)
                results = [conn.wait(generators.fetch_many(pgconn)) for _ in range(queries)]
                conn.wait(generators.fetch_many(pgconn))  # the sync's own result
            finally:
                _leave_pipeline(conn)
            error = next(
                (r for rs in results for r in rs if r.status not in _OK and r.status != _ABORTED),
                None,
            )
            exc = None
            if error is not None:
                exc = pg_errors.error_from_result(error, encoding=conn.info.encoding)
                if used_names and exc.sqlstate == _UNKNOWN_STATEMENT:
                    session.forget()  # the server lost the older ones, not this batch's
            for key, (name, index) in queued.items():
                if all(r.status in _OK for r in results[index]):
                    session.names[key] = name  # prepared, whatever became of the batch
            if exc is None:
                return
            if not used_names or exc.sqlstate != _UNKNOWN_STATEMENT:
                raise exc
            prepare = False  # nothing was applied: run the batch again, preparing nothing

    def _flush(self, conn: Connection, session: _Session, spin: bool) -> None:
        """Send what is queued on ``conn``; with ``spin``, then poll for the answer."""
        conn.wait(generators.send(conn.pgconn))
        if spin:
            self._spin(session, conn.pgconn.socket)

    def _spin(self, session: _Session, fd: int) -> None:
        """Poll ``fd`` until it is readable, ``spin_wait`` has passed, or another polling
        statement is in flight."""
        deadline = time.perf_counter() + self._spin_wait
        while not session.readable(fd):
            if self._in_flight > 1 or time.perf_counter() >= deadline:
                return

    def _due(self, session: _Session, key: tuple[bytes, tuple[int, ...]]) -> bytes | None:
        """For a statement not prepared on the connection: the name to prepare it under if
        this use reaches the threshold (counting the use otherwise), or ``None``."""
        if self._threshold is None or len(session.names) >= PREPARED_MAX:
            return None
        seen = session.counts.get(key, 0)
        if seen < self._threshold:
            if len(session.counts) >= _COUNTED_MAX:
                session.counts.clear()
            session.counts[key] = seen + 1
            return None
        session.counts.pop(key, None)
        session.serial += 1
        return f"_threadloom_{session.serial}".encode()

    @staticmethod
    def _check(conn: Connection, results: list[pq.abc.PGresult]) -> None:
        for result in results:
            if result.status not in _OK:
                raise pg_errors.error_from_result(result, encoding=conn.info.encoding)


def _send(
    pgconn: pq.abc.PGconn, tx: psycopg.abc.Transformer, sql: bytes, name: bytes | None, values: Any
) -> None:
    """Queue one statement whose parameters ``tx`` just dumped: prepared under ``name``, or
    with its text when ``name`` is ``None``."""
    if name is None:
        pgconn.send_query_params(
            sql, values, param_formats=tx.formats, param_types=tx.types, result_format=1
        )
    else:
        pgconn.send_query_prepared(name, values, param_formats=tx.formats, result_format=1)


def _reset_in_child(ref: weakref.ref[Runner]) -> None:
    """After a fork: the parent's threads and their statements are not the child's (and one
    of them may have held the lock)."""
    runner = ref()
    if runner is not None:
        runner._lock = threading.Lock()
        runner._in_flight = 0


def _leave_pipeline(conn: Connection) -> None:
    """End pipeline mode; a connection that cannot (results left uncollected by an error)
    is closed, so that the pool replaces it rather than lend it out in pipeline mode."""
    try:
        conn.pgconn.exit_pipeline_mode()
    except psycopg.Error:
        conn.close()
