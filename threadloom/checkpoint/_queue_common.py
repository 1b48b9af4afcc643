"""What the three run-queue backends share: argument checks, row conversions, the creation
time that keeps a thread's queue in order, and which blobs a rollback may delete.

Private to the stores' queue mixins (``_queue_memory``, ``_queue_sqlite``,
``_queue_postgres``); :mod:`threadloom.checkpoint.queue` is the contract they implement.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from threadloom.checkpoint.base import CheckpointRecord, RunRecord
from threadloom.checkpoint.queue import (
    ApiKey,
    AuditEvent,
    MultitaskStrategy,
    QueuedRun,
    RunEvent,
    WorkerRecord,
)
from threadloom.errors import InvalidConfigError, ThreadBusyError

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "AUDIT_COLS",
    "audit_event",
    "audit_row",
    "cancel_event",
    "check_audit_cursor",
    "stamp_audit",
    "END_EVENT",
    "EnqueueMethods",
    "HANDED_BACK_STATUSES",
    "QUEUE_COLS",
    "KEY_COLS",
    "api_key",
    "check_deletable",
    "check_enqueue",
    "claim_at_enqueue",
    "doomed_blobs",
    "queue_time",
    "queue_values",
    "queued_run",
    "run_event",
    "worker_record",
]

ACTIVE_RUN_STATUSES = ("pending", "running")
"""A run is active on its thread while its record has one of these statuses and its queue row
is not ``done`` (see ``RuntimeStore.enqueue``)."""

HANDED_BACK_STATUSES = ("running", "cancelled")
"""A run record in one of these statuses becomes ``pending`` again when its claim is handed
back (``release_claim``): the engine records a run stopped for a graceful shutdown as
``cancelled``, but the run is queued and will continue, which is what ``pending`` says."""

END_EVENT = ("end", b"null")
"""The control event that ends a finished run's stream."""

QUEUE_COLS = (
    "namespace, run_id, thread_id, graph, payload, available_at, created_at, timeout, status,"
    " attempts, worker, claim_token, claim_expires, cancel, finished_at"
)
"""The queue table's columns in :class:`QueuedRun` field order."""

KEY_COLS = (
    "key_id, namespace, role, key_hash, created_at, last_used_at, revoked_at, name"
)
"""The key table's columns in :class:`ApiKey` field order."""

EPSILON = 1e-6
"""How much later than the thread's last queued run a new one is made, at least."""


STRATEGIES = ("reject", "enqueue", "interrupt", "rollback")


def check_enqueue(
    record: RunRecord, run: QueuedRun, strategy: str, now: float
) -> tuple[RunRecord, QueuedRun]:
    """Copies of ``record`` and ``run`` as ``enqueue`` writes them (times set, the row
    ``queued`` with no claim).

    Raises:
        InvalidConfigError: they do not describe the same pending run, or ``strategy`` is
            not a multitask strategy.
    """
    if strategy not in STRATEGIES:
        raise InvalidConfigError(
            f"unknown multitask strategy {strategy!r}: use one of {', '.join(STRATEGIES)}"
        )
    if (record.namespace, record.run_id, record.thread_id) != (
        run.namespace, run.run_id, run.thread_id,
    ):  # fmt: skip
        raise InvalidConfigError(
            f"the queued run {run.namespace}/{run.run_id} on thread {run.thread_id!r} and its "
            f"record {record.namespace}/{record.run_id} on thread {record.thread_id!r} differ"
        )
    if record.status != "pending":
        raise InvalidConfigError(f"a queued run's record is pending, not {record.status!r}")
    created = run.created_at or now
    queued = QueuedRun(
        run.namespace, run.run_id, run.thread_id, run.graph, bytes(run.payload),
        available_at=run.available_at, created_at=created, timeout=run.timeout,
    )  # fmt: skip
    if not record.created_at:
        record = replace(record, created_at=created, updated_at=record.updated_at or created)
    return record, queued


