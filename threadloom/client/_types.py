"""The objects of the API, as the client returns them: plain dicts (decoded JSON), typed.

They are the shapes of LangGraph Platform's API, which the server follows (``runtime.md``);
values inside them (state values, metadata, interrupts' values) are whatever JSON the
server sent.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "ApiKeyItem",
    "Assistant",
    "AuditEvent",
    "AuditPage",
    "Checkpoint",
    "CreatedState",
    "CreatedStates",
    "GraphDrawing",
    "GraphSchemas",
    "InterruptItem",
    "KeyList",
    "Me",
    "NamespaceRunsPage",
    "NewApiKey",
    "NodeTimes",
    "Run",
    "RunCheckpoint",
    "RunCheckpointsPage",
    "RunItem",
    "RunLogItem",
    "RunLogsPage",
    "RunMetrics",
    "RunStatesPage",
    "RunStats",
    "RunStatus",
    "State",
    "StateStatus",
    "StatesPage",
    "StreamMode",
    "Thread",
    "ThreadState",
    "ThreadStatus",
    "ThreadTask",
    "UpdateStateResult",
]

RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
StreamMode = Literal["values", "updates", "custom", "debug"]
MultitaskStrategy = Literal["reject", "enqueue", "interrupt", "rollback"]


class Assistant(TypedDict):
    """An assistant: one registered graph (``graph_id`` is its name)."""

    assistant_id: str
    graph_id: str
    name: str
    description: str | None
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    version: int


class GraphDrawing(TypedDict):
    """A graph's nodes (``{id, type, data}``) and edges (``{source, target}``, plus
    ``conditional`` and ``data`` for a conditional edge)."""

    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


class GraphSchemas(TypedDict):
    """A graph's schemas as JSON schema (``None`` where there is none)."""

    graph_id: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    state_schema: dict[str, Any] | None
    config_schema: dict[str, Any] | None
    context_schema: dict[str, Any] | None


class InterruptItem(TypedDict):
    """A pending ``interrupt()``: its value, and the id that resumes it."""

    value: Any
    id: str


class Checkpoint(TypedDict):
    """Where a checkpoint is."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str


class Thread(TypedDict):
    """A thread: metadata, status, latest values and pending interrupts (by task id)."""

    thread_id: str
    created_at: str
    updated_at: str
    state_updated_at: str
    metadata: dict[str, Any]
    status: ThreadStatus
    config: dict[str, Any]
    values: Any
    interrupts: dict[str, list[InterruptItem]]


class ThreadTask(TypedDict):
    """A task due at a checkpoint (with its interrupts, or its error)."""

    id: str
    name: str
    path: list[Any]
    error: str | None
    interrupts: list[InterruptItem]
    checkpoint: Checkpoint | None
    state: ThreadState | None
    result: Any


class ThreadState(TypedDict):
    """A thread's state at one checkpoint."""

    values: Any
    next: list[str]
    tasks: list[ThreadTask]
    metadata: dict[str, Any] | None
    created_at: str | None
    checkpoint: Checkpoint | None
    parent_checkpoint: Checkpoint | None
    interrupts: list[InterruptItem]
    checkpoint_id: str | None
    parent_checkpoint_id: str | None


class UpdateStateResult(TypedDict):
    """Where ``update_state`` wrote its checkpoint."""

    checkpoint: Checkpoint
    configurable: Checkpoint
    checkpoint_id: str


class Run(TypedDict):
    """A run: its status in LangGraph's words, its metadata, and what it was created with
    (``kwargs``)."""

    run_id: str
    thread_id: str
    assistant_id: str
    created_at: str
    updated_at: str
    status: RunStatus
    metadata: dict[str, Any]
    kwargs: dict[str, Any]
    multitask_strategy: MultitaskStrategy
    stats: NotRequired[RunStats]


class RunStats(TypedDict):
    """What a run did and cost (threadloom's own key of a run object; see the guide's
    "Tracing" section)."""

    steps: int
    executions: int
    retries: int
    queue_wait_ms: float | None
    bytes_written: int
    nodes: dict[str, dict[str, float]]


# -- the seed 001 state manager, keys and audit (``/v0``) ----------------------------------

StateStatus = Literal["CREATED", "QUEUED", "RETRY_CREATED", "SUCCESS", "ERRORED", "TIMEDOUT",
                      "INTERRUPTED", "CANCELLED"]
