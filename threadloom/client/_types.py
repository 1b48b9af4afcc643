"""The objects of the API, as the client returns them: plain dicts (decoded JSON), typed.

They are the shapes of LangGraph Platform's API, which the server follows (``runtime.md``);
values inside them (state values, metadata, interrupts' values) are whatever JSON the
server sent.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "Assistant",
    "Checkpoint",
    "GraphDrawing",
    "GraphSchemas",
    "InterruptItem",
    "Run",
    "RunStatus",
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