def check_deletable(run_id: str, status: str | None, queue_status: str | None) -> None:
    """Refuse to delete an active run (``delete_run``): ``status`` is its record's,
    ``queue_status`` its queue row's (``None``: there is none).

    Raises:
        ThreadBusyError: the record is pending or running, or the row queued or claimed.
    """
    if status in ACTIVE_RUN_STATUSES or queue_status in ("queued", "claimed"):
        shown = status if status in ACTIVE_RUN_STATUSES else queue_status
        raise ThreadBusyError(f"run {run_id!r} is {shown}: cancel it before deleting it")


def queue_time(wanted: float, last: float | None) -> float:
    """A queue row's ``created_at``: ``wanted``, or just after ``last`` (the latest one still
    queued or claimed on the thread) when that is not earlier. This keeps a thread's runs in
    the order they were queued whatever the callers' clocks say, which ``claim_runs`` relies
    on (the oldest open row of a thread is its only candidate)."""
    if last is not None and wanted <= last:
        return last + max(EPSILON, abs(last) * 1e-15)
    return wanted


class EnqueueMethods:
    """``enqueue`` and ``enqueue_claimed`` of a store's queue, both one transaction of the
    store's ``_enqueue`` (which returns the cancelled run ids and the claim, if it made one)."""

    if TYPE_CHECKING:  # each store's own, one transaction

        def _enqueue(self, record: RunRecord, run: QueuedRun, strategy: MultitaskStrategy,
                     thread_metadata: Mapping[str, Any] | None, audit: AuditEvent | None,
                     claim_for: tuple[str, float] | None
                     ) -> tuple[list[str], QueuedRun | None]: ...

    def enqueue(self, record: RunRecord, run: QueuedRun,
                strategy: MultitaskStrategy = "enqueue", *,
                thread_metadata: Mapping[str, Any] | None = None,
                audit: AuditEvent | None = None) -> list[str]:
        """Record the pending run and queue it, in one transaction (see the protocol)."""
        return self._enqueue(record, run, strategy, thread_metadata, audit, None)[0]

    def enqueue_claimed(self, record: RunRecord, run: QueuedRun, worker: str, ttl: float,
                        strategy: MultitaskStrategy = "enqueue", *,
                        thread_metadata: Mapping[str, Any] | None = None,
                        audit: AuditEvent | None = None) -> QueuedRun | None:
        """:meth:`enqueue`, claimed by ``worker`` in the same transaction when the run can
        start now (see the protocol)."""
        return self._enqueue(record, run, strategy, thread_metadata, audit, (worker, ttl))[1]


def claim_at_enqueue(row: QueuedRun, claim_for: tuple[str, float] | None, thread_idle: bool,
                     now: float) -> QueuedRun | None:
    """The row ``enqueue_claimed`` writes: claimed by ``claim_for``'s worker for its ttl (a
    first claim: attempts and claim token 1) when the run could be claimed at once (its thread
    has no other open row and it is not delayed); ``None`` when it is queued as ``enqueue``
    queues it."""
    if claim_for is None or not thread_idle or row.available_at > now:
        return None
    worker, ttl = claim_for
    return replace(row, status="claimed", attempts=1, worker=worker, claim_token=1,
                   claim_expires=now + ttl)


def queue_values(row: QueuedRun) -> tuple[Any, ...]:
    """The values of ``row`` in :data:`QUEUE_COLS` order (an insert of the whole row)."""
    return (row.namespace, row.run_id, row.thread_id, row.graph, row.payload, row.available_at,
            row.created_at, row.timeout, row.status, row.attempts, row.worker, row.claim_token,
            row.claim_expires, row.cancel, row.finished_at)


def queued_run(row: Sequence[Any]) -> QueuedRun:
    """A queue row selected with :data:`QUEUE_COLS`."""
    run = QueuedRun(*row)
    run.payload = bytes(run.payload)
    return run


def run_event(row: Sequence[Any]) -> RunEvent:
    """An event row: ``namespace, run_id, seq, event, data, created_at``."""
    ns, run_id, seq, event, data, created_at = row
    return RunEvent(ns, run_id, seq, event, bytes(data), created_at)


