"""``client.runs``: create runs (in the background, waiting for the result, or streaming
their events), then get, list, join, cancel and delete them."""

from __future__ import annotations

import builtins
import json
from typing import Any, Literal, TypedDict, Unpack

from threadloom.client._endpoints import M, Resource, endpoint, stream_endpoint
from threadloom.client._transport import Call, StreamCall, json_call, stream_call
from threadloom.client._types import MultitaskStrategy, Run, RunLogsPage, RunStatus, StreamMode

__all__ = ["RunOptions", "Runs"]


class RunOptions(TypedDict, total=False):
    """What a run is created with (LangGraph's run-create body; all optional).

    ``input`` or ``command`` (``{"resume": ...}``, ``{"update": ..., "goto": ...}``);
    ``config`` / ``context`` / ``metadata``; ``stream_mode`` (one mode or several),
    ``stream_subgraphs``, ``stream_resumable``; ``interrupt_before`` / ``interrupt_after``
    (node names or ``"*"``); ``multitask_strategy`` (default ``enqueue``); ``if_not_exists``
    (``"create"`` makes the thread); ``on_disconnect``; ``on_completion`` (of a stateless
    run: ``delete`` its thread, the default, or ``keep`` it); ``after_seconds``;
    ``checkpoint_id`` (run from that checkpoint); ``durability``; ``timeout`` (seconds) and
    ``run_id`` (the durable run id) are threadloom's extensions.
    """

    input: Any
    command: dict[str, Any]
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    stream_mode: StreamMode | list[StreamMode]
    stream_subgraphs: bool
    stream_resumable: bool
    interrupt_before: Literal["*"] | list[str]
    interrupt_after: Literal["*"] | list[str]
    multitask_strategy: MultitaskStrategy
    if_not_exists: Literal["create", "reject"]
    on_disconnect: Literal["cancel", "continue"]
    on_completion: Literal["delete", "keep"]
    after_seconds: float
    checkpoint_id: str
    durability: Literal["sync", "async", "exit"]
    timeout: float
    run_id: str


def _body(assistant_id: str, options: RunOptions) -> dict[str, Any]:
    return {"assistant_id": assistant_id, **{k: v for k, v in options.items() if v is not None}}


def _path(thread_id: str | None, suffix: str = "") -> str:
    return f"/threads/{thread_id}/runs{suffix}" if thread_id is not None else f"/runs{suffix}"


def _modes(options: RunOptions) -> list[str] | None:
    mode = options.get("stream_mode")
    if mode is None:
        return None
    return [mode] if isinstance(mode, str) else list(mode)


