"""Routes of the runs resource (LangGraph Platform shape).

Runs are queued in the store and executed by workers (:mod:`threadloom.worker`), in this
process or another: create one in the background, create one and wait for its result, or
create one and stream its events (SSE); on a thread or stateless (on a new thread). Then get,
list, join (wait for), join the stream of (from any API process, resuming after
``Last-Event-ID``), cancel, and delete a run. The run id is the engine's durable run id; a
caller may choose it (``run_id`` in the body, an extension of LangGraph's API). Reads need the
``viewer`` role, the rest ``operator``; everything acts in the caller's namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from threadloom._json import dumps
from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.queue import QueuedRun
from threadloom.server._audit import audit_event, mark_audited
from threadloom.server._runs import (
    RunRequest,
    await_run,
    cancel_run,
    create_run,
    find_run,
    is_done,
    run_json,
    run_result,
    run_status,
    wait_for_run,
)
from threadloom.server._shapes import json_response
from threadloom.server._threadinfo import find_thread
from threadloom.server.auth import Principal
from threadloom.server.deps import Graphs, Operator, Store, Viewer, settings
from threadloom.server.errors import InvalidRequestError, NotFoundError
from threadloom.server.sse import event_stream, parse_last_event_id
from threadloom.server.thread_models import MAX_OFFSET

__all__ = ["router"]

router = APIRouter(tags=["runs"])

_KEEPALIVE = 5.0  # seconds between the blank lines a waiting response sends


class RunCreate(BaseModel):
    """The body of a run-create request (LangGraph's; fields it has that the runtime does not
    act on, such as ``webhook`` or ``feedback_keys``, are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: str = Field(description="A registered graph's name or assistant id.")
    input: Any = None
    command: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: str | list[str] | None = None
    stream_subgraphs: bool | None = False
    stream_resumable: bool | None = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    if_not_exists: Literal["create", "reject"] | None = None
    on_disconnect: Literal["cancel", "continue"] | None = None
    on_completion: Literal["delete", "keep"] | None = None
    after_seconds: float | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_id: str | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    timeout: float | None = Field(None, description="Seconds the run may take (extension).")
    run_id: str | None = Field(None, description="Choose the run id (extension).")

    def request(self) -> RunRequest:
        """The service-level request."""
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else self.stream_mode
        checkpoint_id = self.checkpoint_id or (self.checkpoint or {}).get("checkpoint_id")
        return RunRequest(
            assistant_id=self.assistant_id, input=self.input, command=self.command,
            config=self.config, context=self.context, metadata=self.metadata,
            stream_mode=modes, stream_subgraphs=bool(self.stream_subgraphs),
            stream_resumable=bool(self.stream_resumable),
            interrupt_before=self.interrupt_before, interrupt_after=self.interrupt_after,
            multitask_strategy=self.multitask_strategy or "enqueue",
            if_not_exists=self.if_not_exists or "reject", after_seconds=self.after_seconds,
            checkpoint_id=checkpoint_id, durability=self.durability, timeout=self.timeout,
            run_id=self.run_id,
        )


def _run_path(record: RunRecord) -> str:
    return f"/threads/{record.thread_id}/runs/{record.run_id}"


def _created(store: Store, graphs: Graphs, who: Principal, thread_id: str | None,
             body: RunCreate, stateless: bool = False,
             reread: bool = True, traceparent: str | None = None,
             claim_for: tuple[str, float] | None = None,
             streamed: bool = False) -> tuple[RunRecord, QueuedRun]:
    request = body.request()
    request.traceparent = traceparent
    request.streamed = streamed
    if stateless:
        request.if_not_exists = "create"
    return create_run(store, graphs, who.namespace, thread_id, request, reread=reread,
                      audit=audit_event(who, "run.create", ""), claim_for=claim_for)


# -- create ----------------------------------------------------------------------------------


@router.post("/threads/{thread_id}/runs", summary="Create a run in the background")
def create(thread_id: str, body: RunCreate, request: Request, store: Store, graphs: Graphs,
           who: Operator) -> Response:
    record, queued = _created(store, graphs, who, thread_id, body,
                              traceparent=request.headers.get("traceparent"))
    mark_audited(request)
    return json_response(run_json(record, queued),
                         headers={"Content-Location": _run_path(record)})


@router.post("/runs", summary="Create a stateless run (on a new thread) in the background")
def create_stateless(body: RunCreate, request: Request, store: Store, graphs: Graphs,
                     who: Operator) -> Response:
    record, queued = _created(store, graphs, who, None, body, stateless=True,
                              traceparent=request.headers.get("traceparent"))
    mark_audited(request)
    return json_response(run_json(record, queued),
                         headers={"Content-Location": _run_path(record)})


@router.post("/runs/batch", summary="Create several stateless runs in the background")
def create_batch(body: list[RunCreate], request: Request, store: Store, graphs: Graphs,
                 who: Operator) -> Response:
    runs = []
    for one in body:  # each run is logged as it is queued; a failure stops the batch there
        try:
            runs.append(run_json(*_created(store, graphs, who, None, one, stateless=True,
                                           traceparent=request.headers.get("traceparent"))))
        except Exception:
            request.state.audited = False  # the failure is logged too (AuditTrail)
            raise
        mark_audited(request)
    return json_response(runs)


@router.post("/threads/{thread_id}/runs/wait", summary="Create a run and wait for its result")
async def create_and_wait(thread_id: str, body: RunCreate, request: Request, store: Store,
                          graphs: Graphs, who: Operator) -> Response:
    record = await queue_run(store, graphs, who, thread_id, body,
                             request.headers.get("traceparent"))
    mark_audited(request)
    return await wait_response(store, graphs, record, body, settings(request).wait_poll)


@router.post("/runs/wait", summary="Create a stateless run and wait for its result")
async def create_stateless_and_wait(body: RunCreate, request: Request, store: Store,
                                    graphs: Graphs, who: Operator) -> Response:
    record = await queue_run(store, graphs, who, None, body,
                             request.headers.get("traceparent"))
    mark_audited(request)
    return await wait_response(store, graphs, record, body, settings(request).wait_poll,
                               stateless=True)


async def queue_run(store: Store, graphs: Graphs, who: Principal, thread_id: str | None,
                    body: RunCreate, traceparent: str | None = None) -> RunRecord:
    """Queue the run ``body`` asks for on ``thread_id`` (``None``: a stateless run, on a new
    thread) in ``who``'s namespace, logged as ``who``'s, as the ``wait`` routes do; returns
    its record as written. ``traceparent``: the request's header, the run's trace parent.

    Raises:
        ThreadloomError: what :func:`~threadloom.server._runs.create_run` raises; nothing
            was queued then.
    """
    record, _ = await asyncio.to_thread(_created, store, graphs, who, thread_id, body,
                                        thread_id is None, False, traceparent)
    return record


async def wait_response(store: Store, graphs: Graphs, record: RunRecord, body: RunCreate,
                        poll: float, *, stateless: bool = False) -> Response:
    """What a ``wait`` route answers for the run it just queued. Unless a disconnect must
    cancel the run (which needs the streaming response's watch of the connection), the
    result is first awaited here, for up to the keep-alive interval: a run that ends by
    then (most) is answered with a plain response, from one read of the store."""
    cancel = body.on_disconnect == "cancel"
    delete_thread = stateless and body.on_completion != "keep"
    if not cancel:
        result = await await_run(
            store, record.namespace, record.run_id,
            lambda: _result(store, graphs, record, delete_thread, check_done=True),
            poll=poll, timeout=_KEEPALIVE, fresh=True,
            inline=store.reads_are_local and not delete_thread)
        if result is not None:
            return result_response(record, result)
        return _waiting(poll, store, graphs, record, cancel, delete_thread=delete_thread,
                        primed=True)
    return _waiting(poll, store, graphs, record, cancel, delete_thread=delete_thread,
                    fresh=True)


def result_response(record: RunRecord, result: dict[str, Any]) -> Response:
    """A ``wait`` route's answer for a run that ended with ``result`` (see :func:`_result`)."""
    path = _run_path(record)
    return Response(dumps(result), media_type="application/json",
                    headers={"Location": f"{path}/join", "Content-Location": path})


def ended_result(store: Store, graphs: Graphs, record: RunRecord,
                 body: RunCreate, stateless: bool) -> dict[str, Any]:
    """What a ``wait`` route answers for its run ``record``, which has ended (read from the
    store, as for a run that ended elsewhere; a stateless run's thread is deleted then,
    unless ``on_completion`` keeps it)."""
    result = _result(store, graphs, record, stateless and body.on_completion != "keep")
    assert result is not None  # without check_done, a result is always read
    return result


# what the streaming routes answer (FastAPI would document JSON)
_SSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "Server-sent events: metadata, then the run's chunks; each has an id.",
          "content": {"text/event-stream": {"schema": {  # one event
              "type": "object", "required": ["event", "data", "id"],
              "properties": {"event": {"type": "string"}, "id": {"type": "string"},
                             "data": {"type": "string", "description": "JSON"}}}}}},
}


