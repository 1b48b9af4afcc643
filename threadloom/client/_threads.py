"""``client.threads``: threads, their state and history, and their export."""

from __future__ import annotations

from typing import Any, Literal

from threadloom.client._endpoints import M, Resource, endpoint
from threadloom.client._transport import Call, json_call
from threadloom.client._types import Thread, ThreadState, ThreadStatus, UpdateStateResult

__all__ = ["Threads"]


def _fields(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class Threads(Resource[M]):
    """The threads routes (everything acts in the key's namespace)."""

    @endpoint
    def create(self, *, thread_id: str | None = None, metadata: dict[str, Any] | None = None,
               if_exists: Literal["raise", "do_nothing"] | None = None,
               graph_id: str | None = None,
               supersteps: list[dict[str, Any]] | None = None) -> Call[Thread]:
        """Create a thread (a UUID is chosen when ``thread_id`` is ``None``). An existing id
        raises :class:`~threadloom.client.ConflictError` unless ``if_exists="do_nothing"``
        (which returns it, and makes the call safe to retry). ``graph_id`` names the
        thread's graph before any run (``metadata.graph_id``); ``supersteps`` are state
        updates applied on creation (``[{"updates": [{"values", "as_node"}]}]``)."""
        if graph_id is not None:
            metadata = {**(metadata or {}), "graph_id": graph_id}
        body = _fields(thread_id=thread_id, metadata=metadata, if_exists=if_exists,
                       supersteps=supersteps)
        return json_call("POST", "/threads", body=body,
                         idempotent=thread_id is not None and if_exists == "do_nothing")

    @endpoint
    def get(self, thread_id: str) -> Call[Thread]:
        """The thread."""
        return json_call("GET", f"/threads/{thread_id}")

    @endpoint
    def update(self, thread_id: str, *, metadata: dict[str, Any]) -> Call[Thread]:
        """Merge ``metadata`` into the thread's metadata."""
        return json_call("PATCH", f"/threads/{thread_id}", body={"metadata": metadata},
                         idempotent=True)

    @endpoint
    def delete(self, thread_id: str) -> Call[None]:
        """Delete the thread with its checkpoints and runs (active runs are cancelled)."""
        return json_call("DELETE", f"/threads/{thread_id}")

    @endpoint
    def search(self, *, metadata: dict[str, Any] | None = None,
               values: dict[str, Any] | None = None, ids: list[str] | None = None,
               status: ThreadStatus | None = None, limit: int = 10, offset: int = 0,
               sort_by: str | None = None, sort_order: Literal["asc", "desc"] | None = None,
               select: list[str] | None = None) -> Call[list[Thread]]:
        """Threads matching ``metadata`` / ``values`` (JSON containment), ``ids`` and
        ``status``; newest first unless ``sort_by``."""
        body = _fields(metadata=metadata, values=values, ids=ids, status=status, limit=limit,
                       offset=offset, sort_by=sort_by, sort_order=sort_order, select=select)
        return json_call("POST", "/threads/search", body=body, idempotent=True)

    @endpoint
    def count(self, *, metadata: dict[str, Any] | None = None,
              values: dict[str, Any] | None = None,
              status: ThreadStatus | None = None) -> Call[int]:
        """How many threads match the filters of :meth:`search`."""
        body = _fields(metadata=metadata, values=values, status=status)
        return json_call("POST", "/threads/count", body=body, idempotent=True)

    @endpoint
    def copy(self, thread_id: str) -> Call[Thread]:
        """A new thread with the same checkpoints and metadata (not its runs)."""
        return json_call("POST", f"/threads/{thread_id}/copy", body={})

    @endpoint
    def prune(self, thread_ids: list[str], *,
              strategy: Literal["delete", "keep_latest"] = "delete") -> Call[dict[str, int]]:
        """Delete threads, or keep only their latest checkpoint: ``{"pruned_count"}``."""
        return json_call("POST", "/threads/prune",
                         body={"thread_ids": thread_ids, "strategy": strategy},
                         idempotent=True)

    @endpoint
    def export(self, thread_id: str) -> Call[dict[str, Any]]:
        """The thread's whole history (checkpoints, runs, executions) as JSON, format
        ``threadloom.thread/1``."""
        return json_call("GET", f"/threads/{thread_id}/export")

    @endpoint
    def get_state(self, thread_id: str, checkpoint_id: str | None = None, *,
                  subgraphs: bool = False) -> Call[ThreadState]:
        """The thread's latest state, or its state at ``checkpoint_id``."""
        path = f"/threads/{thread_id}/state"
        if checkpoint_id is not None:
            path += f"/{checkpoint_id}"
        return json_call("GET", path, params={"subgraphs": str(subgraphs).lower()})

    @endpoint
    def update_state(self, thread_id: str, values: Any, *, as_node: str | None = None,
                     checkpoint_id: str | None = None) -> Call[UpdateStateResult]:
        """Apply ``values`` as if node ``as_node`` had returned them (forking from
        ``checkpoint_id`` if given): a new checkpoint. Not retried: each call writes one."""
        body = _fields(values=values, as_node=as_node, checkpoint_id=checkpoint_id)
        body.setdefault("values", None)
        return json_call("POST", f"/threads/{thread_id}/state", body=body)

    @endpoint
    def get_history(self, thread_id: str, *, limit: int = 10, before: str | None = None,
                    metadata: dict[str, Any] | None = None,
                    checkpoint_id: str | None = None) -> Call[list[ThreadState]]:
        """The thread's past states, newest first: at most ``limit``, older than checkpoint
        ``before``, whose metadata has ``metadata`` (or the one at ``checkpoint_id``)."""
        body = _fields(limit=limit, before=before, metadata=metadata)
        if checkpoint_id is not None:
            body["checkpoint"] = {"checkpoint_id": checkpoint_id}
        return json_call("POST", f"/threads/{thread_id}/history", body=body, idempotent=True)
