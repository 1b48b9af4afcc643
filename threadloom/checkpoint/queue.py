"""The runtime's part of the store protocol: the run queue, run events, workers and API keys.

A store that also implements :class:`RuntimeStore` can back ``threadloom dev``, ``serve`` and
``worker``. Everything here lives in the same database as the checkpoints and run records, and
every key starts with the namespace, like the rest of the store:

- **The run queue.** A background run is a :class:`QueuedRun` row beside its
  :class:`~threadloom.checkpoint.base.RunRecord` (status ``pending``); :meth:`RuntimeStore.enqueue`
  writes both in one transaction. Workers :meth:`~RuntimeStore.claim_runs` a batch (Postgres:
  ``FOR UPDATE SKIP LOCKED``), hold each claim by renewing it (:meth:`~RuntimeStore.renew_claims`,
  which also reports cancellation requests), and :meth:`~RuntimeStore.finish_claim` or
  :meth:`~RuntimeStore.release_claim` it. A claim that is not renewed lapses, and the next
  :meth:`~RuntimeStore.claim_runs` hands the run to another worker with a new ``claim_token``
  (the engine's thread lease, not the claim, fences the run's commits). Where the store can
  tell that a worker's process died (Postgres: :meth:`~RuntimeStore.hold_liveness`),
  :meth:`~RuntimeStore.expire_dead_claims` ends its claims, and frees its thread leases, at
  once rather than at the lapse.
  Runs of one thread are claimed one at a time, oldest first. Claims, renewals, finishing,
  releasing and event appends may be committed without waiting for the disk (a machine or
  database crash can take the last ones back, which the lapse-and-reclaim above survives);
  enqueues, cancellations and rollbacks are durable when they return.
- **Run events.** What a run streams (``values``, ``updates``, ``custom``, ``debug`` chunks and
  the runtime's own ``metadata`` / ``error`` / ``end`` events), numbered per run from 1, so that an
  SSE stream can be served, and resumed after ``Last-Event-ID``, by any API process.
- **Signals.** :meth:`~RuntimeStore.signals` wakes waiting workers and streams at once (Postgres
  ``LISTEN/NOTIFY``; in-process for SQLite and memory; or an external bus such as Redis,
  installed with :meth:`~RuntimeStore.use_signals`). A signal is only a hint that rows changed:
  the rows are the truth, and a missed signal costs latency, never correctness.
- **Workers and API keys.** Worker heartbeats (for ``/ready`` and for metrics), and API keys,
  stored by the hash of their secret only.
- **The audit log.** An :class:`AuditEvent` per mutation made through the API. The mutating
  methods take an optional ``audit=`` event and write it in the same transaction as the
  change it records (so a change is never without its event, nor an event without its
  change); :meth:`~RuntimeStore.append_audit` records what has no method of its own (a
  refused request, a change made through the engine). Events hold ids, never a key or a
  value.

Example:
    >>> store = open_store("sqlite:///app.db")
    >>> store.enqueue(record, QueuedRun("default", "r-1", "t-1", "seed_loop", b"{}"))
    >>> [claim] = store.claim_runs("worker-1", limit=8, ttl=5.0)
    >>> store.finish_claim(claim)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from threadloom.checkpoint.base import AuditEvent, RunRecord, Store, ThreadRecord

__all__ = [
    "ApiKey",
    "AuditEvent",
    "CancelAction",
    "ClaimState",
    "MultitaskStrategy",
    "QueuedRun",
    "RunEvent",
    "RuntimeStore",
    "Signals",
    "WorkerRecord",
]

MultitaskStrategy: TypeAlias = Literal["reject", "enqueue", "interrupt", "rollback"]
"""What to do when a run is created on a thread that has an active (pending or running) run:
refuse it (``ThreadBusyError``), queue it behind (the default), or cancel the active run first,
keeping (``interrupt``) or deleting (``rollback``) what it did."""

CancelAction: TypeAlias = Literal["interrupt", "rollback"]


@dataclass(slots=True)
class QueuedRun:
    """A background run waiting for, or held by, a worker.

    Attributes:
        namespace: the tenant; with ``run_id`` the row's key.
        run_id: the engine's durable run id (the run record has the same id).
        thread_id: the thread the run executes on.
        graph: the registered graph's name.
        payload: what the worker needs to start the run, as the API received it (JSON bytes:
            input, command, config, stream modes, breakpoints, durability, ...). Opaque to the
            store.
        available_at: not claimed before this time (``after_seconds``).
        created_at: when it was queued (``0``: the store sets the time); runs of one thread
            are claimed in this order. The store keeps it increasing within a thread (a run
            queued on a thread is later than every run still queued or claimed there, also
            across processes whose clocks differ).
        timeout: seconds the run may take once started, or ``None``.
        status: ``queued`` (waiting), ``claimed`` (a worker holds it) or ``done``.
        attempts: how many times it was claimed (a reclaimed run has ``attempts > 1``).
        worker: the worker holding the claim.
        claim_token: increases with every claim; finishing or renewing needs the current one.
        claim_expires: when the claim lapses unless renewed.
        cancel: a cancellation asked for while it was claimed, for the worker to act on.
        finished_at: when it became ``done`` (finished, or cancelled while queued).
    """

    namespace: str
    run_id: str
    thread_id: str
    graph: str
    payload: bytes
    available_at: float = 0.0
    created_at: float = 0.0
    timeout: float | None = None
    status: Literal["queued", "claimed", "done"] = "queued"
    attempts: int = 0
    worker: str | None = None
    claim_token: int = 0
    claim_expires: float | None = None
    cancel: CancelAction | None = None
    finished_at: float | None = None


@dataclass(slots=True)
class ClaimState:
    """What :meth:`RuntimeStore.renew_claims` learned about one claim."""

    run_id: str
    namespace: str
    lost: bool = False  # the claim lapsed and was taken, finished or cancelled meanwhile
    cancel: CancelAction | None = None  # a cancellation was requested


@dataclass(slots=True)
class RunEvent:
    """One streamed event of a run. ``seq`` is 1, 2, ... per ``(namespace, run_id)``; the SSE
    event id. ``data`` is the event's JSON (bytes), as the stream sends it."""

    namespace: str
    run_id: str
    seq: int
    event: str
    data: bytes
    created_at: float = 0.0


