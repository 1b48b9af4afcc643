"""Request and response bodies of the threads routes (LangGraph Platform shape).

Requests are validated here (a bad body is a 422 ``invalid_request``); responses are
described here for ``/docs`` and built by :mod:`threadloom.server._shapes` and
:mod:`threadloom.server._threadinfo`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_OFFSET = 2**53 - 1
"""The largest list offset a route takes: an integer every JSON reader keeps exact, and far
below the 64-bit bound of a store's parameters even with a limit added."""

__all__ = [
    "MAX_OFFSET",
    "CheckpointModel",
    "CheckpointRef",
    "CommandBody",
    "InterruptModel",
    "StateCheckpointRequest",
    "StateUpdate",
    "Superstep",
    "SuperstepUpdate",
    "ThreadCountRequest",
    "ThreadCreate",
    "ThreadHistoryRequest",
    "ThreadModel",
    "ThreadPatch",
    "ThreadPruneRequest",
    "ThreadSearchRequest",
    "ThreadStateModel",
    "ThreadTaskModel",
    "ThreadUpdateStateResponse",
]

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
ThreadField = Literal["thread_id", "created_at", "updated_at", "state_updated_at", "metadata",
                      "status", "config", "values", "interrupts"]
Metadata = dict[str, Any]


# -- requests ----------------------------------------------------------------------------------


class CheckpointRef(BaseModel):
    """A checkpoint of a thread: ``checkpoint_id`` (``None``: the latest)."""

    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class CommandBody(BaseModel):
    """A command applied by a superstep: a state ``update`` and where to ``goto``."""

    model_config = ConfigDict(extra="forbid")

    update: Any = None
    goto: str | list[str] | None = None
    resume: Any = None


class SuperstepUpdate(BaseModel):
    """One ``update_state`` of a superstep."""

    values: Any = None
    command: CommandBody | None = None
    as_node: str


class Superstep(BaseModel):
    """Updates applied as one step."""

    updates: list[SuperstepUpdate]


class ThreadCreate(BaseModel):
    """``POST /threads``."""

    thread_id: str | None = Field(None, description="1 to 255 printable characters; "
                                  "a UUID is chosen when absent")
    metadata: Metadata | None = None
    if_exists: Literal["raise", "do_nothing"] | None = Field(
        None, description="an existing id: 409 (raise, the default) or return it")
    supersteps: list[Superstep] | None = Field(
        None, description="state updates applied on creation (metadata.graph_id names the "
        "graph)")
    ttl: Any = Field(None, description="not supported")


class ThreadPatch(BaseModel):
    """``PATCH /threads/{thread_id}``: metadata merged into the thread's."""

    metadata: Metadata | None = None
    ttl: Any = Field(None, description="not supported")


class ThreadSearchRequest(BaseModel):
    """``POST /threads/search``."""

    metadata: Metadata | None = Field(None, description="JSON containment filter")
    values: Metadata | None = Field(None, description="JSON containment filter on values")
    ids: list[str] | None = None
    status: ThreadStatus | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["thread_id", "created_at", "updated_at", "state_updated_at",
                     "status"] | None = None
    sort_order: Literal["asc", "desc", "ASC", "DESC"] | None = None
    select: list[ThreadField] | None = None
    extract: dict[str, str] | None = Field(None, description="not supported")


class ThreadCountRequest(BaseModel):
    """``POST /threads/count``."""

    metadata: Metadata | None = None
    values: Metadata | None = None
    status: ThreadStatus | None = None


class ThreadPruneRequest(BaseModel):
    """``POST /threads/prune``."""

    thread_ids: list[str] = Field(max_length=1000)
    strategy: Literal["delete", "keep_latest"] = Field(
        "delete", description="delete the threads, or keep only their latest checkpoint")


class StateCheckpointRequest(BaseModel):
    """``POST /threads/{thread_id}/state/checkpoint``."""

    checkpoint: CheckpointRef
    subgraphs: bool = False


class StateUpdate(BaseModel):
    """``POST /threads/{thread_id}/state``."""

    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None


class ThreadHistoryRequest(BaseModel):
    """``POST /threads/{thread_id}/history``."""

    limit: int = Field(10, ge=1, le=1000)
    before: str | CheckpointRef | None = None
    metadata: Metadata | None = Field(None, description="checkpoint metadata to match")
    checkpoint: CheckpointRef | None = None


# -- responses ---------------------------------------------------------------------------------


class InterruptModel(BaseModel):
    """A pending ``interrupt()``: its value and the id that resumes it."""

    value: Any
    id: str


class CheckpointModel(BaseModel):
    """Where a checkpoint is."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str


class ThreadModel(BaseModel):
    """A thread."""

    thread_id: str
    created_at: str
    updated_at: str
    state_updated_at: str
    metadata: Metadata
    status: ThreadStatus
    config: dict[str, Any]
    values: Any = Field(description="the latest state values (null before any checkpoint)")
    interrupts: dict[str, list[InterruptModel]] = Field(
        description="pending interrupts by task id")


class ThreadTaskModel(BaseModel):
    """A task due at a checkpoint."""

    id: str
    name: str
    path: list[Any]
    error: str | None
    interrupts: list[InterruptModel]
    checkpoint: CheckpointModel | None
    state: ThreadStateModel | None
    result: Any


class ThreadStateModel(BaseModel):
    """A thread's state at one checkpoint."""

    values: Any
    next: list[str]
    tasks: list[ThreadTaskModel]
    metadata: Metadata | None
    created_at: str | None
    checkpoint: CheckpointModel | None
    parent_checkpoint: CheckpointModel | None
    interrupts: list[InterruptModel]
    checkpoint_id: str | None
    parent_checkpoint_id: str | None


class ThreadUpdateStateResponse(BaseModel):
    """Where ``update_state`` wrote its checkpoint."""

    checkpoint: CheckpointModel
    configurable: CheckpointModel
    checkpoint_id: str


ThreadTaskModel.model_rebuild()
