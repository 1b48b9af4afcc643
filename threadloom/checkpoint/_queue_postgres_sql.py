"""The SQL of the Postgres run queue (:mod:`threadloom.checkpoint._queue_postgres`): every
statement of :class:`PostgresQueue <threadloom.checkpoint._queue_postgres.PostgresQueue>`,
built once per schema, and the small helpers that run them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import psycopg
from psycopg import errors as pg_errors

from threadloom.checkpoint._postgres_listen import channel_name
from threadloom.checkpoint._postgres_options import quote_schema
from threadloom.checkpoint._postgres_sql import CP_COLS
from threadloom.checkpoint._queue_common import (
    ACTIVE_RUN_STATUSES,
    AUDIT_COLS,
    HANDED_BACK_STATUSES,
    KEY_COLS,
    QUEUE_COLS,
)
from threadloom.errors import (
    StoreError,
    StoreUnavailableError,
)

__all__ = ["QueueStatements", "appended", "event_arrays", "one_row", "thread_key"]

Connection: TypeAlias = "psycopg.Connection[Any]"
# Joined into a statement: its transaction commits without waiting for the WAL flush.
_RELAXED = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"
_APPEND_TRIES = 1000  # each lost race means another appender won: progress is made


def one_row(conn: Connection, sql: str, params: Any) -> Any:
    """The one row a statement always returns."""
    row = conn.execute(sql, params).fetchone()
    if row is None:  # an aggregate or RETURNING of a row that exists: never
        raise StoreError(f"Postgres returned no row for {sql[:60]!r}")
    return row


def appended(conn: Connection, sql: str, params: Any, what: str) -> list[Any]:
    """The rows of a statement that appends events numbered after a run's last one, run again
    after each race lost to a concurrent append (the loser's numbers collide; the winner made
    progress, so the tries are bounded only as a safeguard)."""
    for _ in range(_APPEND_TRIES):
        try:
            return conn.execute(sql, params).fetchall()
        except pg_errors.UniqueViolation:
            continue
    raise StoreUnavailableError(
        f"{what} collided with concurrent appends {_APPEND_TRIES} times in a row")


def event_arrays(events: Sequence[tuple[str, bytes]]) -> dict[str, list[Any]]:
    """``events`` as the parallel arrays the append statements unnest."""
    return {"events": [e for e, _ in events], "datas": [bytes(d) for _, d in events]}


def thread_key(schema: str, namespace: str, thread_id: str) -> int:
    """The advisory lock key of a thread's queue (FNV-1a, as a signed 64-bit integer)."""
    h = 0xCBF29CE484222325
    for byte in f"threadloom-queue\x00{schema}\x00{namespace}\x00{thread_id}".encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


