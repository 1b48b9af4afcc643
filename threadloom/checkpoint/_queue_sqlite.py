"""The run queue, run events, workers and API keys of the SQLite store.

:class:`SqliteQueue` is mixed into :class:`~threadloom.checkpoint.sqlite.SqliteStore` and
makes it a :class:`~threadloom.checkpoint.queue.RuntimeStore` (what ``threadloom dev`` runs
on). Every write is one ``BEGIN IMMEDIATE`` transaction of the store (``SqliteStore._run``):
the write lock is taken before anything is read, so a claim, an enqueue with its multitask
check, or an event append is serialized with every other writer of the file, in any process.
That is SQLite's equivalent of Postgres' ``FOR UPDATE SKIP LOCKED`` and advisory locks.

Claims, renewals, finishing and releasing claims, and event appends commit without waiting for
the disk (``synchronous=NORMAL`` for that transaction, like an unflushed step commit): they
survive the process crashing, and a power loss can only take the last ones back (a claim
lapses and is claimed again, the engine's lease still fencing the run; a run finished again
is a no-op). Enqueues, cancellations, rollbacks and keys are flushed as the store's
``synchronous`` says.

Signals are in-process (:class:`~threadloom.checkpoint._signals.LocalSignals`, one bus per
store object), published once the transaction has committed: processes sharing the file do
not signal each other, and find the rows when they next look.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from threadloom.checkpoint._queue_common import (
    ACTIVE_RUN_STATUSES,
    AUDIT_COLS,
    END_EVENT,
    HANDED_BACK_STATUSES,
    KEY_COLS,
    QUEUE_COLS,
    EnqueueMethods,
    api_key,
    audit_event,
    audit_row,
    cancel_event,
    check_audit_cursor,
    check_deletable,
    check_enqueue,
    check_limit,
    claim_at_enqueue,
    doomed_blobs,
    info_json,
    queue_time,
    queue_values,
    queued_run,
    run_event,
    stamp_audit,
    worker_record,
)
from threadloom.checkpoint._rows import checkpoint_record
from threadloom.checkpoint._run_logs import sqlite_drop_run_logs
from threadloom.checkpoint._signals import CANCEL, DONE, EVENT, WORK, LocalSignals
from threadloom.checkpoint._sqlite_sql import CP_COLS, SQL_PUT_AUDIT, write_audit, write_commits
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
    ThreadBusyError,
)

__all__ = ["SqliteQueue"]

_T = TypeVar("_T")
_Sent = list[tuple[str, str]]
_BUS_LOCK = threading.Lock()  # creates each store's bus once

_Q = ", ".join(f"q.{c.strip()}" for c in QUEUE_COLS.split(","))
SQL_GET = f"SELECT {QUEUE_COLS} FROM run_queue WHERE namespace = ? AND run_id = ?"
SQL_INSERT = f"INSERT INTO run_queue ({QUEUE_COLS}) VALUES ({', '.join('?' * 15)})"
SQL_SET_THREAD_KEY = (
    "UPDATE threads SET metadata = json_set(metadata, ?, json(?))"
    " WHERE thread_id = ? AND namespace = ?"
)
SQL_LAST_OPEN = (
    "SELECT max(created_at) FROM run_queue WHERE namespace = ? AND thread_id = ?"
    " AND status <> 'done'"
)
# the thread's open rows whose run is still pending or running (see enqueue)
SQL_ACTIVE = (
    f"SELECT {_Q} FROM run_queue q LEFT JOIN runs r ON r.run_id = q.run_id"
    " AND r.namespace = q.namespace WHERE q.namespace = ? AND q.thread_id = ?"
    f" AND q.status <> 'done' AND (r.run_id IS NULL OR r.status IN {ACTIVE_RUN_STATUSES})"
    " ORDER BY q.created_at, q.run_id"
)
SQL_RUN_EXISTS = "SELECT 1 FROM runs WHERE run_id = ? AND namespace = ?"
SQL_RUN = "SELECT thread_id, graph FROM runs WHERE run_id = ? AND namespace = ?"
# The claimable rows, oldest first: each is the oldest open row of its thread (so at most one
# per thread), and no other row of its thread is held by an unexpired claim.
SQL_CLAIMABLE = (
    "SELECT q.namespace, q.run_id FROM run_queue q WHERE q.status <> 'done'"
    " AND ((q.status = 'queued' AND q.available_at <= ?1)"
    " OR (q.status = 'claimed' AND q.claim_expires <= ?1)){}"
    " AND NOT EXISTS (SELECT 1 FROM run_queue o WHERE o.namespace = q.namespace"
    " AND o.thread_id = q.thread_id AND o.status <> 'done' AND o.run_id <> q.run_id"
    " AND (o.created_at < q.created_at OR (o.created_at = q.created_at AND o.run_id < q.run_id)"
    " OR (o.status = 'claimed' AND o.claim_expires > ?1)))"
    " ORDER BY q.created_at, q.run_id LIMIT ?2"
)
SQL_CLAIM = (
    "UPDATE run_queue SET status = 'claimed', attempts = attempts + 1, worker = ?,"
    " claim_token = claim_token + 1, claim_expires = ? WHERE namespace = ? AND run_id = ?"
    f" RETURNING {QUEUE_COLS}"
)
_CURRENT = "namespace = ? AND run_id = ? AND claim_token = ? AND status = 'claimed'"
SQL_RENEW = f"UPDATE run_queue SET claim_expires = ? WHERE {_CURRENT} RETURNING cancel"
SQL_FINISH = (
    f"UPDATE run_queue SET status = 'done', claim_expires = NULL, finished_at = ? WHERE {_CURRENT}"
)
SQL_RELEASE = (
    "UPDATE run_queue SET status = 'queued', worker = NULL, claim_expires = NULL,"
    f" available_at = ? WHERE {_CURRENT}"
)
SQL_HANDED_BACK = (
    "UPDATE runs SET status = 'pending', updated_at = ?, ended_at = NULL WHERE run_id = ?"
    f" AND namespace = ? AND status IN ({', '.join(repr(s) for s in HANDED_BACK_STATUSES)})"
)
SQL_SIGNAL_CANCEL = (
    "UPDATE run_queue SET cancel = CASE cancel WHEN 'rollback' THEN cancel ELSE ? END"
    " WHERE namespace = ? AND run_id = ?"
)
SQL_DONE = (
    "UPDATE run_queue SET status = 'done', claim_expires = NULL, finished_at = ?"
    " WHERE namespace = ? AND run_id = ?"
)
SQL_CANCEL_RUN = (
    "UPDATE runs SET status = 'cancelled', updated_at = ?, ended_at = ?"
    " WHERE run_id = ? AND namespace = ?"
)
SQL_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM run_events WHERE namespace = ? AND run_id = ?"
SQL_PUT_EVENT = "INSERT INTO run_events VALUES (?, ?, ?, ?, ?, ?)"
SQL_EVENTS = (
    "SELECT namespace, run_id, seq, event, data, created_at FROM run_events"
    " WHERE namespace = ? AND run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
SQL_DELETE_FINISHED_EVENTS = (
    "DELETE FROM run_events WHERE (namespace, run_id) IN (SELECT namespace, run_id"
    " FROM run_queue WHERE status = 'done' AND finished_at < ?)"
)
SQL_DELETE_LOOSE_EVENTS = (
    "DELETE FROM run_events WHERE (namespace, run_id) IN (SELECT e.namespace, e.run_id"
    " FROM run_events e WHERE NOT EXISTS (SELECT 1 FROM run_queue q"
    " WHERE q.namespace = e.namespace AND q.run_id = e.run_id)"
    " GROUP BY e.namespace, e.run_id HAVING max(e.created_at) < ?)"
)
SQL_BEAT = (
    "INSERT INTO workers VALUES (?, ?, ?, '{}') ON CONFLICT (worker_id)"
    " DO UPDATE SET last_seen = excluded.last_seen"
)
SQL_HEARTBEAT = (
    "INSERT INTO workers VALUES (?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET"
    " last_seen = excluded.last_seen, started_at = excluded.started_at, info = excluded.info"
)


class SqliteQueue(EnqueueMethods):
    """The :class:`~threadloom.checkpoint.queue.RuntimeStore` part of the SQLite store."""

    reads_are_local = True  # WAL readers never wait on the writer (in memory: on its lock, briefly)

    if TYPE_CHECKING:  # the store's own, used here

        def _run(
            self, fn: Callable[[sqlite3.Connection], _T], write: bool, relaxed: bool = False
        ) -> _T: ...

    _bus: LocalSignals | None = None
    _external: Signals | None = None

    def signals(self) -> Signals:
        """The store's signal bus: the one :meth:`use_signals` installed, else the store
        object's in-process bus."""
        if self._external is not None:
            return self._external
        with _BUS_LOCK:
            if self._bus is None:
                self._bus = LocalSignals("threadloom-signals:sqlite")
            return self._bus

    def _close_runtime(self) -> None:
        """Stop the signal thread (called by ``close``)."""
        if self._bus is not None:
            self._bus.close()

    def use_signals(self, bus: Signals | None) -> None:
        """Announce what this store commits on ``bus`` (``None``: the in-process bus again).
        With a bus that reaches other processes (Redis), processes sharing the file wake each
        other too."""
        self._external = bus

    def _publish(self, sent: _Sent) -> None:
        bus = self._external if self._external is not None else self._bus
        if bus is not None:
            for topic, message in sent:
                bus.publish(topic, message)

    # -- the queue ------------------------------------------------------------------------

    def _enqueue(self, record: RunRecord, run: QueuedRun, strategy: MultitaskStrategy,
                 thread_metadata: Mapping[str, Any] | None, audit: AuditEvent | None,
                 claim_for: tuple[str, float] | None) -> tuple[list[str], QueuedRun | None]:
        record, row = check_enqueue(record, run, strategy, time.time())
        sent: _Sent = []
        try:
            patch = [("$." + json.dumps(k), json.dumps(v))
                     for k, v in (thread_metadata or {}).items()]
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc

        def enqueue(conn: sqlite3.Connection) -> tuple[list[str], QueuedRun | None]:
            sent.clear()
            now = time.time()
            taken = conn.execute(SQL_RUN_EXISTS, (row.run_id, row.namespace)).fetchone() is not None
            old = conn.execute(SQL_GET, (row.namespace, row.run_id)).fetchone()
            if old is not None and old[8] == "done" and not taken:
                _forget(conn, row.namespace, row.run_id)  # a deleted run's row
            elif old is not None or taken:
                raise RunConflictError(
                    f"run {row.run_id!r} already exists in namespace {row.namespace!r}"
                )
            active = [queued_run(r) for r in conn.execute(
                SQL_ACTIVE, (row.namespace, row.thread_id))]  # fmt: skip
            if active and strategy == "reject":
                raise ThreadBusyError(
                    f"thread {row.thread_id!r} is busy with run {active[0].run_id!r}"
                )
            cancelled = []
            if active and strategy in ("interrupt", "rollback"):
                action: CancelAction = "rollback" if strategy == "rollback" else "interrupt"
                for other in active:
                    done = _cancel(conn, other, action, now, sent)
                    write_audit(conn, cancel_event(audit, other, done), now)
                    cancelled.append(other.run_id)
            (last,) = conn.execute(SQL_LAST_OPEN, (row.namespace, row.thread_id)).fetchone()
            created = queue_time(row.created_at, last)
            write_commits(conn, [Commit(row.thread_id, namespace=row.namespace, runs=[record])])
            for path, value in patch:
                conn.execute(SQL_SET_THREAD_KEY, (path, value, row.thread_id, row.namespace))
            queued = replace(row, created_at=created)
            claimed = claim_at_enqueue(queued, claim_for, last is None, now)
            conn.execute(SQL_INSERT, queue_values(claimed or queued))
            write_audit(conn, audit, now)
            if claimed is None:
                sent.append((WORK, ""))
            return cancelled, claimed

        done = self._run(enqueue, True, relaxed=True)  # a queue row: see commit()
        self._publish(sent)
        return done

    def requeue(self, namespace: str, run_id: str, *, available_at: float = 0.0,
                payload: bytes | None = None, audit: AuditEvent | None = None) -> QueuedRun:
        """Queue an existing, finished run again (see the protocol)."""

        def requeue(conn: sqlite3.Connection) -> QueuedRun:
            found = conn.execute(SQL_RUN, (run_id, namespace)).fetchone()
            if found is None:
                raise RunNotFoundError(f"no run {run_id!r} in namespace {namespace!r}")
            thread_id, graph = found
            old = conn.execute(SQL_GET, (namespace, run_id)).fetchone()
            if old is not None and old[8] != "done":
                raise ThreadBusyError(f"run {run_id!r} is {old[8]} already")
            now = time.time()
            (last,) = conn.execute(SQL_LAST_OPEN, (namespace, thread_id)).fetchone()
            created = queue_time(now, last)
            body = bytes(payload) if payload is not None else old[4] if old else b"{}"
            conn.execute(
                "UPDATE runs SET status = 'pending', updated_at = ?, ended_at = NULL"
                " WHERE run_id = ? AND namespace = ?",
                (now, run_id, namespace),
            )
            conn.execute(
                f"INSERT INTO run_queue ({QUEUE_COLS}) VALUES ({', '.join('?' * 15)})"
                " ON CONFLICT (namespace, run_id) DO UPDATE SET payload = excluded.payload,"
                " available_at = excluded.available_at, created_at = excluded.created_at,"
                " status = 'queued', worker = NULL, claim_expires = NULL, cancel = NULL,"
                " finished_at = NULL",
                (namespace, run_id, thread_id, graph, body, available_at, created, None,
                 "queued", 0, None, 0, None, None, None),
            )  # fmt: skip
            write_audit(conn, audit, now)
            return queued_run(conn.execute(SQL_GET, (namespace, run_id)).fetchone())

        row = self._run(requeue, True)
        self._publish([(WORK, "")])
        return row

    def get_queued(self, namespace: str, run_id: str) -> QueuedRun | None:
        """The run's queue row (in any status), if it has one."""

        def get(conn: sqlite3.Connection) -> QueuedRun | None:
            row = conn.execute(SQL_GET, (namespace, run_id)).fetchone()
            return queued_run(row) if row is not None else None

        return self._run(get, False)

    def claim_runs(self, worker: str, limit: int, ttl: float,
                   graphs: Sequence[str] | None = None) -> list[QueuedRun]:
        """Claim up to ``limit`` runs for ``ttl`` seconds, in one ``BEGIN IMMEDIATE``
        transaction (see the protocol)."""
        check_limit(limit)
        if limit == 0 or (graphs is not None and not graphs):
            return []
        names = list(graphs or ())
        sql = SQL_CLAIMABLE.format(  # the graphs are ?3... (after now and limit)
            " AND q.graph IN (" + ", ".join(f"?{3 + i}" for i in range(len(names))) + ")"
            if names else ""
        )

        def claimable(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, (time.time(), 1, *names)).fetchone() is not None

        def claim(conn: sqlite3.Connection) -> list[QueuedRun]:
            now = time.time()
            keys = conn.execute(sql, (now, limit, *names)).fetchall()
            claims = [
                queued_run(conn.execute(SQL_CLAIM, (worker, now + ttl, ns, rid)).fetchone())
                for ns, rid in keys
            ]
            return claims

        # a look first, outside a write transaction: most calls find nothing (a worker asks
        # whenever a slot frees), and taking the write lock for that delays every commit
        if not self._run(claimable, False):
            return []
        return self._run(claim, True, relaxed=True)

    def renew_claims(self, worker: str, claims: Sequence[QueuedRun],
                     ttl: float) -> list[ClaimState]:
        """Extend the worker's claims; report lost ones and cancellation requests."""

        def renew(conn: sqlite3.Connection) -> list[ClaimState]:
            now = time.time()
            states = []
            for c in claims:
                row = conn.execute(
                    SQL_RENEW, (now + ttl, c.namespace, c.run_id, c.claim_token)
                ).fetchone()
                if row is None:
                    states.append(ClaimState(c.run_id, c.namespace, lost=True))
                else:
                    states.append(ClaimState(c.run_id, c.namespace, cancel=row[0]))
            conn.execute(SQL_BEAT, (worker, now, now))
            return states

        return self._run(renew, True, relaxed=True)

    def finish_claim(self, claim: QueuedRun,
                     events: Sequence[tuple[str, bytes]] = ()) -> bool:
        """Mark the run ``done`` and append its last ``events`` if the claim is still
        current, in one transaction; signal ``"event"`` and ``"done"``."""
        ns, run_id = claim.namespace, claim.run_id
        now = time.time()
        rows = [(event, bytes(data)) for event, data in events]

        def finish(conn: sqlite3.Connection) -> int | None:
            if conn.execute(SQL_FINISH, (now, ns, run_id, claim.claim_token)).rowcount != 1:
                return None
            return _append(conn, ns, run_id, rows, now) if rows else 0

        seq = self._run(finish, True, relaxed=True)
        if seq is None:
            return False
        sent = [(EVENT, f"{ns}/{run_id}/{seq}")] if rows else []
        self._publish([*sent, (DONE, f"{ns}/{run_id}")])
        return True

    def release_claim(self, claim: QueuedRun, delay: float = 0.0) -> bool:
        """Hand the run back (queued again after ``delay``, its record ``pending``) if the
        claim is still current."""
        now = time.time()
        params = (now + delay, claim.namespace, claim.run_id, claim.claim_token)

        def release(conn: sqlite3.Connection) -> bool:
            if conn.execute(SQL_RELEASE, params).rowcount != 1:
                return False
            conn.execute(SQL_HANDED_BACK, (now, claim.run_id, claim.namespace))
            return True

        released = self._run(release, True, relaxed=True)
        if released:
            self._publish([(WORK, "")])
        return released

    def request_cancel(self, namespace: str, run_id: str,
                       action: CancelAction = "interrupt", *,
                       audit: AuditEvent | None = None) -> Literal[
                           "cancelled", "signalled", "finished", "unknown"]:
        """Cancel a run (see the protocol)."""
        sent: _Sent = []

        def cancel(conn: sqlite3.Connection) -> Literal[
                "cancelled", "signalled", "finished", "unknown"]:
            sent.clear()
            now = time.time()
            row = conn.execute(SQL_GET, (namespace, run_id)).fetchone()
            outcome: Literal["cancelled", "signalled", "finished", "unknown"]
            if row is None or row[8] == "done":
                known = row is not None or (
                    conn.execute(SQL_RUN, (run_id, namespace)).fetchone() is not None
                )
                outcome = "finished" if known else "unknown"
            else:
                outcome = _cancel(conn, queued_run(row), action, now, sent)
            if audit is not None and outcome != "unknown":
                write_audit(conn, replace(audit, outcome=outcome), now)
            return outcome

        outcome = self._run(cancel, True)
        self._publish(sent)
        return outcome

    def rollback_run(self, namespace: str, run_id: str, *,
                     audit: AuditEvent | None = None) -> None:
        """Delete a run and everything it wrote, in one transaction (see the protocol)."""

        def rollback(conn: sqlite3.Connection) -> bool:
            if audit is not None and (
                conn.execute(SQL_RUN, (run_id, namespace)).fetchone() is not None
                or conn.execute(SQL_GET, (namespace, run_id)).fetchone() is not None
            ):
                write_audit(conn, audit, time.time())
            return _rollback(conn, namespace, run_id)

        had_row = self._run(rollback, True)
        if had_row:
            self._publish([(DONE, f"{namespace}/{run_id}")])

    def delete_run(self, namespace: str, run_id: str, *,
                   audit: AuditEvent | None = None) -> bool:
        """Delete a finished run's rows, keeping its checkpoints, in one transaction (see the
        protocol)."""

        def delete(conn: sqlite3.Connection) -> bool:
            found = conn.execute("SELECT thread_id, status FROM runs WHERE run_id = ?"
                                 " AND namespace = ?", (run_id, namespace)).fetchone()
            row = conn.execute(SQL_GET, (namespace, run_id)).fetchone()
            check_deletable(run_id, found[1] if found else None, row[8] if row else None)
            if found is None:
                _forget(conn, namespace, run_id)
                return False
            _drop_run(conn, namespace, run_id, found[0])
            write_audit(conn, audit, time.time())
            return True

        return self._run(delete, True)

    def queue_depth(self, namespace: str | None = None) -> int:
        """How many runs are queued (not claimed), in one namespace or all."""
        sql = "SELECT count(*) FROM run_queue WHERE status = 'queued'"
        params: tuple[str, ...] = ()
        if namespace is not None:
            sql, params = sql + " AND namespace = ?", (namespace,)
        return int(self._run(lambda conn: conn.execute(sql, params).fetchone()[0], False))

    # -- events ---------------------------------------------------------------------------

    def append_events(self, namespace: str, run_id: str,
                      events: Sequence[tuple[str, bytes]]) -> int:
        """Append events to the run's stream, numbered after the last one, in one
        transaction (see the protocol)."""
        rows = [(event, bytes(data)) for event, data in events]
        seq = self._run(lambda conn: _append(conn, namespace, run_id, rows, time.time()),
                        bool(rows), relaxed=True)
        if rows:
            self._publish([(EVENT, f"{namespace}/{run_id}/{seq}")])
        return seq

    def append_events_many(
        self, batches: Sequence[tuple[str, str, Sequence[tuple[str, bytes]]]]
    ) -> list[int]:
        """:meth:`append_events` for several runs ``(namespace, run_id, events)`` in one
        transaction (a worker's event pump writes every run's pending events at once).
        Returns each run's last ``seq``."""
        now = time.time()
        rows = [(ns, run_id, [(e, bytes(d)) for e, d in events])
                for ns, run_id, events in batches]  # fmt: skip
        seqs = self._run(
            lambda conn: [_append(conn, ns, run_id, evs, now) for ns, run_id, evs in rows],
            any(evs for _, _, evs in rows), relaxed=True)
        self._publish([(EVENT, f"{ns}/{run_id}/{seq}")
                       for (ns, run_id, evs), seq in zip(rows, seqs, strict=True) if evs])
        return seqs

    def read_events(self, namespace: str, run_id: str, after: int = 0,
                    limit: int = 1000) -> list[RunEvent]:
        """The run's events with ``seq > after``, in order, at most ``limit``."""
        params = (namespace, run_id, after, check_limit(limit))
        return self._run(
            lambda conn: [run_event(r) for r in conn.execute(SQL_EVENTS, params)], False
        )

    def delete_events(self, *, finished_before: float) -> int:
        """Drop the events of runs that left the queue before the cutoff (see the
        protocol)."""

        def delete(conn: sqlite3.Connection) -> int:
            finished = conn.execute(SQL_DELETE_FINISHED_EVENTS, (finished_before,)).rowcount
            return finished + conn.execute(SQL_DELETE_LOOSE_EVENTS, (finished_before,)).rowcount

        return self._run(delete, True)

    # -- workers --------------------------------------------------------------------------

    def worker_heartbeat(self, worker: WorkerRecord) -> None:
        """Record (upsert) a worker's heartbeat."""
        params = (worker.worker_id, worker.last_seen, worker.started_at, info_json(worker))
        self._run(lambda conn: conn.execute(SQL_HEARTBEAT, params), True, relaxed=True)

    def list_workers(self, *, seen_after: float = 0.0) -> list[WorkerRecord]:
        """Workers whose last heartbeat is after ``seen_after``, by id."""
        sql = (
            "SELECT worker_id, last_seen, started_at, info FROM workers WHERE last_seen > ?"
            " ORDER BY worker_id"
        )
        return self._run(
            lambda conn: [worker_record(r) for r in conn.execute(sql, (seen_after,))], False
        )

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (it shut down)."""
        self._run(
            lambda conn: conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)),
            False,
        )

    def hold_liveness(self, worker_id: str, process: str,
                      on_lost: Callable[[], None]) -> Callable[[], None]:
        """Nothing: this store cannot tell when a process died (claims lapse by their ttl)."""
        return _nothing

    def expire_dead_claims(self) -> int:
        """Nothing to do (see :meth:`hold_liveness`): ``0``."""
        return 0

    # -- API keys -------------------------------------------------------------------------

    def create_key(self, key: ApiKey, *, audit: AuditEvent | None = None) -> None:
        """Store a new key (and ``audit``, in the same transaction). Raises
        ``InvalidConfigError`` if the id exists."""
        params = (key.key_id, key.namespace, key.role, bytes(key.key_hash), key.created_at,
                  key.last_used_at, key.revoked_at, key.name)

        def create(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO api_keys ({KEY_COLS}) VALUES ({', '.join('?' * 8)})",
                             params)
            except sqlite3.IntegrityError:
                raise InvalidConfigError(f"API key {key.key_id!r} exists already") from None
            write_audit(conn, audit, time.time())

        self._run(create, True)

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""
        sql = f"SELECT {KEY_COLS} FROM api_keys WHERE key_id = ?"

        def get(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute(sql, (key_id,)).fetchone()
            return api_key(row) if row is not None else None

        return self._run(get, False)

    def list_keys(self, namespace: str | None = None) -> list[ApiKey]:
        """Keys of one namespace, or all, newest first (then by id, descending)."""
        sql = f"SELECT {KEY_COLS} FROM api_keys"
        params: tuple[str, ...] = ()
        if namespace is not None:
            sql, params = sql + " WHERE namespace = ?", (namespace,)
        sql += " ORDER BY created_at DESC, key_id DESC"
        return self._run(lambda conn: [api_key(r) for r in conn.execute(sql, params)], False)

    def revoke_key(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        """Revoke a key (its first revocation time is kept; ``audit`` is appended in the same
        transaction); ``False`` if unknown."""
        sql = "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?"
        now = time.time()

        def revoke(conn: sqlite3.Connection) -> bool:
            if conn.execute(sql, (now, key_id)).rowcount != 1:
                return False
            write_audit(conn, audit, now)
            return True

        return self._run(revoke, True)

    def touch_key(self, key_id: str, at: float) -> None:
        """Record that the key was used at ``at`` (an earlier time never moves it back)."""
        sql = (
            "UPDATE api_keys SET last_used_at = ?1 WHERE key_id = ?2"
            " AND (last_used_at IS NULL OR last_used_at < ?1)"
        )
        self._run(lambda conn: conn.execute(sql, (at, key_id)), True, relaxed=True)


    # -- the audit log --------------------------------------------------------------------

    def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append an event on its own; returns it with its id and time."""
        stored = stamp_audit(event, time.time())
        self._run(lambda conn: conn.execute(SQL_PUT_AUDIT, audit_row(stored)), True)
        return stored

    def list_audit(self, namespace: str, *, limit: int = 100,
                   cursor: str | None = None) -> tuple[list[AuditEvent], str | None]:
        """The namespace's events, newest first (see the protocol)."""
        check_limit(limit)
        after = check_audit_cursor(cursor)
        sql = f"SELECT {AUDIT_COLS} FROM audit_log WHERE namespace = ?"
        params: tuple[Any, ...] = (namespace,)
        if after is not None:
            sql, params = sql + " AND id < ?", (namespace, after)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._run(lambda conn: conn.execute(sql, (*params, limit + 1)).fetchall(), False)
        page = [audit_event(r) for r in rows[:limit]]
        return page, page[-1].id if len(rows) > limit and page else None


