"""The Postgres store's prebuilt SQL, parameter rows and row conversions (its schema and
migrations are :mod:`threadloom.checkpoint._postgres_schema`).

Private to :mod:`threadloom.checkpoint.postgres`, which owns the pool, retries and error
translation. Nothing here touches a connection (or imports psycopg): :class:`Statements`
holds every SQL string of one schema, built once per store (the commit statement once per
shape), so the hot paths never format SQL per call and psycopg can prepare each statement
once per connection; the functions turn records into parameters and rows back into records,
and parse the store's URL options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from threadloom.checkpoint._postgres_options import quote_schema
from threadloom.checkpoint._postgres_schema import MIGRATIONS
from threadloom.checkpoint._rows import (
    channels_json,
    execution_rows,
    keyset_where,
    names_json,
    nul_free_execution_row,
    nul_free_run_row,
    run_rows,
    where_clause,
)
from threadloom.checkpoint._rows import run_record as _run_record
from threadloom.checkpoint._rows import thread_record as _thread_record
from threadloom.checkpoint.base import (
    ANY_HEAD,
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    RunRecord,
    ThreadRecord,
)
from threadloom.errors import (
    CheckpointConflictError,
    LeaseLostError,
    RunConflictError,
    StoreError,
    ThreadloomError,
)

RUN_COLS = (
    "run_id, thread_id, graph, status, namespace, input, output, error, durability, "
    "created_at, updated_at, started_at, ended_at, steps, executions, resumed_from, metadata, "
    "traceparent, stats"
)
EXEC_COLS = (
    "id, run_id, thread_id, graph, node, step, status, namespace, attempt, inputs, outputs, "
    "error, parents, attempts, checkpoint_seq, created_at, started_at, ended_at"
)
CP_COLS = "seq, parent_seq, run_id, step, source, created_at, channels, next, metadata, frontier"
THREAD_COLS = (
    "thread_id, namespace, created_at, updated_at, metadata, lease_owner, lease_token, "
    "lease_expires_at"
)
WRITE_COLS = "thread_id, checkpoint_ns, seq, task_id, channel, idx, data"
# the keys of a thread's rows; the commit statement's $2 is the namespace and $1 the thread
_THREAD_KEY = "namespace = %s AND thread_id = %s"
FINISHED = ("succeeded", "failed", "cancelled")
BLOB_UNION = 16  # channels read by one UNION ALL statement
TABLES = ("threads", "heads", "checkpoints", "blobs", "writes", "runs", "executions")
HEAD_ANY, HEAD_NONE, HEAD_SEQ = 0, 1, 2  # a commit's expected_head: ANY_HEAD, None, a seq


# The SQLSTATEs ``fail()`` raises (see the migrations), and the errors they stand for.
_FAILURES: dict[str, type[ThreadloomError]] = {
    "TL001": LeaseLostError,
    "TL002": CheckpointConflictError,  # the head moved
    "TL003": RunConflictError,
    "TL004": CheckpointConflictError,  # the seq exists
    "TL005": StoreError,  # the checkpoint is of another thread
}


def failure_error(sqlstate: str | None, message: str) -> ThreadloomError | None:
    """The error a commit's failed check stands for, if ``sqlstate`` is one of ``fail()``'s."""
    kind = _FAILURES.get(sqlstate or "")
    return kind(message) if kind is not None else None


class Statements:
    """Every SQL statement of the store, for the tables of one schema."""

    def __init__(self, schema: str) -> None:
        s = quote_schema(schema)
        self.schema = s
        self.migrations = tuple(tuple(sql.format(s=s) for sql in m) for m in MIGRATIONS)
        self.create_schema = f"CREATE SCHEMA IF NOT EXISTS {s}"
        self.create_migrations = (
            f"CREATE TABLE IF NOT EXISTS {s}.schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        # applied_at is read only to fail on another application's schema_migrations
        self.schema_version = f"SELECT max(version), max(applied_at) FROM {s}.schema_migrations"
        self.clashing_tables = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = ANY(%s) ORDER BY table_name"
        )
        self.record_migration = (
            f"INSERT INTO {s}.schema_migrations (version, applied_at) VALUES (%s, %s)"
        )

        # -- leases --------------------------------------------------------------------------
        # One statement each. The holder re-taking an unexpired lease keeps its token; a
        # free, released or expired lease is taken with a new token from the schema's
        # sequence (migration 4), drawn under the row's lock, so a thread's tokens increase.
        # A busy lease makes the WHERE false: no row comes back (and no token is drawn: the
        # SET list is computed only for a row that passed the WHERE).
        token = f"nextval('{s}.lease_tokens')"
        self.acquire = (
            f"INSERT INTO {s}.threads AS t (namespace, thread_id, created_at,"
            " updated_at, lease_owner, lease_token, lease_expires_at)"
            " VALUES (%(namespace)s, %(thread_id)s, %(now)s, %(now)s, %(owner)s,"
            f" {token}, %(expires)s) ON CONFLICT (namespace, thread_id) DO UPDATE SET"
            " lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at,"
            " lease_token = CASE WHEN t.lease_owner IS NOT NULL AND t.lease_expires_at > %(now)s"
            f" THEN t.lease_token ELSE {token} END"
            " WHERE t.lease_owner IS NULL OR t.lease_expires_at <= %(now)s"
            " OR t.lease_owner = excluded.lease_owner"
            " RETURNING lease_token"
        )
        self.lease_holder = f"SELECT lease_owner FROM {s}.threads WHERE {_THREAD_KEY}"
        self.renew = (
            f"UPDATE {s}.threads SET lease_expires_at = %s WHERE {_THREAD_KEY}"
            " AND lease_token = %s AND lease_owner IS NOT NULL"
        )
        self.release = (
            f"UPDATE {s}.threads SET lease_owner = NULL, lease_expires_at = NULL"
            f" WHERE {_THREAD_KEY} AND lease_token = %s AND lease_owner IS NOT NULL"
        )
        # the same, for a commit's batch (raw cursor, $n placeholders)
        self.release_in_commit = self.release.replace("%s", "$1", 1).replace(
            "%s", "$2", 1).replace("%s", "$3::int8", 1).encode()
        # The new owner repeating it (after a lost answer) keeps the token it got.
        self.takeover = (
            f"UPDATE {s}.threads SET lease_token = CASE WHEN lease_owner = %(owner)s"
            f" THEN lease_token ELSE {token} END, lease_owner = %(owner)s,"
            " lease_expires_at = %(expires)s WHERE namespace = %(namespace)s"
            " AND thread_id = %(thread_id)s AND lease_owner IS NOT NULL"
            " AND (lease_token = %(token)s OR lease_owner = %(owner)s) RETURNING lease_token"
        )

        # -- the write path --------------------------------------------------------------------
        # Pieces of the commit statement (see commit()); {} takes the VALUES rows.
        self._commit_sql: dict[tuple[int, ...], bytes] = {}
        # Creates or touches the thread row, which locks it until the transaction ends; the
        # lease columns it returns are the row's current ones.
        self._touch = (
            f"INSERT INTO {s}.threads AS t (namespace, thread_id, created_at, updated_at)"
            " VALUES ($2, $1, $3, $3) ON CONFLICT (namespace, thread_id) DO UPDATE"
            " SET updated_at = excluded.updated_at RETURNING lease_owner, lease_token"
        )
        # The head compare-and-set, by kind (see HEAD_*), with and without a new checkpoint
        # ($7): an UPDATE or an upsert's WHERE is evaluated on the row's current version,
        # so a writer that lost a race finds the winner's head, not its own snapshot's.
        key = "namespace = $2 AND thread_id = $1 AND checkpoint_ns = $5"
        heads = f"INSERT INTO {s}.heads AS h (namespace, thread_id, checkpoint_ns, seq)"
        conflict = " ON CONFLICT (namespace, thread_id, checkpoint_ns)"
        self._heads: dict[tuple[int, bool], str] = {
            (HEAD_ANY, True): f"{heads} VALUES ($2, $1, $5, $7){conflict}"
            " DO UPDATE SET seq = greatest(h.seq, excluded.seq)",
            (HEAD_NONE, True): f"{heads} VALUES ($2, $1, $5, $7){conflict}"
            " DO UPDATE SET seq = excluded.seq WHERE h.seq IS NULL RETURNING 1",
            (HEAD_NONE, False): f"{heads} VALUES ($2, $1, $5, NULL){conflict}"
            " DO UPDATE SET seq = h.seq WHERE h.seq IS NULL RETURNING 1",
            (HEAD_SEQ, True): f"UPDATE {s}.heads AS h SET seq = greatest(h.seq, $7)"
            f" WHERE {key} AND seq = $6 RETURNING 1",
            (HEAD_SEQ, False): f"UPDATE {s}.heads AS h SET seq = h.seq"
            f" WHERE {key} AND seq = $6 RETURNING 1",
        }
        self._lease_failed = (
            "WHEN NOT EXISTS (SELECT FROM t WHERE $4::int8 IS NULL"
            " OR (t.lease_owner IS NOT NULL AND t.lease_token = $4::int8))"
            f" THEN {s}.fail(format('Llease token %s is not current on thread %L',"
            " $4::int8, $1::text))"
        )
        self._head_failed = (
            f"WHEN NOT EXISTS (SELECT FROM h) THEN {s}.fail(format('Hthread %L moved on:"
            " its latest checkpoint is %s, not %s', $1::text,"
            f" coalesce((SELECT seq::text FROM {s}.heads WHERE {key}), 'None'),"
            " coalesce($6::int8::text, 'None')))"
        )
        # A run's thread, graph and created_at are fixed by its first record; the update
        # applies only to a run of the same thread, so the row count reveals a conflict.
        self._put_runs = (
            f"INSERT INTO {s}.runs AS r ({RUN_COLS}) VALUES {{}}"
            " ON CONFLICT (namespace, run_id) DO UPDATE SET status = excluded.status,"
            " input = excluded.input, output = excluded.output, error = excluded.error,"
            " durability = excluded.durability, updated_at = excluded.updated_at,"
            " started_at = excluded.started_at, ended_at = excluded.ended_at,"
            " steps = excluded.steps, executions = excluded.executions,"
            " resumed_from = excluded.resumed_from, metadata = excluded.metadata,"
            " traceparent = excluded.traceparent, stats = excluded.stats"
            " WHERE r.thread_id = excluded.thread_id RETURNING 1"
        )
        # An existing seq inserts nothing: no row reveals the conflict.
        self._insert_checkpoint = (
            f"INSERT INTO {s}.checkpoints (namespace, thread_id, checkpoint_ns, seq, {CP_COLS[5:]})"
            " VALUES ($2, $1, $5, $7, {}) ON CONFLICT DO NOTHING RETURNING 1"
        )
        self._put_blobs = (
            f"INSERT INTO {s}.blobs (namespace, thread_id, checkpoint_ns, channel, version, prev,"
            " data) VALUES {} ON CONFLICT (namespace, thread_id, checkpoint_ns, channel, version)"
            " DO UPDATE SET prev = excluded.prev, data = excluded.data"
        )
        self._put_writes = (
            f"INSERT INTO {s}.writes (namespace, {WRITE_COLS}) VALUES {{}}"
            " ON CONFLICT (namespace, thread_id, checkpoint_ns, seq, task_id, channel, idx)"
            " DO UPDATE SET data = excluded.data"
        )
        # An execution is keyed by its commit's namespace and thread.
        self._put_executions = (
            f"INSERT INTO {s}.executions AS e ({EXEC_COLS}) VALUES {{}}"
            " ON CONFLICT (namespace, thread_id, id) DO UPDATE SET run_id = excluded.run_id,"
            " graph = excluded.graph,"
            " node = excluded.node, step = excluded.step, status = excluded.status,"
            " attempt = excluded.attempt, inputs = excluded.inputs, outputs = excluded.outputs,"
            " error = excluded.error, parents = excluded.parents, attempts = excluded.attempts,"
            " checkpoint_seq = excluded.checkpoint_seq,"
            " started_at = excluded.started_at, ended_at = excluded.ended_at"
        )

        # -- reads -----------------------------------------------------------------------------
        self.list_checkpoints = (
            f"SELECT {CP_COLS} FROM {s}.checkpoints WHERE {_THREAD_KEY} AND checkpoint_ns = %s"
        )
        self.latest = f"{self.list_checkpoints} ORDER BY seq DESC LIMIT 1"
        self.checkpoint_namespaces = (
            f"SELECT DISTINCT checkpoint_ns FROM {s}.checkpoints WHERE {_THREAD_KEY}"
            " ORDER BY checkpoint_ns"
        )
        self.checkpoint = f"{self.list_checkpoints} AND seq = %s"
        # Up to BLOB_UNION channels: one index range scan per channel, UNION ALL'ed (the
        # statement of each count built once). More: the same through LATERAL, kept a
        # subquery by OFFSET 0 so that the channels drive the scans whatever the statistics.
        self._blob_range = (
            f"SELECT channel, version, prev, data FROM {s}.blobs WHERE namespace = $1"
            " AND thread_id = $2 AND checkpoint_ns = $3 AND channel = ${}"
            " AND version BETWEEN ${} AND ${}"
        )
        self.blobs_union: list[bytes] = [
            " UNION ALL ".join(
                self._blob_range.format(4 + 3 * i, 5 + 3 * i, 6 + 3 * i) for i in range(n)
            ).encode()
            for n in range(BLOB_UNION + 1)
        ]
        self.blobs_lateral = (
            "SELECT b.channel, b.version, b.prev, b.data"
            " FROM unnest(%s::text[], %s::int8[], %s::int8[]) AS w(channel, lo, hi),"
            f" LATERAL (SELECT channel, version, prev, data FROM {s}.blobs"
            f' WHERE {_THREAD_KEY} AND checkpoint_ns = %s AND channel = w.channel COLLATE "C"'
            " AND version BETWEEN w.lo AND w.hi OFFSET 0) AS b"
        )
        self.writes = (
            f"SELECT {WRITE_COLS} FROM {s}.writes"
            f" WHERE {_THREAD_KEY} AND checkpoint_ns = %s AND seq = %s"
            " ORDER BY task_id, channel, idx"
        )
        self.task_writes = (
            f"SELECT {WRITE_COLS} FROM {s}.writes"
            f" WHERE {_THREAD_KEY} AND checkpoint_ns = %s AND seq = %s AND task_id = %s"
            " ORDER BY channel, idx"
        )
        self.run = f"SELECT {RUN_COLS} FROM {s}.runs WHERE namespace = %s AND run_id = %s"
        self.list_runs = f"SELECT {RUN_COLS} FROM {s}.runs"
        self.list_executions = f"SELECT {EXEC_COLS} FROM {s}.executions"
        self.thread = f"SELECT {THREAD_COLS} FROM {s}.threads WHERE {_THREAD_KEY}"
        self.list_threads = f"SELECT {THREAD_COLS} FROM {s}.threads"
        self.create_thread = (
            f"INSERT INTO {s}.threads (thread_id, namespace, created_at, updated_at, metadata)"
            " VALUES (%s, %s, %s, %s, %s::jsonb) ON CONFLICT (namespace, thread_id) DO NOTHING"
            f" RETURNING {THREAD_COLS}"
        )
        self.update_thread = (
            f"UPDATE {s}.threads SET metadata = %s::jsonb, updated_at = greatest(updated_at, %s)"
            f" WHERE thread_id = %s AND namespace = %s RETURNING {THREAD_COLS}"
        )

        # -- deletion and retention -------------------------------------------------------------
        # One statement: one transaction.
        self.delete_thread = (
            "WITH "
            + ", ".join(
                f"{table[0]} AS (DELETE FROM {s}.{table} WHERE namespace = %(namespace)s"
                " AND thread_id = %(thread_id)s)"
                for table in TABLES
            )
            + f", l AS (DELETE FROM {s}.run_logs WHERE namespace = %(namespace)s"
            " AND thread_id = %(thread_id)s) SELECT 1"
        )
        self.lock_thread = f"SELECT 1 FROM {s}.threads WHERE {_THREAD_KEY} FOR UPDATE"
        self.kept_checkpoints = (
            f"SELECT {CP_COLS} FROM {s}.checkpoints WHERE {_THREAD_KEY} AND checkpoint_ns = ''"
            " ORDER BY seq DESC LIMIT %s"
        )
        # Deletes the checkpoints below the cutoff and the pending writes recorded against
        # them; returns how many checkpoints went.
        self.prune_checkpoints = (
            f"WITH gone AS (DELETE FROM {s}.checkpoints WHERE namespace = %(namespace)s"
            " AND thread_id = %(thread_id)s AND checkpoint_ns = '' AND seq < %(cutoff)s"
            f" RETURNING seq), w AS (DELETE FROM {s}.writes WHERE namespace = %(namespace)s"
            " AND thread_id = %(thread_id)s"
            " AND checkpoint_ns = '' AND seq IN (SELECT seq FROM gone))"
            " SELECT count(*) FROM gone"
        )
        # Blobs below their channel's floor, and every blob of a channel without one.
        self.prune_blobs = (
            f"DELETE FROM {s}.blobs b WHERE b.namespace = %s AND b.thread_id = %s"
            " AND b.checkpoint_ns = ''"
            " AND b.version < coalesce((SELECT f.floor FROM unnest(%s::text[], %s::int8[])"
            ' AS f(channel, floor) WHERE f.channel = b.channel COLLATE "C"),'
            " 9223372036854775807)"
        )
        self.delete_runs = (
            f"WITH doomed AS (DELETE FROM {s}.runs WHERE created_at < %s"
            " AND status = ANY(%s::text[]) AND (%s::text IS NULL OR namespace = %s)"
            " RETURNING namespace, run_id),"
            f" e AS (DELETE FROM {s}.executions WHERE (namespace, run_id) IN"
            " (SELECT namespace, run_id FROM doomed)),"
            f" l AS (DELETE FROM {s}.run_logs WHERE (namespace, run_id) IN"
            " (SELECT namespace, run_id FROM doomed))"
            " SELECT count(*) FROM doomed"
        )

    # -- reads with filters ------------------------------------------------------------------

    def select_checkpoint(
        self, namespace: str, thread_id: str, checkpoint_ns: str, seq: int | None
    ) -> tuple[str, tuple[Any, ...]]:
        if seq is None:
            return self.latest, (namespace, thread_id, checkpoint_ns)
        return self.checkpoint, (namespace, thread_id, checkpoint_ns, seq)

    def select_checkpoints(
        self,
        namespace: str,
        thread_id: str,
        checkpoint_ns: str,
        before: int | None,
        run_id: str | None,
        source: str | None,
        limit: int | None,
    ) -> tuple[str, tuple[Any, ...]]:
        clause, params = where_clause(
            ("seq < %s", before), ("run_id = %s", run_id), ("source = %s", source)
        )
        sql = self.list_checkpoints + clause.replace(" WHERE ", " AND ", 1)
        return sql + " ORDER BY seq DESC LIMIT %s", (
            namespace, thread_id, checkpoint_ns, *params, limit
        )

    def select_blobs(
        self,
        namespace: str,
        thread_id: str,
        checkpoint_ns: str,
        wants: Mapping[str, tuple[int, int]],
    ) -> tuple[str | bytes, list[Any], bool]:
        """The query of ``get_blobs``, its parameters, and whether it is a raw (``$n``) one."""
        if len(wants) <= BLOB_UNION:
            params: list[Any] = [namespace, thread_id, checkpoint_ns]
            for channel, (base, version) in wants.items():
                params += (channel, base, version)
            return self.blobs_union[len(wants)], params, True
        channels = list(wants)
        lows = [wants[ch][0] for ch in channels]
        highs = [wants[ch][1] for ch in channels]
        params = [channels, lows, highs, namespace, thread_id, checkpoint_ns]
        return self.blobs_lateral, params, False

    def select_runs(
        self,
        thread_id: str | None,
        status: str | None,
        graph: str | None,
        namespace: str | None,
        created_after: float | None,
        created_before: float | None,
        limit: int,
        offset: int,
    ) -> tuple[str, tuple[Any, ...]]:
        clause, params = where_clause(
            ("namespace = %s", namespace),
            ("thread_id = %s", thread_id),
            ("status = %s", status),
            ("graph = %s", graph),
            ("created_at >= %s", created_after),
            ("created_at < %s", created_before),
        )
        order = " ORDER BY created_at DESC, run_id DESC LIMIT %s OFFSET %s"
        return self.list_runs + clause + order, (*params, limit, offset)

    def select_executions(
        self,
        run_id: str | None,
        thread_id: str | None,
        namespace: str | None,
        status: str | None,
        limit: int | None,
        offset: int,
    ) -> tuple[str, tuple[Any, ...]]:
        clause, params = where_clause(
            ("namespace = %s", namespace),
            ("run_id = %s", run_id),
            ("thread_id = %s", thread_id),
            ("status = %s", status),
            status=status,
        )
        order = " ORDER BY created_at, step, node, id LIMIT %s OFFSET %s"
        return self.list_executions + clause + order, (*params, limit, offset)

    def page_runs(self, namespace: str, limit: int, by_run_id: bool = False,
                  **filters: Any) -> tuple[str, list[Any]]:
        """A keyset page of runs (see ``PostgresStore.page_runs``) and its parameters;
        ``by_run_id``: read the run id range of the key and sort it (see
        :func:`by_run_id_order`)."""
        where, order, params = keyset_where(
            "%s", "run_id", namespace=namespace, descending=True, execution_status=False,
            **filters,
        )
        if by_run_id:
            order = by_run_id_order(order)
        return self.list_runs + where + order + " LIMIT %s", [*params, limit]

    def page_executions(
        self, namespace: str, limit: int, by_run_id: bool = False, **filters: Any
    ) -> tuple[str, list[Any]]:
        """A keyset page of executions (see ``PostgresStore.page_executions``) and its
        parameters; ``by_run_id`` as for :meth:`page_runs`."""
        where, order, params = keyset_where("%s", "id", namespace=namespace, **filters)
        if by_run_id:
            order = by_run_id_order(order)
        return self.list_executions + where + order + " LIMIT %s", [*params, limit]

    def count_prefixed(self, table: str) -> str:
        """How many rows (up to a limit) of ``table`` in a namespace have a run id in a
        range: ``(namespace, low, high, limit)``."""
        return (
            f"SELECT count(*) FROM (SELECT 1 FROM {self.schema}.{table} WHERE namespace = %s"
            " AND run_id >= %s AND run_id < %s LIMIT %s) AS prefixed"
        )

    def select_threads(
        self, namespace: str | None, limit: int, offset: int
    ) -> tuple[str, tuple[Any, ...]]:
        clause, params = where_clause(("namespace = %s", namespace))
        order = " ORDER BY updated_at DESC, thread_id DESC LIMIT %s OFFSET %s"
        return self.list_threads + clause + order, (*params, limit, offset)

    # -- the write path --------------------------------------------------------------------

    def commit(self, c: Commit, now: float, relaxed: bool = False) -> tuple[bytes, list[Any]]:
        """The one statement that checks and writes commit ``c``, and its parameters;
        ``relaxed``: its transaction commits with ``synchronous_commit = off`` (see
        :meth:`PostgresStore.commit <threadloom.checkpoint.postgres.PostgresStore.commit>`).

        A data-modifying ``WITH`` whose final ``CASE`` runs the checks in the documented
        order, each step (CTE) running when the ``CASE`` first reads it: the thread row
        upsert (which locks the row) and its lease token; the head compare-and-set on the
        ``heads`` row; the run upserts' row count; the checkpoint insert's row. The blobs,
        writes and executions are written after the ``CASE``. The first failed check raises
        through ``fail()`` and the statement, like its transaction, writes nothing. No step
        reads a table through the statement's snapshot to decide: every check is made on the
        current version of a locked row, which is what makes them race-free. Multi-row
        ``VALUES`` take the records; the SQL of each shape (how many of each) is built once,
        with server-side ``$n`` placeholders, for a raw cursor: psycopg would re-parse a
        statement this long on every call.

        Raises:
            TypeError, ValueError: run metadata is not JSON-serializable.
        """
        cp = c.checkpoint
        if c.expected_head is ANY_HEAD:
            head = HEAD_ANY
        else:
            head = HEAD_NONE if c.expected_head is None else HEAD_SEQ
        params: list[Any] = [
            c.thread_id,  # $1
            c.namespace,  # $2
            now,  # $3
            c.lease_token,  # $4
            cp.checkpoint_ns if cp is not None else "",  # $5
            c.expected_head if head == HEAD_SEQ else None,  # $6
            cp.seq if cp is not None else None,  # $7
        ]
        runs, foreign = _merge_runs(c.runs)
        for row in run_rows(runs, c.namespace):
            params += nul_free_run_row(row)
        progress = c.progress
        if progress is not None:
            params += (progress.steps, progress.executions, progress.updated_at,
                       progress.run_id)
        blobs: dict[tuple[str, int], BlobRecord] = {}
        if cp is not None:
            params += (
                cp.parent_seq, cp.run_id, cp.step, cp.source, cp.created_at,
                channels_json(cp.channels), names_json(cp.next), cp.metadata, cp.frontier,
            )  # fmt: skip
            blobs = {(b.channel, b.version): b for b in cp.blobs}  # the last one wins
            for b in blobs.values():
                params += (b.channel, b.version, b.prev, b.data)
        writes = {
            (w.thread_id, w.checkpoint_ns, w.seq, w.task_id, w.channel, w.idx): w.data
            for w in c.writes
        }
        for key, data in writes.items():
            params += key
            params.append(data)
        executions = _merge_executions(c.executions)
        for row in execution_rows(executions, c.thread_id, c.namespace):
            params += nul_free_execution_row(row)
        mismatch = cp is not None and cp.thread_id != c.thread_id
        if runs:
            ids = ", ".join(repr(r.run_id) for r in runs)
            params.append(f"Rrun {ids} of thread {c.thread_id!r} belongs to another thread")
        if mismatch:
            assert cp is not None
            params.append(
                f"Ma commit for thread {c.thread_id!r} carries a checkpoint of thread "
                f"{cp.thread_id!r}"
            )
        if cp is not None:
            params.append(f"Dcheckpoint {cp.seq} already exists on thread {c.thread_id!r}")
        shape = (
            head,
            cp is not None,
            len(runs),
            progress is not None,
            foreign,
            mismatch,
            len(blobs),
            len(writes),
            len(executions),
            relaxed,
        )
        sql = self._commit_sql.get(shape)
        if sql is None:
            sql = self._commit_sql[shape] = self._build_commit(*shape)
        return sql, params

    def _build_commit(
        self,
        head: int,
        checkpoint: bool,
        runs: int,
        progress: bool,
        foreign: bool,
        mismatch: bool,
        blobs: int,
        writes: int,
        executions: int,
        relaxed: bool,
    ) -> bytes:
        s = self.schema
        n = 7  # $1..$7: see commit()

        def rows(width: int, count: int, fixed: str = "") -> str:
            nonlocal n
            out = []
            for _ in range(count):
                out.append("(" + fixed + ", ".join(f"${n + i}" for i in range(1, width + 1)) + ")")
                n += width
            return ", ".join(out)

        def param() -> str:
            nonlocal n
            n += 1
            return f"${n}"

        ctes = [f"t AS ({self._touch})"]
        checks = [self._lease_failed]
        if head != HEAD_ANY or checkpoint:
            ctes.append(f"h AS ({self._heads[head, checkpoint]})")
            if head != HEAD_ANY:
                checks.append(self._head_failed)
        if runs:
            ctes.append(f"r AS ({self._put_runs.format(rows(19, runs))})")
        if progress:  # counters only: no indexed column changes (a HOT update)
            ctes.append(
                f"u AS (UPDATE {s}.runs SET steps = {param()}, executions = {param()},"
                f" updated_at = {param()} WHERE namespace = $2 AND run_id = {param()}"
                " AND thread_id = $1)"
            )
        if checkpoint:
            ctes.append(f"c AS ({self._insert_checkpoint.format(rows(9, 1)[1:-1])})")
        if blobs:
            ctes.append(f"b AS ({self._put_blobs.format(rows(4, blobs, '$2, $1, $5, '))})")
        if writes:
            ctes.append(f"w AS ({self._put_writes.format(rows(7, writes, '$2, '))})")
        if executions:
            ctes.append(f"e AS ({self._put_executions.format(rows(18, executions))})")
        if foreign:  # two records of one run in the commit name different threads
            checks.append(f"WHEN true THEN {s}.fail({param()})")
        elif runs:
            checks.append(f"WHEN (SELECT count(*) FROM r) <> {runs} THEN {s}.fail({param()})")
        if mismatch:
            checks.append(f"WHEN true THEN {s}.fail({param()})")
        if checkpoint:
            checks.append(f"WHEN NOT EXISTS (SELECT FROM c) THEN {s}.fail({param()})")
        # $5..$7 are not used by every shape, but each parameter needs a type
        typed = "(VALUES ($5::text, $6::int8, $7::int8)) AS p"
        if relaxed:  # set for the rest of the transaction, which is what its commit reads
            ctes.append("a AS (SELECT set_config('synchronous_commit', 'off', true))")
            typed += ", a"
        return (
            f"WITH {', '.join(ctes)} SELECT CASE {' '.join(checks)} ELSE true END FROM {typed}"
        ).encode()


# -- records to parameters --------------------------------------------------------------------


def _merge_runs(runs: Sequence[RunRecord]) -> tuple[list[RunRecord], bool]:
    """One record per run id, as upserting them in order would leave it: the first record
    fixes the identity (thread, graph, namespace, created_at), the last one the rest. Also
    whether two records of one run name different threads (a conflict)."""
    if len(runs) < 2:
        return list(runs), False
    merged: dict[str, RunRecord] = {}
    foreign = False
    for run in runs:
        first = merged.get(run.run_id)
        if first is None:
            merged[run.run_id] = run
            continue
        foreign = foreign or first.thread_id != run.thread_id
        merged[run.run_id] = RunRecord(
            run.run_id, first.thread_id, first.graph, run.status, first.namespace, run.input,
            run.output, run.error, run.durability, first.created_at, run.updated_at,
            run.started_at, run.ended_at, run.steps, run.executions, run.resumed_from,
            run.metadata, run.traceparent, run.stats,
        )  # fmt: skip
    return list(merged.values()), foreign


def _merge_executions(executions: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
    """One record per execution id: the first fixes the namespace and ``created_at``, the
    last the rest (the thread is the commit's)."""
    if len(executions) < 2:
        return list(executions)
    merged: dict[str, ExecutionRecord] = {}
    for ex in executions:
        first = merged.get(ex.id)
        if first is not None:
            ex = ExecutionRecord(
                ex.id, ex.run_id, first.thread_id, ex.graph, ex.node, ex.step, ex.status,
                first.namespace, ex.attempt, ex.inputs, ex.outputs, ex.error, ex.parents,
                ex.attempts, ex.checkpoint_seq, first.created_at, ex.started_at, ex.ended_at,
            )  # fmt: skip
        merged[ex.id] = ex
    return list(merged.values())


def same_checkpoint(stored: CheckpointRecord | None, written: CheckpointRecord) -> bool:
    """Whether ``stored`` is the checkpoint ``written`` recorded (not another writer's with
    the same ``seq``): every field but the blobs is equal."""
    return stored is not None and (
        stored.seq, stored.parent_seq, stored.run_id, stored.step, stored.source,
        stored.created_at, stored.channels, stored.next, bytes(stored.metadata),
        bytes(stored.frontier),
    ) == (
        written.seq, written.parent_seq, written.run_id, written.step, written.source,
        written.created_at, {ch: (int(vb[0]), int(vb[1])) for ch, vb in written.channels.items()},
        tuple(written.next), bytes(written.metadata), bytes(written.frontier),
    )  # fmt: skip


# -- queries ------------------------------------------------------------------------------


def run_record(row: Sequence[Any]) -> RunRecord:
    """A run row (``metadata`` arrives decoded from jsonb)."""
    return _run_record(row, metadata_is_text=False)


def thread_record(row: Sequence[Any]) -> ThreadRecord:
    """A thread row (``metadata`` arrives decoded from jsonb)."""
    return _thread_record(row, metadata_is_text=False)


def by_run_id_order(order: str) -> str:
    """``order`` (``ORDER BY created_at ..., key ...``) written so that no index can serve
    it: Postgres's estimate of a run id prefix assumes its rows are spread over time, and
    then prefers scanning the by-time index for the first matches. Run ids are often made
    from the time, so a prefix's rows sit together, possibly far from the page's start; the
    store counts them first, and a prefix with few rows reads them by run id and sorts."""
    return order.replace("created_at", "created_at + 0", 1)
