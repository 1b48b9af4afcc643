"""The runtime's tables (run queue, run events, workers, API keys): one numbered migration for
each SQL backend, appended to its ``MIGRATIONS`` (SQLite 7, Postgres 6).

Kept apart from the backends' SQL modules so that they can import it without importing the
queue code. The queue is read in two ways: claims walk the open rows (``status <> 'done'``)
oldest first, and check a candidate's thread for an older or held row; both are partial
indexes over the open rows, which stay few however many runs have finished. Postgres text
keys use the "C" collation, as the rest of its schema.
"""

from __future__ import annotations

__all__ = [
    "AUDIT_POSTGRES_MIGRATION",
    "AUDIT_SQLITE_MIGRATION",
    "POSTGRES_MIGRATION",
    "SQLITE_MIGRATION",
]

SQLITE_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE run_queue (
        namespace TEXT NOT NULL, run_id TEXT NOT NULL, thread_id TEXT NOT NULL,
        graph TEXT NOT NULL, payload BLOB NOT NULL, available_at REAL NOT NULL,
        created_at REAL NOT NULL, timeout REAL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, worker TEXT,
        claim_token INTEGER NOT NULL DEFAULT 0, claim_expires REAL, cancel TEXT,
        finished_at REAL,
        PRIMARY KEY (namespace, run_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_queue_open ON run_queue (created_at, run_id) WHERE status <> 'done'",
    "CREATE INDEX run_queue_thread ON run_queue (namespace, thread_id, created_at)"
    " WHERE status <> 'done'",
    "CREATE INDEX run_queue_finished ON run_queue (finished_at) WHERE status = 'done'",
    """CREATE TABLE run_events (
        namespace TEXT NOT NULL, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
        event TEXT NOT NULL, data BLOB NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (namespace, run_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY, last_seen REAL NOT NULL, started_at REAL NOT NULL,
        info TEXT NOT NULL DEFAULT '{}'
    ) WITHOUT ROWID""",
    """CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, role TEXT NOT NULL,
        key_hash BLOB NOT NULL, created_at REAL NOT NULL, last_used_at REAL,
        revoked_at REAL, name TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX api_keys_namespace ON api_keys (namespace, created_at)",
)
"""SQLite migration 7."""

_TEXT = 'TEXT COLLATE "C"'
_FLOAT = "DOUBLE PRECISION"

POSTGRES_MIGRATION: tuple[str, ...] = (
    f"""CREATE TABLE {{s}}.run_queue (
        namespace {_TEXT} NOT NULL, run_id {_TEXT} NOT NULL, thread_id {_TEXT} NOT NULL,
        graph {_TEXT} NOT NULL, payload BYTEA NOT NULL, available_at {_FLOAT} NOT NULL,
        created_at {_FLOAT} NOT NULL, timeout {_FLOAT}, status {_TEXT} NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0, worker TEXT,
        claim_token BIGINT NOT NULL DEFAULT 0, claim_expires {_FLOAT}, cancel TEXT,
        finished_at {_FLOAT},
        PRIMARY KEY (namespace, run_id)
    ) WITH (fillfactor = 70)""",
    "CREATE INDEX run_queue_open ON {s}.run_queue (created_at, run_id) WHERE status <> 'done'",
    "CREATE INDEX run_queue_thread ON {s}.run_queue (namespace, thread_id, created_at)"
    " WHERE status <> 'done'",
    "CREATE INDEX run_queue_finished ON {s}.run_queue (finished_at) WHERE status = 'done'",
    f"""CREATE TABLE {{s}}.run_events (
        namespace {_TEXT} NOT NULL, run_id {_TEXT} NOT NULL, seq BIGINT NOT NULL,
        event TEXT NOT NULL, data BYTEA NOT NULL, created_at {_FLOAT} NOT NULL,
        PRIMARY KEY (namespace, run_id, seq)
    )""",
    f"""CREATE TABLE {{s}}.workers (
        worker_id {_TEXT} PRIMARY KEY, last_seen {_FLOAT} NOT NULL,
        started_at {_FLOAT} NOT NULL, info JSONB NOT NULL DEFAULT '{{{{}}}}'
    )""",
    f"""CREATE TABLE {{s}}.api_keys (
        key_id {_TEXT} PRIMARY KEY, namespace {_TEXT} NOT NULL, role TEXT NOT NULL,
        key_hash BYTEA NOT NULL, created_at {_FLOAT} NOT NULL, last_used_at {_FLOAT},
        revoked_at {_FLOAT}, name TEXT
    )""",
    "CREATE INDEX api_keys_namespace ON {s}.api_keys (namespace, created_at)",
)
"""Postgres migration 6 (``{s}``: the quoted schema, as in ``_postgres_schema.MIGRATIONS``)."""

# The audit log (issue 13): one row per event, keyed by namespace and an id that sorts by time,
# so a page of a namespace's log, newest first, is a range of the primary key. It holds ids
# and role names, never a key or a value.

AUDIT_SQLITE_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE audit_log (
        namespace TEXT NOT NULL, id TEXT NOT NULL, at REAL NOT NULL, key_id TEXT, role TEXT,
        action TEXT NOT NULL, target TEXT NOT NULL, run_id TEXT, thread_id TEXT,
        outcome TEXT NOT NULL,
        PRIMARY KEY (namespace, id)
    ) WITHOUT ROWID""",
)
"""SQLite migration 9 (the audit log)."""

AUDIT_POSTGRES_MIGRATION: tuple[str, ...] = (
    f"""CREATE TABLE {{s}}.audit_log (
        namespace {_TEXT} NOT NULL, id {_TEXT} NOT NULL, at {_FLOAT} NOT NULL, key_id TEXT,
        role TEXT, action TEXT NOT NULL, target TEXT NOT NULL, run_id TEXT, thread_id TEXT,
        outcome TEXT NOT NULL,
        PRIMARY KEY (namespace, id)
    )""",
)
"""Postgres migration 8 (the audit log; ``{s}``: the quoted schema)."""
