"""The run queue, run events, workers and API keys of the Postgres store.

:class:`PostgresQueue` is mixed into :class:`~threadloom.checkpoint.postgres.PostgresStore`
and makes it a :class:`~threadloom.checkpoint.queue.RuntimeStore`, the distributed one: any
number of API processes and workers share a schema.

Claims. One statement claims a batch: it selects the claimable rows oldest first with
``FOR UPDATE SKIP LOCKED`` and updates them (new token, ``attempts + 1``, the worker, the
expiry). A row is claimable if it is queued and available, or claimed and lapsed, and it is
the oldest open (not ``done``) row of its thread with no other row of the thread held by an
unexpired claim; so one statement never claims two runs of a thread. Two claimers never get
the same row: the second skips a row the first has locked, and a row the first claimed and
committed fails the second's recheck of the ``WHERE`` on the row's current version. Nor two
runs of one thread: a thread's open rows are claimed in ``created_at`` order, which
``enqueue`` keeps increasing within a thread (under the thread's lock, whatever the clocks),
so the only row of a thread a claimer can take is its oldest open one, and a newer one only
once that one is ``done`` (no snapshot that still shows it open lets a newer one through).

Enqueue. One transaction takes a transaction-level advisory lock on the thread
(``pg_advisory_xact_lock``, so it works behind a transaction pooler and needs no thread row),
then reads the thread's active runs in a fresh snapshot, applies the multitask strategy,
writes the run record through the store's own commit statement and inserts the queue row.
Two concurrent enqueues on one thread are serialized: of two ``reject`` calls, one wins.
``requeue`` takes the same lock. Cancellation and rollback lock the queue row first
(``FOR UPDATE``), rollback then the thread row (like ``prune_checkpoints``), and fix the
thread's ``heads`` rows after deleting the run's checkpoints.

Events. ``append_events`` is one statement that numbers the events after the run's last one;
two appenders racing for the same numbers collide on the primary key and the loser simply runs
again (in a new snapshot), so numbers are never reused or skipped.

Claims, renewals, finishing and releasing a claim, and event appends commit with
``synchronous_commit = off`` (like a step under ``async`` durability): a server crash may take
the last few back (a lost claim lapses and is claimed again while the engine's thread lease
still fences the run; a run finished again is a no-op; lost events are appended again by the
resumed run). Enqueues, cancellations, rollbacks and keys wait for the flush.

Signals ride along: each statement or transaction that changes rows calls ``pg_notify``
itself, so the notification leaves exactly when the change commits (see
:mod:`~threadloom.checkpoint._postgres_listen` for the receiving side and ``listen_url``).
With an external bus installed (``use_signals``, e.g. Redis for ``--redis``), the statements
only evaluate their signal's arguments, and the store publishes the signals to that bus once
the call has committed: nothing is notified inside transactions, and nothing listens.

Liveness. A worker's process vouches for itself with a session lock on the store's
``LISTEN`` connection (:mod:`~threadloom.checkpoint._postgres_listen`), which its heartbeats
(``renew_claims``, ``worker_heartbeat``) name in its ``workers.info`` as ``{"session": {"key",
"process"}}``. ``expire_dead_claims`` reads the workers whose named lock nobody holds
(``pg_locks``, read once) and, if there are any, in one more statement ends their open claims
(``claim_expires`` = now), releases the thread leases their process holds on those runs'
threads (an owner that starts with the ``process`` prefix; the old token then fails every
lease check), drops their ``session`` mark so that each death is handled once, and signals
``"work"``. The claim statement is unchanged: the lapsed claims are then claimed as usual.

In doubt. A transaction whose connection is lost at ``COMMIT`` may have been applied; the
store retries it. An ``enqueue`` retry that finds its own row (same thread, graph and payload)
reports success; a retried claim may have claimed rows the caller never sees (they lapse after
``ttl`` and are claimed again); a retried event append may append its events twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import psycopg
from psycopg import errors as pg_errors

from threadloom.checkpoint._postgres_listen import LIVENESS_CLASS, PgSignals, channel_name
from threadloom.checkpoint._postgres_options import quote_schema, split_url
from threadloom.checkpoint._postgres_sql import CP_COLS
from threadloom.checkpoint._postgres_wire import check_failure
from threadloom.checkpoint._queue_common import (
    ACTIVE_RUN_STATUSES,
    AUDIT_COLS,
    END_EVENT,
    HANDED_BACK_STATUSES,
    KEY_COLS,
    QUEUE_COLS,
    api_key,
    audit_event,
    audit_row,
    cancel_event,
    check_audit_cursor,
    check_deletable,
    check_enqueue,
    check_limit,
    doomed_blobs,
    info_json,
    queue_time,
    queued_run,
    run_event,
    stamp_audit,
    worker_record,
)
from threadloom.checkpoint._rows import checkpoint_record
from threadloom.checkpoint._signals import CANCEL, DONE, EVENT, WORK, AfterCommit
from threadloom.checkpoint.base import Commit, RunRecord
from threadloom.checkpoint.queue import (
    ApiKey,
    AuditEvent,
    CancelAction,
    ClaimState,
    MultitaskStrategy,
    QueuedRun,
    RunEvent,
    Signals,
    WorkerRecord,
)
from threadloom.errors import (
    InvalidConfigError,
    RunConflictError,
    RunNotFoundError,
    StoreError,
    StoreUnavailableError,
    ThreadBusyError,
)

if TYPE_CHECKING:
    from threadloom.checkpoint._postgres_sql import Statements

__all__ = ["PostgresQueue", "QueueStatements"]

log = logging.getLogger("threadloom.checkpoint.postgres")
_T = TypeVar("_T")
Connection: TypeAlias = "psycopg.Connection[Any]"
Outcome: TypeAlias = Literal["cancelled", "signalled", "finished", "unknown"]
# Joined into a statement: its transaction commits without waiting for the WAL flush.
_RELAXED = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"
_LIVENESS_WAIT = 5.0  # seconds hold_liveness waits for the lock
_APPEND_TRIES = 1000  # each lost race means another appender won: progress is made


def _one(conn: Connection, sql: str, params: Any) -> Any:
    """The one row a statement always returns."""
    row = conn.execute(sql, params).fetchone()
    if row is None:  # an aggregate or RETURNING of a row that exists: never
        raise StoreError(f"Postgres returned no row for {sql[:60]!r}")
    return row


def _appended(conn: Connection, sql: str, params: Any, what: str) -> list[Any]:
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


def _event_arrays(events: Sequence[tuple[str, bytes]]) -> dict[str, list[Any]]:
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


class PostgresQueue:
    """The :class:`~threadloom.checkpoint.queue.RuntimeStore` part of the Postgres store."""

    reads_are_local = False  # every read is a round trip

    if TYPE_CHECKING:  # the store's own, used here
        schema: str
        _sql: Statements

        def _run(self, fn: Callable[[Connection], _T], what: str, *,
                 ready: bool = True) -> _T: ...

    def _init_runtime(self, listen_dsn: str, connect_timeout: int) -> None:
        """Prepare the queue's statements and signals (called by the store's ``__init__``):
        ``listen_dsn`` is where the ``LISTEN`` connection goes."""
        self._q = QueueStatements(self.schema)
        self._external: Signals | None = None
        self._outbox = AfterCommit()  # what a call publishes after it commits
        if listen_dsn.lower().startswith(("postgres://", "postgresql://")):
            listen_dsn = split_url(listen_dsn)[0]  # without threadloom's own options
        self._bus = PgSignals(listen_dsn, self._q.channel, self._notify, connect_timeout)
        self._live: dict[str, str] = {}  # worker id -> its process (see hold_liveness)

    def _close_runtime(self) -> None:
        """Stop the listener (called by ``close``)."""
        self._bus.close()

    def _notify(self, channel: str, payload: str) -> None:
        self._run(lambda conn: conn.execute(self._q.notify, (channel, payload)), "notify")

    def signals(self) -> Signals:
        """The store's signal bus: the one :meth:`use_signals` installed, else ``NOTIFY`` out
        and one ``LISTEN`` connection in (see :mod:`~threadloom.checkpoint._postgres_listen`)."""
        return self._external if self._external is not None else self._bus

    def use_signals(self, bus: Signals | None) -> None:
        """Announce what this store commits on ``bus`` after each commit, instead of with
        ``NOTIFY`` inside the transaction (``None``: ``NOTIFY`` again). Nothing then
        ``LISTEN``s unless something subscribes to the built-in bus."""
        self._q = QueueStatements(self.schema, notify=bus is None)
        self._external = bus

    def _send(self, conn: Connection, topic: str, message: str) -> None:
        """Signal ``topic`` when the current transaction commits: ``NOTIFY`` in it, or, with
        an external bus, publish once the call that runs it (:meth:`_signalling`) returns.
        (Statements that notify in their own SQL call ``self._outbox.add`` for the bus.)"""
        if self._external is None:
            conn.execute(self._q.notify, (self._q.channel, f"{topic}\n{message}"))
        else:
            self._outbox.add(topic, message)

    def _signalling(self, fn: Callable[[Connection], _T], what: str) -> _T:
        """``self._run(fn, what)``, then publish what ``fn``'s last (committed) attempt sent
        to the external bus, if one is installed."""
        bus = self._external
        if bus is None:
            return self._run(fn, what)
        attempt, sent = self._outbox.collect(fn)
        result = self._run(attempt, what)
        for topic, message in sent:
            bus.publish(topic, message)
        return result

    # -- the queue ------------------------------------------------------------------------

    def enqueue(self, record: RunRecord, run: QueuedRun,
                strategy: MultitaskStrategy = "enqueue", *,
                thread_metadata: Mapping[str, Any] | None = None,
                audit: AuditEvent | None = None) -> list[str]:
        """Record the pending run and queue it, in one transaction under the thread's
        advisory lock (see the protocol and the module docstring)."""
        record, row = check_enqueue(record, run, strategy, time.time())
        event = stamp_audit(audit, time.time()) if audit is not None else None
        sql = self._q
        try:
            patch = json.dumps(dict(thread_metadata)) if thread_metadata else None
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc
        tries = 0
        decided: list[str] = []

        def enqueue(conn: Connection) -> list[str]:
            nonlocal tries, decided
            tries += 1
            now = time.time()
            with conn.transaction():
                conn.execute(sql.lock, (thread_key(self.schema, row.namespace, row.thread_id),))
                probe = {"ns": row.namespace, "run_id": row.run_id, "thread_id": row.thread_id}
                thread, graph, payload, status, taken, last = _one(conn, sql.probe, probe)
                if thread is not None and tries > 1 and (thread, graph, bytes(payload)) == (
                    row.thread_id, row.graph, row.payload
                ):
                    self._outbox.add(WORK, "")
                    return decided  # an earlier attempt committed after all
                if thread is not None and status == "done" and not taken:
                    # left by a deleted run (its thread was deleted, or retention took it)
                    conn.execute(sql.forget, {"ns": row.namespace, "run_id": row.run_id})
                elif thread is not None or taken:
                    raise RunConflictError(
                        f"run {row.run_id!r} already exists in namespace {row.namespace!r}"
                    )
                active = [queued_run(r) for r in conn.execute(
                    sql.active, (row.namespace, row.thread_id))]  # fmt: skip
                if active and strategy == "reject":
                    raise ThreadBusyError(
                        f"thread {row.thread_id!r} is busy with run {active[0].run_id!r}"
                    )
                cancelled = []
                if active and strategy in ("interrupt", "rollback"):
                    action: CancelAction = "rollback" if strategy == "rollback" else "interrupt"
                    for other in active:
                        done = self._cancel(conn, other, action, now)
                        cancelled_event = cancel_event(event, other, done)
                        if cancelled_event is not None:
                            conn.execute(sql.put_audit,
                                         audit_row(stamp_audit(cancelled_event, now)))
                        cancelled.append(other.run_id)
                self._write_record(conn, record, now)
                if patch is not None:
                    conn.execute(sql.patch_thread, (patch, row.namespace, row.thread_id))
                try:
                    conn.execute(sql.insert, (
                        row.namespace, row.run_id, row.thread_id, row.graph, row.payload,
                        row.available_at, queue_time(row.created_at, last), row.timeout,
                        "queued", 0, None, 0, None, None, None, sql.channel, f"{WORK}\n",
                    ))  # fmt: skip
                except pg_errors.UniqueViolation:
                    raise RunConflictError(
                        f"run {row.run_id!r} already exists in namespace {row.namespace!r}"
                    ) from None
                if event is not None:
                    conn.execute(sql.put_audit, audit_row(event))
                self._outbox.add(WORK, "")
                decided = cancelled
            return cancelled

        return self._signalling(enqueue, "enqueue")

    def _write_record(self, conn: Connection, record: RunRecord, now: float) -> None:
        """Write the run record with the store's own commit statement (which also creates or
        touches the thread row)."""
        statement, params = self._sql.commit(
            Commit(record.thread_id, namespace=record.namespace, runs=[record]), now
        )
        try:
            psycopg.RawCursor(conn).execute(statement, params)
        except psycopg.Error as exc:
            failure = check_failure(exc)
            if failure is None:
                raise
            raise failure from None

    def requeue(self, namespace: str, run_id: str, *, available_at: float = 0.0,
                payload: bytes | None = None, audit: AuditEvent | None = None) -> QueuedRun:
        """Queue an existing, finished run again (see the protocol)."""
        sql = self._q
        event = stamp_audit(audit, time.time()) if audit is not None else None

        def requeue(conn: Connection) -> QueuedRun:
            with conn.transaction():
                found = conn.execute(sql.run, (run_id, namespace)).fetchone()
                if found is None:
                    raise RunNotFoundError(f"no run {run_id!r} in namespace {namespace!r}")
                thread_id, graph = found
                conn.execute(sql.lock, (thread_key(self.schema, namespace, thread_id),))
                old = conn.execute(sql.get_locked, (namespace, run_id)).fetchone()
                if old is not None and old[8] != "done":
                    raise ThreadBusyError(f"run {run_id!r} is {old[8]} already")
                now = time.time()
                (last,) = _one(conn, sql.last_open, (namespace, thread_id))
                body = bytes(payload) if payload is not None else old[4] if old else b"{}"
                conn.execute(sql.pending_run, (now, run_id, namespace))
                new = _one(conn, sql.requeue, (
                    namespace, run_id, thread_id, graph, body, available_at,
                    queue_time(now, last), None, "queued", 0, None, 0, None, None, None,
                ))  # fmt: skip
                if event is not None:
                    conn.execute(sql.put_audit, audit_row(event))
                self._send(conn, WORK, "")
                return queued_run(new)

        return self._signalling(requeue, "requeue")

    def get_queued(self, namespace: str, run_id: str) -> QueuedRun | None:
        """The run's queue row (in any status), if it has one."""

        def get(conn: Connection) -> QueuedRun | None:
            row = conn.execute(self._q.get, (namespace, run_id)).fetchone()
            return queued_run(row) if row is not None else None

        return self._run(get, "get_queued")

    def claim_runs(self, worker: str, limit: int, ttl: float,
                   graphs: Sequence[str] | None = None) -> list[QueuedRun]:
        """Claim up to ``limit`` runs for ``ttl`` seconds in one statement (``FOR UPDATE SKIP
        LOCKED``; see the protocol and the module docstring)."""
        check_limit(limit)
        if limit == 0 or (graphs is not None and not graphs):
            return []
        names = list(graphs) if graphs is not None else None

        def claim(conn: Connection) -> list[QueuedRun]:
            now = time.time()
            params = {"now": now, "graphs": names, "limit": limit, "worker": worker,
                      "expires": now + ttl}
            claims = [queued_run(r) for r in conn.execute(self._q.claim, params)]
            claims.sort(key=lambda c: (c.created_at, c.run_id))
            return claims

        return self._run(claim, "claim_runs")

    def renew_claims(self, worker: str, claims: Sequence[QueuedRun],
                     ttl: float) -> list[ClaimState]:
        """Extend the worker's claims and record its heartbeat, in one statement; report lost
        claims and cancellation requests."""
        marker = self._session(worker)
        session = json.dumps({"session": marker} if marker is not None else {})

        def renew(conn: Connection) -> list[ClaimState]:
            now = time.time()
            params = {
                "worker": worker, "now": now, "expires": now + ttl,
                "ns": [c.namespace for c in claims], "ids": [c.run_id for c in claims],
                "tokens": [c.claim_token for c in claims], "session": session,
            }  # fmt: skip
            held = {(ns, rid): cancel for ns, rid, cancel in conn.execute(self._q.renew, params)}
            return [
                ClaimState(c.run_id, c.namespace, cancel=held[(c.namespace, c.run_id)])
                if (c.namespace, c.run_id) in held
                else ClaimState(c.run_id, c.namespace, lost=True)
                for c in claims
            ]

        return self._run(renew, "renew_claims")

    def _end_claim(self, sql: str, claim: QueuedRun, topic: str, what: str,
                   **params: Any) -> bool:
        message = f"{claim.namespace}/{claim.run_id}" if topic == DONE else ""
        values = {
            "ns": claim.namespace, "run_id": claim.run_id, "token": claim.claim_token,
            "channel": self._q.channel, "message": f"{topic}\n{message}", **params,
        }  # fmt: skip

        def end(conn: Connection) -> bool:
            if conn.execute(sql, values).fetchone() is None:
                return False
            self._outbox.add(topic, message)
            return True

        return self._signalling(end, what)

    def finish_claim(self, claim: QueuedRun,
                     events: Sequence[tuple[str, bytes]] = ()) -> bool:
        """Mark the run ``done`` if the claim is still current, append its last ``events``,
        and signal ``"event"`` and ``"done"``, in one statement."""
        if not events:
            return self._end_claim(self._q.finish, claim, DONE, "finish_claim", now=time.time())
        ns, run_id = claim.namespace, claim.run_id
        params = {
            "ns": ns, "run_id": run_id, "token": claim.claim_token, "now": time.time(),
            "channel": self._q.channel, "prefix": f"{EVENT}\n{ns}/{run_id}/",
            "message": f"{DONE}\n{ns}/{run_id}", **_event_arrays(events),
        }  # fmt: skip

        def finish(conn: Connection) -> bool:
            rows = _appended(conn, self._q.finish_events, params,
                             f"the last events of run {run_id!r}")
            if not rows:  # the claim was lost: nothing written
                return False
            self._outbox.add(EVENT, f"{ns}/{run_id}/{rows[0][0]}")
            self._outbox.add(DONE, f"{ns}/{run_id}")
            return True

        return self._signalling(finish, "finish_claim")

    def release_claim(self, claim: QueuedRun, delay: float = 0.0) -> bool:
        """Hand the run back (queued again after ``delay``, its record ``pending``) if the
        claim is still current, and signal ``"work"``, in one statement."""
        now = time.time()
        return self._end_claim(self._q.release, claim, WORK, "release_claim", at=now + delay,
                               now=now)

    def request_cancel(self, namespace: str, run_id: str,
                       action: CancelAction = "interrupt", *,
                       audit: AuditEvent | None = None) -> Outcome:
        """Cancel a run, in one transaction with its queue row locked (see the protocol)."""
        sql = self._q
        event = stamp_audit(audit, time.time()) if audit is not None else None

        def cancel(conn: Connection) -> Outcome:
            with conn.transaction():
                row = conn.execute(sql.get_locked, (namespace, run_id)).fetchone()
                outcome: Outcome
                if row is None or row[8] == "done":
                    known = row is not None or conn.execute(
                        sql.run, (run_id, namespace)).fetchone() is not None  # fmt: skip
                    outcome = "finished" if known else "unknown"
                else:
                    outcome = self._cancel(conn, queued_run(row), action, time.time())
                if event is not None and outcome != "unknown":
                    conn.execute(sql.put_audit, audit_row(replace(event, outcome=outcome)))
                return outcome

        return self._signalling(cancel, "request_cancel")

    def _cancel(self, conn: Connection, row: QueuedRun, action: CancelAction,
                now: float) -> Literal["cancelled", "signalled"]:
        """Cancel an open (and locked) queue row, inside the caller's transaction."""
        sql = self._q
        name = f"{row.namespace}/{row.run_id}"
        if row.status == "claimed":
            conn.execute(sql.signal_cancel, (action, row.namespace, row.run_id))
            self._send(conn, CANCEL, name)
            return "signalled"
        if action == "rollback":
            self._rollback(conn, row.namespace, row.run_id)
        else:
            conn.execute(sql.done, (now, row.namespace, row.run_id))
            conn.execute(sql.cancel_run, (now, now, row.run_id, row.namespace))
            (last,) = _one(conn, sql.last_seq, (row.namespace, row.run_id))
            conn.execute(sql.put_event, (row.namespace, row.run_id, last + 1, *END_EVENT, now))
        self._send(conn, DONE, name)
        return "cancelled"

    def rollback_run(self, namespace: str, run_id: str, *,
                     audit: AuditEvent | None = None) -> None:
        """Delete a run and everything it wrote, in one transaction (see the protocol)."""
        sql = self._q
        event = stamp_audit(audit, time.time()) if audit is not None else None

        def rollback(conn: Connection) -> None:
            with conn.transaction():
                if event is not None and (
                    conn.execute(sql.run, (run_id, namespace)).fetchone() is not None
                    or conn.execute(sql.get, (namespace, run_id)).fetchone() is not None
                ):
                    conn.execute(sql.put_audit, audit_row(event))
                if self._rollback(conn, namespace, run_id):
                    self._send(conn, DONE, f"{namespace}/{run_id}")

        self._signalling(rollback, "rollback_run")

    def _rollback(self, conn: Connection, namespace: str, run_id: str) -> bool:
        """Delete a run and everything it wrote; whether it had a queue row."""
        sql = self._q
        found = conn.execute(sql.run, (run_id, namespace)).fetchone()
        row = conn.execute(sql.get_locked, (namespace, run_id)).fetchone()
        thread_id = found[0] if found is not None else row[2] if row is not None else None
        if thread_id is None:
            conn.execute(sql.drop_events, (namespace, run_id))
            return False
        conn.execute(sql.lock_thread, (namespace, thread_id))
        doomed: dict[str, list[int]] = {}
        for cp_ns, seq in conn.execute(sql.run_checkpoints, (namespace, thread_id, run_id)):
            doomed.setdefault(cp_ns, []).append(seq)
        for cp_ns, seqs in doomed.items():
            key = (namespace, thread_id, cp_ns, seqs)
            conn.execute(sql.drop_writes, key)
            conn.execute(sql.drop_checkpoints, key)
            candidates = conn.execute(sql.candidate_blobs, key).fetchall()
            later = [
                checkpoint_record(thread_id, cp_ns, r)
                for r in conn.cursor(binary=True).execute(
                    sql.later_checkpoints, (namespace, thread_id, cp_ns, min(seqs)))
            ]  # fmt: skip
            gone = doomed_blobs(candidates, later)
            if gone:
                conn.execute(sql.drop_blobs, (namespace, thread_id, cp_ns,
                                              [c for c, _ in gone], [v for _, v in gone]))
        if doomed:
            conn.execute(sql.fix_heads, (namespace, thread_id, list(doomed)))
        params = {"thread_id": thread_id, "run_id": run_id, "ns": namespace}
        (queued,) = _one(conn, sql.drop_run, params)
        return bool(queued)

    def delete_run(self, namespace: str, run_id: str, *,
                   audit: AuditEvent | None = None) -> bool:
        """Delete a finished run's rows, keeping its checkpoints, in one transaction under
        its thread's advisory lock (see the protocol)."""
        sql = self._q
        event = stamp_audit(audit, time.time()) if audit is not None else None

        def delete(conn: Connection) -> bool:
            with conn.transaction():
                found = conn.execute(sql.run_status, (run_id, namespace)).fetchone()
                if found is not None:  # as requeue and enqueue do: no queue change meanwhile
                    conn.execute(sql.lock, (thread_key(self.schema, namespace, found[0]),))
                    found = conn.execute(sql.run_status, (run_id, namespace)).fetchone()
                row = conn.execute(sql.get_locked, (namespace, run_id)).fetchone()
                check_deletable(run_id, found[1] if found else None, row[8] if row else None)
                if found is None:
                    conn.execute(sql.forget, {"ns": namespace, "run_id": run_id})
                    return False
                params = {"thread_id": found[0], "run_id": run_id, "ns": namespace}
                conn.execute(sql.drop_run, params)
                if event is not None:
                    conn.execute(sql.put_audit, audit_row(event))
                return True

        return self._run(delete, "delete_run")

    def queue_depth(self, namespace: str | None = None) -> int:
        """How many runs are queued (not claimed), in one namespace or all."""
        sql, params = (self._q.depth, ()) if namespace is None else (self._q.depth_in,
                                                                      (namespace,))
        return int(self._run(lambda conn: _one(conn, sql, params)[0], "queue_depth"))

    # -- events ---------------------------------------------------------------------------

    def append_events(self, namespace: str, run_id: str,
                      events: Sequence[tuple[str, bytes]]) -> int:
        """Append events to the run's stream in one statement, numbered after the last one,
        and signal ``"event"`` (see the module docstring)."""
        sql = self._q
        if not events:
            return int(self._run(
                lambda conn: _one(conn, sql.last_seq, (namespace, run_id))[0],
                "read_events"))  # fmt: skip
        params = {
            "ns": namespace, "run_id": run_id, "now": time.time(),
            "channel": sql.channel, "prefix": f"{EVENT}\n{namespace}/{run_id}/",
            **_event_arrays(events),
        }  # fmt: skip

        def append(conn: Connection) -> int:
            [(seq, *_)] = _appended(conn, sql.append, params, f"events of run {run_id!r}")
            self._outbox.add(EVENT, f"{namespace}/{run_id}/{seq}")
            return int(seq)

        return self._signalling(append, "append_events")

    def append_events_many(
        self, batches: Sequence[tuple[str, str, Sequence[tuple[str, bytes]]]]
    ) -> list[int]:
        """:meth:`append_events` for several runs ``(namespace, run_id, events)`` in one
        statement (a worker's event pump writes every run's pending events at once).
        Returns each run's last ``seq``."""
        sql = self._q
        params: dict[str, Any] = {"nss": [], "runs": [], "events": [], "datas": [],
                                  "now": time.time(), "channel": sql.channel,
                                  "prefix": f"{EVENT}\n"}
        for ns, run_id, events in batches:
            for event, data in events:
                params["nss"].append(ns)
                params["runs"].append(run_id)
                params["events"].append(event)
                params["datas"].append(bytes(data))

        def append(conn: Connection) -> dict[tuple[str, str], int]:
            rows = _appended(conn, sql.append_many, params,
                             f"events of {len(batches)} runs") if params["nss"] else []
            for ns, run_id, seq, *_ in rows:
                self._outbox.add(EVENT, f"{ns}/{run_id}/{seq}")
            return {(ns, run_id): int(seq) for ns, run_id, seq, *_ in rows}

        last = self._signalling(append, "append_events")
        return [last[(ns, run_id)] if (ns, run_id) in last
                else self.append_events(ns, run_id, ()) for ns, run_id, _ in batches]

    def read_events(self, namespace: str, run_id: str, after: int = 0,
                    limit: int = 1000) -> list[RunEvent]:
        """The run's events with ``seq > after``, in order, at most ``limit``."""
        params = (namespace, run_id, after, check_limit(limit))
        return self._run(
            lambda conn: [run_event(r) for r in conn.execute(self._q.events, params)],
            "read_events",
        )

    def delete_events(self, *, finished_before: float) -> int:
        """Drop the events of runs that left the queue before the cutoff (see the
        protocol), in one transaction."""

        def delete(conn: Connection) -> int:
            with conn.transaction():
                count = conn.execute(self._q.delete_finished_events, (finished_before,)).rowcount
                return count + conn.execute(
                    self._q.delete_loose_events, (finished_before,)).rowcount  # fmt: skip

        return self._run(delete, "delete_events")

    # -- workers --------------------------------------------------------------------------

    def worker_heartbeat(self, worker: WorkerRecord) -> None:
        """Record (upsert) a worker's heartbeat (with its liveness lock in its ``info``, as
        ``"session"``, while :meth:`hold_liveness` holds one for it)."""
        marker = self._session(worker.worker_id)
        if marker is not None:
            worker = replace(worker, info={**worker.info, "session": marker})
        params = (worker.worker_id, worker.last_seen, worker.started_at, info_json(worker))
        self._run(lambda conn: conn.execute(self._q.heartbeat, params), "worker_heartbeat")

    def list_workers(self, *, seen_after: float = 0.0) -> list[WorkerRecord]:
        """Workers whose last heartbeat is after ``seen_after``, by id."""
        return self._run(
            lambda conn: [worker_record(r) for r in conn.execute(self._q.workers, (seen_after,))],
            "list_workers",
        )

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (it shut down)."""
        self._run(lambda conn: conn.execute(self._q.remove_worker, (worker_id,)),
                  "remove_worker")

    # -- liveness -------------------------------------------------------------------------

    def hold_liveness(self, worker_id: str, process: str,
                      on_lost: Callable[[], None]) -> Callable[[], None]:
        """Vouch for worker ``worker_id`` with this process's session lock (see
        :mod:`~threadloom.checkpoint._postgres_listen`): its heartbeats name the lock while
        it is held, until the returned function is called. Waits (a few seconds at most)
        until the listening session has tried to take the lock, so that the worker's next
        heartbeat names it."""
        release = self._bus.hold(on_lost)
        self._live[worker_id] = process
        self._bus.wait_liveness(_LIVENESS_WAIT)

        def end() -> None:
            self._live.pop(worker_id, None)
            release()

        return end

    def _session(self, worker_id: str) -> dict[str, Any] | None:
        """What a heartbeat of ``worker_id`` records of its liveness lock, if one is held
        for it."""
        process = self._live.get(worker_id)
        key = self._bus.live_key if process is not None else None
        return {"key": str(key), "process": process} if key is not None else None

    def expire_dead_claims(self) -> int:
        """End the claims of workers whose liveness lock is gone and free their threads'
        leases (see the protocol and the module docstring); one read when none is, else
        one statement more."""
        dead = self._run(lambda conn: conn.execute(self._q.dead_workers,
                                                   (LIVENESS_CLASS,)).fetchall(),
                         "expire_dead_claims")
        if not dead:
            return 0
        workers = [w for w, _, _ in dead]
        params = {"workers": workers, "keys": [k for _, k, _ in dead],
                  "processes": [p for _, _, p in dead], "now": time.time()}

        def expire(conn: Connection) -> int:
            with conn.transaction():
                claims, leases = _one(conn, self._q.expire_dead, params)
                if claims:
                    self._send(conn, WORK, "")
            log.info("workers %s are gone (their liveness lock is): %d claims ended, %d"
                     " thread leases freed", ", ".join(workers), claims, leases)
            return int(claims)

        return self._signalling(expire, "expire_dead_claims")

    # -- API keys -------------------------------------------------------------------------

    def create_key(self, key: ApiKey, *, audit: AuditEvent | None = None) -> None:
        """Store a new key (and ``audit``, in the same transaction). Raises
        ``InvalidConfigError`` if the id exists."""
        params = (key.key_id, key.namespace, key.role, bytes(key.key_hash), key.created_at,
                  key.last_used_at, key.revoked_at, key.name)
        event = stamp_audit(audit, time.time()) if audit is not None else None

        def create(conn: Connection) -> None:
            try:
                with conn.transaction():
                    conn.execute(self._q.create_key, params)
                    if event is not None:
                        conn.execute(self._q.put_audit, audit_row(event))
            except pg_errors.UniqueViolation:
                raise InvalidConfigError(f"API key {key.key_id!r} exists already") from None

        self._run(create, "create_key")

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""

        def get(conn: Connection) -> ApiKey | None:
            row = conn.execute(self._q.key, (key_id,)).fetchone()
            return api_key(row) if row is not None else None

        return self._run(get, "get_key")

    def list_keys(self, namespace: str | None = None) -> list[ApiKey]:
        """Keys of one namespace, or all, newest first (then by id, descending)."""
        sql, params = (self._q.keys, ()) if namespace is None else (self._q.keys_in,
                                                                    (namespace,))
        sql += " ORDER BY created_at DESC, key_id DESC"
        return self._run(lambda conn: [api_key(r) for r in conn.execute(sql, params)],
                         "list_keys")

    def revoke_key(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        """Revoke a key (its first revocation time is kept; ``audit`` is appended in the same
        transaction); ``False`` if unknown."""
        now = time.time()
        event = stamp_audit(audit, now) if audit is not None else None

        def revoke(conn: Connection) -> bool:
            with conn.transaction():
                if conn.execute(self._q.revoke_key, (now, key_id)).rowcount != 1:
                    return False
                if event is not None:
                    conn.execute(self._q.put_audit, audit_row(event))
                return True

        return self._run(revoke, "revoke_key")

    def touch_key(self, key_id: str, at: float) -> None:
        """Record that the key was used at ``at`` (an earlier time never moves it back)."""
        self._run(lambda conn: conn.execute(self._q.touch_key, (at, key_id, at)), "touch_key")

    # -- the audit log --------------------------------------------------------------------

    def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append an event on its own; returns it with its id and time."""
        stored = stamp_audit(event, time.time())
        self._run(lambda conn: conn.execute(self._q.put_audit, audit_row(stored)),
                  "append_audit")
        return stored

    def list_audit(self, namespace: str, *, limit: int = 100,
                   cursor: str | None = None) -> tuple[list[AuditEvent], str | None]:
        """The namespace's events, newest first (see the protocol)."""
        check_limit(limit)
        after = check_audit_cursor(cursor)
        sql, params = ((self._q.audit, (namespace,)) if after is None
                       else (self._q.audit_after, (namespace, after)))
        sql += " ORDER BY id DESC LIMIT %s"
        rows = self._run(lambda conn: conn.execute(sql, (*params, limit + 1)).fetchall(),
                         "list_audit")
        page = [audit_event(r) for r in rows[:limit]]
        return page, page[-1].id if len(rows) > limit and page else None
