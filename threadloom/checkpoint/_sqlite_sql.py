"""The SQLite store's schema, its prebuilt SQL, the commit writer and row conversions.

Private to :mod:`threadloom.checkpoint.sqlite`, which owns connections, transactions, retries
and error translation; everything here runs on a connection it is handed. The hot paths use
the SQL strings below as they are (never formatted per call), so ``sqlite3``'s statement
cache prepares each once per connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from threadloom.checkpoint._queue_common import AUDIT_COLS, audit_row, stamp_audit
from threadloom.checkpoint._queue_schema import AUDIT_SQLITE_MIGRATION, SQLITE_MIGRATION
from threadloom.checkpoint._rows import (
    INDEXED,
    UNFINISHED,
    channels_json,
    checkpoint_record,
    execution_rows,
    names_json,
    run_rows,
)
from threadloom.checkpoint._run_logs import SQLITE_RUN_LOGS_MIGRATION
from threadloom.checkpoint.base import (
    ANY_HEAD,
    DEFAULT_NAMESPACE,
    AuditEvent,
    Commit,
    Lease,
    RunRecord,
)
from threadloom.errors import (
    CheckpointConflictError,
    LeaseLostError,
    MigrationError,
    RunConflictError,
    StoreCorruptError,
    StoreError,
    ThreadBusyError,
)

# -- schema -------------------------------------------------------------------------------
#
# Every table is WITHOUT ROWID: its primary key is the table, so a row costs one b-tree
# insert instead of two and a blob chain is read from the key's leaf pages alone. A step
# commit dirties about a dozen pages; each one is a WAL frame, so secondary indexes are few
# and an upsert only sets the columns that may change (SQLite rewrites an index entry
# whenever a SET lists one of its columns, even with the same value).

EXECUTION_COLUMNS = (
    "id TEXT NOT NULL, run_id TEXT NOT NULL, thread_id TEXT NOT NULL, graph TEXT NOT NULL,"
    " node TEXT NOT NULL, step INTEGER NOT NULL, status TEXT NOT NULL, namespace TEXT NOT NULL,"
    " attempt INTEGER NOT NULL, inputs BLOB, outputs BLOB, error TEXT, parents TEXT NOT NULL,"
    " attempts TEXT NOT NULL, checkpoint_seq INTEGER, created_at REAL NOT NULL,"
    " started_at REAL, ended_at REAL"
)
# Executions by namespace and status, for the ones that did not succeed: nearly every step
# records a succeeded execution, and an index entry for it would cost a page per commit
# (queries: see _rows.where_clause).
UNFINISHED_INDEX = (
    f"CREATE INDEX executions_namespace_status ON executions (namespace, status) WHERE {UNFINISHED}"
)
STATUS_INDEX = (
    f"CREATE INDEX executions_namespace_status ON executions (namespace, status) WHERE {INDEXED}"
)

RUN_COLUMNS = (
    "run_id TEXT NOT NULL, thread_id TEXT NOT NULL, graph TEXT NOT NULL,"
    " status TEXT NOT NULL, namespace TEXT NOT NULL, input BLOB, output BLOB, error TEXT,"
    " durability TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    " started_at REAL, ended_at REAL, steps INTEGER NOT NULL,"
    " executions INTEGER NOT NULL, resumed_from TEXT, metadata TEXT NOT NULL"
)
_RUN_NAMES = (
    "run_id, thread_id, graph, status, namespace, input, output, error, durability, "
    "created_at, updated_at, started_at, ended_at, steps, executions, resumed_from, metadata"
)
_EXEC_NAMES = (
    "id, run_id, thread_id, graph, node, step, status, namespace, attempt, inputs, outputs, "
    "error, parents, attempts, checkpoint_seq, created_at, started_at, ended_at"
)
_DEFAULT = f"'{DEFAULT_NAMESPACE}'"

NAMESPACE_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE threads_v7 (
        namespace TEXT NOT NULL, thread_id TEXT NOT NULL, created_at REAL NOT NULL,
        updated_at REAL NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', lease_owner TEXT,
        lease_token INTEGER NOT NULL DEFAULT 0, lease_expires_at REAL,
        PRIMARY KEY (namespace, thread_id)
    ) WITHOUT ROWID""",
    f"INSERT INTO threads_v7 SELECT {_DEFAULT}, thread_id, created_at, updated_at, metadata,"
    " lease_owner, lease_token, lease_expires_at FROM threads",
    "DROP TABLE threads",
    "ALTER TABLE threads_v7 RENAME TO threads",
    "CREATE INDEX threads_namespace_updated ON threads (namespace, updated_at)",
    """CREATE TABLE checkpoints_v7 (
        namespace TEXT NOT NULL, thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL,
        seq INTEGER NOT NULL, parent_seq INTEGER, run_id TEXT, step INTEGER NOT NULL,
        source TEXT NOT NULL, created_at REAL NOT NULL, channels TEXT NOT NULL,
        next TEXT NOT NULL, metadata BLOB NOT NULL, frontier BLOB NOT NULL,
        PRIMARY KEY (namespace, thread_id, checkpoint_ns, seq)
    ) WITHOUT ROWID""",
    f"INSERT INTO checkpoints_v7 SELECT {_DEFAULT}, * FROM checkpoints",
    "DROP TABLE checkpoints",
    "ALTER TABLE checkpoints_v7 RENAME TO checkpoints",
    """CREATE TABLE blobs_v7 (
        namespace TEXT NOT NULL, thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL,
        channel TEXT NOT NULL, version INTEGER NOT NULL, prev INTEGER, data BLOB NOT NULL,
        PRIMARY KEY (namespace, thread_id, checkpoint_ns, channel, version)
    ) WITHOUT ROWID""",
    f"INSERT INTO blobs_v7 SELECT {_DEFAULT}, * FROM blobs",
    "DROP TABLE blobs",
    "ALTER TABLE blobs_v7 RENAME TO blobs",
    """CREATE TABLE writes_v7 (
        namespace TEXT NOT NULL, thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL,
        seq INTEGER NOT NULL, task_id TEXT NOT NULL, channel TEXT NOT NULL,
        idx INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (namespace, thread_id, checkpoint_ns, seq, task_id, channel, idx)
    ) WITHOUT ROWID""",
    f"INSERT INTO writes_v7 SELECT {_DEFAULT}, * FROM writes",
    "DROP TABLE writes",
    "ALTER TABLE writes_v7 RENAME TO writes",
    f"CREATE TABLE runs_v7 ({RUN_COLUMNS}, PRIMARY KEY (namespace, run_id)) WITHOUT ROWID",
    f"INSERT INTO runs_v7 ({_RUN_NAMES}) SELECT"
    f" {_RUN_NAMES.replace('namespace', _DEFAULT)} FROM runs",
    "DROP TABLE runs",
    "ALTER TABLE runs_v7 RENAME TO runs",
    "CREATE INDEX runs_thread ON runs (namespace, thread_id, created_at)",
    "CREATE INDEX runs_status ON runs (namespace, status, created_at)",
    "CREATE INDEX runs_namespace_created ON runs (namespace, created_at)",
    "CREATE INDEX runs_graph ON runs (namespace, graph, created_at)",
    f"CREATE TABLE executions_v7 ({EXECUTION_COLUMNS},"
    " PRIMARY KEY (namespace, thread_id, id)) WITHOUT ROWID",
    f"INSERT INTO executions_v7 ({_EXEC_NAMES}) SELECT"
    f" {_EXEC_NAMES.replace('namespace', _DEFAULT)} FROM executions",
    "DROP TABLE executions",
    "ALTER TABLE executions_v7 RENAME TO executions",
    # By run id alone: an entry carries the key too, so it is (run_id, namespace, ...), and
    # SQLite (without statistics) uses it for "namespace = ? AND run_id = ?"; led by the
    # namespace, it lost to a scan of the key's namespace prefix.
    "CREATE INDEX executions_run ON executions (run_id)",
    STATUS_INDEX,
)