# -- inside a transaction ----------------------------------------------------------------------


def _append(conn: sqlite3.Connection, namespace: str, run_id: str,
            rows: Sequence[tuple[str, bytes]], now: float) -> int:
    (last,) = conn.execute(SQL_LAST_SEQ, (namespace, run_id)).fetchone()
    conn.executemany(SQL_PUT_EVENT, [
        (namespace, run_id, last + i, event, data, now)
        for i, (event, data) in enumerate(rows, 1)
    ])  # fmt: skip
    return int(last) + len(rows)


def _forget(conn: sqlite3.Connection, namespace: str, run_id: str) -> None:
    """Drop the queue row and events a deleted run left (its thread was deleted, or retention
    deleted its record), so that its id can be used again."""
    for table in ("run_queue", "run_events"):
        conn.execute(f"DELETE FROM {table} WHERE namespace = ? AND run_id = ?",
                     (namespace, run_id))


def _cancel(conn: sqlite3.Connection, row: QueuedRun, action: CancelAction, now: float,
            sent: _Sent) -> Literal["cancelled", "signalled"]:
    """Cancel an open queue row."""
    name = f"{row.namespace}/{row.run_id}"
    if row.status == "claimed":
        conn.execute(SQL_SIGNAL_CANCEL, (action, row.namespace, row.run_id))
        sent.append((CANCEL, name))
        return "signalled"
    if action == "rollback":
        _rollback(conn, row.namespace, row.run_id)
    else:
        conn.execute(SQL_DONE, (now, row.namespace, row.run_id))
        conn.execute(SQL_CANCEL_RUN, (now, now, row.run_id, row.namespace))
        _append(conn, row.namespace, row.run_id, [END_EVENT], now)
    sent.append((DONE, name))
    return "cancelled"


