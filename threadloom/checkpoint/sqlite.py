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
    checkpoint_record,
)
from threadloom.checkpoint._run_logs import SqliteRunLogs
from threadloom.checkpoint._sqlite_records import SqliteRecords
from threadloom.checkpoint._sqlite_sql import (
    BLOB_CHUNK,
    BLOB_SQL,
    CP_COLS,
    SQL_CHECKPOINT,
    SQL_LATEST,
    is_busy,
    write_commits,
)
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    BlobRecord,
    CheckpointRecord,
    Commit,
    Lease,
    WriteRecord,
)
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


class SqliteStore(SqliteRecords, SqliteRunLogs, SqliteQueue):
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