# Keyset pages of a namespace's executions (the seed 001 routes): by (created_at, id), and
# by status in that order. The by-status index keeps its condition
# (no step status), so it costs a step commit nothing more; the by-time index gets an entry
# per execution, appended at its right edge (see docs/decisions.md, "Seed 001 routes").
SEED_LIST_MIGRATION: tuple[str, ...] = (
    "CREATE INDEX executions_namespace_created ON executions (namespace, created_at, id)",
    "DROP INDEX executions_namespace_status",
    "CREATE INDEX executions_namespace_status ON executions (namespace, status, created_at, id)"
    f" WHERE {INDEXED}",
)

RUN_TELEMETRY_MIGRATION: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN traceparent TEXT",
    "ALTER TABLE runs ADD COLUMN stats TEXT NOT NULL DEFAULT '{}'",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial schema.
    (
        """CREATE TABLE threads (
            thread_id TEXT PRIMARY KEY, namespace TEXT NOT NULL,
            namespace_set INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}', lease_owner TEXT,
            lease_token INTEGER NOT NULL DEFAULT 0, lease_expires_at REAL
        ) WITHOUT ROWID""",
        "CREATE INDEX threads_namespace_updated ON threads (namespace, updated_at)",
        """CREATE TABLE checkpoints (
            thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL, seq INTEGER NOT NULL,
            parent_seq INTEGER, run_id TEXT, step INTEGER NOT NULL, source TEXT NOT NULL,
            created_at REAL NOT NULL, channels TEXT NOT NULL, next TEXT NOT NULL,
            metadata BLOB NOT NULL, frontier BLOB NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX checkpoints_run ON checkpoints (run_id)",
        """CREATE TABLE blobs (
            thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL, channel TEXT NOT NULL,
            version INTEGER NOT NULL, prev INTEGER, data BLOB NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
        ) WITHOUT ROWID""",
        """CREATE TABLE writes (
            thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL, seq INTEGER NOT NULL,
            task_id TEXT NOT NULL, channel TEXT NOT NULL, idx INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, seq, task_id, channel, idx)
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, graph TEXT NOT NULL,
            status TEXT NOT NULL, namespace TEXT NOT NULL, input BLOB, output BLOB, error TEXT,
            durability TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            started_at REAL, ended_at REAL, steps INTEGER NOT NULL,
            executions INTEGER NOT NULL, resumed_from TEXT, metadata TEXT NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX runs_thread ON runs (thread_id, created_at)",
        "CREATE INDEX runs_status ON runs (status, created_at)",
        "CREATE INDEX runs_namespace_created ON runs (namespace, created_at)",
        "CREATE INDEX runs_graph ON runs (graph, created_at)",
        f"CREATE TABLE executions ({EXECUTION_COLUMNS}, PRIMARY KEY (id)) WITHOUT ROWID",
        "CREATE INDEX executions_run ON executions (run_id)",
        "CREATE INDEX executions_thread ON executions (thread_id)",
        "CREATE INDEX executions_namespace_status ON executions (namespace, status)",
    ),
    # 2: checkpoints are only ever listed by run within one thread (its primary key's
    # prefix), so the run index only cost a page per step commit.
    ("DROP INDEX checkpoints_run",),
    # 3: UNFINISHED_INDEX (see there).
    ("DROP INDEX executions_namespace_status", UNFINISHED_INDEX),
    # 4: executions keyed by (thread, id) instead of a hash id alone. A step commit inserted
    # into a random leaf of one table that spans every thread, and the leaves of a big
    # database are mostly not in the page cache; clustered by thread, a run's inserts land
    # on its own few leaves, and the thread index is gone (the key serves it).
    (
        f"CREATE TABLE executions_by_thread ({EXECUTION_COLUMNS},"
        " PRIMARY KEY (thread_id, id)) WITHOUT ROWID",
        "INSERT INTO executions_by_thread SELECT * FROM executions",
        "DROP TABLE executions",
        "ALTER TABLE executions_by_thread RENAME TO executions",
        "CREATE INDEX executions_run ON executions (run_id)",
        UNFINISHED_INDEX,
    ),
    # 5: fencing tokens that survive deleting a thread. ``retired`` is the highest token of
    # every deleted thread (delete_thread raises it), and a lease is granted above both it
    # and the thread's own last token, so a thread created again never reissues a token a
    # holder of its earlier incarnation may still carry. Existing stores start the mark at
    # their highest token.
    (
        "CREATE TABLE lease_tokens (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " retired INTEGER NOT NULL)",
        "INSERT INTO lease_tokens SELECT 1, COALESCE(MAX(lease_token), 0) FROM threads",
    ),
    # 6: RUNNING leaves the by-status index too (see _rows.STEP_STATUSES): every step
    # records its next executions RUNNING, and their index entries cost a page per commit.
    ("DROP INDEX executions_namespace_status", STATUS_INDEX),
    # 7: the runtime's tables: run queue, run events, workers, API keys (_queue_schema).
    SQLITE_MIGRATION,
    # 8: namespaces. Every key starts with the namespace, so two namespaces hold the same
    # thread and run ids; every existing record moves into "default" (ids were unique across
    # the store, so nothing collides). A thread's namespace is its key now, not a column the
    # first commit sets: namespace_set goes.
    NAMESPACE_MIGRATION,
    # 9: the audit log (issue 13; _queue_schema).
    AUDIT_SQLITE_MIGRATION,
    # 10: keyset pages of executions (SEED_LIST_MIGRATION).
    SEED_LIST_MIGRATION,
    # 11: the logs kept with each run (issue 14; _run_logs).
    SQLITE_RUN_LOGS_MIGRATION,
    # 12: a run's trace parent and statistics (issue 14; RunRecord.traceparent, .stats).
    RUN_TELEMETRY_MIGRATION,
)
"""The numbered migrations: ``MIGRATIONS[n - 1]`` holds the statements of version ``n``."""

