"""The embedded default store: one SQLite file in WAL mode, stdlib ``sqlite3`` only.

Example:
    >>> from threadloom.checkpoint.sqlite import SqliteSaver
    >>> with SqliteSaver.from_conn_string(":memory:") as saver:
    ...     saver.get_thread("t-1") is None
    True

Concurrency. A file database gets one connection per OS thread (created lazily, closed by
:meth:`SqliteStore.close`, and closed as well when its thread ends), so threads read in
parallel under WAL; ``:memory:`` and a caller's own connection are one shared connection
behind a lock. Every write is one ``BEGIN IMMEDIATE`` transaction: a writer takes the write
lock before it reads anything, so two writers never deadlock trying to upgrade. Lock waits
use SQLite's busy timeout, and a busy or locked error that still escapes is retried with a
small randomized backoff until ``busy_timeout`` seconds have passed since the call began;
then :class:`~threadloom.errors.StoreUnavailableError` is raised. A damaged file, or one that
is no SQLite database, raises :class:`~threadloom.errors.StoreCorruptError` naming the path.
Any other ``sqlite3`` error is raised as :class:`~threadloom.errors.StoreError` (the original
is chained), so no raw ``sqlite3`` exception reaches the caller.

Schema. Numbered migrations are recorded in ``schema_migrations`` and applied by
:meth:`SqliteStore.setup` in one transaction (so two processes may run it at once). A database
may hold other applications' tables beside threadloom's (as a shared file would), but one
with a table of threadloom's name and no threadloom schema version is refused with
``StoreCorruptError`` rather than migrated. Every other method runs ``setup()`` first if
this store object has not done so yet. A checkpoint stores its channel versions as compact
JSON ``{"channel": [version, base]}``; each blob is a row keyed by ``(namespace, thread_id,
checkpoint_ns, channel, version)``, so a channel's chain is one index range scan.

The behaviour the protocol leaves open is decided as in
:mod:`threadloom.checkpoint.memory`, the reference backend.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl

from threadloom.checkpoint import _sqlite_sql as _sql
from threadloom.checkpoint._queue_sqlite import SqliteQueue
from threadloom.checkpoint._rows import (
    FEW_PREFIXED,
    STEP_STATUSES,
    checkpoint_record,
    execution_record,
    keyset_where,
    prefix_bound,
    run_record,
    thread_record,
    where_clause,
)
from threadloom.checkpoint._run_logs import SqliteRunLogs
from threadloom.checkpoint._sqlite_sql import (
    BLOB_CHUNK,
    BLOB_SQL,
    CP_COLS,
    EXEC_COLS,
    RUN_COLS,
    SQL_CHECKPOINT,
    SQL_LATEST,
    THREAD_COLS,
    is_busy,
    write_audit,
    write_commits,
)
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    Lease,
    RunRecord,
    ThreadRecord,
    WriteRecord,
)
from threadloom.checkpoint.queue import AuditEvent
from threadloom.checkpoint.retention import check_keep
from threadloom.errors import (
    InvalidConfigError,
    LeaseLostError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    ThreadloomError,
)

__all__ = ["AsyncSqliteSaver", "SqliteSaver", "SqliteStore"]

_CLOSE_WAIT = 10.0  # seconds close() waits for a write in flight on another thread

_T = TypeVar("_T")
_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_MEMORY = ":memory:"


def _corrupt(path: str, exc: sqlite3.Error) -> StoreCorruptError | None:
    """The error to raise for ``exc`` if it says the file is damaged or no database."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _CORRUPT_CODES:
        return None
    return StoreCorruptError(
        f"SQLite file {path!r} is damaged or not a SQLite database ({exc}): "
        "point the store at a threadloom database, or at a new file"
    )


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone either way


class _Handle:
    """Owns one connection of the store's pool; closes it when the store is collected."""

    __slots__ = ("__weakref__", "conn", "finalizer")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.finalizer = weakref.finalize(self, conn.close)