@dataclass(slots=True)
class WorkerRecord:
    """A worker process, as its last heartbeat described it."""

    worker_id: str
    last_seen: float
    started_at: float
    info: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class ApiKey:
    """An API key as stored: never the key itself, only the hash of its secret.

    ``namespace`` is ``"*"`` for a key that covers every namespace."""

    key_id: str
    namespace: str
    role: Literal["viewer", "operator", "admin"]
    key_hash: bytes
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None
    name: str | None = None


class Signals(Protocol):
    """Wake-ups between processes sharing a store. Topics: ``"work"`` (a run became
    claimable), ``"cancel"`` (message ``namespace/run_id``), ``"event"`` (message
    ``namespace/run_id/seq``), ``"done"`` (message ``namespace/run_id``: a run left the queue).

    Delivery is at most once and may be late: subscribers re-read the rows.
    """

    def publish(self, topic: str, message: str) -> None:
        """Send ``message`` to every subscriber of ``topic`` in every process."""
        ...

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(message)`` (from a background thread) for each message on ``topic``
        until the returned function is called."""
        ...


@runtime_checkable
class RuntimeStore(Store, Protocol):
    """A :class:`~threadloom.checkpoint.base.Store` that also keeps the runtime's rows.

    Example:
        >>> store.enqueue(record, QueuedRun("default", "r-1", "t-1", "seed_loop", b"{}"))
        >>> claims = store.claim_runs("w-1", limit=4, ttl=5.0)
        >>> states = store.renew_claims("w-1", claims, ttl=5.0)
        >>> store.finish_claim(claims[0])
    """

    reads_are_local: bool
    """Whether a read is a local, short call that never waits on a writer or a network
    (SQLite in WAL mode, memory): an asynchronous server may then read on its event loop
    instead of handing the call to a thread."""

    # -- the queue ------------------------------------------------------------------------

    def enqueue(self, record: RunRecord, run: QueuedRun,
                strategy: MultitaskStrategy = "enqueue", *,
                thread_metadata: Mapping[str, Any] | None = None,
                audit: AuditEvent | None = None) -> list[str]:
        """Record the pending run and queue it, in one transaction, and signal ``"work"``.
        ``audit``, if given, is appended to the audit log in that transaction.

        ``record.status`` is ``"pending"``; ``record`` and ``run`` have the same namespace, run
        id and thread. If the thread has active runs (a run record ``pending`` or ``running``
        with a queue row not ``done``): ``reject`` raises; ``enqueue`` queues behind them;
        ``interrupt`` / ``rollback`` cancel them as :meth:`request_cancel` does, then queue.
        Two concurrent calls on one thread are serialized: of two ``reject`` calls on an idle
        thread, exactly one succeeds. ``run.created_at`` / ``record.created_at`` of ``0`` are
        set to the time of the call; ``run.status`` and its claim fields are ignored (the row
        is ``queued``). The thread row is created if needed, as a commit would;
        ``thread_metadata`` keys are set in its metadata in the same transaction (the API
        names the thread's graph so, without a write of its own).

        Returns:
            The run ids of the active runs that ``interrupt`` / ``rollback`` cancelled.

        Raises:
            RunConflictError: the namespace already has a run with this id (a record, or an
                open queue row; the ``done`` row and events of a run whose record was deleted,
                with its thread or by retention, are dropped and the id is free).
            ThreadBusyError: ``reject`` and the thread is busy.
            InvalidConfigError: ``record`` and ``run`` differ, ``record`` is not pending, or
                ``strategy`` is not a multitask strategy.
        """
        ...

    def enqueue_claimed(self, record: RunRecord, run: QueuedRun, worker: str, ttl: float,
                        strategy: MultitaskStrategy = "enqueue", *,
                        thread_metadata: Mapping[str, Any] | None = None,
                        audit: AuditEvent | None = None) -> QueuedRun | None:
        """:meth:`enqueue` for a caller that executes the run itself (the worker of the API's
        own process, for a request that waits for the run): when the run could be claimed
        at once - its thread has no other open queue row and it is not delayed - its row is
        written claimed by ``worker`` for ``ttl`` seconds, in the same transaction, as a
        first claim (``attempts`` and ``claim_token`` 1), no ``"work"`` signal is sent, and
        the claim is returned. Otherwise the run is queued exactly as :meth:`enqueue` queues
        it, and ``None`` is returned. The claim is then the worker's like any other: renewed,
        finished, handed back, and taken over when it lapses.

        Raises:
            Exception: what :meth:`enqueue` raises, in the same cases.
        """
        ...

    def requeue(self, namespace: str, run_id: str, *, available_at: float = 0.0,
                payload: bytes | None = None, audit: AuditEvent | None = None) -> QueuedRun:
        """Queue an existing, finished run again (``audit``, if given, is appended in the same
        transaction) (retry of a failed or cancelled run, or a
        run resumed by the API): its record becomes ``pending`` (``ended_at`` cleared), and a
        worker continues it from its last checkpoint. ``payload`` replaces the queued payload if
        given (a run that was never queued needs one, else ``b"{}"`` is queued). The row goes
        to the back of its thread's queue (``created_at`` is now), its cancellation request is
        cleared, and ``attempts`` and ``claim_token`` carry on.

        Raises:
            RunNotFoundError: no such run in the namespace.
            ThreadBusyError: the run is active (queued or claimed) already.
        """
        ...

    def get_queued(self, namespace: str, run_id: str) -> QueuedRun | None:
        """The run's queue row (in any status), if it has one."""
        ...

    def claim_runs(self, worker: str, limit: int, ttl: float,
                   graphs: Sequence[str] | None = None) -> list[QueuedRun]:
        """Claim up to ``limit`` runs for ``ttl`` seconds: queued runs whose ``available_at``
        has passed, and claimed runs whose claim lapsed (``attempts`` + 1), oldest first, at
        most one per thread, and never a run of a thread that has another run claimed (and
        unexpired) or an older run queued (delayed or not). Only runs of ``graphs`` if given.
        Each returned row is a claim: it gets a new, higher ``claim_token``, which finishing,
        renewing and releasing check; a reclaimed row keeps its ``cancel`` request. Concurrent
        callers never get the same run, nor two runs of one thread. Returned oldest first."""
        ...

    def renew_claims(self, worker: str, claims: Sequence[QueuedRun],
                     ttl: float) -> list[ClaimState]:
        """Extend each claim the worker still holds to ``now + ttl``; report per claim whether
        it was lost and whether a cancellation is requested. A lapsed claim that nobody took
        meanwhile is renewed (its token is still current). Also records the worker's
        heartbeat (see :meth:`worker_heartbeat`: ``last_seen`` now, a new worker's
        ``started_at`` now and ``info`` empty). Returns one state per claim, in order."""
        ...

    def finish_claim(self, claim: QueuedRun,
                     events: Sequence[tuple[str, bytes]] = ()) -> bool:
        """Mark the run ``done`` if ``claim`` is still current (the run record was already
        committed by the engine), append the run's last ``events`` to its stream in the same
        transaction (as :meth:`append_events`; nothing is appended when the claim was lost,
        so a run that another worker continues gets no stray ``end``), and signal
        ``"event"`` (if any) and then ``"done"``; ``False`` if the claim was lost."""
        ...

    def release_claim(self, claim: QueuedRun, delay: float = 0.0) -> bool:
        """Hand the run back (``queued`` again, available after ``delay``) if ``claim`` is
        still current; signal ``"work"``. For a graceful shutdown or a busy thread. In the
        same transaction, a run record that is ``running``, or ``cancelled`` (how the engine
        records a run stopped for the hand-back), becomes ``pending`` (``ended_at`` cleared,
        ``started_at`` kept, so the next worker continues it from its last checkpoint): a
        queued run shows as pending."""
        ...

    def request_cancel(self, namespace: str, run_id: str,
                       action: CancelAction = "interrupt", *,
                       audit: AuditEvent | None = None) -> Literal[
                           "cancelled", "signalled", "finished", "unknown"]:
        """Cancel a run. ``audit``, if given, is appended in the same transaction with the
        returned value as its outcome (not for ``"unknown"``: nothing was there to cancel).

        A queued run leaves the queue at once (signal ``"done"``): its record becomes
        ``cancelled`` (``interrupt``; the control event ``"end"`` is appended to its events, so
        a stream waiting for it stops) or is deleted with everything it wrote (``rollback``;
        see :meth:`rollback_run`): ``"cancelled"``. A claimed run gets the request in its row
        for its worker to act on (a ``rollback`` request is not weakened by a later
        ``interrupt``), and a ``"cancel"`` signal: ``"signalled"``; the worker stops the run and
        finishes its claim (after :meth:`rollback_run` for ``rollback``). A run whose queue row
        is ``done``, or that has a record but no queue row: ``"finished"``; no such run:
        ``"unknown"``."""
        ...

    def rollback_run(self, namespace: str, run_id: str, *,
                     audit: AuditEvent | None = None) -> None:
        """Delete a run and everything it wrote (``audit``, if given, appended in the same
        transaction when there was such a run): its record, executions, events, queue row,
        and the checkpoints it created on its thread (every ``checkpoint_ns``), with their
        pending writes and the blobs no remaining checkpoint needs, so that the thread's latest
        checkpoint is the one before the run. Signals ``"done"`` if it had a queue row. Nothing
        if there is no such run. (Pending writes the run recorded against the checkpoint it
        started from, such as a resume value, are kept: nothing tells them from earlier
        ones.)"""
        ...

    def delete_run(self, namespace: str, run_id: str, *,
                   audit: AuditEvent | None = None) -> bool:
        """Delete a finished run's record, executions, events and queue row, in one
        transaction (``DELETE /threads/{tid}/runs/{rid}``); ``audit``, if given, is appended
        in it when the run was deleted. The checkpoints it wrote stay: the
        thread's state is kept (:meth:`rollback_run` undoes a run). ``False`` if the namespace
        has no record of the run (its leftover events and ``done`` queue row, if any, are
        dropped all the same).

        Raises:
            ThreadBusyError: the run is active: its record is ``pending`` or ``running``, or
                its queue row is ``queued`` or ``claimed`` (cancel it first).
        """
        ...

    def queue_depth(self, namespace: str | None = None) -> int:
        """How many runs are queued (not claimed), in one namespace or all."""
        ...

    # -- events ---------------------------------------------------------------------------

    def append_events(self, namespace: str, run_id: str,
                      events: Sequence[tuple[str, bytes]]) -> int:
        """Append ``(event, data)`` pairs to the run's stream, numbered after the last one, in
        one transaction; signal ``"event"`` (with the last ``seq``). Concurrent appends to one
        run never collide. Returns the last ``seq`` (the current last one when ``events`` is
        empty: nothing is written then)."""
        ...

    def read_events(self, namespace: str, run_id: str, after: int = 0,
                    limit: int = 1000) -> list[RunEvent]:
        """The run's events with ``seq > after``, in order, at most ``limit``."""
        ...

    def delete_events(self, *, finished_before: float) -> int:
        """Drop the events of runs that left the queue before the cutoff, and of runs without
        a queue row whose last event is older than it. Returns how many events were
        deleted."""
        ...

    # -- workers --------------------------------------------------------------------------

    def worker_heartbeat(self, worker: WorkerRecord) -> None:
        """Record (upsert) a worker's heartbeat."""
        ...

    def list_workers(self, *, seen_after: float = 0.0) -> list[WorkerRecord]:
        """Workers whose last heartbeat is after ``seen_after``."""
        ...

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (it shut down)."""
        ...

    def hold_liveness(self, worker_id: str, process: str,
                      on_lost: Callable[[], None]) -> Callable[[], None]:
        """Vouch, while this process lives, that worker ``worker_id`` does, until the returned
        function is called; ``process`` is the start of the thread-lease owners this
        process writes (``"<host> pid <pid> start <stamp>"``, see
        :mod:`threadloom.engine._owner`).

        A store that can tell when a process died (Postgres, on a session that reaches the
        server directly: a session lock) records that in the worker's heartbeats; once the
        process is gone, :meth:`expire_dead_claims` ends its claims and frees its thread
        leases without waiting for their ttl. ``on_lost()`` is called (from a background
        thread; it must return quickly) when this process can no longer vouch, e.g. its
        session broke: others may take its runs from then on, so the worker should stop
        them. Other stores do nothing (their claims lapse by their ttl)."""
        ...

    def expire_dead_claims(self) -> int:
        """End now the claims of workers whose process is known dead (see
        :meth:`hold_liveness`): their claims lapse at once, and the thread leases their
        process held on those runs' threads are released (so the dead process's commits are
        refused: the engine's fencing); signal ``"work"`` if any. Returns how many claims
        were ended (``0`` on stores that cannot tell)."""
        ...

    # -- API keys -------------------------------------------------------------------------

    def create_key(self, key: ApiKey, *, audit: AuditEvent | None = None) -> None:
        """Store a new key (and ``audit``, if given, in the same transaction). Raises
        ``InvalidConfigError`` if the id exists."""
        ...

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""
        ...

    def list_keys(self, namespace: str | None = None) -> list[ApiKey]:
        """Keys of one namespace (``"*"`` keys are their own namespace), or all, newest
        first."""
        ...

    def revoke_key(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        """Revoke a key (and append ``audit``, if given, in the same transaction); ``False``
        if there is no such key (nothing is appended then)."""
        ...

    def touch_key(self, key_id: str, at: float) -> None:
        """Record that the key was used at ``at`` (may be throttled by the caller)."""
        ...

    # -- threads, with their audit event --------------------------------------------------

    def create_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = ...,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Create the thread with ``metadata`` (a JSON object), and append ``audit``, in one
        transaction; ``None`` (and nothing written) when the thread exists already, so that
        of two concurrent creations of one id exactly one succeeds.

        Raises:
            StoreError: ``metadata`` is not JSON-serializable.
        """
        ...

    def update_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = ...,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """:meth:`Store.update_thread <threadloom.checkpoint.base.Store.update_thread>`, and
        ``audit`` appended in the same transaction when the thread exists."""
        ...

    def delete_thread(self, thread_id: str, *, namespace: str = ...,
                      audit: AuditEvent | None = None) -> None:
        """:meth:`Store.delete_thread <threadloom.checkpoint.base.Store.delete_thread>`, and
        ``audit`` appended in the same transaction."""
        ...

    # -- the audit log --------------------------------------------------------------------

    def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append an event on its own (a refused request, or a change that has no store
        method taking ``audit=``). Returns it with its ``id`` and ``at`` set."""
        ...

    def list_audit(self, namespace: str, *, limit: int = 100,
                   cursor: str | None = None) -> tuple[list[AuditEvent], str | None]:
        """The namespace's events, newest first, at most ``limit``, after ``cursor`` (the
        ``next_cursor`` of the previous page); and the cursor of the next page, or ``None``
        at the end.

        Raises:
            ValueError: ``cursor`` is not one this method returned.
        """
        ...

    # -- signals --------------------------------------------------------------------------

    def signals(self) -> Signals:
        """The store's signal bus (one per store object): the one :meth:`use_signals`
        installed, else the store's built-in one."""
        ...

    def use_signals(self, bus: Signals | None) -> None:
        """Carry the store's own announcements on ``bus`` (for example
        :class:`~threadloom.checkpoint.redis_signals.RedisSignals` for ``--redis``) instead of
        the built-in bus (Postgres ``NOTIFY``, in-process on SQLite and memory): each one is
        published to ``bus`` after the change it announces has committed, and
        :meth:`signals` returns ``bus``. ``None`` goes back to the built-in bus. Install it
        before anything subscribes (a subscription to the previous bus hears nothing more
        from this store); every process sharing the store should use the same bus. The store
        does not close ``bus``."""
        ...