@router.post("/threads/{thread_id}/runs/stream", summary="Create a run and stream its events",
             response_class=Response, responses=_SSE)
async def create_and_stream(thread_id: str, body: RunCreate, request: Request, store: Store,
                            graphs: Graphs, who: Operator) -> Response:
    record, _ = await asyncio.to_thread(_created, store, graphs, who, thread_id, body,
                                        reread=False,
                                        traceparent=request.headers.get("traceparent"),
                                        streamed=True)
    mark_audited(request)
    return _streaming(request, store, record, cancel=body.on_disconnect == "cancel",
                      modes=_asked_modes(body))


@router.post("/runs/stream", summary="Create a stateless run and stream its events",
             response_class=Response, responses=_SSE)
async def create_stateless_and_stream(body: RunCreate, request: Request, store: Store,
                                      graphs: Graphs, who: Operator) -> Response:
    record, _ = await asyncio.to_thread(_created, store, graphs, who, None, body,
                                        stateless=True, reread=False,
                                        traceparent=request.headers.get("traceparent"),
                                        streamed=True)
    mark_audited(request)
    return _streaming(request, store, record, cancel=body.on_disconnect == "cancel",
                      modes=_asked_modes(body), delete_thread=body.on_completion != "keep")


def _asked_modes(body: RunCreate) -> list[str]:
    """The stream modes a run-and-stream request asked for (``values`` by default): the
    worker records ``values`` whatever was asked, for the runs that are waited for."""
    return body.request().stream_mode or ["values"]