def _rollback(conn: sqlite3.Connection, namespace: str, run_id: str) -> bool:
    """Delete a run and everything it wrote; whether it had a queue row."""
    found = conn.execute(SQL_RUN, (run_id, namespace)).fetchone()
    row = conn.execute(SQL_GET, (namespace, run_id)).fetchone()
    thread_id = found[0] if found is not None else row[2] if row is not None else None
    if thread_id is None:
        conn.execute("DELETE FROM run_events WHERE namespace = ? AND run_id = ?",
                     (namespace, run_id))
        sqlite_drop_run_logs(conn, namespace, run_id)
        return False
    doomed: dict[str, list[int]] = {}
    for cp_ns, seq in conn.execute(
        "SELECT checkpoint_ns, seq FROM checkpoints WHERE namespace = ? AND thread_id = ?"
        " AND run_id = ? ORDER BY seq", (namespace, thread_id, run_id),
    ):  # fmt: skip
        doomed.setdefault(cp_ns, []).append(seq)
    for cp_ns, seqs in doomed.items():
        _drop_checkpoints(conn, namespace, thread_id, cp_ns, seqs)
    _drop_run(conn, namespace, run_id, thread_id)
    return row is not None


def _drop_run(conn: sqlite3.Connection, namespace: str, run_id: str, thread_id: str) -> None:
    """Delete a run's record, executions, events and queue row (not its checkpoints)."""
    conn.execute("DELETE FROM executions WHERE namespace = ? AND thread_id = ? AND run_id = ?",
                 (namespace, thread_id, run_id))
    conn.execute("DELETE FROM runs WHERE run_id = ? AND namespace = ?", (run_id, namespace))
    conn.execute("DELETE FROM run_events WHERE namespace = ? AND run_id = ?",
                 (namespace, run_id))
    sqlite_drop_run_logs(conn, namespace, run_id)
    conn.execute("DELETE FROM run_queue WHERE namespace = ? AND run_id = ?",
                 (namespace, run_id))


