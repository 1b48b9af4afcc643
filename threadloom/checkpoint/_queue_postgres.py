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

from threadloom.checkpoint._postgres_listen import LIVENESS_CLASS, PgSignals
from threadloom.checkpoint._postgres_options import split_url
from threadloom.checkpoint._postgres_wire import check_failure
from threadloom.checkpoint._queue_common import (
    END_EVENT,
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
from threadloom.checkpoint._queue_postgres_sql import (
    QueueStatements,
    appended,
    event_arrays,
    one_row,
    thread_key,
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
    ThreadBusyError,
)

if TYPE_CHECKING:
    from threadloom.checkpoint._postgres_sql import Statements

__all__ = ["PostgresQueue"]

log = logging.getLogger("threadloom.checkpoint.postgres")
_T = TypeVar("_T")
Connection: TypeAlias = "psycopg.Connection[Any]"
Outcome: TypeAlias = Literal["cancelled", "signalled", "finished", "unknown"]
_LIVENESS_WAIT = 5.0  # seconds hold_liveness waits for the lock


class PostgresQueue(EnqueueMethods):
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

    def _enqueue(self, record: RunRecord, run: QueuedRun, strategy: MultitaskStrategy,
                 thread_metadata: Mapping[str, Any] | None, audit: AuditEvent | None,
                 claim_for: tuple[str, float] | None) -> tuple[list[str], QueuedRun | None]:
        record, row = check_enqueue(record, run, strategy, time.time())
        event = stamp_audit(audit, time.time()) if audit is not None else None
        sql = self._q
        try:
            patch = json.dumps(dict(thread_metadata)) if thread_metadata else None
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc
        tries = 0
        decided: tuple[list[str], QueuedRun | None] = ([], None)

        def enqueue(conn: Connection) -> tuple[list[str], QueuedRun | None]:
            nonlocal tries, decided
            tries += 1
            now = time.time()
            with conn.transaction():
                conn.execute(sql.lock, (thread_key(self.schema, row.namespace, row.thread_id),))
                probe = {"ns": row.namespace, "run_id": row.run_id, "thread_id": row.thread_id}
                thread, graph, payload, status, taken, last = one_row(conn, sql.probe, probe)
                if thread is not None and tries > 1 and (thread, graph, bytes(payload)) == (
                    row.thread_id, row.graph, row.payload
                ):
                    if decided[1] is None:
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
                queued = replace(row, created_at=queue_time(row.created_at, last))
                claimed = claim_at_enqueue(queued, claim_for, last is None, now)
                try:
                    if claimed is None:
                        conn.execute(sql.insert, (*queue_values(queued), sql.channel,
                                                  f"{WORK}\n"))
                    else:  # it has its worker: no one to wake
                        conn.execute(sql.insert_claimed, queue_values(claimed))
                except pg_errors.UniqueViolation:
                    raise RunConflictError(
                        f"run {row.run_id!r} already exists in namespace {row.namespace!r}"
                    ) from None
                if event is not None:
                    conn.execute(sql.put_audit, audit_row(event))
                if claimed is None:
                    self._outbox.add(WORK, "")
                decided = (cancelled, claimed)
            return decided

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
                (last,) = one_row(conn, sql.last_open, (namespace, thread_id))
                body = bytes(payload) if payload is not None else old[4] if old else b"{}"
                conn.execute(sql.pending_run, (now, run_id, namespace))
                new = one_row(conn, sql.requeue, (
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
            "message": f"{DONE}\n{ns}/{run_id}", **event_arrays(events),
        }  # fmt: skip

        def finish(conn: Connection) -> bool:
            rows = appended(conn, self._q.finish_events, params,
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
            (last,) = one_row(conn, sql.last_seq, (row.namespace, row.run_id))
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
        (queued,) = one_row(conn, sql.drop_run, params)
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
        return int(self._run(lambda conn: one_row(conn, sql, params)[0], "queue_depth"))

    # -- events ---------------------------------------------------------------------------

    def append_events(self, namespace: str, run_id: str,
                      events: Sequence[tuple[str, bytes]]) -> int:
        """Append events to the run's stream in one statement, numbered after the last one,
        and signal ``"event"`` (see the module docstring)."""
        sql = self._q
        if not events:
            return int(self._run(
                lambda conn: one_row(conn, sql.last_seq, (namespace, run_id))[0],
                "read_events"))  # fmt: skip
        params = {
            "ns": namespace, "run_id": run_id, "now": time.time(),
            "channel": sql.channel, "prefix": f"{EVENT}\n{namespace}/{run_id}/",
            **event_arrays(events),
        }  # fmt: skip

        def append(conn: Connection) -> int:
            [(seq, *_)] = appended(conn, sql.append, params, f"events of run {run_id!r}")
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
            rows = appended(conn, sql.append_many, params,
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
                claims, leases = one_row(conn, self._q.expire_dead, params)
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