def _waiting(poll: float, store: Store, graphs: Graphs, record: RunRecord,
             cancel: bool, delete_thread: bool = False, fresh: bool = False,
             primed: bool = False) -> Response:
    """A response that waits for the run (sending a blank line every few seconds, which JSON
    parsers ignore, so that proxies keep the connection) and then answers its result.
    ``fresh``: the run was just queued (see :func:`wait_for_run`); ``primed``: the caller
    waited a keep-alive interval already, so a blank line goes out at once."""
    namespace = record.namespace

    async def body() -> AsyncIterator[bytes]:
        done = False
        first = fresh
        try:
            if primed:
                yield b"\n"
            while not await wait_for_run(store, namespace, record.run_id, poll=poll,
                                         timeout=_KEEPALIVE, fresh=first):
                yield b"\n"
                first = False
            done = True
            yield dumps(await asyncio.to_thread(_result, store, graphs, record, delete_thread))
        finally:
            if cancel and not done:
                store.request_cancel(namespace, record.run_id)

    path = _run_path(record)
    return StreamingResponse(body(), media_type="application/json",
                             headers={"Location": f"{path}/join", "Content-Location": path})


def _result(store: Store, graphs: Graphs, record: RunRecord, delete_thread: bool, *,
            check_done: bool = False) -> dict[str, Any] | None:
    """What a wait answers; with ``check_done``, ``None`` while the run is still queued."""
    if check_done and not is_done(store, record.namespace, record.run_id):
        return None
    final = store.get_run(record.run_id, namespace=record.namespace)
    if final is None:  # rolled back
        return {}
    result = run_result(store, graphs, final)
    if delete_thread:
        store.delete_thread(record.thread_id, namespace=record.namespace)
    return result


def _streaming(request: Request, store: Store, record: RunRecord, *, cancel: bool,
               after: int = 0, modes: list[str] | None = None,
               delete_thread: bool = False) -> Response:
    stream = event_stream(store, record.namespace, record.run_id, after=after, modes=modes,
                          poll=settings(request).wait_poll, cancel_on_disconnect=cancel)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in stream:
            yield chunk
        if delete_thread:
            await asyncio.to_thread(store.delete_thread, record.thread_id,
                                    namespace=record.namespace)

    path = _run_path(record)
    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Location": f"{path}/stream", "Content-Location": path,
                                      "Cache-Control": "no-store"})


# -- read ------------------------------------------------------------------------------------


_ENGINE_STATUSES = {
    "pending": ("pending",),
    "running": ("running",),
    "success": ("succeeded",),
    "error": ("failed",),
    "timeout": ("failed",),
    "interrupted": ("interrupted", "cancelled"),
}


@router.get("/threads/{thread_id}/runs", summary="List a thread's runs, newest first")
def list_runs(thread_id: str, store: Store, who: Viewer,
              limit: Annotated[int, Query(ge=1, le=1000)] = 10,
              offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
              status: str | None = None) -> Response:
    find_thread(store, thread_id, who.namespace)
    if status is None:
        records = store.list_runs(thread_id=thread_id, namespace=who.namespace, limit=limit,
                                  offset=offset)
    else:
        engine = _ENGINE_STATUSES.get(status)
        if engine is None:
            raise InvalidRequestError(
                f"unknown status {status!r}; use one of {', '.join(_ENGINE_STATUSES)}")
        found: list[RunRecord] = []
        for one in engine:
            found += store.list_runs(thread_id=thread_id, namespace=who.namespace, status=one,
                                     limit=offset + limit)
        found.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        records = [r for r in found if run_status(r) == status][offset:offset + limit]
    return json_response([run_json(r, store.get_queued(who.namespace, r.run_id))
                          for r in records])