class QueueStatements:
    """The queue's SQL for the tables of one schema."""

    def __init__(self, schema: str, *, notify: bool = True) -> None:
        s = quote_schema(schema)
        # A statement that changes rows signals when it commits (pg_notify); with an external
        # bus installed (``use_signals``) the store publishes after the commit instead, and
        # the statement only evaluates the same arguments.
        signal = "pg_notify" if notify else "num_nulls"
        q = ", ".join(f"q.{c.strip()}" for c in QUEUE_COLS.split(","))
        self.channel = channel_name(schema)
        self.notify = "SELECT pg_notify(%s, %s)"
        self.lock = "SELECT pg_advisory_xact_lock(%s)"
        self.get = f"SELECT {QUEUE_COLS} FROM {s}.run_queue WHERE namespace = %s AND run_id = %s"
        self.get_locked = self.get + " FOR UPDATE"
        self.insert = (  # and signal "work" when it commits
            f"WITH i AS (INSERT INTO {s}.run_queue ({QUEUE_COLS})"
            f" VALUES ({', '.join(['%s'] * 15)}) RETURNING 1)"
            f" SELECT {signal}(%s::text, %s::text) FROM i"
        )
        # a row inserted claimed (enqueue_claimed) has its worker already: no signal
        self.insert_claimed = (
            f"INSERT INTO {s}.run_queue ({QUEUE_COLS}) VALUES ({', '.join(['%s'] * 15)})"
        )
        # What enqueue decides on, in one round trip: the run's own queue row (a retry may
        # find it), whether the run id is taken, and the thread's latest open row.
        self.probe = (
            f"SELECT q.thread_id, q.graph, q.payload, q.status, EXISTS (SELECT FROM {s}.runs"
            " WHERE run_id = %(run_id)s AND namespace = %(ns)s),"
            f" (SELECT max(created_at) FROM {s}.run_queue WHERE namespace = %(ns)s"
            " AND thread_id = %(thread_id)s AND status <> 'done')"
            f" FROM (SELECT) AS one LEFT JOIN {s}.run_queue q ON q.namespace = %(ns)s"
            " AND q.run_id = %(run_id)s"
        )
        self.run = f"SELECT thread_id, graph FROM {s}.runs WHERE run_id = %s AND namespace = %s"
        self.run_status = (
            f"SELECT thread_id, status FROM {s}.runs WHERE run_id = %s AND namespace = %s"
        )
        self.last_open = (
            f"SELECT max(created_at) FROM {s}.run_queue WHERE namespace = %s"
            " AND thread_id = %s AND status <> 'done'"
        )
        statuses = ", ".join(f"'{x}'" for x in ACTIVE_RUN_STATUSES)
        self.active = (
            f"SELECT {q} FROM {s}.run_queue q LEFT JOIN {s}.runs r ON r.run_id = q.run_id"
            " AND r.namespace = q.namespace WHERE q.namespace = %s AND q.thread_id = %s"
            f" AND q.status <> 'done' AND (r.run_id IS NULL OR r.status IN ({statuses}))"
            " ORDER BY q.created_at, q.run_id FOR UPDATE OF q"
        )
        self.requeue = (
            f"INSERT INTO {s}.run_queue AS q ({QUEUE_COLS}) VALUES ({', '.join(['%s'] * 15)})"
            " ON CONFLICT (namespace, run_id) DO UPDATE SET payload = excluded.payload,"
            " available_at = excluded.available_at, created_at = excluded.created_at,"
            " status = 'queued', worker = NULL, claim_expires = NULL, cancel = NULL,"
            f" finished_at = NULL RETURNING {q}"
        )
        self.pending_run = (
            f"UPDATE {s}.runs SET status = 'pending', updated_at = %s, ended_at = NULL"
            " WHERE run_id = %s AND namespace = %s"
        )
        # See the module docstring.
        self.claim = (
            f"WITH c AS (SELECT q.namespace, q.run_id FROM {s}.run_queue q"
            " WHERE q.status <> 'done' AND ((q.status = 'queued' AND q.available_at <= %(now)s)"
            " OR (q.status = 'claimed' AND q.claim_expires <= %(now)s))"
            " AND (%(graphs)s::text[] IS NULL OR q.graph = ANY(%(graphs)s::text[]))"
            f" AND NOT EXISTS (SELECT FROM {s}.run_queue o WHERE o.namespace = q.namespace"
            " AND o.thread_id = q.thread_id AND o.status <> 'done' AND o.run_id <> q.run_id"
            " AND ((o.created_at, o.run_id) < (q.created_at, q.run_id)"
            " OR (o.status = 'claimed' AND o.claim_expires > %(now)s)))"
            " ORDER BY q.created_at, q.run_id LIMIT %(limit)s FOR UPDATE OF q SKIP LOCKED)"
            f" UPDATE {s}.run_queue q SET status = 'claimed', attempts = q.attempts + 1,"
            " worker = %(worker)s, claim_token = q.claim_token + 1,"
            f" claim_expires = %(expires)s FROM c, {_RELAXED}"
            f" WHERE q.namespace = c.namespace AND q.run_id = c.run_id RETURNING {q}"
        )
        current = (
            "q.namespace = %(ns)s AND q.run_id = %(run_id)s AND q.claim_token = %(token)s"
            " AND q.status = 'claimed'"
        )
        # the heartbeat, with the worker's liveness lock ({"session": ...}, or {}) in its info
        self.renew = (
            f"WITH b AS (INSERT INTO {s}.workers AS w VALUES (%(worker)s, %(now)s, %(now)s,"
            " %(session)s::jsonb) ON CONFLICT (worker_id) DO UPDATE SET"
            " last_seen = excluded.last_seen, info = w.info || excluded.info)"
            f" UPDATE {s}.run_queue q SET claim_expires = %(expires)s"
            " FROM unnest(%(ns)s::text[], %(ids)s::text[], %(tokens)s::int8[])"
            f" AS c(namespace, run_id, token), {_RELAXED} WHERE q.namespace = c.namespace"
            " AND q.run_id = c.run_id AND q.claim_token = c.token AND q.status = 'claimed'"
            " RETURNING q.namespace, q.run_id, q.cancel"
        )
        self.finish = (
            f"WITH f AS (UPDATE {s}.run_queue q SET status = 'done', claim_expires = NULL,"
            f" finished_at = %(now)s WHERE {current} RETURNING 1)"
            f" SELECT {signal}(%(channel)s::text, %(message)s::text) FROM f, {_RELAXED}"
        )
        # finish with the run's last events: appended only if the claim is still current
        self.finish_events = (
            f"WITH f AS (UPDATE {s}.run_queue q SET status = 'done', claim_expires = NULL,"
            f" finished_at = %(now)s WHERE {current} RETURNING 1),"
            f" last AS (SELECT coalesce(max(seq), 0) AS seq FROM {s}.run_events"
            " WHERE namespace = %(ns)s AND run_id = %(run_id)s),"
            f" ins AS (INSERT INTO {s}.run_events SELECT %(ns)s, %(run_id)s, last.seq + e.n,"
            " e.event, e.data, %(now)s FROM f, last,"
            " unnest(%(events)s::text[], %(datas)s::bytea[]) WITH ORDINALITY AS e(event, data, n)"
            " RETURNING seq), top AS (SELECT max(seq) AS seq FROM ins)"
            f" SELECT top.seq, {signal}(%(channel)s::text, %(prefix)s || top.seq::text),"
            f" {signal}(%(channel)s::text, %(message)s::text) FROM f, top, {_RELAXED}"
        )
        handed_back = ", ".join(f"'{x}'" for x in HANDED_BACK_STATUSES)
        self.release = (
            f"WITH f AS (UPDATE {s}.run_queue q SET status = 'queued', worker = NULL,"
            f" claim_expires = NULL, available_at = %(at)s WHERE {current} RETURNING 1),"
            f" r AS (UPDATE {s}.runs SET status = 'pending', updated_at = %(now)s,"
            " ended_at = NULL FROM f WHERE run_id = %(run_id)s AND namespace = %(ns)s"
            f" AND status IN ({handed_back}))"
            f" SELECT {signal}(%(channel)s::text, %(message)s::text) FROM f, {_RELAXED}"
        )
        self.signal_cancel = (
            f"UPDATE {s}.run_queue SET cancel = CASE cancel WHEN 'rollback' THEN cancel"
            " ELSE %s END WHERE namespace = %s AND run_id = %s"
        )
        self.done = (
            f"UPDATE {s}.run_queue SET status = 'done', claim_expires = NULL, finished_at = %s"
            " WHERE namespace = %s AND run_id = %s"
        )
        self.cancel_run = (
            f"UPDATE {s}.runs SET status = 'cancelled', updated_at = %s, ended_at = %s"
            " WHERE run_id = %s AND namespace = %s"
        )
        depth = f"SELECT count(*) FROM {s}.run_queue WHERE status = 'queued'"
        self.depth, self.depth_in = depth, depth + " AND namespace = %s"

        # -- rollback -----------------------------------------------------------------------
        self.patch_thread = (
            f"UPDATE {s}.threads SET metadata = metadata || %s::jsonb"
            " WHERE namespace = %s AND thread_id = %s"
        )
        # threads, checkpoints, writes, blobs, heads and executions are keyed by
        # (namespace, thread_id): every statement below starts with both.
        self.lock_thread = (
            f"SELECT 1 FROM {s}.threads WHERE namespace = %s AND thread_id = %s FOR UPDATE"
        )
        self.run_checkpoints = (
            f"SELECT checkpoint_ns, seq FROM {s}.checkpoints WHERE namespace = %s"
            " AND thread_id = %s AND run_id = %s ORDER BY seq"
        )
        where = ("namespace = %s AND thread_id = %s AND checkpoint_ns = %s"
                 " AND seq = ANY(%s::int8[])")
        self.drop_writes = f"DELETE FROM {s}.writes WHERE {where}"
        self.drop_checkpoints = f"DELETE FROM {s}.checkpoints WHERE {where}"
        self.candidate_blobs = (
            f"SELECT channel, version FROM {s}.blobs WHERE namespace = %s AND thread_id = %s"
            " AND checkpoint_ns = %s AND version = ANY(%s::int8[])"
        )
        self.later_checkpoints = (
            f"SELECT {CP_COLS} FROM {s}.checkpoints WHERE namespace = %s AND thread_id = %s"
            " AND checkpoint_ns = %s AND seq > %s"
        )
        self.drop_blobs = (
            f"DELETE FROM {s}.blobs b WHERE b.namespace = %s AND b.thread_id = %s"
            " AND b.checkpoint_ns = %s"
            " AND (b.channel, b.version) IN (SELECT * FROM unnest(%s::text[], %s::int8[]))"
        )
        self.fix_heads = (
            f"UPDATE {s}.heads h SET seq = (SELECT max(seq) FROM {s}.checkpoints c"
            " WHERE c.namespace = h.namespace AND c.thread_id = h.thread_id"
            " AND c.checkpoint_ns = h.checkpoint_ns)"
            " WHERE h.namespace = %s AND h.thread_id = %s AND h.checkpoint_ns = ANY(%s::text[])"
        )
        self.drop_run = (
            f"WITH e AS (DELETE FROM {s}.executions WHERE namespace = %(ns)s"
            " AND thread_id = %(thread_id)s AND run_id = %(run_id)s),"
            f" r AS (DELETE FROM {s}.runs WHERE run_id = %(run_id)s AND namespace = %(ns)s),"
            f" v AS (DELETE FROM {s}.run_events WHERE namespace = %(ns)s"
            " AND run_id = %(run_id)s),"
            f" l AS (DELETE FROM {s}.run_logs WHERE namespace = %(ns)s AND run_id = %(run_id)s),"
            f" q AS (DELETE FROM {s}.run_queue WHERE namespace = %(ns)s AND run_id = %(run_id)s"
            " RETURNING 1) SELECT count(*) FROM q"
        )
        self.drop_events = f"DELETE FROM {s}.run_events WHERE namespace = %s AND run_id = %s"
        self.forget = (
            f"WITH q AS (DELETE FROM {s}.run_queue WHERE namespace = %(ns)s"
            f" AND run_id = %(run_id)s) DELETE FROM {s}.run_events WHERE namespace = %(ns)s"
            " AND run_id = %(run_id)s"
        )

        # -- events -------------------------------------------------------------------------
        self.append = (
            f"WITH last AS (SELECT coalesce(max(seq), 0) AS seq FROM {s}.run_events"
            " WHERE namespace = %(ns)s AND run_id = %(run_id)s),"
            f" ins AS (INSERT INTO {s}.run_events SELECT %(ns)s, %(run_id)s, last.seq + e.n,"
            " e.event, e.data, %(now)s FROM last,"
            " unnest(%(events)s::text[], %(datas)s::bytea[]) WITH ORDINALITY AS e(event, data, n)"
            " RETURNING seq), top AS (SELECT max(seq) AS seq FROM ins)"
            f" SELECT top.seq, {signal}(%(channel)s::text, %(prefix)s || top.seq::text)"
            f" FROM top, {_RELAXED}"
        )
        # the events of several runs (parallel arrays), each numbered after its run's last
        self.append_many = (
            "WITH e AS (SELECT * FROM unnest(%(nss)s::text[], %(runs)s::text[],"
            " %(events)s::text[], %(datas)s::bytea[]) WITH ORDINALITY AS e(ns, run_id, event,"
            " data, n)), last AS (SELECT k.ns, k.run_id, (SELECT coalesce(max(r.seq), 0)"
            f" FROM {s}.run_events r WHERE r.namespace = k.ns AND r.run_id = k.run_id) AS seq"
            " FROM (SELECT DISTINCT ns, run_id FROM e) k),"
            f" ins AS (INSERT INTO {s}.run_events SELECT e.ns, e.run_id, last.seq + row_number()"
            " OVER (PARTITION BY e.ns, e.run_id ORDER BY e.n), e.event, e.data, %(now)s"
            " FROM e JOIN last ON last.ns = e.ns AND last.run_id = e.run_id"
            " RETURNING namespace, run_id, seq), top AS (SELECT namespace, run_id,"
            " max(seq) AS seq FROM ins GROUP BY namespace, run_id)"
            f" SELECT top.namespace, top.run_id, top.seq, {signal}(%(channel)s::text,"
            " %(prefix)s || top.namespace || '/' || top.run_id || '/' || top.seq::text)"
            f" FROM top, {_RELAXED}"
        )
        self.last_seq = (
            f"SELECT coalesce(max(seq), 0) FROM {s}.run_events WHERE namespace = %s"
            " AND run_id = %s"
        )
        self.put_event = f"INSERT INTO {s}.run_events VALUES (%s, %s, %s, %s, %s, %s)"
        self.events = (
            f"SELECT namespace, run_id, seq, event, data, created_at FROM {s}.run_events"
            " WHERE namespace = %s AND run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
        )
        self.delete_finished_events = (
            f"DELETE FROM {s}.run_events e USING {s}.run_queue q WHERE q.status = 'done'"
            " AND q.finished_at < %s AND e.namespace = q.namespace AND e.run_id = q.run_id"
        )
        self.delete_loose_events = (
            f"DELETE FROM {s}.run_events WHERE (namespace, run_id) IN (SELECT e.namespace,"
            f" e.run_id FROM {s}.run_events e WHERE NOT EXISTS (SELECT FROM {s}.run_queue q"
            " WHERE q.namespace = e.namespace AND q.run_id = e.run_id)"
            " GROUP BY e.namespace, e.run_id HAVING max(e.created_at) < %s)"
        )

        # -- workers and keys ---------------------------------------------------------------
        self.heartbeat = (
            f"INSERT INTO {s}.workers VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT (worker_id)"
            " DO UPDATE SET last_seen = excluded.last_seen, started_at = excluded.started_at,"
            " info = excluded.info"
        )
        self.workers = (
            f"SELECT worker_id, last_seen, started_at, info FROM {s}.workers"
            " WHERE last_seen > %s ORDER BY worker_id"
        )
        self.remove_worker = f"DELETE FROM {s}.workers WHERE worker_id = %s"
        # -- liveness (see the module docstring) ------------------------------------------
        # workers whose heartbeat names a liveness lock that nobody holds any more
        self.dead_workers = (
            "WITH held AS MATERIALIZED (SELECT objid FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s::oid AND objsubid = 2 AND granted)"
            " SELECT w.worker_id, w.info->'session'->>'key', w.info->'session'->>'process'"
            f" FROM {s}.workers w WHERE w.info ? 'session' AND NOT EXISTS (SELECT FROM held"
            " WHERE held.objid = (w.info->'session'->>'key')::int8::oid)"
        )
        # their claims lapse now, the leases their process holds on those threads are
        # released (its commits then fail their lease check), and they are not looked at
        # again (unless a heartbeat names a lock again)
        self.expire_dead = (
            "WITH d AS (SELECT * FROM unnest(%(workers)s::text[], %(keys)s::text[],"
            " %(processes)s::text[]) AS d(worker_id, key, process)),"
            f" f AS (UPDATE {s}.workers w SET info = w.info - 'session' FROM d"
            " WHERE w.worker_id = d.worker_id AND w.info->'session'->>'key' = d.key),"
            f" e AS (UPDATE {s}.run_queue q SET claim_expires = %(now)s FROM d"
            " WHERE q.worker = d.worker_id AND q.status = 'claimed'"
            " AND q.claim_expires > %(now)s RETURNING q.namespace, q.thread_id, d.process),"
            f" l AS (UPDATE {s}.threads t SET lease_owner = NULL, lease_expires_at = NULL"
            " FROM e WHERE t.namespace = e.namespace AND t.thread_id = e.thread_id"
            " AND t.lease_owner IS NOT NULL"
            " AND left(t.lease_owner, length(e.process) + 1) = e.process || ' ' RETURNING 1)"
            " SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM l)"
        )
        self.create_key = f"INSERT INTO {s}.api_keys ({KEY_COLS}) VALUES ({', '.join(['%s'] * 8)})"
        self.key = f"SELECT {KEY_COLS} FROM {s}.api_keys WHERE key_id = %s"
        self.keys = f"SELECT {KEY_COLS} FROM {s}.api_keys"
        self.keys_in = self.keys + " WHERE namespace = %s"
        self.revoke_key = (
            f"UPDATE {s}.api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE key_id = %s"
        )
        # an event has its id before the transaction: a retried transaction writes it once
        self.put_audit = (
            f"INSERT INTO {s}.audit_log ({AUDIT_COLS}) VALUES ({', '.join(['%s'] * 10)})"
            " ON CONFLICT DO NOTHING"
        )
        # the same, with $n placeholders: a statement of a commit's pipeline (the events
        # of engine commits, Commit.audit)
        self.put_audit_raw = (
            f"INSERT INTO {s}.audit_log ({AUDIT_COLS}) VALUES ($1, $2, $3::float8,"
            " $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
        ).encode()
        self.audit = f"SELECT {AUDIT_COLS} FROM {s}.audit_log WHERE namespace = %s"
        self.audit_after = self.audit + " AND id < %s"
        self.touch_key = (
            f"UPDATE {s}.api_keys SET last_used_at = %s WHERE key_id = %s"
            " AND (last_used_at IS NULL OR last_used_at < %s)"
        )
