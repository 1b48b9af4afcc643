"""The scale-out store: PostgreSQL through psycopg 3 and a ``psycopg_pool`` connection pool.

Example:
    >>> from threadloom.checkpoint import open_store
    >>> store = open_store("postgresql://app@db/threadloom?schema=agents&pool_max=20")
    >>> store.get_thread("t-1") is None
    True

Needs the ``postgres`` extra (``pip install 'threadloom[postgres]'``); this module is the only
one of threadloom that imports psycopg (with its private helpers ``_postgres_pool``, the
connections, and ``_postgres_wire``, the write path's statement runner, which nothing else
imports), and only ``open_store("postgresql://...")`` imports it.

Writes and the single-writer guarantee. Each :class:`~threadloom.checkpoint.base.Commit` is
**one SQL statement** (a data-modifying ``WITH``, see ``Statements.commit``), and a batch is
one transaction: one commit is a single autocommit statement, one round trip with its
``COMMIT``; several are pipelined in the implicit transaction that ends at the pipeline's
sync, one round trip too. The statement upserts the thread row first (creating or touching
it), which **locks the row** until the transaction ends: writers of one thread queue there,
writers of different threads never wait for each other. The lease is a row lease with a
fencing token (``lease_owner``, ``lease_token``, ``lease_expires_at`` on the thread row),
compared on the row's current version. The head is kept in a ``heads`` row per thread and
namespace, compared-and-set by an ``UPDATE ... WHERE seq = expected`` (or an upsert's
``WHERE``), which Postgres evaluates on the row's current version even under READ COMMITTED:
of two writers that saw the same head, the second finds the first one's, so the
compare-and-set cannot race (no check reads a table through the statement's snapshot). Then
come the run upserts (a run of another thread is never updated: the upsert's ``WHERE``
refuses it, and the row count reveals it), the checkpoint insert (an existing ``seq`` inserts
nothing), the blobs, writes and executions. The first failed check, in the documented order,
raises through the schema's ``fail()`` function with a SQLSTATE of threadloom's own
(``TL001``..``TL005``), which aborts the transaction and becomes ``LeaseLostError``,
``CheckpointConflictError``, ``RunConflictError`` or ``StoreError``. Leases are taken,
renewed, released and taken over by single conditional statements, with the semantics of the
other backends (the token, drawn from one sequence per schema, increases when the holder
changes and when an expired lease is taken).

Time. Lease expiry uses the clients' clocks (``time.time()``), like the other backends, not
the server's: keep the workers' clocks in sync (NTP) to well within a lease's ttl.

Failures and retries. Transient errors are retried with exponential backoff and jitter: a
lost or refused connection (a server restart, ``AdminShutdown``, a network error), a
serialization failure, a deadlock, a lock timeout. Reads, lease calls, deletions, pruning and
setup are single statements or idempotent transactions and are simply run again. A commit
whose connection was lost may or may not have been applied (its ``COMMIT`` went out with the
statement): it is run again, and a replay of an applied commit cannot apply twice, because
its head compare-and-set or its checkpoint insert fails; that conflict is then checked, and
if every checkpoint of the batch is stored exactly as the batch wrote it, the first attempt
was applied and the commit succeeds; otherwise the conflict is real and raised. (A batch
without checkpoints is upserts only, which leave the same rows whether replayed or not; if
its lease was taken over in between, the replay raises ``LeaseLostError`` although the first
attempt may have landed.) A transaction is atomic, so a step is never half written. After
``max_retries`` retries :class:`~threadloom.errors.StoreUnavailableError` is raised; any
other psycopg error becomes :class:`~threadloom.errors.StoreError`, the original chained: no
psycopg exception reaches the caller. A server that refuses connections for good (the
database or role does not exist, authentication failed) raises
:class:`~threadloom.errors.StoreAccessError` at once, on the first call, without retrying.
After a lost connection the pool's idle connections are checked and the dead ones replaced,
so a restart costs one retry, not one per connection. Nothing is printed: the pool's
connection failures are logged on the ``threadloom.checkpoint.postgres`` logger (see
``_postgres_pool``).

Transaction poolers (PgBouncer in transaction mode). The store keeps no session state: no
``SET``, no session advisory lock, no transaction open between calls; only the signals'
``LISTEN`` and a worker's liveness lock need a session (give ``listen_url``, see
``_postgres_listen``; without a direct session a dead worker's runs wait for its claims to
lapse).
A statement is prepared on the server after ``prepare_threshold`` executions on a
connection (default 5: the fast setting), by psycopg for reads and by the store's own runner
for the commit statement (``_postgres_wire``: the write path skips psycopg's cursor, whose
Python cost is a fair share of a ``sync`` step); ``prepare_threshold=None``
(``?prepare_threshold=none``) turns server-side prepared statements off, as a transaction
pooler needs.

Schema. Every table, and ``fail()``, live in ``schema`` (default ``public``). Numbered
migrations are recorded in ``schema_migrations`` and applied by an explicit
:meth:`PostgresStore.setup` (``open_store`` calls it), in one transaction under a
transaction-level advisory lock, so several processes may run it at once; it creates the
schema if needed. A schema holding another application's tables under threadloom's names (or
its own ``schema_migrations``) is refused with :class:`~threadloom.errors.StoreCorruptError`,
nothing created in it. Other methods do not migrate: their first call checks once that the schema
is current and raises :class:`~threadloom.errors.MigrationError` otherwise.

The behaviour the protocol leaves open is decided as in :mod:`threadloom.checkpoint.memory`,
the reference backend. Postgres text cannot hold NUL characters: an id or name containing
``"\\x00"`` is refused with ``StoreError`` (at once: it is never retried), while the errors
of runs and executions and the strings of run metadata are stored with each NUL written as
the four characters ``\\x00`` (see ``_rows.escape_nul``), so that a failure whose message
holds one is still recorded.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Self, TypeAlias, TypeVar

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool as _ConnectionPool  # noqa: F401 (_postgres_pool's)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "the Postgres store needs psycopg 3 and psycopg-pool: pip install 'threadloom[postgres]'"
    ) from exc

from threadloom.checkpoint._postgres_options import advisory_key, check_number, split_url
from threadloom.checkpoint._postgres_pool import POOL_PREFIX, Connections
from threadloom.checkpoint._postgres_records import PostgresRecords
from threadloom.checkpoint._postgres_schema import SCHEMA_VERSION
from threadloom.checkpoint._postgres_sql import (
    TABLES,
    Statements,
    same_checkpoint,
)
from threadloom.checkpoint._postgres_wire import Runner, check_failure, is_transient
from threadloom.checkpoint._queue_common import audit_row, stamp_audit
from threadloom.checkpoint._queue_postgres import PostgresQueue
from threadloom.checkpoint._rows import (
    checkpoint_record,
)
from threadloom.checkpoint._run_logs import PostgresRunLogs
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    BlobRecord,
    CheckpointRecord,
    Commit,
    Lease,
    WriteRecord,
)
from threadloom.errors import (
    CheckpointConflictError,
    InvalidConfigError,
    LeaseLostError,
    MigrationError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    ThreadBusyError,
    ThreadloomError,
)

__all__ = ["AsyncPostgresSaver", "PostgresSaver", "PostgresStore"]

_T = TypeVar("_T")
Connection: TypeAlias = "psycopg.Connection[Any]"

class PostgresStore(PostgresRecords, PostgresRunLogs, PostgresQueue):
    """A :class:`~threadloom.checkpoint.base.Store` in PostgreSQL (see the module docstring).

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL (without threadloom's own
            options: use :meth:`from_url` for a URL that carries them).
        schema: the schema holding every table; created by :meth:`setup`.
        min_size: connections the pool keeps open.
        max_size: connections the pool may open.
        timeout: seconds to wait for a pooled connection before giving up with
            ``StoreUnavailableError``.
        prepare_threshold: executions of a statement on a connection before psycopg
            prepares it on the server; ``None`` never prepares (transaction poolers).
        max_retries: how many times an operation that failed transiently is tried again.
        connect_timeout: seconds to wait for a new connection to the server.
        spin_wait: seconds (at most 1) a flushed commit polls its connection for the answer
            before it sleeps, while no other commit of the store is polling (an idle vCPU
            that halts is slow to wake; see ``_postgres_wire``); 0 always sleeps.
        listen_url: where the signals' ``LISTEN`` connection, which also holds a worker's
            liveness lock, goes (default ``dsn``): a direct connection when ``dsn`` is a
            transaction pooler (see ``_postgres_listen``).

    Raises:
        InvalidConfigError: an option is not acceptable, or ``dsn`` does not parse.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        prepare_threshold: int | None = 5,
        max_retries: int = 8,
        connect_timeout: float = 10.0,
        spin_wait: float = 0.002,
        listen_url: str | None = None,
    ) -> None:
        self._sql = Statements(schema)  # validates the name
        self.schema = schema
        check_number("min_size", min_size, minimum=0, integer=True)
        check_number("max_size", max_size, minimum=max(1, min_size), integer=True)
        check_number("timeout", timeout, minimum=0.001)
        if prepare_threshold is not None:
            check_number("prepare_threshold", prepare_threshold, minimum=0, integer=True)
        self._prepare_threshold = prepare_threshold
        spin_wait = check_number("spin_wait", spin_wait, minimum=0)
        if not spin_wait <= 1:  # NaN too: a poll that never gives up would hold a core
            raise InvalidConfigError(f"spin_wait must be at most 1 (second), not {spin_wait!r}")
        self._runner = Runner(prepare_threshold, float(spin_wait))
        self._max_retries = check_number("max_retries", max_retries, minimum=0, integer=True)
        connect_timeout = check_number("connect_timeout", connect_timeout, minimum=0.001)
        try:
            params = conninfo_to_dict(dsn)
        except (psycopg.Error, TypeError) as exc:
            raise InvalidConfigError(f"bad Postgres connection string: {exc}") from exc
        self._label = "{}@{}/{}".format(
            params.get("user", ""), params.get("host", "localhost"), params.get("dbname", "")
        )
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": prepare_threshold,
            # libpq takes whole seconds, and treats 1 as 2
            "connect_timeout": max(2, math.ceil(connect_timeout)),
        }
        if "application_name" not in params:
            kwargs["application_name"] = "threadloom"
        self._connections = Connections(
            dsn,
            label=self._label,
            name=f"{POOL_PREFIX}{schema}",
            min_size=min_size,
            max_size=max_size,
            timeout=float(timeout),
            kwargs=kwargs,
        )
        self._setup_lock = threading.Lock()
        self._ready = False
        self._init_runtime(listen_url or dsn, kwargs["connect_timeout"])  # PostgresQueue

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A store for ``postgresql://user:password@host:port/dbname?...`` (or ``postgres://``).

        threadloom's options may be given in the query string and are removed from it before
        the rest goes to libpq: ``schema``, ``pool_min`` (``min_size``), ``pool_max``
        (``max_size``), ``pool_timeout`` (``timeout``), ``prepare_threshold`` (a number or
        ``none``), ``max_retries``, ``connect_timeout``, ``spin_wait``, ``listen_url``. Keyword
        ``options`` override them.

        Raises:
            InvalidConfigError: not a Postgres URL, or a bad option value.
        """
        dsn, merged = split_url(url)
        merged.update(options)
        return cls(dsn, **merged)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._label!r}, schema={self.schema!r})"

    def _failure(self, exc: BaseException, transient: bool, what: str) -> StoreError:
        if transient:
            return StoreUnavailableError(
                f"Postgres {self._label} unavailable ({what}, after {self._max_retries} "
                f"retries): {exc}"
            )
        return StoreError(f"Postgres store failed ({what}) on {self._label}: {exc}")

    def close(self) -> None:
        """Close the pool and its connections. The store may not be used afterwards (calls
        raise ``StoreError``)."""
        self._ready = False
        self._close_runtime()  # the LISTEN thread (PostgresQueue)
        self._connections.close()

    # -- running statements ---------------------------------------------------------------

    def _run(self, fn: Callable[[Connection], _T], what: str, *, ready: bool = True) -> _T:
        """Run ``fn`` (autocommit statements that are safe to repeat) on a pooled connection,
        retrying transient failures and translating every error."""
        if ready and not self._ready:
            self._check_schema()
        attempt = 0
        while True:
            conn = self._connections.get()
            try:
                result = fn(conn)
            except ThreadloomError:
                self._connections.put(conn)
                raise
            except psycopg.Error as exc:
                transient = is_transient(exc, conn)
                self._connections.put(conn)
                if transient and attempt < self._max_retries:
                    attempt += 1
                    self._connections.recover(conn, attempt)
                    continue
                raise self._failure(exc, transient, what) from exc
            except (TypeError, ValueError, OverflowError) as exc:
                self._connections.put(conn)
                raise StoreError(f"Postgres store failed ({what}): {exc}") from exc
            except BaseException:
                self._connections.put(conn, discard=True)
                raise
            self._connections.put(conn)
            return result

    # -- schema ---------------------------------------------------------------------------

    def _schema_version(self, conn: Connection) -> int | None:
        try:
            row = conn.execute(self._sql.schema_version).fetchone()
        except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName):
            return None
        except pg_errors.UndefinedColumn as exc:
            raise self._foreign("its schema_migrations table is another application's") from exc
        if row is None or row[0] is None:
            return None
        if not isinstance(row[0], int):
            raise self._foreign("its schema_migrations table is another application's")
        return row[0]

    def _foreign(self, why: str) -> StoreCorruptError:
        return StoreCorruptError(
            f"schema {self.schema!r} of Postgres {self._label} is not a threadloom schema: "
            f"{why}; choose another schema (?schema=... in the URL)"
        )

    def _check_schema(self) -> None:
        version = self._run(self._schema_version, "schema check", ready=False)
        if version == SCHEMA_VERSION:
            self._ready = True
            return
        raise self._version_error(version)

    def _version_error(self, version: int | None) -> MigrationError:
        if version is not None and version > SCHEMA_VERSION:
            return MigrationError(
                f"schema {self.schema!r} of Postgres {self._label} has version {version}, "
                f"newer than the {SCHEMA_VERSION} this threadloom knows: upgrade threadloom"
            )
        return MigrationError(
            f"schema {self.schema!r} of Postgres {self._label} is at version {version or 0}, "
            f"not {SCHEMA_VERSION}: call setup() (open_store does) to migrate it"
        )

    def setup(self) -> None:
        """Create or migrate the schema. Idempotent, and safe to run from several processes at
        once: the migrations run in one transaction under a transaction-level advisory lock.
        A schema that is already current is only read (no lock, no DDL).

        Raises:
            MigrationError: the schema is newer than this code, or a migration failed
                (nothing of it was applied).
            StoreCorruptError: the schema holds another application's tables under
                threadloom's names (nothing is created in it).
            StoreAccessError: the server refused the connection for good (unknown
                database or role, failed authentication).
            StoreUnavailableError: Postgres cannot be reached.
        """
        if self._connections.closed:
            raise StoreError("the store is closed")
        with self._setup_lock:
            if self._ready:
                return
            version = self._run(self._schema_version, "schema check", ready=False)
            if version is not None and version > SCHEMA_VERSION:
                raise self._version_error(version)
            if version != SCHEMA_VERSION:
                self._run(self._migrate, "setup", ready=False)
            self._ready = True

    def _migrate(self, conn: Connection) -> None:
        sql = self._sql
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(self.schema),))
            conn.execute(sql.create_schema)
            conn.execute(sql.create_migrations)
            current = self._schema_version(conn) or 0
            if current > SCHEMA_VERSION:
                raise self._version_error(current)
            if current == 0:
                clash = conn.execute(sql.clashing_tables, (self.schema, list(TABLES))).fetchall()
                if clash:
                    names = ", ".join(repr(name) for (name,) in clash)
                    raise self._foreign(f"it has table {names} but no threadloom schema version")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                try:
                    for statement in sql.migrations[version - 1]:
                        conn.execute(statement)
                except psycopg.Error as exc:
                    if is_transient(exc, conn):
                        raise
                    raise MigrationError(f"migration {version} failed: {exc}") from exc
                conn.execute(sql.record_migration, (version, time.time()))

    # -- leases ---------------------------------------------------------------------------

    def acquire_lease(
        self, thread_id: str, owner: str, ttl: float, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Lease:
        """Take the thread's lease for ``ttl`` seconds (see the protocol and
        :meth:`MemoryStore.acquire_lease <threadloom.checkpoint.memory.MemoryStore.acquire_lease>`).

        One statement; repeating it after a lost answer is harmless (the holder re-taking its
        unexpired lease keeps the token).

        Raises:
            ThreadBusyError: another owner holds an unexpired lease.
        """

        def acquire(conn: Connection) -> Lease:
            now = time.time()
            expires = now + ttl
            params = {
                "thread_id": thread_id,
                "namespace": namespace,
                "now": now,
                "owner": owner,
                "expires": expires,
            }
            row = conn.execute(self._sql.acquire, params).fetchone()
            if row is not None:
                return Lease(thread_id, owner, row[0], expires, namespace)
            holder = conn.execute(self._sql.lease_holder, (namespace, thread_id)).fetchone()
            raise ThreadBusyError(
                f"thread {thread_id!r} is busy: its lease is held by "
                f"{holder[0] if holder is not None else 'another owner'!r}"
            )

        return self._run(acquire, "acquire_lease")

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a held lease to ``now + ttl`` (an expired one too, if nobody took it).

        Raises:
            LeaseLostError: the token is no longer current (taken over or released).
        """

        def renew(conn: Connection) -> Lease:
            expires = time.time() + ttl
            params = (expires, lease.namespace, lease.thread_id, lease.token)
            cursor = conn.execute(self._sql.renew, params)
            if cursor.rowcount != 1:
                raise LeaseLostError(f"lease on thread {lease.thread_id!r} was lost")
            return Lease(lease.thread_id, lease.owner, lease.token, expires, lease.namespace)

        return self._run(renew, "renew_lease")

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up if ``lease.token`` is still current; otherwise do nothing."""
        self._run(
            lambda conn: conn.execute(
                self._sql.release, (lease.namespace, lease.thread_id, lease.token)
            ),
            "release_lease",
        )

    def takeover_lease(self, held: Lease, owner: str, ttl: float) -> Lease:
        """Take the lease from the holder ``held``, expired or not, with a new token (see the
        protocol). One conditional statement; repeating it after a lost answer is harmless.

        Raises:
            LeaseLostError: ``held.token`` is no longer current.
        """

        def takeover(conn: Connection) -> Lease:
            expires = time.time() + ttl
            params = {"owner": owner, "expires": expires, "thread_id": held.thread_id,
                      "namespace": held.namespace, "token": held.token}
            row = conn.execute(self._sql.takeover, params).fetchone()
            if row is None:
                raise LeaseLostError(
                    f"lease token {held.token} is no longer current on thread "
                    f"{held.thread_id!r}: it was released or taken over meanwhile"
                )
            return Lease(held.thread_id, owner, row[0], expires, held.namespace)

        return self._run(takeover, "takeover_lease")

    # -- the write path -------------------------------------------------------------------

    def commit(self, commits: Sequence[Commit]) -> None:
        """Apply ``commits`` in order, in one transaction (see
        :class:`~threadloom.checkpoint.base.Commit`, and the module docstring for how).

        A batch that asks for no flush commits with ``synchronous_commit = off``: the server
        acknowledges it before its WAL reaches the disk, so it survives the client crashing,
        and the server crashing once its WAL writer has flushed it (within a few hundred
        milliseconds, or at the next flushed commit). If the server crashes before that, a
        later commit that expected the lost checkpoint as its head fails with
        ``CheckpointConflictError`` and the run resumes from the last checkpoint kept.

        Raises:
            LeaseLostError, CheckpointConflictError, RunConflictError: a check failed;
                nothing of the batch was written.
            StoreUnavailableError: Postgres stayed unreachable.
            StoreError: the database failed, run metadata is not JSON-serializable, or the
                checkpoint belongs to another thread than the commit.
        """
        if not commits:
            return
        if not self._ready:
            self._check_schema()
        now = time.time()
        relaxed = not any(c.flush for c in commits)
        statements: list[tuple[bytes, list[Any]]] = []
        try:  # everything that can fail before talking to the server, done first
            for i, c in enumerate(commits):
                statements.append(self._sql.commit(c, now, relaxed and i == 0))
                if c.release_lease and c.lease_token is not None:
                    statements.append((self._sql.release_in_commit,
                                       [c.namespace, c.thread_id, c.lease_token]))
                if c.audit is not None:
                    statements.append((self._q.put_audit_raw,
                                       list(audit_row(stamp_audit(c.audit, now)))))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"cannot store the commit: {exc}") from exc
        attempt = 0
        in_doubt = False  # an earlier attempt may have been applied
        while True:
            try:
                conn = self._connections.get()
            except StoreUnavailableError as exc:
                if in_doubt:
                    exc.args = (f"{exc} (the commit may have been applied)",)
                raise
            try:
                self._execute_commit(conn, statements, not relaxed)
            except psycopg.Error as exc:
                failure = check_failure(exc)
                transient = failure is None and is_transient(exc, conn)
                lost = conn.broken or conn.closed
                self._connections.put(conn)
                if failure is not None:
                    if (
                        in_doubt
                        and isinstance(failure, CheckpointConflictError)
                        and self._was_applied(commits)
                    ):
                        return
                    raise failure from None
                if transient and attempt < self._max_retries:
                    in_doubt = in_doubt or lost
                    attempt += 1
                    self._connections.recover(conn, attempt)
                    continue
                error = self._failure(exc, transient, "commit")
                if in_doubt or lost:
                    error.args = (f"{error} (the commit may have been applied)",)
                raise error from exc
            except (TypeError, ValueError, OverflowError) as exc:
                self._connections.put(conn)
                raise StoreError(f"Postgres store failed (commit): {exc}") from exc
            except BaseException:
                self._connections.put(conn, discard=True)
                raise
            self._connections.put(conn)
            return

    def _execute_commit(
        self, conn: Connection, statements: list[tuple[bytes, list[Any]]], flushed: bool
    ) -> None:
        """Run the batch's statements as one transaction: a single statement alone (autocommit),
        several in a pipeline (the implicit transaction that ends at the sync). The runner
        may poll for a flushed batch's answer: in ``sync`` durability the run waits for
        every commit; in ``async`` only a run's last commit and the writer's flush every
        ``FLUSH_SECONDS`` are flushed, too rare to take the CPU from the run."""
        if len(statements) == 1:
            sql, params = statements[0]
            self._runner.execute(conn, sql, params, spin=flushed)
        else:
            self._runner.execute_batch(conn, statements, spin=flushed)

    def _was_applied(self, commits: Sequence[Commit]) -> bool:
        """After a lost connection and a replay that conflicted: whether every checkpoint of
        the batch is stored as the batch wrote it, i.e. the first attempt was applied (a
        transaction is all or nothing, so one would be enough; all are checked)."""
        written = [(c.namespace, c.checkpoint) for c in commits if c.checkpoint is not None]
        return bool(written) and all(
            same_checkpoint(
                self.get_checkpoint(cp.thread_id, cp.checkpoint_ns, cp.seq, namespace=ns), cp
            )
            for ns, cp in written
        )

    # -- reads ----------------------------------------------------------------------------

    def _select(
        self,
        what: str,
        sql: str | bytes,
        params: Sequence[Any],
        convert: Callable[[Sequence[Any]], _T],
        *,
        raw: bool = False,
    ) -> list[_T]:
        """The rows of one query (binary results), converted; ``raw``: ``$n`` placeholders."""

        def query(conn: Connection) -> list[_T]:
            cursor = psycopg.RawCursor(conn) if raw else conn.cursor()
            return [convert(row) for row in cursor.execute(sql, params, binary=True)]

        return self._run(query, what)

    def get_checkpoint(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        seq: int | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> CheckpointRecord | None:
        """The checkpoint ``seq`` of the thread, or its latest when ``seq`` is ``None``."""
        sql, params = self._sql.select_checkpoint(namespace, thread_id, checkpoint_ns, seq)
        found = self._select(
            "get_checkpoint", sql, params, lambda r: checkpoint_record(thread_id, checkpoint_ns, r)
        )
        return found[0] if found else None

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
        sql, params = self._sql.select_checkpoints(
            namespace, thread_id, checkpoint_ns, before, run_id, source, limit
        )
        return self._select(
            "list_checkpoints",
            sql,
            params,
            lambda r: checkpoint_record(thread_id, checkpoint_ns, r),
        )

    def list_checkpoint_namespaces(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[str]:
        """The checkpoint namespaces holding checkpoints of the thread, sorted."""
        return self._select(
            "list_checkpoint_namespaces", self._sql.checkpoint_namespaces,
            (namespace, thread_id), lambda r: str(r[0]),
        )

    def get_blobs(
        self,
        thread_id: str,
        checkpoint_ns: str,
        wants: Mapping[str, tuple[int, int]],
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[BlobRecord]:
        """For each ``channel -> (base, version)`` in ``wants``, every blob of that channel
        with ``base <= blob.version <= version`` (in any order): one statement, with one
        index range scan per channel."""
        if not wants:
            return []
        sql, params, raw = self._sql.select_blobs(namespace, thread_id, checkpoint_ns, wants)
        return self._select("get_blobs", sql, params, lambda r: BlobRecord(*r), raw=raw)

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
        params: tuple[Any, ...] = (namespace, thread_id, checkpoint_ns, seq)
        sql = self._sql.writes
        if task_id is not None:
            sql, params = self._sql.task_writes, (*params, task_id)
        return self._select("get_writes", sql, params, lambda r: WriteRecord(*r))

# -- LangGraph-shaped names -------------------------------------------------------------------


class PostgresSaver(PostgresStore):
    """LangGraph's name for the Postgres checkpointer.

    :meth:`from_conn_string` opens a store on a URL or connection string, sets the schema up,
    and closes the store when the block ends::

        with PostgresSaver.from_conn_string("postgresql://app@db/threadloom") as saver:
            graph = builder.compile(checkpointer=saver)
    """

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, **options: Any) -> Iterator[PostgresSaver]:
        """A set-up saver on ``conn_string``, closed when the ``with`` block ends."""
        saver = _open_saver(cls, conn_string, options)
        try:
            yield saver
        finally:
            saver.close()


class AsyncPostgresSaver(PostgresStore):
    """LangGraph's name for the async Postgres checkpointer.

    The engine calls stores synchronously from its worker threads (also for ``ainvoke``), so
    this is the same store as :class:`PostgresSaver`; only :meth:`from_conn_string` is an
    async context manager::

        async with AsyncPostgresSaver.from_conn_string(url) as saver:
            graph = builder.compile(checkpointer=saver)
    """

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls, conn_string: str, **options: Any
    ) -> AsyncIterator[AsyncPostgresSaver]:
        """A set-up saver on ``conn_string``, closed when the ``async with`` block ends."""
        saver = _open_saver(cls, conn_string, options)
        try:
            yield saver
        finally:
            saver.close()


_S = TypeVar("_S", bound=PostgresStore)


def _open_saver(cls: type[_S], conn_string: str, options: dict[str, Any]) -> _S:
    if conn_string.lower().startswith(("postgres://", "postgresql://")):
        store = cls.from_url(conn_string, **options)
    else:
        store = cls(conn_string, **options)
    try:
        store.setup()
    except BaseException:
        store.close()
        raise
    return store