"""A state's status in the seed's (Exosphere's) words; see runtime.md's statuses table."""


class CreatedState(TypedDict):
    """One first execution that :meth:`~threadloom.client.Client.states.create` started."""

    state_id: str
    node_name: str
    identifier: str
    graph_name: str
    run_id: str
    inputs: dict[str, Any]
    created_at: str


class CreatedStates(TypedDict):
    """The seed's ``CreateResponseModel``."""

    status: str
    states: list[CreatedState]


class State(TypedDict):
    """One node execution (the seed's "state")."""

    id: str
    node_name: str
    namespace_name: str
    identifier: str
    graph_name: str
    run_id: str
    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    error: str | None
    parents: dict[str, str]
    created_at: str
    updated_at: str
    attempt: int
    started_at: str | None
    ended_at: str | None


class StatesPage(TypedDict):
    """A page of a namespace's states; ``run_ids``: the distinct run ids in it."""

    namespace: str
    count: int
    states: list[State]
    run_ids: list[str]
    next_cursor: str | None


class RunStatesPage(TypedDict):
    """A page of one run's states."""

    namespace: str
    run_id: str
    count: int
    states: list[State]
    next_cursor: str | None


class RunItem(TypedDict):
    """A run as the namespace routes show it."""

    run_id: str
    thread_id: str
    graph_name: str
    status: str
    created_at: str
    updated_at: str
    started_at: str | None
    ended_at: str | None
    duration_ms: float | None
    steps: int
    state_count: int
    error: str | None


class NamespaceRunsPage(TypedDict):
    """A page of a namespace's runs."""

    namespace: str
    count: int
    runs: list[RunItem]
    next_cursor: str | None


class NodeTimes(TypedDict):
    """How long one node's executions took (those that started and ended)."""

    count: int
    total_ms: float
    mean_ms: float
    max_ms: float


class RunMetrics(TypedDict):
    """Counts, attempts and durations of a run, from its stored records."""

    namespace: str
    run_id: str
    status: str
    steps: int
    executions: int
    states_by_status: dict[str, int]
    attempts: int
    retries: int
    run_attempts: int | None
    duration_ms: float | None
    queue_wait_ms: float | None
    bytes_written: int
    trace_id: str
    nodes: dict[str, NodeTimes]
    as_of: str


class RunCheckpoint(TypedDict):
    """One checkpoint of a run, enough to diff state between steps."""

    checkpoint_id: str
    step: int
    created_at: str | None
    values: Any
    next: list[str]
    writes: Any


class RunCheckpointsPage(TypedDict):
    """A page of a run's checkpoints, oldest first."""

    namespace: str
    run_id: str
    count: int
    checkpoints: list[RunCheckpoint]
    next_cursor: str | None


class Me(TypedDict):
    """``GET /v0/me``: the key's namespace, role, and every namespace it covers."""

    namespace: str
    role: str
    namespaces: list[str]
    key_id: str


class NewApiKey(TypedDict):
    """A key just created: ``key`` is shown this once."""

    key_id: str
    key: str
    namespace: str
    role: str
    created_at: str


class ApiKeyItem(TypedDict):
    """A key as lists show it (never the key itself, nor its hash)."""

    key_id: str
    role: str
    namespace: str
    name: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class KeyList(TypedDict):
    """The keys of a namespace, newest first."""

    namespace: str
    count: int
    keys: list[ApiKeyItem]


class AuditEvent(TypedDict):
    """One mutation, as the audit log recorded it."""

    id: str
    at: str
    key_id: str | None
    role: str | None
    namespace: str
    action: str
    target: str
    run_id: str | None
    thread_id: str | None
    outcome: str


class AuditPage(TypedDict):
    """A page of a namespace's audit log."""

    namespace: str
    count: int
    events: list[AuditEvent]
    next_cursor: str | None


class RunLogItem(TypedDict):
    """One log record kept with a run (``GET /threads/{tid}/runs/{rid}/logs``)."""

    seq: int
    at: str
    level: str
    logger: str
    message: str
    node: str | None
    attempt: int | None
    exc: str | None


class RunLogsPage(TypedDict):
    """A page of a run's log records, oldest first; ``next_cursor`` continues it."""

    run_id: str
    thread_id: str
    count: int
    logs: list[RunLogItem]
    next_cursor: str | None