SCHEMA_VERSION = len(MIGRATIONS)

_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
# threadloom's tables: a database holding one of them but no threadloom schema version is
# another application's (other tables are left alone, as a shared file may hold them)
_TABLES = frozenset({"threads", "checkpoints", "blobs", "writes", "runs", "executions"})


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` is another connection's lock (worth waiting for)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    message = str(exc)
    return "locked" in message or "busy" in message


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Apply the missing migrations, in the caller's transaction.

    Raises:
        MigrationError: the schema is newer than this code, or a migration failed.
        StoreCorruptError: the database holds another application's tables under
            threadloom's names (or its own ``schema_migrations``).
        sqlite3.OperationalError: busy or locked (the caller retries).
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")}
    if columns and columns != {"version", "applied_at"}:
        raise _foreign(path, "its schema_migrations table is another application's")
    if not columns:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        clash = sorted(_TABLES.intersection(name for (name,) in tables))
        if clash:
            raise _foreign(
                path, f"it has table {', '.join(map(repr, clash))} but no threadloom schema"
            )
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
        )
    current = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
    if current > SCHEMA_VERSION:
        raise MigrationError(
            f"SQLite database {path!r} has schema version {current}, newer than the "
            f"{SCHEMA_VERSION} this threadloom knows: upgrade threadloom"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        try:
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise
            raise MigrationError(f"migration {version} failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise MigrationError(f"migration {version} failed: {exc}") from exc
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (version, time.time()),
        )


def _foreign(path: str, why: str) -> StoreCorruptError:
    return StoreCorruptError(
        f"SQLite database {path!r} is not a threadloom database: {why}; "
        "point the store at a threadloom database, or at a new file"
    )

# -- prebuilt SQL of the hot paths ----------------------------------------------------------

# ?1 is the namespace and ?2 the thread in the statements that take both.
SQL_CHECK = (
    "SELECT (SELECT lease_token FROM threads WHERE namespace = ?1 AND thread_id = ?2"
    " AND lease_owner IS NOT NULL), (SELECT MAX(seq) FROM checkpoints WHERE namespace = ?1"
    " AND thread_id = ?2 AND checkpoint_ns = ?3)"
)
# A leased writer's thread row exists (the lease made it): one statement reads the lease and
# the head for the checks, and whether the row needs touching (see write_commits).
SQL_CHECK_LEASED = (
    "SELECT lease_owner, lease_token, updated_at, (SELECT MAX(seq) FROM checkpoints"
    " WHERE namespace = ?1 AND thread_id = ?2 AND checkpoint_ns = ?3)"
    " FROM threads WHERE namespace = ?1 AND thread_id = ?2"
)
SQL_TOUCH_LEASED = "UPDATE threads SET updated_at = ?3 WHERE namespace = ?1 AND thread_id = ?2"
TOUCH_SECONDS = 1.0
"""While a leased writer commits steps, its thread's ``updated_at`` is moved at most this
often (and whenever a commit carries a run record): rewriting the row and its index entry on
every step would cost two more pages per commit."""
SQL_INSERT_CHECKPOINT = "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SQL_PUT_BLOB = "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?)"
SQL_PUT_WRITE = "INSERT OR REPLACE INTO writes VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
RUN_COLS = _RUN_NAMES + ", traceparent, stats"
# A run's thread, graph and created_at are fixed by its first record. The update only
# applies to a run of the same thread, so the row count reveals a conflict.
SQL_PUT_RUN = (
    f"INSERT INTO runs ({RUN_COLS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (namespace, run_id) DO UPDATE SET status = excluded.status,"
    " input = excluded.input,"
    " output = excluded.output, error = excluded.error, durability = excluded.durability,"
    " updated_at = excluded.updated_at, started_at = excluded.started_at,"
    " ended_at = excluded.ended_at, steps = excluded.steps, executions = excluded.executions,"
    " resumed_from = excluded.resumed_from, metadata = excluded.metadata,"
    " traceparent = excluded.traceparent, stats = excluded.stats"
    " WHERE runs.thread_id = excluded.thread_id"
)
# A step's commit sets the counters only: no indexed column changes, so no index is touched.
SQL_RUN_PROGRESS = (
    "UPDATE runs SET steps = ?, executions = ?, updated_at = ?"
    " WHERE namespace = ? AND run_id = ? AND thread_id = ?"
)
EXEC_COLS = _EXEC_NAMES
# An execution is keyed by its commit's namespace and thread; its created_at is fixed by its
# first record (the keyset order of the by-time index; not listing it in SET also spares
# that index a rewrite per update).
SQL_PUT_EXECUTION = (
    f"INSERT INTO executions ({EXEC_COLS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (namespace, thread_id, id) DO UPDATE SET run_id = excluded.run_id,"
    " graph = excluded.graph,"
    " node = excluded.node, step = excluded.step, status = excluded.status,"
    " attempt = excluded.attempt, inputs = excluded.inputs, outputs = excluded.outputs,"
    " error = excluded.error, parents = excluded.parents, attempts = excluded.attempts,"
    " checkpoint_seq = excluded.checkpoint_seq,"
    " started_at = excluded.started_at, ended_at = excluded.ended_at"
)
SQL_TOUCH_THREAD = (
    "INSERT INTO threads (namespace, thread_id, created_at, updated_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (namespace, thread_id) DO UPDATE SET updated_at = excluded.updated_at"
)
CP_COLS = "seq, parent_seq, run_id, step, source, created_at, channels, next, metadata, frontier"
SQL_LATEST = (
    f"SELECT {CP_COLS} FROM checkpoints WHERE namespace = ? AND thread_id = ?"
    " AND checkpoint_ns = ? ORDER BY seq DESC LIMIT 1"
)
SQL_CHECKPOINT = (
    f"SELECT {CP_COLS} FROM checkpoints WHERE namespace = ? AND thread_id = ?"
    " AND checkpoint_ns = ? AND seq = ?"
)
SQL_BLOB_RANGE = (
    "SELECT channel, version, prev, data FROM blobs WHERE namespace = ?1 AND thread_id = ?2"
    " AND checkpoint_ns = ?3 AND channel = ?{} AND version BETWEEN ?{} AND ?{}"
)
BLOB_CHUNK = 32  # channels per UNION ALL query
BLOB_SQL: list[str] = [
    " UNION ALL ".join(SQL_BLOB_RANGE.format(4 + 3 * i, 5 + 3 * i, 6 + 3 * i) for i in range(n))
    for n in range(BLOB_CHUNK + 1)
]
THREAD_COLS = (
    "thread_id, namespace, created_at, updated_at, metadata, lease_owner, lease_token, "
    "lease_expires_at"
)


# -- leases -------------------------------------------------------------------------------
#
# Each runs inside the caller's BEGIN IMMEDIATE transaction. One statement reads the thread's
# lease and the retired-token mark (migration 5); the thread's columns are NULL when it has no
# row yet. The mark is one for the whole store (every namespace), so a token is never
# reissued for a (namespace, thread) either.

SQL_LEASE_STATE = (
    "SELECT t.lease_owner, t.lease_token, t.lease_expires_at,"
    " coalesce((SELECT retired FROM lease_tokens), 0) FROM (SELECT 1)"
    " LEFT JOIN threads t ON t.namespace = ? AND t.thread_id = ?"
)
SQL_TAKE_LEASE = (
    "UPDATE threads SET lease_owner = ?, lease_token = ?, lease_expires_at = ?"
    " WHERE namespace = ? AND thread_id = ?"
)


def acquire_lease(
    conn: sqlite3.Connection, namespace: str, thread_id: str, owner: str, ttl: float
) -> Lease:
    """The body of ``SqliteStore.acquire_lease``."""
    now = time.time()
    expires = now + ttl
    holder, token, held_until, retired = conn.execute(
        SQL_LEASE_STATE, (namespace, thread_id)
    ).fetchone()
    if token is None:
        token = retired + 1
        conn.execute(
            "INSERT INTO threads (namespace, thread_id, created_at, updated_at, lease_owner,"
            " lease_token, lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (namespace, thread_id, now, now, owner, token, expires),
        )
        return Lease(thread_id, owner, token, expires, namespace)
    if holder is not None and held_until > now:
        if holder != owner:
            raise ThreadBusyError(
                f"thread {thread_id!r} is busy: its lease is held by {holder!r}"
            )
    else:
        token = max(token, retired) + 1
    conn.execute(SQL_TAKE_LEASE, (owner, token, expires, namespace, thread_id))
    return Lease(thread_id, owner, token, expires, namespace)


def takeover_lease(conn: sqlite3.Connection, held: Lease, owner: str, ttl: float) -> Lease:
    """The body of ``SqliteStore.takeover_lease``."""
    ns, thread_id = held.namespace, held.thread_id
    holder, token, _, retired = conn.execute(SQL_LEASE_STATE, (ns, thread_id)).fetchone()
    expires = time.time() + ttl
    if holder is not None and holder == owner:  # a repeated call
        conn.execute(SQL_TAKE_LEASE, (owner, token, expires, ns, thread_id))
        return Lease(thread_id, owner, token, expires, ns)
    if holder is None or token != held.token:
        raise LeaseLostError(
            f"lease token {held.token} is no longer current on thread {thread_id!r}:"
            " it was released or taken over meanwhile"
        )
    token = max(token, retired) + 1
    conn.execute(SQL_TAKE_LEASE, (owner, token, expires, ns, thread_id))
    return Lease(thread_id, owner, token, expires, ns)


def delete_thread(conn: sqlite3.Connection, namespace: str, thread_id: str) -> None:
    """The body of ``SqliteStore.delete_thread``: the thread's token is retired first."""
    key = (namespace, thread_id)
    conn.execute(
        "INSERT INTO lease_tokens (id, retired) SELECT 1, lease_token FROM threads"
        " WHERE namespace = ? AND thread_id = ? ON CONFLICT (id) DO UPDATE"
        " SET retired = max(retired, excluded.retired)",
        key,
    )
    for table in ("checkpoints", "blobs", "writes", "runs", "executions", "run_logs",
                  "threads"):
        conn.execute(f"DELETE FROM {table} WHERE namespace = ? AND thread_id = ?", key)


# -- the write path ----------------------------------------------------------------------


SQL_RELEASE_LEASE = (
    "UPDATE threads SET lease_owner = NULL, lease_expires_at = NULL"
    " WHERE namespace = ? AND thread_id = ? AND lease_token = ? AND lease_owner IS NOT NULL"
)


def write_commits(conn: sqlite3.Connection, commits: Sequence[Commit]) -> None:
    """Check and write ``commits`` in order inside the caller's open transaction; raise on
    the first failed check (the caller rolls back)."""
    execute = conn.execute
    executemany = conn.executemany
    now = time.time()
    for c in commits:
        thread_id = c.thread_id
        space = c.namespace
        cp = c.checkpoint
        ns = cp.checkpoint_ns if cp is not None else ""
        token = c.lease_token
        touched = False
        if token is not None:
            row = execute(SQL_CHECK_LEASED, (space, thread_id, ns)).fetchone()
            if row is None:
                current = head = None
            else:
                owner, lease_token, updated_at, head = row
                current = lease_token if owner is not None else None
                if c.runs or updated_at < now - TOUCH_SECONDS:
                    execute(SQL_TOUCH_LEASED, (space, thread_id, now))
                touched = True
        elif c.expected_head is not ANY_HEAD:
            current, head = execute(SQL_CHECK, (space, thread_id, ns)).fetchone()
        if token is not None or c.expected_head is not ANY_HEAD:
            if token is not None and token != current:
                raise LeaseLostError(f"lease token {token} is not current on thread {thread_id!r}")
            if c.expected_head is not ANY_HEAD and c.expected_head != head:
                raise CheckpointConflictError(
                    f"thread {thread_id!r} moved on: its latest checkpoint is {head}, "
                    f"not {c.expected_head}"
                )
        if c.runs:
            rows = run_rows(c.runs, space)
            if executemany(SQL_PUT_RUN, rows).rowcount != len(rows):
                raise_run_conflict(conn, space, c.runs)
        progress = c.progress
        if progress is not None:
            execute(SQL_RUN_PROGRESS, (progress.steps, progress.executions,
                                       progress.updated_at, space, progress.run_id, thread_id))
        if cp is not None:
            if cp.thread_id != thread_id:
                raise StoreError(
                    f"a commit for thread {thread_id!r} carries a checkpoint of "
                    f"thread {cp.thread_id!r}"
                )
            try:
                execute(
                    SQL_INSERT_CHECKPOINT,
                    (
                        space,
                        thread_id,
                        ns,
                        cp.seq,
                        cp.parent_seq,
                        cp.run_id,
                        cp.step,
                        cp.source,
                        cp.created_at,
                        channels_json(cp.channels),
                        names_json(cp.next),
                        cp.metadata,
                        cp.frontier,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise CheckpointConflictError(
                    f"checkpoint {cp.seq} already exists on thread {thread_id!r}"
                ) from exc
            if cp.blobs:
                executemany(
                    SQL_PUT_BLOB,
                    [
                        (space, thread_id, ns, b.channel, b.version, b.prev, b.data)
                        for b in cp.blobs
                    ],
                )
        if c.writes:
            executemany(
                SQL_PUT_WRITE,
                [
                    (space, w.thread_id, w.checkpoint_ns, w.seq, w.task_id, w.channel, w.idx,
                     w.data)
                    for w in c.writes
                ],
            )
        if c.executions:
            executemany(SQL_PUT_EXECUTION, execution_rows(c.executions, thread_id, space))
        if not touched:
            execute(SQL_TOUCH_THREAD, (space, thread_id, now, now))
        if c.release_lease and token is not None:
            execute(SQL_RELEASE_LEASE, (space, thread_id, token))
        if c.audit is not None:
            write_audit(conn, c.audit, now)


SQL_PUT_AUDIT = f"INSERT INTO audit_log ({AUDIT_COLS}) VALUES ({', '.join('?' * 10)})"


def write_audit(conn: sqlite3.Connection, event: AuditEvent | None, now: float) -> None:
    """Append ``event`` (if any) inside the caller's transaction."""
    if event is not None:
        conn.execute(SQL_PUT_AUDIT, audit_row(stamp_audit(event, now)))


def raise_run_conflict(
    conn: sqlite3.Connection, namespace: str, runs: Sequence[RunRecord]
) -> None:
    for run in runs:
        row = conn.execute(
            "SELECT thread_id FROM runs WHERE namespace = ? AND run_id = ?",
            (namespace, run.run_id),
        ).fetchone()
        if row is not None and row[0] != run.thread_id:
            raise RunConflictError(
                f"run {run.run_id!r} belongs to thread {row[0]!r}, not {run.thread_id!r}"
            )
    raise RunConflictError("a run of the commit belongs to another thread")


def prune_checkpoints(conn: sqlite3.Connection, namespace: str, thread_id: str, keep: int) -> int:
    """Retention: the body of ``SqliteStore.prune_checkpoints`` (inside its transaction)."""
    from threadloom.checkpoint.delta import blob_floors

    thread = (namespace, thread_id)
    rows = conn.execute(
        f"SELECT {CP_COLS} FROM checkpoints WHERE namespace = ? AND thread_id = ?"
        " AND checkpoint_ns = '' ORDER BY seq DESC",
        thread,
    ).fetchall()
    if len(rows) <= keep:
        return 0
    kept = [checkpoint_record(thread_id, "", row) for row in rows[:keep]]
    cutoff = kept[-1].seq
    floors = blob_floors(kept)
    key = (*thread, cutoff)
    root = "namespace = ? AND thread_id = ? AND checkpoint_ns = ''"
    conn.execute(f"DELETE FROM checkpoints WHERE {root} AND seq < ?", key)
    conn.execute(f"DELETE FROM writes WHERE {root} AND seq < ?", key)
    distinct = f"SELECT DISTINCT channel FROM blobs WHERE {root}"
    channels = [r[0] for r in conn.execute(distinct, thread)]
    for channel in channels:
        floor = floors.get(channel)
        if floor is None:
            conn.execute(f"DELETE FROM blobs WHERE {root} AND channel = ?", (*thread, channel))
        else:
            conn.execute(
                f"DELETE FROM blobs WHERE {root} AND channel = ? AND version < ?",
                (*thread, channel, floor),
            )
    return len(rows) - keep


def delete_runs(conn: sqlite3.Connection, created_before: float, namespace: str | None) -> int:
    """Retention: the body of ``SqliteStore.delete_runs`` (inside its transaction);
    ``namespace=None``: in every namespace."""
    sql = (
        "SELECT namespace, run_id FROM runs WHERE created_at < ? "
        "AND status IN ('succeeded', 'failed', 'cancelled')"
    )
    params: list[Any] = [created_before]
    if namespace is not None:
        sql += " AND namespace = ?"
        params.append(namespace)
    by_namespace: dict[str, list[str]] = {}
    for space, run_id in conn.execute(sql, params).fetchall():
        by_namespace.setdefault(space, []).append(run_id)
    for space, run_ids in by_namespace.items():
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for table in ("executions", "run_logs", "runs"):
                conn.execute(
                    f"DELETE FROM {table} WHERE namespace = ? AND run_id IN ({marks})",
                    (space, *chunk),
                )
    return sum(len(run_ids) for run_ids in by_namespace.values())