def _drop_checkpoints(conn: sqlite3.Connection, namespace: str, thread_id: str, cp_ns: str,
                      seqs: list[int]) -> None:
    """Delete checkpoints ``seqs`` of one checkpoint namespace with their writes and the
    blobs they wrote that no remaining checkpoint needs."""
    marks = ", ".join("?" * len(seqs))
    key: tuple[Any, ...] = (namespace, thread_id, cp_ns, *seqs)
    where = f"namespace = ? AND thread_id = ? AND checkpoint_ns = ? AND seq IN ({marks})"
    conn.execute(f"DELETE FROM writes WHERE {where}", key)
    conn.execute(f"DELETE FROM checkpoints WHERE {where}", key)
    candidates = conn.execute(
        "SELECT channel, version FROM blobs WHERE namespace = ? AND thread_id = ?"
        f" AND checkpoint_ns = ? AND version IN ({marks})", key,
    ).fetchall()  # fmt: skip
    later = [
        checkpoint_record(thread_id, cp_ns, r)
        for r in conn.execute(
            f"SELECT {CP_COLS} FROM checkpoints WHERE namespace = ? AND thread_id = ?"
            " AND checkpoint_ns = ? AND seq > ?", (namespace, thread_id, cp_ns, min(seqs)),
        )
    ]  # fmt: skip
    conn.executemany(
        "DELETE FROM blobs WHERE namespace = ? AND thread_id = ? AND checkpoint_ns = ?"
        " AND channel = ? AND version = ?",
        [(namespace, thread_id, cp_ns, channel, version)
         for channel, version in doomed_blobs(candidates, later)],
    )  # fmt: skip


def _nothing() -> None:
    """What ending :meth:`hold_liveness` does here."""
