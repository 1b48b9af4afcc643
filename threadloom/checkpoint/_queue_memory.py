"""The run queue, run events, workers and API keys of the in-process store.

:class:`MemoryQueue` is mixed into :class:`~threadloom.checkpoint.memory.MemoryStore` and
makes it a :class:`~threadloom.checkpoint.queue.RuntimeStore`: the reference behaviour of the
runtime's rows, as the store itself is of the rest. Every method holds the store's lock for its
whole duration, so each is atomic, and the rows live in dicts beside the store's own. Signals
are in-process (:class:`~threadloom.checkpoint._signals.LocalSignals`), published after the
lock is released.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from threadloom.checkpoint._queue_common import (
    ACTIVE_RUN_STATUSES,
    END_EVENT,
    HANDED_BACK_STATUSES,
    EnqueueMethods,
    cancel_event,
    check_audit_cursor,
    check_deletable,
    check_enqueue,
    check_limit,
    claim_at_enqueue,
    doomed_blobs,
    info_json,
    queue_time,
    stamp_audit,
)
from threadloom.checkpoint._signals import CANCEL, DONE, EVENT, WORK, LocalSignals
from threadloom.checkpoint.base import Commit, RunLog, RunRecord
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
    from threadloom.checkpoint.base import (
        BlobRecord,
        CheckpointRecord,
        ExecutionRecord,
        ThreadRecord,
        WriteRecord,
    )

__all__ = ["MemoryQueue"]

_Key = tuple[str, str]  # (namespace, run_id)
_Sent = list[tuple[str, str]]  # signals to publish once the lock is released


class MemoryQueue(EnqueueMethods):
    """The :class:`~threadloom.checkpoint.queue.RuntimeStore` part of the memory store."""

    reads_are_local = True  # dicts in this process

    if TYPE_CHECKING:  # the store's own state, used here
        _lock: threading.RLock
        _runs: dict[tuple[str, str], RunRecord]
        _checkpoints: dict[tuple[str, str, str], dict[int, CheckpointRecord]]
        _heads: dict[tuple[str, str, str], int]
        _blobs: dict[tuple[str, str, str, str], dict[int, BlobRecord]]
        _writes: dict[tuple[str, str, str, int], dict[tuple[str, str, int], WriteRecord]]
        _executions: dict[tuple[str, str, str], ExecutionRecord]
        _run_logs: dict[tuple[str, str], list[RunLog]]

        def _check_open(self) -> None: ...
        def commit(self, commits: Sequence[Commit]) -> None: ...
        def get_thread(self, thread_id: str, *,
                       namespace: str = ...) -> ThreadRecord | None: ...
        def update_thread(self, thread_id: str, metadata: dict[str, Any], *,
                          namespace: str = ...) -> ThreadRecord | None: ...

    def _init_runtime(self) -> None:
        """Create the runtime's tables (called by the store's ``__init__``)."""
        self._queue: dict[_Key, QueuedRun] = {}
        self._events: dict[_Key, list[RunEvent]] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._keys: dict[str, ApiKey] = {}
        self._audit: dict[str, list[AuditEvent]] = {}  # per namespace, oldest first
        self._bus = LocalSignals("threadloom-signals:memory")
        self._external: Signals | None = None

    def _close_runtime(self) -> None:
        """Stop the signal thread and drop the runtime's rows (called by ``close``, without
        the lock: a subscriber may be waiting for it)."""
        self._bus.close()
        with self._lock:
            self._queue.clear()
            self._events.clear()
            self._workers.clear()
            self._keys.clear()
            self._audit.clear()

    def _publish(self, sent: _Sent) -> None:
        bus = self.signals()
        for topic, message in sent:
            bus.publish(topic, message)

    def signals(self) -> Signals:
        """The store's signal bus: the one :meth:`use_signals` installed, else in-process."""
        return self._external if self._external is not None else self._bus

    def use_signals(self, bus: Signals | None) -> None:
        """Announce what this store changes on ``bus`` (``None``: the in-process bus again)."""
        self._external = bus

    # -- the queue ------------------------------------------------------------------------

    def _run_record(self, namespace: str, run_id: str) -> RunRecord | None:
        return self._runs.get((namespace, run_id))

    def _active(self, namespace: str, thread_id: str) -> list[QueuedRun]:
        active = []
        for row in self._queue.values():
            if row.namespace != namespace or row.thread_id != thread_id or row.status == "done":
                continue
            record = self._run_record(namespace, row.run_id)
            if record is None or record.status in ACTIVE_RUN_STATUSES:
                active.append(row)
        active.sort(key=lambda r: (r.created_at, r.run_id))
        return active

    def _last_open(self, namespace: str, thread_id: str) -> float | None:
        times = [
            r.created_at
            for r in self._queue.values()
            if r.namespace == namespace and r.thread_id == thread_id and r.status != "done"
        ]
        return max(times) if times else None

    def _enqueue(self, record: RunRecord, run: QueuedRun, strategy: MultitaskStrategy,
                 thread_metadata: Mapping[str, Any] | None, audit: AuditEvent | None,
                 claim_for: tuple[str, float] | None) -> tuple[list[str], QueuedRun | None]:
        sent: _Sent = []
        if thread_metadata:
            try:
                thread_metadata = json.loads(json.dumps(dict(thread_metadata)))
            except (TypeError, ValueError) as exc:
                raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc
        with self._lock:
            self._check_open()
            now = time.time()
            record, row = check_enqueue(record, run, strategy, now)
            key = (row.namespace, row.run_id)
            thread = (row.namespace, row.thread_id)
            taken = self._runs.get(key) is not None
            old = self._queue.get(key)
            if old is not None and old.status == "done" and not taken:
                del self._queue[key]  # left by a deleted run (thread deleted, retention)
                self._events.pop(key, None)
            elif old is not None or taken:
                raise RunConflictError(
                    f"run {row.run_id!r} already exists in namespace {row.namespace!r}"
                )
            active = self._active(*thread)
            if active and strategy == "reject":
                raise ThreadBusyError(
                    f"thread {row.thread_id!r} is busy with run {active[0].run_id!r}"
                )
            cancelled: list[str] = []
            if active and strategy in ("interrupt", "rollback"):
                action: CancelAction = "rollback" if strategy == "rollback" else "interrupt"
                for other in active:
                    done = self._cancel(other, action, now, sent)
                    self._write_audit(cancel_event(audit, other, done), now)
                    cancelled.append(other.run_id)
            last = self._last_open(*thread)
            row.created_at = queue_time(row.created_at, last)
            self.commit([Commit(row.thread_id, namespace=row.namespace, runs=[record])])
            if thread_metadata:
                found = self.get_thread(row.thread_id, namespace=row.namespace)
                if found is not None:
                    self.update_thread(row.thread_id, {**found.metadata, **thread_metadata},
                                       namespace=row.namespace)
            claimed = claim_at_enqueue(row, claim_for, last is None, now)
            self._queue[key] = claimed or row
            self._write_audit(audit, now)
            if claimed is None:
                sent.append((WORK, ""))
        self._publish(sent)
        return cancelled, None if claimed is None else replace(claimed)

    def requeue(self, namespace: str, run_id: str, *, available_at: float = 0.0,
                payload: bytes | None = None, audit: AuditEvent | None = None) -> QueuedRun:
        """Queue an existing, finished run again (see the protocol)."""
        with self._lock:
            self._check_open()
            record = self._run_record(namespace, run_id)
            if record is None:
                raise RunNotFoundError(f"no run {run_id!r} in namespace {namespace!r}")
            key = (namespace, run_id)
            old = self._queue.get(key)
            if old is not None and old.status != "done":
                raise ThreadBusyError(f"run {run_id!r} is {old.status} already")
            now = time.time()
            created = queue_time(now, self._last_open(namespace, record.thread_id))
            if old is None:
                old = QueuedRun(namespace, run_id, record.thread_id, record.graph, b"{}")
            row = replace(
                old, payload=bytes(payload) if payload is not None else old.payload,
                available_at=available_at, created_at=created, status="queued", worker=None,
                claim_expires=None, cancel=None, finished_at=None,
            )  # fmt: skip
            self._runs[(namespace, run_id)] = replace(record, status="pending", updated_at=now,
                                                      ended_at=None)
            self._queue[key] = row
            self._write_audit(audit, now)
            result = replace(row)
        self.signals().publish(WORK, "")
        return result

    def get_queued(self, namespace: str, run_id: str) -> QueuedRun | None:
        """The run's queue row (in any status), if it has one."""
        with self._lock:
            self._check_open()
            row = self._queue.get((namespace, run_id))
            return replace(row) if row is not None else None

    def claim_runs(self, worker: str, limit: int, ttl: float,
                   graphs: Sequence[str] | None = None) -> list[QueuedRun]:
        """Claim up to ``limit`` runs for ``ttl`` seconds (see the protocol)."""
        check_limit(limit)
        wanted = set(graphs) if graphs is not None else None
        with self._lock:
            self._check_open()
            now = time.time()
            heads: dict[tuple[str, str], QueuedRun] = {}
            held: set[tuple[str, str]] = set()
            for row in self._queue.values():
                if row.status == "done":
                    continue
                thread = (row.namespace, row.thread_id)
                if row.status == "claimed" and (row.claim_expires or 0.0) > now:
                    held.add(thread)
                head = heads.get(thread)
                if head is None or (row.created_at, row.run_id) < (head.created_at, head.run_id):
                    heads[thread] = row
            ready = [
                row
                for thread, row in heads.items()
                if thread not in held
                and (wanted is None or row.graph in wanted)
                and (
                    (row.status == "queued" and row.available_at <= now)
                    or (row.status == "claimed" and (row.claim_expires or 0.0) <= now)
                )
            ]
            ready.sort(key=lambda r: (r.created_at, r.run_id))
            claims = []
            for row in ready[:limit]:
                row.status = "claimed"
                row.attempts += 1
                row.worker = worker
                row.claim_token += 1
                row.claim_expires = now + ttl
                claims.append(replace(row))
            return claims

    def _current(self, claim: QueuedRun) -> QueuedRun | None:
        row = self._queue.get((claim.namespace, claim.run_id))
        if row is None or row.status != "claimed" or row.claim_token != claim.claim_token:
            return None
        return row

    def renew_claims(self, worker: str, claims: Sequence[QueuedRun],
                     ttl: float) -> list[ClaimState]:
        """Extend the worker's claims; report lost ones and cancellation requests."""
        with self._lock:
            self._check_open()
            now = time.time()
            states = []
            for claim in claims:
                row = self._current(claim)
                if row is None:
                    states.append(ClaimState(claim.run_id, claim.namespace, lost=True))
                    continue
                row.claim_expires = now + ttl
                states.append(ClaimState(claim.run_id, claim.namespace, cancel=row.cancel))
            self._beat(worker, now)
            return states

    def finish_claim(self, claim: QueuedRun,
                     events: Sequence[tuple[str, bytes]] = ()) -> bool:
        """Mark the run ``done`` and append its last ``events`` if the claim is still
        current; signal ``"event"`` and ``"done"``."""
        name = f"{claim.namespace}/{claim.run_id}"
        with self._lock:
            self._check_open()
            row = self._current(claim)
            if row is None:
                return False
            now = time.time()
            seq = self._append(claim.namespace, claim.run_id, events, now)
            row.status = "done"
            row.claim_expires = None
            row.finished_at = now
        if events:
            self.signals().publish(EVENT, f"{name}/{seq}")
        self.signals().publish(DONE, name)
        return True

    def release_claim(self, claim: QueuedRun, delay: float = 0.0) -> bool:
        """Hand the run back (queued again after ``delay``, its record ``pending``) if the
        claim is still current."""
        with self._lock:
            self._check_open()
            row = self._current(claim)
            if row is None:
                return False
            now = time.time()
            row.status = "queued"
            row.worker = None
            row.claim_expires = None
            row.available_at = now + delay
            record = self._run_record(claim.namespace, claim.run_id)
            if record is not None and record.status in HANDED_BACK_STATUSES:
                self._runs[(claim.namespace, claim.run_id)] = replace(
                    record, status="pending", updated_at=now, ended_at=None)
        self.signals().publish(WORK, "")
        return True

    def request_cancel(self, namespace: str, run_id: str,
                       action: CancelAction = "interrupt", *,
                       audit: AuditEvent | None = None) -> Literal[
                           "cancelled", "signalled", "finished", "unknown"]:
        """Cancel a run (see the protocol)."""
        sent: _Sent = []
        with self._lock:
            self._check_open()
            now = time.time()
            row = self._queue.get((namespace, run_id))
            if row is None or row.status == "done":
                known = row is not None or self._run_record(namespace, run_id) is not None
                if known and audit is not None:
                    self._write_audit(replace(audit, outcome="finished"), now)
                return "finished" if known else "unknown"
            outcome = self._cancel(row, action, now, sent)
            if audit is not None:
                self._write_audit(replace(audit, outcome=outcome), now)
        self._publish(sent)
        return outcome

    def _cancel(self, row: QueuedRun, action: CancelAction, now: float,
                sent: _Sent) -> Literal["cancelled", "signalled"]:
        """Cancel an open queue row, under the lock."""
        name = f"{row.namespace}/{row.run_id}"
        if row.status == "claimed":
            if row.cancel != "rollback":
                row.cancel = action
            sent.append((CANCEL, name))
            return "signalled"
        if action == "rollback":
            self._rollback(row.namespace, row.run_id)
        else:
            row.status = "done"
            row.finished_at = now
            record = self._run_record(row.namespace, row.run_id)
            if record is not None:
                self._runs[(row.namespace, row.run_id)] = replace(
                    record, status="cancelled", updated_at=now, ended_at=now
                )
            self._append(row.namespace, row.run_id, [END_EVENT], now)
        sent.append((DONE, name))
        return "cancelled"

    def rollback_run(self, namespace: str, run_id: str, *,
                     audit: AuditEvent | None = None) -> None:
        """Delete a run and everything it wrote (see the protocol)."""
        with self._lock:
            self._check_open()
            had_row = (namespace, run_id) in self._queue
            if had_row or self._run_record(namespace, run_id) is not None:
                self._write_audit(audit, time.time())
            self._rollback(namespace, run_id)
        if had_row:
            self.signals().publish(DONE, f"{namespace}/{run_id}")

    def delete_run(self, namespace: str, run_id: str, *,
                   audit: AuditEvent | None = None) -> bool:
        """Delete a finished run's rows, keeping its checkpoints (see the protocol)."""
        with self._lock:
            self._check_open()
            record = self._run_record(namespace, run_id)
            row = self._queue.get((namespace, run_id))
            check_deletable(run_id, record.status if record else None,
                             row.status if row else None)
            self._queue.pop((namespace, run_id), None)
            self._events.pop((namespace, run_id), None)
            self._run_logs.pop((namespace, run_id), None)
            if record is None:
                return False
            del self._runs[(namespace, run_id)]
            for key in [k for k, e in self._executions.items()
                        if k[:2] == (namespace, record.thread_id) and e.run_id == run_id]:
                del self._executions[key]
            self._write_audit(audit, time.time())
            return True

    def _rollback(self, namespace: str, run_id: str) -> None:
        record = self._run_record(namespace, run_id)
        row = self._queue.pop((namespace, run_id), None)
        self._events.pop((namespace, run_id), None)
        self._run_logs.pop((namespace, run_id), None)
        thread_id = record.thread_id if record is not None else row.thread_id if row else None
        if thread_id is None:
            return
        if record is not None:
            del self._runs[(namespace, run_id)]
        for key in [k for k, e in self._executions.items()
                    if k[:2] == (namespace, thread_id) and e.run_id == run_id]:
            del self._executions[key]
        for (space, tid, cp_ns), by_seq in list(self._checkpoints.items()):
            if (space, tid) != (namespace, thread_id):
                continue
            doomed = sorted(seq for seq, cp in by_seq.items() if cp.run_id == run_id)
            if not doomed:
                continue
            for seq in doomed:
                del by_seq[seq]
                self._writes.pop((space, tid, cp_ns, seq), None)
            gone = set(doomed)
            candidates = [
                (channel, version)
                for (sp, t, n, channel), versions in self._blobs.items()
                if (sp, t, n) == (space, tid, cp_ns)
                for version in versions
                if version in gone
            ]
            later = [cp for seq, cp in by_seq.items() if seq > doomed[0]]
            for channel, version in doomed_blobs(candidates, later):
                self._blobs[(space, tid, cp_ns, channel)].pop(version, None)
            if by_seq:
                self._heads[(space, tid, cp_ns)] = max(by_seq)
            else:
                del self._checkpoints[(space, tid, cp_ns)]
                self._heads.pop((space, tid, cp_ns), None)

    def queue_depth(self, namespace: str | None = None) -> int:
        """How many runs are queued (not claimed), in one namespace or all."""
        with self._lock:
            self._check_open()
            return sum(
                1
                for row in self._queue.values()
                if row.status == "queued" and (namespace is None or row.namespace == namespace)
            )

    # -- events ---------------------------------------------------------------------------

    def _append(self, namespace: str, run_id: str, events: Sequence[tuple[str, bytes]],
                now: float) -> int:
        stream = self._events.setdefault((namespace, run_id), [])
        for event, data in events:
            stream.append(RunEvent(namespace, run_id, len(stream) + 1, event, bytes(data), now))
        if not stream:
            del self._events[(namespace, run_id)]
        return len(stream)

    def append_events(self, namespace: str, run_id: str,
                      events: Sequence[tuple[str, bytes]]) -> int:
        """Append events to the run's stream, numbered after the last one."""
        with self._lock:
            self._check_open()
            seq = self._append(namespace, run_id, events, time.time())
        if events:
            self.signals().publish(EVENT, f"{namespace}/{run_id}/{seq}")
        return seq

    def read_events(self, namespace: str, run_id: str, after: int = 0,
                    limit: int = 1000) -> list[RunEvent]:
        """The run's events with ``seq > after``, in order, at most ``limit``."""
        check_limit(limit)
        with self._lock:
            self._check_open()
            stream = self._events.get((namespace, run_id), [])
            return [replace(e) for e in stream[max(after, 0) : max(after, 0) + limit]]

    def delete_events(self, *, finished_before: float) -> int:
        """Drop the events of runs that left the queue before the cutoff (see the
        protocol)."""
        with self._lock:
            self._check_open()
            deleted = 0
            for key, stream in list(self._events.items()):
                row = self._queue.get(key)
                if row is None:
                    gone = stream[-1].created_at < finished_before
                else:
                    gone = row.status == "done" and (row.finished_at or 0.0) < finished_before
                if gone:
                    deleted += len(stream)
                    del self._events[key]
            return deleted

    # -- workers --------------------------------------------------------------------------

    def _beat(self, worker_id: str, now: float) -> None:
        known = self._workers.get(worker_id)
        if known is None:
            self._workers[worker_id] = WorkerRecord(worker_id, now, now, {})
        else:
            known.last_seen = now

    def worker_heartbeat(self, worker: WorkerRecord) -> None:
        """Record (upsert) a worker's heartbeat."""
        info: dict[str, Any] = json.loads(info_json(worker))
        with self._lock:
            self._check_open()
            self._workers[worker.worker_id] = WorkerRecord(
                worker.worker_id, worker.last_seen, worker.started_at, info
            )

    def list_workers(self, *, seen_after: float = 0.0) -> list[WorkerRecord]:
        """Workers whose last heartbeat is after ``seen_after``, by id."""
        with self._lock:
            self._check_open()
            return [
                replace(w, info=dict(w.info))
                for _, w in sorted(self._workers.items())
                if w.last_seen > seen_after
            ]

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (it shut down)."""
        with self._lock:
            self._check_open()
            self._workers.pop(worker_id, None)

    def hold_liveness(self, worker_id: str, process: str,
                      on_lost: Callable[[], None]) -> Callable[[], None]:
        """Nothing: this store cannot tell when a process died (claims lapse by their ttl)."""
        return _nothing

    def expire_dead_claims(self) -> int:
        """Nothing to do (see :meth:`hold_liveness`): ``0``."""
        return 0

    # -- API keys -------------------------------------------------------------------------

    def create_key(self, key: ApiKey, *, audit: AuditEvent | None = None) -> None:
        """Store a new key (and ``audit``). Raises ``InvalidConfigError`` if the id
        exists."""
        with self._lock:
            self._check_open()
            if key.key_id in self._keys:
                raise InvalidConfigError(f"API key {key.key_id!r} exists already")
            self._keys[key.key_id] = replace(key, key_hash=bytes(key.key_hash))
            self._write_audit(audit, time.time())

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""
        with self._lock:
            self._check_open()
            key = self._keys.get(key_id)
            return replace(key) if key is not None else None

    def list_keys(self, namespace: str | None = None) -> list[ApiKey]:
        """Keys of one namespace, or all, newest first (then by id, descending)."""
        with self._lock:
            self._check_open()
            keys = [
                replace(k)
                for k in self._keys.values()
                if namespace is None or k.namespace == namespace
            ]
            keys.sort(key=lambda k: (k.created_at, k.key_id), reverse=True)
            return keys

    def revoke_key(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        """Revoke a key (its first revocation time is kept; ``audit`` is appended);
        ``False`` if unknown."""
        with self._lock:
            self._check_open()
            key = self._keys.get(key_id)
            if key is None:
                return False
            now = time.time()
            if key.revoked_at is None:
                key.revoked_at = now
            self._write_audit(audit, now)
            return True

    def touch_key(self, key_id: str, at: float) -> None:
        """Record that the key was used at ``at`` (an earlier time never moves it back)."""
        with self._lock:
            self._check_open()
            key = self._keys.get(key_id)
            if key is not None and (key.last_used_at is None or at > key.last_used_at):
                key.last_used_at = at

    # -- the audit log --------------------------------------------------------------------

    def _write_audit(self, event: AuditEvent | None, now: float) -> AuditEvent | None:
        """Append ``event`` (if any), under the lock."""
        if event is None:
            return None
        stored = stamp_audit(event, now)
        self._audit.setdefault(stored.namespace, []).append(stored)
        return replace(stored)

    def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append an event on its own; returns it with its id and time."""
        with self._lock:
            self._check_open()
            stored = self._write_audit(event, time.time())
        assert stored is not None
        return stored

    def list_audit(self, namespace: str, *, limit: int = 100,
                   cursor: str | None = None) -> tuple[list[AuditEvent], str | None]:
        """The namespace's events, newest first (see the protocol)."""
        check_limit(limit)
        after = check_audit_cursor(cursor)
        with self._lock:
            self._check_open()
            events = sorted(self._audit.get(namespace, ()), key=lambda e: e.id, reverse=True)
        if after is not None:
            events = [e for e in events if e.id < after]
        page = [replace(e) for e in events[:limit]]
        return page, page[-1].id if len(events) > limit and page else None


def _nothing() -> None:
    """What ending :meth:`hold_liveness` does here."""