class _Borrow:
    """A thread's hold on a pooled connection: when the thread ends, its thread-local data
    is dropped, this is collected, and the connection goes back to the pool (threads come
    and go - a worker's runs, the engine's writers - while opening a connection costs a
    file open and three pragmas)."""

    __slots__ = ("__weakref__", "handle")

    def __init__(self, handle: _Handle, free: list[_Handle]) -> None:
        self.handle = handle
        weakref.finalize(self, free.append, handle)


# Connections a forked child inherited: never used and never closed there (closing a
# parent's SQLite connection in a child can damage the parent's locks and WAL).
_INHERITED: list[sqlite3.Connection] = []


class SqliteStore(SqliteRunLogs, SqliteQueue):
    """A :class:`~threadloom.checkpoint.base.Store` in one SQLite database (WAL mode).

    Args:
        path: the database file, ``":memory:"`` (one private in-memory database shared by
            every thread of this store), or an open ``sqlite3.Connection`` the caller owns
            (it should be opened with ``check_same_thread=False``; it is switched to
            autocommit and WAL mode, and :meth:`close` leaves it open).
        synchronous: ``PRAGMA synchronous`` for every connection: ``"FULL"`` (default,
            durable against power loss), ``"NORMAL"`` (WAL: durable against crashes of the
            process, the last commits may be lost on power loss), ``"EXTRA"`` or ``"OFF"``.
        busy_timeout: seconds to wait for another writer's lock, in total, before a call
            gives up with ``StoreUnavailableError``.

    Raises:
        InvalidConfigError: ``synchronous`` or ``busy_timeout`` is not acceptable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | sqlite3.Connection = _MEMORY,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
    ) -> None:
        sync = str(synchronous).upper()
        if sync not in _SYNCHRONOUS:
            raise InvalidConfigError(
                f"synchronous must be one of {sorted(_SYNCHRONOUS)}, not {synchronous!r}"
            )
        if not isinstance(busy_timeout, int | float) or busy_timeout < 0:
            raise InvalidConfigError(f"busy_timeout must be seconds >= 0, not {busy_timeout!r}")
        self._synchronous = sync
        self._synchronous_sql = f"PRAGMA synchronous = {sync}"
        # WAL with NORMAL: a commit survives the process crashing as soon as it returns (and
        # the machine crashing once the WAL is next synced); only worth it above NORMAL
        self._relaxable = sync in ("FULL", "EXTRA")
        # connections sit at NORMAL then (most writes are relaxed; it is a per-write choice,
        # reads do not care) and a write that must reach the disk raises it for itself
        self._relaxed_sql = "PRAGMA synchronous = NORMAL" if self._relaxable \
            else self._synchronous_sql
        self._busy_timeout = float(busy_timeout)
        self._ready = False
        self._closed = False
        self._setup_lock = threading.Lock()
        self._handles: set[_Handle] = set()  # every open connection of the pool
        self._free: list[_Handle] = []  # the ones no thread holds
        self._local = threading.local()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _forget_in_child(ref))
        self._lock: threading.RLock | None = None
        # writers of this process queue here, in order, instead of in SQLite's busy handler
        # (which sleeps up to 100 ms between tries); other processes still meet the handler
        self._writer = threading.Lock()
        self._shared: sqlite3.Connection | None = None
        self._owns_shared = True
        if isinstance(path, sqlite3.Connection):
            self.path = "<connection>"
            self._lock = threading.RLock()
            self._shared = path
            self._owns_shared = False
            try:
                self._configure(path)
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"cannot configure the connection: {exc}") from exc
        else:
            self.path = os.fspath(path)
            if self.path == _MEMORY:
                self._lock = threading.RLock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A store for ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
        ``sqlite://:memory:`` (also ``sqlite://``).

        ``synchronous`` and ``busy_timeout`` may be given in the query string
        (``sqlite:///app.db?synchronous=NORMAL``); keyword ``options`` override them.

        Raises:
            InvalidConfigError: the URL is not a SQLite URL threadloom understands.
        """
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != "sqlite" or not sep:
            raise InvalidConfigError(f"not a SQLite URL: {url!r} (use sqlite:///path.db)")
        rest, _, query = rest.partition("?")
        if rest in ("", _MEMORY, "/" + _MEMORY):
            path = _MEMORY
        elif rest.startswith("/") and len(rest) > 1:
            path = rest[1:]
        else:
            raise InvalidConfigError(
                f"bad SQLite URL {url!r}: use sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite://:memory:"
            )
        merged: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "synchronous":
                merged[key] = value
            elif key == "busy_timeout":
                try:
                    merged[key] = float(value)
                except ValueError:
                    raise InvalidConfigError(f"bad busy_timeout in {url!r}") from None
            else:
                raise InvalidConfigError(f"unknown SQLite URL option {key!r} in {url!r}")
        merged.update(options)
        return cls(path, **merged)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- connections ----------------------------------------------------------------------

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.isolation_level = None
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(self._relaxed_sql)
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(random.uniform(0.001, 0.01))

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise _corrupt(self.path, exc) or StoreUnavailableError(
                f"cannot open SQLite database {self.path!r}: {exc} "
                "(does its directory exist and is it writable?)"
            ) from exc
        try:
            self._configure(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _corrupt(self.path, exc) or StoreUnavailableError(
                f"cannot configure SQLite database {self.path!r}: {exc}"
            ) from exc
        return conn

    def _thread_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                handle = self._free.pop()  # atomic under the GIL
            except IndexError:
                handle = _Handle(self._open())
                self._handles.add(handle)
            self._local.borrow = _Borrow(handle, self._free)
            self._local.conn = conn = handle.conn
        return conn

    def _shared_conn(self) -> sqlite3.Connection:
        if self._shared is None:
            self._shared = self._open()
        return self._shared

    def close(self) -> None:
        """Close every connection this store opened. The store may not be used afterwards
        (calls raise ``StoreError``); a connection passed in by the caller stays open."""
        self._closed = True
        self._ready = False
        self._close_runtime()  # the signal thread (SqliteQueue)
        # a write in flight on another thread ends first: closing a connection under a
        # statement that runs on it crashes the interpreter (a write that starts after this
        # finds its connection closed and raises)
        writing = self._writer.acquire(timeout=_CLOSE_WAIT)
        try:
            for handle in list(self._handles):
                try:
                    handle.finalizer()  # closes the connection, once
                except sqlite3.Error:
                    pass
        finally:
            if writing:
                self._writer.release()
        self._handles.clear()
        self._free.clear()
        if self._shared is not None and self._owns_shared:
            self._shared.close()
        self._shared = None

    # -- running statements ---------------------------------------------------------------

    def _run(
        self, fn: Callable[[sqlite3.Connection], _T], write: bool, relaxed: bool = False
    ) -> _T:
        """Run ``fn`` on a connection (in a ``BEGIN IMMEDIATE`` transaction if ``write``;
        ``relaxed``: committed without waiting for the disk, see :meth:`commit`), retrying on
        busy/locked errors and translating every error."""
        if not self._ready:
            self.setup()
        lock = self._lock
        if lock is None:
            return self._attempt(self._thread_conn(), fn, write, relaxed)
        with lock:
            return self._attempt(self._shared_conn(), fn, write, relaxed)

    def _attempt(
        self,
        conn: sqlite3.Connection,
        fn: Callable[[sqlite3.Connection], _T],
        write: bool,
        relaxed: bool = False,
    ) -> _T:
        deadline = time.monotonic() + self._busy_timeout  # SQLite's own waits count too
        delay = 0.002
        strict = not relaxed and self._relaxable  # the connection sits at NORMAL
        while True:
            try:
                if not write:
                    return fn(conn)
                if strict:
                    conn.execute(self._synchronous_sql)
                try:
                    with self._writer:
                        conn.execute("BEGIN IMMEDIATE")
                        try:
                            result = fn(conn)
                            conn.execute("COMMIT")
                        except BaseException:
                            _rollback(conn)
                            raise
                finally:
                    if strict:
                        conn.execute(self._relaxed_sql)
                return result
            except ThreadloomError:
                raise
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise _corrupt(self.path, exc) or StoreError(
                        f"SQLite error on {self.path!r}: {exc}"
                    ) from exc
                now = time.monotonic()
                if now >= deadline:
                    raise StoreUnavailableError(
                        f"SQLite database {self.path!r} stayed locked for "
                        f"{self._busy_timeout:g}s: {exc}"
                    ) from exc
                time.sleep(min(random.uniform(0.5 * delay, 1.5 * delay), deadline - now))
                delay = min(delay * 2, 0.05)
            except sqlite3.Error as exc:
                raise _corrupt(self.path, exc) or StoreError(
                    f"SQLite store failed on {self.path!r}: {exc}"
                ) from exc
            except (TypeError, ValueError, OverflowError) as exc:
                raise StoreError(f"SQLite store failed on {self.path!r}: {exc}") from exc

    def setup(self) -> None:
        """Create or migrate the schema. Idempotent, and safe to run from several processes at
        once (the migrations run in one ``BEGIN IMMEDIATE`` transaction).

        Raises:
            MigrationError: the database's schema is newer than this code, or a migration
                failed (nothing of it was applied).
            StoreCorruptError: the file is damaged or no SQLite database, or it holds
                another application's tables under threadloom's names.
            StoreUnavailableError: the database cannot be opened or stayed locked.
        """
        if self._closed:
            raise StoreError("the store is closed")
        with self._setup_lock:
            if self._ready:
                return
            if self._lock is None:
                self._attempt(self._thread_conn(), self._migrate, True)
            else:
                with self._lock:
                    self._attempt(self._shared_conn(), self._migrate, True)
            self._ready = True

    def _migrate(self, conn: sqlite3.Connection) -> None:
        _sql.migrate(conn, self.path)

    # -- leases ---------------------------------------------------------------------------

    def acquire_lease(
        self, thread_id: str, owner: str, ttl: float, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Lease:
        """Take the thread's lease for ``ttl`` seconds (see the protocol and
        :meth:`MemoryStore.acquire_lease <threadloom.checkpoint.memory.MemoryStore.acquire_lease>`).

        Raises:
            ThreadBusyError: another owner holds an unexpired lease.
        """
        # relaxed (see commit): in WAL, commits reach the disk in order, so a lease is durable
        # before anything written under it that asked for a flush
        return self._run(
            lambda conn: _sql.acquire_lease(conn, namespace, thread_id, owner, ttl), True,
            relaxed=True,
        )

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a held lease to ``now + ttl`` (an expired one too, if nobody took it).

        Raises:
            LeaseLostError: the token is no longer current (taken over or released).
        """

        def renew(conn: sqlite3.Connection) -> Lease:
            expires = time.time() + ttl
            cursor = conn.execute(
                "UPDATE threads SET lease_expires_at = ? WHERE namespace = ? AND thread_id = ?"
                " AND lease_token = ? AND lease_owner IS NOT NULL",
                (expires, lease.namespace, lease.thread_id, lease.token),
            )
            if cursor.rowcount != 1:
                raise LeaseLostError(f"lease on thread {lease.thread_id!r} was lost")
            return Lease(lease.thread_id, lease.owner, lease.token, expires, lease.namespace)

        return self._run(renew, True, relaxed=True)

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up if ``lease.token`` is still current; otherwise do nothing."""

        def release(conn: sqlite3.Connection) -> None:
            conn.execute(_sql.SQL_RELEASE_LEASE, (lease.namespace, lease.thread_id, lease.token))

        self._run(release, True, relaxed=True)

    def takeover_lease(self, held: Lease, owner: str, ttl: float) -> Lease:
        """Take the lease from the holder ``held``, expired or not, with a new token (see the
        protocol).

        Raises:
            LeaseLostError: ``held.token`` is no longer current.
        """
        return self._run(lambda conn: _sql.takeover_lease(conn, held, owner, ttl), True,
                         relaxed=True)

    # -- the write path -------------------------------------------------------------------

    def commit(self, commits: Sequence[Commit]) -> None:
        """Apply ``commits`` in order, in one transaction (see
        :class:`~threadloom.checkpoint.base.Commit` and
        :meth:`MemoryStore.commit <threadloom.checkpoint.memory.MemoryStore.commit>`).

        A batch that asks for no flush commits with ``synchronous=NORMAL`` (the WAL is written
        but not synced, so the commit survives the process crashing; the next synced commit
        makes it survive power loss too) when the store's ``synchronous`` is higher (the
        connections sit at NORMAL then, and a flushed write raises the level for itself).

        Raises:
            LeaseLostError, CheckpointConflictError, RunConflictError: a check failed;
                nothing of the batch was written.
            StoreError: the database failed, run metadata is not JSON-serializable, or the
                checkpoint belongs to another thread than the commit.
        """
        if commits:
            relaxed = not any(c.flush for c in commits)
            self._run(lambda conn: write_commits(conn, commits), True, relaxed)

    # -- checkpoints ----------------------------------------------------------------------

    def get_checkpoint(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        seq: int | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> CheckpointRecord | None:
        """The checkpoint ``seq`` of the thread, or its latest when ``seq`` is ``None``."""

        def get(conn: sqlite3.Connection) -> CheckpointRecord | None:
            if seq is None:
                row = conn.execute(SQL_LATEST, (namespace, thread_id, checkpoint_ns)).fetchone()
            else:
                key = (namespace, thread_id, checkpoint_ns, seq)
                row = conn.execute(SQL_CHECKPOINT, key).fetchone()
            return checkpoint_record(thread_id, checkpoint_ns, row) if row is not None else None

        return self._run(get, False)

    def list_checkpoints(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        *,
        before: int | None = None,
        run_id: str | None = None,
        source: str | None = None,
        limit: int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[CheckpointRecord]:
        """Checkpoints of a thread, newest first, optionally with ``seq < before``, of one run
        or one source, at most ``limit``."""
        sql = (
            f"SELECT {CP_COLS} FROM checkpoints WHERE namespace = ? AND thread_id = ?"
            " AND checkpoint_ns = ?"
        )
        params: list[Any] = [namespace, thread_id, checkpoint_ns]
        if before is not None:
            sql += " AND seq < ?"
            params.append(before)
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(-1 if limit is None else limit)

        def query(conn: sqlite3.Connection) -> list[CheckpointRecord]:
            rows = conn.execute(sql, params).fetchall()
            return [checkpoint_record(thread_id, checkpoint_ns, row) for row in rows]

        return self._run(query, False)

    def list_checkpoint_namespaces(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[str]:
        """The checkpoint namespaces holding checkpoints of the thread, sorted."""

        def query(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE namespace = ?"
                " AND thread_id = ? ORDER BY checkpoint_ns",
                (namespace, thread_id),
            ).fetchall()
            return [row[0] for row in rows]

        return self._run(query, False)

    def get_blobs(
        self,
        thread_id: str,
        checkpoint_ns: str,
        wants: Mapping[str, tuple[int, int]],
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[BlobRecord]:
        """For each ``channel -> (base, version)`` in ``wants``, every blob of that channel
        with ``base <= blob.version <= version`` (in any order). One index range scan per
        channel, up to 32 channels per query."""
        items = list(wants.items())

        def query(conn: sqlite3.Connection) -> list[BlobRecord]:
            found: list[BlobRecord] = []
            for start in range(0, len(items), BLOB_CHUNK):
                chunk = items[start : start + BLOB_CHUNK]
                params: list[Any] = [namespace, thread_id, checkpoint_ns]
                for channel, (base, version) in chunk:
                    params += (channel, base, version)
                rows = conn.execute(BLOB_SQL[len(chunk)], params).fetchall()
                found += [BlobRecord(*row) for row in rows]
            return found

        return self._run(query, False) if items else []

    def get_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        seq: int,
        task_id: str | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[WriteRecord]:
        """Pending writes recorded against checkpoint ``seq`` (of one task, if given),
        ordered by ``(task_id, channel, idx)``."""
        sql = (
            "SELECT thread_id, checkpoint_ns, seq, task_id, channel, idx, data FROM writes"
            " WHERE namespace = ? AND thread_id = ? AND checkpoint_ns = ? AND seq = ?"
        )
        params: tuple[Any, ...] = (namespace, thread_id, checkpoint_ns, seq)
        if task_id is not None:
            sql += " AND task_id = ?"
            params += (task_id,)
        sql += " ORDER BY task_id, channel, idx"

        def query(conn: sqlite3.Connection) -> list[WriteRecord]:
            return [WriteRecord(*row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    # -- runs and executions --------------------------------------------------------------

    def get_run(self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> RunRecord | None:
        """The run recorded under ``run_id`` in the namespace, if any."""

        def get(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(
                f"SELECT {RUN_COLS} FROM runs WHERE namespace = ? AND run_id = ?",
                (namespace, run_id),
            ).fetchone()
            return run_record(row) if row is not None else None

        return self._run(get, False)

    def list_runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        graph: str | None = None,
        namespace: str | None = DEFAULT_NAMESPACE,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs matching every given filter, newest first (by ``created_at``, then ``run_id``),
        paginated. The time range is half-open: ``created_after <= created_at <
        created_before``. ``namespace=None``: every namespace."""
        clause, params = where_clause(
            ("namespace = ?", namespace),
            ("thread_id = ?", thread_id),
            ("status = ?", status),
            ("graph = ?", graph),
            ("created_at >= ?", created_after),
            ("created_at < ?", created_before),
        )
        sql = (
            f"SELECT {RUN_COLS} FROM runs{clause}"
            " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?"
        )
        params += (limit, offset)

        def query(conn: sqlite3.Connection) -> list[RunRecord]:
            return [run_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def list_executions(
        self,
        *,
        run_id: str | None = None,
        thread_id: str | None = None,
        namespace: str | None = DEFAULT_NAMESPACE,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ExecutionRecord]:
        """Executions matching every given filter, in execution order (by ``created_at``,
        ``step``, ``node``, then ``id``), paginated. ``namespace=None``: every namespace."""
        clause, params = where_clause(
            ("namespace = ?", namespace),
            ("run_id = ?", run_id),
            ("thread_id = ?", thread_id),
            ("status = ?", status),
            status=status,
        )
        table = "executions"
        if namespace is not None and status is not None and status not in STEP_STATUSES:
            if run_id is None and thread_id is None:
                # without statistics, SQLite prefers scanning the key's namespace prefix
                # (the table itself) to the partial index the operator's query is made for
                table += " INDEXED BY executions_namespace_status"
        sql = (
            f"SELECT {EXEC_COLS} FROM {table}{clause}"
            " ORDER BY created_at, step, node, id LIMIT ? OFFSET ?"
        )
        params += (-1 if limit is None else limit, offset)

        def query(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            return [execution_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def page_runs(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        status: str | None = None,
        timed_out: bool | None = None,
        graph: str | None = None,
        run_id_prefix: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """A keyset page of the namespace's runs, newest first (see the protocol)."""
        where, order, params = keyset_where(
            "?", "run_id", namespace=namespace, status=status, timed_out=timed_out,
            graph=graph, run_id_prefix=run_id_prefix, created_after=created_after,
            created_before=created_before, after=after, descending=True,
            execution_status=False,
        )  # fmt: skip
        params.append(limit)

        def query(conn: sqlite3.Connection) -> list[RunRecord]:
            if status is not None:
                index = "runs_status"
            elif graph is not None:
                index = "runs_graph"
            elif run_id_prefix and _few(conn, "runs NOT INDEXED", namespace, run_id_prefix):
                index = None  # the key's (namespace, run_id) range
            else:
                index = "runs_namespace_created"
            table = "runs NOT INDEXED" if index is None else f"runs INDEXED BY {index}"
            sql = f"SELECT {RUN_COLS} FROM {table}{where}{order} LIMIT ?"
            return [run_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def page_executions(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        run_id: str | None = None,
        run_id_prefix: str | None = None,
        status: str | None = None,
        timed_out: bool | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
        descending: bool = False,
        limit: int = 100,
    ) -> list[ExecutionRecord]:
        """A keyset page of the namespace's executions by ``(created_at, id)`` (see the
        protocol)."""
        where, order, params = keyset_where(
            "?", "id", namespace=namespace, run_id=run_id, run_id_prefix=run_id_prefix,
            status=status, timed_out=timed_out, created_after=created_after,
            created_before=created_before, after=after, descending=descending,
        )  # fmt: skip
        params.append(limit)

        def query(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            # SQLite has no statistics: each filter names the index that serves it
            if run_id is not None:
                index = "executions_run"
            elif status is not None and status not in STEP_STATUSES:
                index = "executions_namespace_status"
            elif run_id_prefix and _few(conn, "executions INDEXED BY executions_run",
                                         namespace, run_id_prefix):
                index = "executions_run"
            else:
                index = "executions_namespace_created"
            sql = f"SELECT {EXEC_COLS} FROM executions INDEXED BY {index}{where}{order} LIMIT ?"
            return [execution_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    # -- threads --------------------------------------------------------------------------

    def get_thread(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ThreadRecord | None:
        """The thread row (created by the first lease or commit on the thread); its ``lease``
        is the current one, also when expired but not taken over, ``None`` once released."""

        def get(conn: sqlite3.Connection) -> ThreadRecord | None:
            row = conn.execute(
                f"SELECT {THREAD_COLS} FROM threads WHERE namespace = ? AND thread_id = ?",
                (namespace, thread_id),
            ).fetchone()
            return thread_record(row) if row is not None else None

        return self._run(get, False)

    def list_threads(
        self,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ThreadRecord]:
        """Threads, most recently updated first (then by ``thread_id``, descending).
        ``namespace=None``: every namespace."""
        sql = f"SELECT {THREAD_COLS} FROM threads"
        params: tuple[Any, ...] = ()
        if namespace is not None:
            sql += " WHERE namespace = ?"
            params = (namespace,)
        sql += " ORDER BY updated_at DESC, thread_id DESC LIMIT ? OFFSET ?"
        params += (limit, offset)

        def query(conn: sqlite3.Connection) -> list[ThreadRecord]:
            return [thread_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def delete_thread(self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE,
                      audit: AuditEvent | None = None) -> None:
        """Delete the thread and everything recorded for it (checkpoints, blobs, writes,
        runs, executions, lease) in the namespace, in one transaction (with ``audit``)."""

        def delete(conn: sqlite3.Connection) -> None:
            _sql.delete_thread(conn, namespace, thread_id)
            write_audit(conn, audit, time.time())

        self._run(delete, True)

    def create_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Create the thread with ``metadata`` unless it exists, with ``audit``, in one
        transaction (see the runtime protocol)."""
        try:
            text = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc

        def create(conn: sqlite3.Connection) -> ThreadRecord | None:
            now = time.time()
            inserted = conn.execute(
                "INSERT INTO threads (namespace, thread_id, created_at, updated_at, metadata)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, thread_id) DO NOTHING",
                (namespace, thread_id, now, now, text),
            ).rowcount
            if inserted != 1:
                return None
            row = conn.execute(
                f"SELECT {THREAD_COLS} FROM threads WHERE thread_id = ? AND namespace = ?",
                (thread_id, namespace),
            ).fetchone()
            write_audit(conn, audit, now)
            return thread_record(row)

        return self._run(create, True)

    def update_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Replace the thread's metadata (see the protocol; ``audit`` is appended in the same
        transaction if there is such a thread)."""
        try:
            text = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc

        def update(conn: sqlite3.Connection) -> ThreadRecord | None:
            key = (thread_id, namespace)
            conn.execute(
                "UPDATE threads SET metadata = ?, updated_at = max(updated_at, ?)"
                " WHERE thread_id = ? AND namespace = ?",
                (text, time.time(), *key),
            )
            row = conn.execute(
                f"SELECT {THREAD_COLS} FROM threads WHERE thread_id = ? AND namespace = ?", key
            ).fetchone()
            if row is None:
                return None
            write_audit(conn, audit, time.time())
            return thread_record(row)

        return self._run(update, True)

    def prune_checkpoints(
        self, thread_id: str, keep: int, *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> int:
        """Keep the latest ``keep`` checkpoints of the thread (see the protocol)."""
        check_keep(keep)

        def prune(conn: sqlite3.Connection) -> int:
            write_audit(conn, audit, time.time())
            return _sql.prune_checkpoints(conn, namespace, thread_id, keep)

        return self._run(prune, True)

    def delete_runs(
        self, *, created_before: float, namespace: str | None = DEFAULT_NAMESPACE
    ) -> int:
        """Delete finished runs created before the cutoff (see the protocol)."""
        return self._run(lambda conn: _sql.delete_runs(conn, created_before, namespace), True)


# -- LangGraph-shaped names -------------------------------------------------------------------


class SqliteSaver(SqliteStore):
    """LangGraph's name for the SQLite checkpointer.

    ``SqliteSaver(conn)`` takes an open ``sqlite3.Connection`` (opened with
    ``check_same_thread=False``) or a path; :meth:`from_conn_string` opens a path (or
    ``":memory:"``), sets the schema up, and closes the store when the block ends::

        with SqliteSaver.from_conn_string("checkpoints.db") as saver:
            graph = builder.compile(checkpointer=saver)
    """

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, **options: Any) -> Iterator[SqliteSaver]:
        """A set-up saver on ``conn_string`` (a path, ``":memory:"`` or a ``sqlite://`` URL),
        closed when the ``with`` block ends."""
        saver = _open_saver(cls, conn_string, options)
        try:
            yield saver
        finally:
            saver.close()


class AsyncSqliteSaver(SqliteStore):
    """LangGraph's name for the async SQLite checkpointer.

    The engine calls stores synchronously from its worker threads (also for ``ainvoke``),
    so this is the same store as :class:`SqliteSaver`; only :meth:`from_conn_string` is an
    async context manager::

        async with AsyncSqliteSaver.from_conn_string("checkpoints.db") as saver:
            graph = builder.compile(checkpointer=saver)

    It does not take an ``aiosqlite`` connection: pass a path or a ``sqlite3.Connection``.
    """

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls, conn_string: str, **options: Any
    ) -> AsyncIterator[AsyncSqliteSaver]:
        """A set-up saver on ``conn_string`` (a path, ``":memory:"`` or a ``sqlite://`` URL),
        closed when the ``async with`` block ends."""
        saver = _open_saver(cls, conn_string, options)
        try:
            yield saver
        finally:
            saver.close()


_S = TypeVar("_S", bound=SqliteStore)


def _forget_in_child(ref: weakref.ref[SqliteStore]) -> None:
    """After a fork, make the child open its own connections on first use."""
    store = ref()
    if store is None:
        return
    for handle in list(store._handles):
        handle.finalizer.detach()
        _INHERITED.append(handle.conn)
    store._handles = set()
    store._free = []
    store._local = threading.local()


def _open_saver(cls: type[_S], conn_string: str, options: dict[str, Any]) -> _S:
    if conn_string.lower().startswith("sqlite:"):
        store = cls.from_url(conn_string, **options)
    else:
        store = cls(conn_string, **options)
    try:
        store.setup()
    except BaseException:
        store.close()
        raise
    return store


def _few(conn: sqlite3.Connection, source: str, namespace: str, prefix: str) -> bool:
    """Whether fewer than :data:`FEW_PREFIXED` rows of ``source`` (a table and the index
    to count on, which leads with the run id) in ``namespace`` have a run id starting with
    ``prefix``."""
    bound = prefix_bound(prefix)
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM {source}"
        " WHERE run_id >= ? AND namespace = ?"
        + (" AND run_id < ?" if bound is not None else "")
        + " LIMIT ?)"
    )
    params: tuple[Any, ...] = (prefix, namespace, *(() if bound is None else (bound,)))
    count: int = conn.execute(sql, (*params, FEW_PREFIXED)).fetchone()[0]
    return count < FEW_PREFIXED
