"""The Postgres store's schema: its numbered migrations (``{s}`` is the quoted schema), which
:class:`~threadloom.checkpoint._postgres_sql.Statements` formats for one schema."""

from __future__ import annotations

from threadloom.checkpoint._queue_schema import AUDIT_POSTGRES_MIGRATION, POSTGRES_MIGRATION
from threadloom.checkpoint._rows import (
    INDEXED,
    UNFINISHED,
)
from threadloom.checkpoint._run_logs import POSTGRES_RUN_LOGS_MIGRATION
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
)

# -- schema -------------------------------------------------------------------------------
#
# ``{s}`` is the quoted schema. Text columns that are sorted or compared use the "C"
# collation: byte order, the order the reference store gives (Python's code point order),
# whatever the database's default collation is, and cheaper comparisons in every index.
# Channel versions, ``next``, parents and attempts are compact JSON text that only this
# module reads (cheaper than JSONB on the hot path); run and thread metadata are JSONB, so
# operators can query them.

_TEXT = 'TEXT COLLATE "C"'

_DEFAULT = f"'{DEFAULT_NAMESPACE}'"


def _rekey(table: str, key: str) -> tuple[str, ...]:
    """Statements giving ``table`` a namespace column ("default" for the rows it has) and
    the primary key ``(namespace, key)``."""
    return (
        f"ALTER TABLE {{s}}.{table} ADD COLUMN namespace {_TEXT} NOT NULL DEFAULT {_DEFAULT}",
        f"ALTER TABLE {{s}}.{table} ALTER COLUMN namespace DROP DEFAULT",
        f"ALTER TABLE {{s}}.{table} DROP CONSTRAINT {table}_pkey",
        f"ALTER TABLE {{s}}.{table} ADD PRIMARY KEY (namespace, {key})",
    )


def _move(table: str, key: str) -> tuple[str, ...]:
    """Statements moving every row of ``table`` (which has a namespace column) into
    "default" and keying it by ``(namespace, key)``."""
    return (
        f"UPDATE {{s}}.{table} SET namespace = {_DEFAULT} WHERE namespace <> {_DEFAULT}",
        f"ALTER TABLE {{s}}.{table} DROP CONSTRAINT {table}_pkey",
        f"ALTER TABLE {{s}}.{table} ADD PRIMARY KEY (namespace, {key})",
    )


_NAMESPACE_MIGRATION: tuple[str, ...] = (
    *_move("threads", "thread_id"),
    "ALTER TABLE {s}.threads DROP COLUMN namespace_set",
    "DROP INDEX {s}.threads_namespace",
    *_rekey("heads", "thread_id, checkpoint_ns"),
    *_rekey("checkpoints", "thread_id, checkpoint_ns, seq"),
    *_rekey("blobs", "thread_id, checkpoint_ns, channel, version"),
    *_rekey("writes", "thread_id, checkpoint_ns, seq, task_id, channel, idx"),
    *_move("runs", "run_id"),
    "DROP INDEX {s}.runs_thread",
    "DROP INDEX {s}.runs_status",
    "DROP INDEX {s}.runs_graph",
    "CREATE INDEX runs_thread ON {s}.runs (namespace, thread_id, created_at)",
    "CREATE INDEX runs_status ON {s}.runs (namespace, status, created_at)",
    "CREATE INDEX runs_graph ON {s}.runs (namespace, graph, created_at)",
    *_move("executions", "thread_id, id"),
    "DROP INDEX {s}.executions_run",
    "CREATE INDEX executions_run ON {s}.executions (namespace, run_id)",
)