def api_key(row: Sequence[Any]) -> ApiKey:
    """A key row selected with :data:`KEY_COLS`."""
    key = ApiKey(*row)
    key.key_hash = bytes(key.key_hash)
    return key


def worker_record(row: Sequence[Any]) -> WorkerRecord:
    """A worker row: ``worker_id, last_seen, started_at, info`` (JSON text or decoded)."""
    worker_id, last_seen, started_at, info = row
    if isinstance(info, str | bytes):
        info = json.loads(info)
    return WorkerRecord(worker_id, last_seen, started_at, dict(info or {}))


def info_json(worker: WorkerRecord) -> str:
    """A worker's ``info`` as JSON text.

    Raises:
        InvalidConfigError: it is not JSON-serializable.
    """
    try:
        return json.dumps(worker.info, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"worker info is not JSON-serializable: {exc}") from exc


def doomed_blobs(
    candidates: Iterable[tuple[str, int]], later: Iterable[CheckpointRecord]
) -> list[tuple[str, int]]:
    """Of the blobs ``(channel, version)`` written by the checkpoints a rollback deletes, the
    ones no remaining checkpoint can need. ``later``: the remaining checkpoints of the same
    ``checkpoint_ns`` with a higher ``seq`` than the lowest deleted one (a lower one cannot
    reach a blob written after it). A checkpoint's chain for a channel lies within its
    ``[base, version]``, so a blob outside every such range is unreachable."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for cp in later:
        for channel, (version, base) in cp.channels.items():
            ranges.setdefault(channel, []).append((base, version))
    return [
        (channel, version)
        for channel, version in candidates
        if not any(lo <= version <= hi for lo, hi in ranges.get(channel, ()))
    ]


def check_limit(limit: int, what: str = "limit") -> int:
    """``limit`` if it is an int >= 0.

    Raises:
        InvalidConfigError: it is not.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidConfigError(f"{what} must be an integer >= 0, not {limit!r}")
    return limit


AUDIT_COLS = "namespace, id, at, key_id, role, action, target, run_id, thread_id, outcome"
"""The audit table's columns (:func:`audit_row` order)."""

_AUDIT_ID = re.compile(r"a[0-9a-f]{14}[0-9a-f]{10}")


def stamp_audit(event: AuditEvent, now: float) -> AuditEvent:
    """The event with its id and time set, as it will be stored: the id is the time in
    microseconds (hex, fixed width, so ids sort by time) and 40 random bits (two events of
    one microsecond stay two)."""
    at = event.at or now
    return replace(event, at=at, id=f"a{int(at * 1e6):014x}{secrets.token_hex(5)}")


def audit_row(event: AuditEvent) -> tuple[Any, ...]:
    """The event's values in :data:`AUDIT_COLS` order."""
    return (event.namespace, event.id, event.at, event.key_id, event.role, event.action,
            event.target, event.run_id, event.thread_id, event.outcome)


def audit_event(row: Sequence[Any]) -> AuditEvent:
    """An audit row selected with :data:`AUDIT_COLS`."""
    (namespace, id_, at, key_id, role, action, target, run_id, thread_id, outcome) = row
    return AuditEvent(namespace, action, target, key_id, role, run_id, thread_id, outcome,
                      float(at), id_)


def cancel_event(audit: AuditEvent | None, run: QueuedRun,
                 outcome: str) -> AuditEvent | None:
    """The event of an active run that an enqueue with the ``interrupt`` or ``rollback``
    strategy cancelled, by the caller of ``audit`` (the enqueue's own event); ``None`` when
    the enqueue has no event."""
    if audit is None:
        return None
    return replace(audit, action="run.cancel", target=run.run_id, run_id=run.run_id,
                   thread_id=run.thread_id, outcome=outcome, at=0.0, id="")


def check_audit_cursor(cursor: str | None) -> str | None:
    """The cursor, checked (an event id), or ``None``.

    Raises:
        ValueError: not an event id.
    """
    if cursor is not None and not _AUDIT_ID.fullmatch(cursor):
        raise ValueError("not a cursor of this audit log")
    return cursor
