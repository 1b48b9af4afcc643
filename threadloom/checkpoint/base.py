"""The store protocol: what every persistence backend implements.

A store keeps five kinds of records for threads: checkpoints (with the channel blobs they
introduce), pending writes, runs, executions, and thread leases. Data crosses the protocol as
the plain dataclasses below; every user value (channel values, writes, run input and output,
execution inputs and outputs) is already serialized to ``bytes`` by the engine, so a store
never sees, and can never leak or corrupt, a Python object.

The write path is a single method, :meth:`Store.commit`, which applies a batch of
:class:`Commit` objects in one transaction. That is what makes ``sync`` durability atomic
(a step's writes, its checkpoint, its execution records and the run record land together or
not at all) and lets the ``async`` background writer fold several queued steps into one
transaction.

Channel values are stored as deltas. A checkpoint lists, for every channel that has a value,
the version (the ``seq`` of the checkpoint that last wrote it) and the base version (the
``seq`` of the full blob its chain starts from). A blob is either a full value
(``prev is None``) or a list of items appended to the blob at version ``prev``. To rebuild a
channel, read the blobs with ``base <= version <= ver`` and follow ``prev`` from ``ver`` back to
the full blob (see :func:`threadloom.checkpoint.delta.resolve_chain`).

Namespaces. Every record lives in a namespace (a tenant): every key starts with it, so two
namespaces may hold the same thread ids and run ids with different data, and nothing done in
one (a lease, a commit, a deletion) touches the other. Every method takes ``namespace``
(keyword, ``"default"`` when not given); a :class:`Commit` writes everything it carries into
``Commit.namespace``. The listings (``list_runs``, ``list_executions``, ``list_threads``) and
``delete_runs`` filter by namespace too, and ``namespace=None`` there means every namespace
(for administration and retention across tenants).

Example:
    >>> from threadloom.checkpoint import open_store
    >>> store = open_store("sqlite:///app.db")
    >>> store.setup()
    >>> store.get_run("order-88291-validation")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

__all__ = [
    "ANY_HEAD",
    "Attempt",
    "AuditEvent",
    "BlobRecord",
    "CheckpointRecord",
    "Commit",
    "ExecutionRecord",
    "ExecutionStatus",
    "Lease",
    "RunLog",
    "RunProgress",
    "RunRecord",
    "RunStatus",
    "Store",
    "ThreadRecord",
    "WriteRecord",
    "audited",
    "format_checkpoint_id",
    "pending_audit",
    "parse_checkpoint_id",
]

FINISHED_RUN_STATUSES = ("succeeded", "failed", "cancelled")

RunStatus: TypeAlias = Literal[
    "pending", "running", "interrupted", "succeeded", "failed", "cancelled"
]
ExecutionStatus: TypeAlias = Literal[
    "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "INTERRUPTED", "CANCELLED"
]

DEFAULT_NAMESPACE = "default"


_PENDING_AUDIT: ContextVar[AuditEvent | None] = ContextVar("threadloom_audit", default=None)


@contextmanager
def audited(event: AuditEvent) -> Iterator[None]:
    """Within the block, a state change the engine commits on its own behalf
    (``update_state``) carries ``event`` in its :class:`Commit`, so the audit log and the
    change are one transaction: the server wraps such calls in this."""
    token = _PENDING_AUDIT.set(event)
    try:
        yield
    finally:
        _PENDING_AUDIT.reset(token)


def pending_audit() -> AuditEvent | None:
    """The event of the enclosing :func:`audited` block, if any."""
    return _PENDING_AUDIT.get()


def format_checkpoint_id(seq: int) -> str:
    """The public checkpoint id of checkpoint number ``seq`` (sortable as a string)."""
    return f"{seq:016x}"


def parse_checkpoint_id(checkpoint_id: str) -> int:
    """The ``seq`` of a checkpoint id made by :func:`format_checkpoint_id`.

    Raises:
        ValueError: the id is not one threadloom made.
    """
    if len(checkpoint_id) != 16:
        raise ValueError(f"not a threadloom checkpoint id: {checkpoint_id!r}")
    return int(checkpoint_id, 16)


@dataclass(slots=True)
class Lease:
    """A writer's exclusive right to commit to a thread until ``expires_at``.

    ``token`` is a fencing token: it strictly increases every time the lease changes hands,
    also across the thread being deleted and created again (a store never hands out a token
    that an earlier holder of any thread of the same id may still carry), and a commit
    carrying any other token than the current one is refused with ``LeaseLostError``.

    ``owner`` is an opaque string to the store. The engine writes who holds the lease into it
    (host, process id and process start time, see :mod:`threadloom.engine._owner`) so that a
    process on the same host can tell a dead holder from a live one.

    ``namespace`` is the namespace of the thread: a lease is keyed by ``(namespace,
    thread_id)``, and renewing, releasing or taking it over addresses that thread.
    """

    thread_id: str
    owner: str
    token: int
    expires_at: float
    namespace: str = DEFAULT_NAMESPACE


@dataclass(slots=True)
class BlobRecord:
    """One stored channel value or delta.

    Attributes:
        channel: channel (state key) name.
        version: ``seq`` of the checkpoint that wrote it.
        prev: ``None`` for a full value; otherwise the version this blob appends to, and
            ``data`` holds only the appended items.
        data: the serialized value (or appended items).
    """

    channel: str
    version: int
    prev: int | None
    data: bytes


@dataclass(slots=True)
class CheckpointRecord:
    """A checkpoint: the state of a thread after one superstep.

    Attributes:
        thread_id: the thread.
        checkpoint_ns: ``""`` for the root graph; reserved for nested graphs.
        seq: checkpoint number, strictly increasing within ``(thread_id, checkpoint_ns)``;
            the public id is ``format_checkpoint_id(seq)``.
        parent_seq: the checkpoint this one follows (``None`` for the first).
        run_id: the run that wrote it.
        step: the superstep number (-1 for the input checkpoint).
        source: ``"input"``, ``"loop"``, ``"update"`` (update_state) or ``"fork"``.
        created_at: seconds since the epoch.
        channels: channel -> (version, base) for every channel that has a value.
        next: nodes due in the next step.
        metadata: serialized dict (the writes of the step, parents, user metadata).
        frontier: serialized engine state beyond channel values (pending sends, join
            barriers, interrupts); opaque to the store.
        blobs: on write, the new blobs this checkpoint introduces; empty when read.
    """

    thread_id: str
    checkpoint_ns: str
    seq: int
    parent_seq: int | None
    run_id: str | None
    step: int
    source: str
    created_at: float
    channels: dict[str, tuple[int, int]]
    next: tuple[str, ...]
    metadata: bytes
    frontier: bytes
    blobs: list[BlobRecord] = field(default_factory=list)

    @property
    def checkpoint_id(self) -> str:
        """The public, sortable checkpoint id."""
        return format_checkpoint_id(self.seq)


@dataclass(slots=True)
class WriteRecord:
    """A write made by a task while executing the step that starts at checkpoint ``seq``.

    Writes of tasks that finished are kept so that, if the step is interrupted, fails or
    crashes before it completes, those tasks are not run again. The engine also uses
    special channels here (``__error__``, ``__interrupt__``, ``__resume__``,
    ``__task__:<name>`` for recorded ``@task`` results). The key is
    ``(thread_id, checkpoint_ns, seq, task_id, channel, idx)``; writing an existing key
    replaces it.
    """

    thread_id: str
    checkpoint_ns: str
    seq: int
    task_id: str
    channel: str
    idx: int
    data: bytes


@dataclass(slots=True)
class Attempt:
    """One attempt of an execution: its number, when it ran, and how it failed if it did."""

    number: int
    started_at: float
    ended_at: float | None = None
    error: str | None = None


@dataclass(slots=True)
class ExecutionRecord:
    """One node execution inside a run (the seed's "state").

    ``id`` is deterministic for a given (thread, parent checkpoint, node, push index), so a
    re-run of the same step after a crash updates the same record. Upsert by ``id``;
    ``created_at`` is fixed by the first record (later ones leave it), so the keyset order
    of :meth:`Store.page_executions` never moves an execution.
    """

    id: str
    run_id: str
    thread_id: str
    graph: str
    node: str
    step: int
    status: ExecutionStatus
    namespace: str = DEFAULT_NAMESPACE
    attempt: int = 0
    inputs: bytes | None = None
    outputs: bytes | None = None
    error: str | None = None
    parents: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    checkpoint_seq: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None


@dataclass(slots=True)
class RunRecord:
    """One invocation of a graph on a thread. Upsert by ``run_id``."""

    run_id: str
    thread_id: str
    graph: str
    status: RunStatus
    namespace: str = DEFAULT_NAMESPACE
    input: bytes | None = None
    output: bytes | None = None
    error: str | None = None
    durability: str = "async"
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    steps: int = 0
    executions: int = 0
    resumed_from: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None
    """The W3C ``traceparent`` the run's spans descend from, chosen when the run was created
    (the creating HTTP request's, or the span current in the caller); ``None``: derived from
    the run id (``threadloom._tracing``)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """What the run cost, written with its record when it ends or pauses: ``retries``,
    ``nodes`` (per node: ``count``, ``total_ms``, ``max_ms``), ``queue_wait_ms`` and
    ``bytes_written`` (see ``threadloom.engine._stats``). ``steps`` and ``executions`` are
    the record's own fields."""


@dataclass(slots=True)
class AuditEvent:
    """One entry of the audit log: who did what, when, to what, and how it ended.

    Attributes:
        namespace: the tenant the action was in (the log is read per namespace).
        action: what was done, ``<resource>.<verb>`` (``run.create``, ``thread.delete``,
            ``key.revoke``...).
        target: what it was done to: a run, thread or key id, or the route's path.
        key_id: the id of the API key that asked (never the key); ``None`` for the CLI or
            the library.
        role: the key's role when it asked.
        run_id: the run concerned, if any.
        thread_id: the thread concerned, if any.
        outcome: ``ok``, or the error code the request was refused with (``forbidden``,
            ``not_found``, ``conflict``...), or what a cancellation did (``cancelled``,
            ``signalled``, ``finished``).
        at: when (``0``: the store sets the time it writes the event).
        id: the event's id, set by the store: ids increase with time (within a clock's
            precision), and a page of the log continues after the last id it returned.
    """

    namespace: str
    action: str
    target: str
    key_id: str | None = None
    role: str | None = None
    run_id: str | None = None
    thread_id: str | None = None
    outcome: str = "ok"
    at: float = 0.0
    id: str = ""

    def as_json(self) -> dict[str, Any]:
        """The event as the HTTP API and ``threadloom audit --json`` show it."""
        return {"id": self.id, "at": self.at, "key_id": self.key_id, "role": self.role,
                "namespace": self.namespace, "action": self.action, "target": self.target,
                "run_id": self.run_id, "thread_id": self.thread_id, "outcome": self.outcome}


@dataclass(slots=True)
class RunLog:
    """One log record kept with its run (see :func:`threadloom.logging.capture_run_logs`).

    ``seq`` numbers a run's records from 1 in the order they were appended; the store assigns
    it (the value given to :meth:`Store.append_run_logs` is ignored). ``at`` is the record's
    time (epoch seconds); ``node``, ``attempt`` and ``step`` say which node execution logged
    it (``None`` outside a node); ``exc`` is the formatted exception, if any.
    """

    run_id: str
    thread_id: str
    at: float
    level: str
    logger: str
    message: str
    namespace: str = DEFAULT_NAMESPACE
    seq: int = 0
    node: str | None = None
    attempt: int | None = None
    step: int | None = None
    exc: str | None = None


@dataclass(slots=True)
class RunProgress:
    """A running run's counters as of a step's commit: what :attr:`Commit.progress` sets on
    the run's record, so that the record matches the checkpoints committed with it without
    rewriting the whole record every step."""

    run_id: str
    steps: int
    executions: int
    updated_at: float


@dataclass(slots=True)
class ThreadRecord:
    """A thread: its identity, tenant namespace, metadata and current lease (if any)."""

    thread_id: str
    namespace: str = DEFAULT_NAMESPACE
    created_at: float = 0.0
    updated_at: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    lease: Lease | None = None


class _AnyHead:
    """Sentinel type: a commit that does not compare-and-set the thread's latest checkpoint."""

    def __repr__(self) -> str:
        return "ANY_HEAD"


ANY_HEAD: Any = _AnyHead()


@dataclass(slots=True)
class Commit:
    """Everything one step (or one finished task) persists, applied atomically.

    Checks, in this order, before anything is written:

    1. ``lease_token`` (if not ``None``) is the thread's current lease token, else
       ``LeaseLostError``. An expired lease whose token is still current may commit: nobody
       took it over.
    2. ``expected_head`` (if not ``ANY_HEAD``) equals the ``seq`` of the thread's latest
       checkpoint in ``checkpoint.checkpoint_ns`` (``None``: the thread has none), else
       ``CheckpointConflictError``.
    3. Each run in ``runs`` that already exists belongs to the same thread, else
       ``RunConflictError``.

    Then: insert ``checkpoint`` and its blobs, upsert ``writes``, ``executions`` and ``runs``,
    set ``progress`` (the counters and ``updated_at`` of a run already recorded on this
    thread; nothing if it is not) and create or touch the thread row. A commit carries
    ``progress`` or a record of the same run in ``runs``, never both.

    ``namespace`` is the namespace of everything the commit reads and writes: the thread, its
    lease and head, the checkpoint, blobs and writes, and the runs and executions, whose own
    ``namespace`` field is set to it (as their ``thread_id`` is, for executions). Checks 1-3
    look in that namespace only: a run id recorded in another namespace is another run.
    ``executions`` are recorded on this commit's thread (whatever their own ``thread_id``
    says) and keyed by that thread and their id: the engine derives an execution's id from
    its thread, and a store keeps a thread's executions together.

    ``release_lease`` (with a ``lease_token``): after the writes, in the same transaction,
    give the thread's lease up as :meth:`Store.release_lease` does (if the token is still
    current). A run's last commit carries it, so ending a run costs no transaction of its own;
    a later commit of the batch with the same token then fails its lease check.

    ``audit``: an event appended to the audit log in the same transaction (the server's
    record of who changed the thread; see :func:`audited`).

    ``flush`` says how durable the transaction must be when :meth:`Store.commit` returns.
    ``True`` (the default): it survives a crash of the process, of the database server and of
    the machine (power loss). ``False``: it survives a crash of the process at once, but may
    need a later flushed commit to survive the machine or the database server crashing;
    ``async`` durability uses this for the steps of a run, and flushes at least every 0.1 s
    and before ``invoke`` returns. A later
    flushed commit on the same database makes every earlier one durable too. A batch is
    flushed if any of its commits asks for it; a store that cannot tell the two apart
    flushes every commit.
    """

    thread_id: str
    namespace: str = DEFAULT_NAMESPACE
    lease_token: int | None = None
    expected_head: int | None | _AnyHead = ANY_HEAD
    checkpoint: CheckpointRecord | None = None
    writes: list[WriteRecord] = field(default_factory=list)
    executions: list[ExecutionRecord] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    flush: bool = True
    progress: RunProgress | None = None
    release_lease: bool = False
    audit: AuditEvent | None = None

    def serialized_bytes(self) -> int:
        """Bytes of the serialized values the commit carries: channel blobs, the checkpoint's
        frontier and metadata, writes, execution and run inputs and outputs (what the
        ``threadloom_checkpoint_bytes`` metric and a run's ``bytes_written`` count)."""
        size = 0
        checkpoint = self.checkpoint
        if checkpoint is not None:
            size += len(checkpoint.frontier) + len(checkpoint.metadata)
            for blob in checkpoint.blobs:
                size += len(blob.data)
        for write in self.writes:
            size += len(write.data)
        for execution in self.executions:
            size += len(execution.inputs or b"") + len(execution.outputs or b"")
        for run in self.runs:
            size += len(run.input or b"") + len(run.output or b"")
        return size


@runtime_checkable
class Store(Protocol):
    """Persistence for checkpoints, writes, runs, executions and leases.

    Implementations must be safe to call from several threads at once. Every method either
    completes or raises a :class:`~threadloom.errors.ThreadloomError` subclass; a failed
    :meth:`commit` has written nothing. Every method takes keyword ``namespace`` (see the
    module docstring): records are keyed by it first.
    """

    def setup(self) -> None:
        """Create or migrate the schema (numbered migrations, recorded). Idempotent."""
        ...

    def close(self) -> None:
        """Release connections. The store may not be used afterwards."""
        ...

    # -- leases ---------------------------------------------------------------------------

    def acquire_lease(
        self, thread_id: str, owner: str, ttl: float, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Lease:
        """Take the thread's lease for ``ttl`` seconds.

        Succeeds if nobody holds it, it expired, or ``owner`` already holds it; the token
        increases whenever the holder changes or an expired lease is taken. Creates the thread
        row if needed.

        Raises:
            ThreadBusyError: another owner holds an unexpired lease.
        """
        ...

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a held lease to ``now + ttl`` (the thread is ``lease.namespace``'s).

        Raises:
            LeaseLostError: the token is no longer the thread's current one.
        """
        ...

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up if ``lease.token`` is still current; otherwise do nothing."""
        ...

    def takeover_lease(self, held: Lease, owner: str, ttl: float) -> Lease:
        """Take the thread's lease from the holder ``held`` (as read from
        :meth:`get_thread`), expired or not, with a new, higher token, for ``ttl`` seconds.

        For a caller that knows the holder is dead (its process is gone) and must not wait
        for the lease to lapse. It is a compare-and-set on ``held.token``: of two callers that
        read the same holder, one wins and the other gets ``LeaseLostError``; the dead
        holder's token can no longer commit, renew or release. ``owner`` repeating the call
        once it holds the lease extends it and keeps its token. The thread is
        ``held.namespace``'s.

        Example:
            >>> thread = store.get_thread("t-1")
            >>> if thread is not None and thread.lease is not None and holder_is_dead(thread):
            ...     lease = store.takeover_lease(thread.lease, "me", 30.0)

        Raises:
            LeaseLostError: ``held.token`` is no longer the thread's current token (the lease
                was released, taken over or re-granted since it was read).
        """
        ...

    # -- the write path -------------------------------------------------------------------

    def commit(self, commits: Sequence[Commit]) -> None:
        """Apply ``commits`` in order, in one transaction (see :class:`Commit`; each commit
        names its own namespace).

        Raises:
            LeaseLostError, CheckpointConflictError, RunConflictError: a check failed;
                nothing of the batch was written.
        """
        ...

    # -- checkpoints ----------------------------------------------------------------------

    def get_checkpoint(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        seq: int | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> CheckpointRecord | None:
        """The checkpoint ``seq`` of the thread, or its latest when ``seq`` is ``None``."""
        ...

    def list_checkpoints(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        *,
        before: int | None = None,
        run_id: str | None = None,
        source: str | None = None,
        limit: int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[CheckpointRecord]:
        """Checkpoints of a thread, newest first, optionally with ``seq < before``, of one run
        or one source, at most ``limit``."""
        ...

    def list_checkpoint_namespaces(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[str]:
        """The checkpoint namespaces (``""`` for the root graph, ``"<node>:<execution id>"``
        for a subgraph's, see :mod:`threadloom.engine._nested`) holding checkpoints of the
        thread, sorted."""
        ...

    def get_blobs(
        self,
        thread_id: str,
        checkpoint_ns: str,
        wants: Mapping[str, tuple[int, int]],
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[BlobRecord]:
        """For each ``channel -> (base, version)`` in ``wants``, every blob of that channel
        with ``base <= blob.version <= version`` (in any order)."""
        ...

    def get_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        seq: int,
        task_id: str | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[WriteRecord]:
        """Pending writes recorded against checkpoint ``seq`` (of one task, if given),
        ordered by ``(task_id, channel, idx)``."""
        ...

    # -- runs and executions --------------------------------------------------------------

    def get_run(self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> RunRecord | None:
        """The run recorded under ``run_id`` in the namespace, if any."""
        ...

    def list_runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        graph: str | None = None,
        namespace: str | None = DEFAULT_NAMESPACE,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs matching every given filter, newest first (by ``created_at``, then
        ``run_id``), paginated. ``namespace=None``: the runs of every namespace."""
        ...

    def list_executions(
        self,
        *,
        run_id: str | None = None,
        thread_id: str | None = None,
        namespace: str | None = DEFAULT_NAMESPACE,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ExecutionRecord]:
        """Executions matching every given filter, in execution order (by ``created_at``,
        ``step``, then ``node``), paginated. ``namespace=None``: every namespace."""
        ...

    def page_runs(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        status: str | None = None,
        timed_out: bool | None = None,
        graph: str | None = None,
        run_id_prefix: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """A keyset page of the namespace's runs, newest first by ``(created_at, run_id)``.

        Filters: ``status`` (an engine run status); ``timed_out`` keeps only the runs whose
        ``error`` is (``True``) or is not (``False``) a run or node timeout; ``graph``;
        ``run_id_prefix``; ``created_after <= created_at < created_before``. ``after`` is
        the ``(created_at, run_id)`` of the last run of the previous page: the page holds the
        next ``limit`` runs strictly after it in this order, so a page never repeats or skips
        a run that was there when the first page was read, whatever is inserted meanwhile.
        """
        ...

    def page_executions(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        run_id: str | None = None,
        run_id_prefix: str | None = None,
        status: str | None = None,
        timed_out: bool | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
        descending: bool = False,
        limit: int = 100,
    ) -> list[ExecutionRecord]:
        """A keyset page of the namespace's executions ordered by ``(created_at, id)``,
        oldest first (newest first when ``descending``).

        Filters as in :meth:`page_runs` (``status`` is an execution status); ``after`` is the
        ``(created_at, id)`` of the last execution of the previous page.
        """
        ...

    # -- threads --------------------------------------------------------------------------

    def get_thread(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ThreadRecord | None:
        """The thread row (created by the first lease or commit on the thread)."""
        ...

    def list_threads(
        self,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ThreadRecord]:
        """Threads, most recently updated first. ``namespace=None``: every namespace."""
        ...

    def delete_thread(self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Delete the thread and everything recorded for it (checkpoints, blobs, writes,
        runs, executions, lease) in the namespace; the same ids elsewhere are untouched."""
        ...

    def update_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE
    ) -> ThreadRecord | None:
        """Replace the metadata (a JSON object) of the thread ``thread_id`` of ``namespace``
        and touch its ``updated_at``; ``None`` (and nothing written) when there is no such
        thread. Threads are created by a commit (an empty :class:`Commit` creates one).

        Raises:
            StoreError: ``metadata`` is not JSON-serializable.
        """
        ...

    # -- retention ------------------------------------------------------------------------

    def prune_checkpoints(
        self, thread_id: str, keep: int, *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> int:
        """Keep the thread's latest ``keep`` (>= 1) checkpoints of the root namespace; delete
        the older ones, their pending writes, and the blobs no kept checkpoint needs (see
        :func:`threadloom.checkpoint.delta.blob_floors`). Atomic, with ``audit`` appended to
        the audit log in the same transaction (even when nothing was old enough to go).

        Returns:
            How many checkpoints were deleted.
        """
        ...

    def delete_runs(
        self, *, created_before: float, namespace: str | None = DEFAULT_NAMESPACE
    ) -> int:
        """Delete finished runs (succeeded, failed, cancelled) created before the cutoff,
        with their execution records and run logs; running and interrupted runs are kept.
        Atomic. ``namespace=None``: in every namespace.

        Returns:
            How many runs were deleted.
        """
        ...

    # -- run logs -------------------------------------------------------------------------

    def append_run_logs(self, logs: Sequence[RunLog], *, max_per_run: int = 1000) -> int:
        """Append log records to their runs (each record names its namespace and run; a batch
        may hold several runs), atomically. Each run's records get the next ``seq`` numbers
        after its last stored one, in the order given; a run keeps at most ``max_per_run``
        records (those beyond are dropped). Records are deleted with their run (by
        ``delete_thread``, ``delete_runs``, and the runtime's ``rollback_run`` and
        ``delete_run``).

        Returns:
            How many records were stored.
        """
        ...

    def page_run_logs(
        self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE, after: int = 0,
        limit: int = 100,
    ) -> list[RunLog]:
        """A keyset page of a run's log records, oldest first: those with ``seq > after``,
        at most ``limit`` (an unknown run: an empty list)."""
        ...