@router.get("/threads/{thread_id}/runs/{run_id}", summary="Get a run")
def get_run(thread_id: str, run_id: str, store: Store, who: Viewer) -> Response:
    record = find_run(store, who.namespace, thread_id, run_id)
    return json_response(run_json(record, store.get_queued(who.namespace, run_id)))


@router.get("/threads/{thread_id}/runs/{run_id}/join", summary="Wait for a run's result")
def join(thread_id: str, run_id: str, request: Request, store: Store, graphs: Graphs,
         who: Viewer) -> Response:
    record = find_run(store, who.namespace, thread_id, run_id)
    return _waiting(settings(request).wait_poll, store, graphs, record, cancel=False)


@router.get("/threads/{thread_id}/runs/{run_id}/stream",
            summary="Join a run's event stream (resumes after Last-Event-ID)",
            response_class=Response, responses=_SSE)
def join_stream(thread_id: str, run_id: str, request: Request, store: Store, who: Viewer,
                stream_mode: str | None = None, cancel_on_disconnect: bool = False,
                last_event_id: Annotated[str | None, Header()] = None) -> Response:
    record = find_run(store, who.namespace, thread_id, run_id)
    modes = _modes_param(stream_mode)
    return _streaming(request, store, record, cancel=cancel_on_disconnect,
                      after=parse_last_event_id(last_event_id), modes=modes)


def _modes_param(value: str | None) -> list[str] | None:
    """The ``stream_mode`` query parameter: one mode, a JSON list, or absent (all)."""
    if not value:
        return None
    if value.startswith("["):
        import json

        try:
            parsed = json.loads(value)
        except ValueError:
            raise InvalidRequestError(f"stream_mode is not a JSON list: {value!r}") from None
        return [str(m) for m in parsed] or None
    return [value]


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204,
               summary="Delete a finished run (the thread's state is kept)")
def delete_run(thread_id: str, run_id: str, request: Request, store: Store,
               who: Operator) -> Response:
    """Delete the run's record, node executions, events and queue row; the checkpoints it
    wrote stay, so the thread's state does not change. 409 while it is pending or running
    (cancel it first)."""
    find_run(store, who.namespace, thread_id, run_id)
    event = audit_event(who, "run.delete", run_id, run_id=run_id, thread_id=thread_id)
    if not store.delete_run(who.namespace, run_id, audit=event):
        raise NotFoundError(f"no run {run_id!r} on thread {thread_id!r}")
    mark_audited(request)
    return Response(status_code=204)


# -- cancel ----------------------------------------------------------------------------------


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", summary="Cancel a run")
def cancel(thread_id: str, run_id: str, request: Request, store: Store, graphs: Graphs,
           who: Operator, wait: bool = False,
           action: Literal["interrupt", "rollback"] = "interrupt") -> Response:
    cancel_run(store, who.namespace, thread_id, run_id, action,
               audit=audit_event(who, "run.cancel", run_id, run_id=run_id,
                                 thread_id=thread_id))
    mark_audited(request)
    if not wait:
        return Response(status_code=202)
    record = RunRecord(run_id, thread_id, "", "pending", namespace=who.namespace)
    return _waiting(settings(request).wait_poll, store, graphs, record, cancel=False)


class RunsCancel(BaseModel):
    """Which runs ``POST /runs/cancel`` cancels: ``run_ids`` of ``thread_id``, or every run
    with ``status`` (``pending``, ``running`` or ``all``)."""

    model_config = ConfigDict(extra="ignore")

    thread_id: str | None = None
    run_ids: list[str] | None = None
    status: Literal["pending", "running", "all"] | None = None


@router.post("/runs/cancel", status_code=204, summary="Cancel several runs")
def cancel_many(body: RunsCancel, request: Request, store: Store, who: Operator,
                action: Literal["interrupt", "rollback"] = "interrupt") -> Response:
    if body.status is not None:
        if body.thread_id or body.run_ids:
            raise InvalidRequestError("give status, or thread_id with run_ids, not both")
        statuses = ("pending", "running") if body.status == "all" else (body.status,)
        targets = [(r.thread_id, r.run_id) for s in statuses
                   for r in store.list_runs(namespace=who.namespace, status=s, limit=10_000)]
    else:
        if not body.thread_id or not body.run_ids:
            raise InvalidRequestError("give thread_id and run_ids, or status")
        targets = [(body.thread_id, run_id) for run_id in body.run_ids]
    for thread_id, run_id in targets:
        try:
            cancel_run(store, who.namespace, thread_id, run_id, action,
                       audit=audit_event(who, "run.cancel", run_id, run_id=run_id,
                                         thread_id=thread_id))
        except Exception:
            request.state.audited = False  # the failure is logged too (AuditTrail)
            raise
        mark_audited(request)
    return Response(status_code=204)