# Keyset pages of a namespace's executions (the seed 001 routes), as SQLite's
# SEED_LIST_MIGRATION: by (created_at, id), and by status in that order (the by-status
# index keeps its condition, so a step commit pays nothing more for it).
SEED_LIST_MIGRATION: tuple[str, ...] = (
    "CREATE INDEX executions_namespace_created ON {s}.executions (namespace, created_at, id)",
    "DROP INDEX {s}.executions_run",
    "CREATE INDEX executions_run ON {s}.executions (namespace, run_id, created_at, id)",
    "DROP INDEX {s}.executions_namespace_status",
    "CREATE INDEX executions_namespace_status ON {s}.executions"
    f" (namespace, status, created_at, id) WHERE {INDEXED}",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial schema.
    (
        f"""CREATE TABLE {{s}}.threads (
            thread_id {_TEXT} PRIMARY KEY, namespace {_TEXT} NOT NULL,
            namespace_set BOOLEAN NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, metadata JSONB NOT NULL DEFAULT '{{{{}}}}',
            lease_owner {_TEXT}, lease_token BIGINT NOT NULL DEFAULT 0,
            lease_expires_at DOUBLE PRECISION
        ) WITH (fillfactor = 70)""",
        # Not on updated_at: every commit touches it, and an update that changes no indexed
        # column is a HOT update (no index writes, dead versions pruned within the page).
        "CREATE INDEX threads_namespace ON {s}.threads (namespace)",
        f"""CREATE TABLE {{s}}.checkpoints (
            thread_id {_TEXT} NOT NULL, checkpoint_ns {_TEXT} NOT NULL, seq BIGINT NOT NULL,
            parent_seq BIGINT, run_id {_TEXT}, step BIGINT NOT NULL, source {_TEXT} NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, channels TEXT NOT NULL, next TEXT NOT NULL,
            metadata BYTEA NOT NULL, frontier BYTEA NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, seq)
        )""",
        f"""CREATE TABLE {{s}}.blobs (
            thread_id {_TEXT} NOT NULL, checkpoint_ns {_TEXT} NOT NULL,
            channel {_TEXT} NOT NULL, version BIGINT NOT NULL, prev BIGINT,
            data BYTEA NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
        )""",
        f"""CREATE TABLE {{s}}.writes (
            thread_id {_TEXT} NOT NULL, checkpoint_ns {_TEXT} NOT NULL, seq BIGINT NOT NULL,
            task_id {_TEXT} NOT NULL, channel {_TEXT} NOT NULL, idx BIGINT NOT NULL,
            data BYTEA NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, seq, task_id, channel, idx)
        )""",
        f"""CREATE TABLE {{s}}.runs (
            run_id {_TEXT} PRIMARY KEY, thread_id {_TEXT} NOT NULL, graph {_TEXT} NOT NULL,
            status {_TEXT} NOT NULL, namespace {_TEXT} NOT NULL, input BYTEA, output BYTEA,
            error TEXT, durability TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION,
            ended_at DOUBLE PRECISION, steps BIGINT NOT NULL, executions BIGINT NOT NULL,
            resumed_from TEXT, metadata JSONB NOT NULL
        ) WITH (fillfactor = 80)""",
        "CREATE INDEX runs_thread ON {s}.runs (thread_id, created_at)",
        "CREATE INDEX runs_status ON {s}.runs (status, created_at)",
        "CREATE INDEX runs_namespace_created ON {s}.runs (namespace, created_at)",
        "CREATE INDEX runs_graph ON {s}.runs (graph, created_at)",
        f"""CREATE TABLE {{s}}.executions (
            id {_TEXT} PRIMARY KEY, run_id {_TEXT} NOT NULL, thread_id {_TEXT} NOT NULL,
            graph {_TEXT} NOT NULL, node {_TEXT} NOT NULL, step BIGINT NOT NULL,
            status {_TEXT} NOT NULL, namespace {_TEXT} NOT NULL, attempt BIGINT NOT NULL,
            inputs BYTEA, outputs BYTEA, error TEXT, parents TEXT NOT NULL,
            attempts TEXT NOT NULL, checkpoint_seq BIGINT,
            created_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION,
            ended_at DOUBLE PRECISION
        ) WITH (fillfactor = 80)""",
        "CREATE INDEX executions_run ON {s}.executions (run_id)",
        "CREATE INDEX executions_thread ON {s}.executions (thread_id)",
        "CREATE INDEX executions_namespace_status ON {s}.executions (namespace, status)",
        # The head of each (thread, namespace): the highest checkpoint seq, kept in a row of
        # its own so that a commit compares-and-sets it on the row's current version (see
        # Statements.commit). NULL: a commit without a checkpoint claimed "no head yet".
        """CREATE TABLE {s}.heads (
            thread_id TEXT COLLATE "C" NOT NULL, checkpoint_ns TEXT COLLATE "C" NOT NULL,
            seq BIGINT, PRIMARY KEY (thread_id, checkpoint_ns)
        ) WITH (fillfactor = 70)""",
        # Raises a failure found by a commit statement, with a SQLSTATE of threadloom's own
        # (FAILURES) so that the store tells it from a database error.
        """CREATE FUNCTION {s}.fail(p_failure text) RETURNS boolean LANGUAGE plpgsql AS $fn$
        BEGIN
            RAISE EXCEPTION USING MESSAGE = substr(p_failure, 2),
                ERRCODE = CASE left(p_failure, 1) WHEN 'L' THEN 'TL001' WHEN 'H' THEN 'TL002'
                    WHEN 'R' THEN 'TL003' WHEN 'D' THEN 'TL004' ELSE 'TL005' END;
        END
        $fn$""",
    ),
    # 2: executions by namespace and status only for the ones that did not succeed: nearly
    # every step records a succeeded execution, and its entry was one more index write per
    # commit (queries: see _rows.where_clause).
    (
        "DROP INDEX {s}.executions_namespace_status",
        "CREATE INDEX executions_namespace_status ON {s}.executions (namespace, status)"
        f" WHERE {UNFINISHED}",
    ),
    # 3: executions keyed by (thread, id), as in the other stores (see Commit.executions);
    # the key serves thread listings, so the thread index goes.
    (
        "ALTER TABLE {s}.executions DROP CONSTRAINT executions_pkey",
        "ALTER TABLE {s}.executions ADD PRIMARY KEY (thread_id, id)",
        "DROP INDEX {s}.executions_thread",
    ),
    # 4: fencing tokens from one sequence for the whole schema, so a thread that is deleted
    # and created again never reissues a token a holder of its earlier incarnation may still
    # carry. It starts above every token an existing store handed out.
    (
        "CREATE SEQUENCE {s}.lease_tokens AS BIGINT",
        "SELECT setval('{s}.lease_tokens', coalesce(max(lease_token), 0) + 1, false)"
        " FROM {s}.threads",
    ),
    # 5: RUNNING leaves the by-status index too (see _rows.STEP_STATUSES): every step
    # records its next executions RUNNING, and their index entries cost writes per commit.
    (
        "DROP INDEX {s}.executions_namespace_status",
        "CREATE INDEX executions_namespace_status ON {s}.executions (namespace, status)"
        f" WHERE {INDEXED}",
    ),
    # 6: the runtime's tables: run queue, run events, workers, API keys (_queue_schema).
    POSTGRES_MIGRATION,
    # 7: namespaces. Every key starts with the namespace, so two namespaces hold the same
    # thread and run ids; every existing record moves into "default" (ids were unique across
    # the schema, so nothing collides). A thread's namespace is its key now, not a column the
    # first commit sets: namespace_set goes, and so does the namespace index (the key's
    # prefix). The lease-token sequence stays one for the schema: never reissued per
    # (namespace, thread) either.
    _NAMESPACE_MIGRATION,
    # 8: the audit log (issue 13; _queue_schema).
    AUDIT_POSTGRES_MIGRATION,
    # 9: keyset pages of executions (SEED_LIST_MIGRATION).
    SEED_LIST_MIGRATION,
    # 10: the logs kept with each run (issue 14; _run_logs).
    POSTGRES_RUN_LOGS_MIGRATION,
    # 11: a run's trace parent and statistics (issue 14; RunRecord.traceparent, .stats).
    (
        "ALTER TABLE {s}.runs ADD COLUMN traceparent text",
        "ALTER TABLE {s}.runs ADD COLUMN stats jsonb NOT NULL DEFAULT '{{}}'",
    ),
)
"""The numbered migrations: ``MIGRATIONS[n - 1]`` holds the statements of version ``n``."""

SCHEMA_VERSION = len(MIGRATIONS)