class Runs(Resource[M]):
    """The runs routes. ``thread_id=None`` makes a stateless run, on a new thread (deleted
    when the run ends unless ``on_completion="keep"``). Creating a run is not retried after
    the request may have reached the server: it would run twice."""

    @endpoint
    def create(self, thread_id: str | None, assistant_id: str,
               **options: Unpack[RunOptions]) -> Call[Run]:
        """Queue a run in the background; returns it (``pending``)."""
        return json_call("POST", _path(thread_id), body=_body(assistant_id, options))

    @endpoint
    def wait(self, thread_id: str | None, assistant_id: str,
             **options: Unpack[RunOptions]) -> Call[dict[str, Any]]:
        """Run and wait for the result: the thread's values (with ``__interrupt__`` when it
        paused), or ``{"__error__": {"error", "message"}}`` when it failed."""
        return json_call("POST", _path(thread_id, "/wait"), body=_body(assistant_id, options))

    @stream_endpoint
    def stream(self, thread_id: str | None, assistant_id: str,
               **options: Unpack[RunOptions]) -> StreamCall:
        """Run and stream its events (:class:`~threadloom.client.StreamPart`; the first is
        ``metadata`` ``{run_id, attempt}``, a failure is an ``error`` event). A broken
        connection is joined again after the last event received."""
        return stream_call("POST", _path(thread_id, "/stream"),
                           body=_body(assistant_id, options), stream_mode=_modes(options))

    @endpoint
    def create_batch(self, payloads: list[dict[str, Any]]) -> Call[list[Run]]:
        """Queue several stateless runs (each payload: ``assistant_id`` and
        :class:`RunOptions`)."""
        return json_call("POST", "/runs/batch", body=payloads)

    @endpoint
    def get(self, thread_id: str, run_id: str) -> Call[Run]:
        """The run."""
        return json_call("GET", f"/threads/{thread_id}/runs/{run_id}")

    @endpoint
    def list(self, thread_id: str, *, limit: int = 10, offset: int = 0,
             status: RunStatus | None = None) -> Call[builtins.list[Run]]:
        """The thread's runs, newest first."""
        return json_call("GET", f"/threads/{thread_id}/runs",
                         params={"limit": limit, "offset": offset, "status": status})

    @endpoint
    def join(self, thread_id: str, run_id: str) -> Call[dict[str, Any]]:
        """Wait for the run to end; its result, as :meth:`wait` answers it."""
        return json_call("GET", f"/threads/{thread_id}/runs/{run_id}/join")

    @stream_endpoint
    def join_stream(self, thread_id: str, run_id: str, *,
                    stream_mode: StreamMode | builtins.list[StreamMode] | None = None,
                    last_event_id: str | None = None,
                    cancel_on_disconnect: bool = False) -> StreamCall:
        """The run's events (from the start, or after ``last_event_id``), from any API
        process, until it ends; only ``stream_mode``'s (and ``metadata`` / ``error``)."""
        modes = _modes({"stream_mode": stream_mode} if stream_mode else {})
        path = f"/threads/{thread_id}/runs/{run_id}/stream"
        params = {"cancel_on_disconnect": str(cancel_on_disconnect).lower()}
        if modes:
            params["stream_mode"] = json.dumps(modes)
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else None
        return stream_call("GET", path, params=params, headers=headers, stream_mode=modes,
                           join_path=path, last_event_id=last_event_id)

    @endpoint
    def cancel(self, thread_id: str, run_id: str, *, wait: bool = False,
               action: Literal["interrupt", "rollback"] = "interrupt") -> Call[Any]:
        """Ask for the run to stop (``rollback``: and delete it, restoring the thread's
        state before it). ``wait``: return once it stopped, with its result."""
        return json_call("POST", f"/threads/{thread_id}/runs/{run_id}/cancel",
                         params={"wait": str(wait).lower(), "action": action},
                         idempotent=True)

    @endpoint
    def cancel_many(self, *, thread_id: str | None = None,
                    run_ids: builtins.list[str] | None = None,
                    status: Literal["pending", "running", "all"] | None = None,
                    action: Literal["interrupt", "rollback"] = "interrupt") -> Call[None]:
        """Cancel ``run_ids`` of ``thread_id``, or every run with ``status``."""
        body = {k: v for k, v in (("thread_id", thread_id), ("run_ids", run_ids),
                                  ("status", status)) if v is not None}
        return json_call("POST", "/runs/cancel", body=body, params={"action": action},
                         idempotent=True)

    @endpoint
    def logs(self, thread_id: str, run_id: str, *, limit: int = 100,
             cursor: str | None = None) -> Call[RunLogsPage]:
        """A page of the log records kept with the run, oldest first; pass the page's
        ``next_cursor`` as ``cursor`` for the next one (``None`` on the last page)."""
        return json_call("GET", f"/threads/{thread_id}/runs/{run_id}/logs",
                         params={"limit": limit, "cursor": cursor})

    @endpoint
    def delete(self, thread_id: str, run_id: str) -> Call[None]:
        """Delete a finished run (the thread's state is kept)."""
        return json_call("DELETE", f"/threads/{thread_id}/runs/{run_id}")

