"""Routes of the threads resource (LangGraph Platform shape).

Create, get, update, delete, search, count and copy threads; read a thread's state (latest,
at a checkpoint, with subgraphs) and history; update its state as a node; export it (design
§5). Everything acts in the caller's namespace; reads need the ``viewer`` role, changes the
``operator`` role. The thread object, the state and the statuses are LangGraph's (see
:mod:`threadloom.server._threadinfo` and :mod:`threadloom.server._shapes`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from threadloom._json import to_jsonable
from threadloom.checkpoint.base import ThreadRecord, audited
from threadloom.checkpoint.retention import export_thread, import_thread
from threadloom.errors import CheckpointNotFoundError, ThreadBusyError
from threadloom.graph._threads import checkpoint_seq
from threadloom.graph.compiled import CompiledGraph
from threadloom.server._audit import audit_event, mark_audited
from threadloom.server._shapes import checkpoint_json, json_response, state_json
from threadloom.server._threadinfo import (
    ACTIVE,
    ThreadInfo,
    check_thread_id,
    find_graph,
    find_thread,
    thread_config,
)
from threadloom.server.auth import Principal
from threadloom.server.deps import Graphs, Operator, Store, Viewer
from threadloom.server.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ThreadHasNoGraphError,
)
from threadloom.server.thread_models import (
    CheckpointRef,
    StateCheckpointRequest,
    StateUpdate,
    ThreadCountRequest,
    ThreadCreate,
    ThreadHistoryRequest,
    ThreadModel,
    ThreadPatch,
    ThreadPruneRequest,
    ThreadSearchRequest,
    ThreadStateModel,
    ThreadUpdateStateResponse,
)
from threadloom.types import Command, StateSnapshot

__all__ = ["router"]

router = APIRouter(tags=["threads"])

ThreadId = Annotated[str, "a thread id: 1 to 255 printable characters"]
_PAGE = 500
_EMPTY = StateSnapshot({}, (), {}, None, None, None)


def _info(store: Store, graphs: Graphs, thread_id: str, namespace: str) -> ThreadInfo:
    return ThreadInfo.load(store, graphs, find_thread(store, thread_id, namespace))


def _unsupported(value: Any, name: str) -> None:
    if value is not None:
        raise InvalidRequestError(f"{name} is not supported by this server")


# -- the thread itself ---------------------------------------------------------------------


@router.post("/threads", response_model=ThreadModel, summary="Create a thread")
def create_thread(body: ThreadCreate, request: Request, store: Store, graphs: Graphs,
                  who: Operator) -> Response:
    """Create a thread (``thread_id`` optional: a UUID is chosen). An existing id is a 409
    unless ``if_exists`` is ``"do_nothing"``, which returns the existing thread."""
    _unsupported(body.ttl, "ttl")
    ns = who.namespace
    thread_id = check_thread_id(body.thread_id) if body.thread_id else str(uuid.uuid4())
    metadata = dict(body.metadata or {})
    graph = _superstep_graph(graphs, metadata, body) if body.supersteps else None
    # created with its metadata in one transaction: of two concurrent creations, one wins
    record = store.create_thread(thread_id, metadata, namespace=ns, audit=audit_event(
        who, "thread.create", thread_id, thread_id=thread_id))
    if record is None:
        existing = store.get_thread(thread_id, namespace=ns)
        if existing is not None and body.if_exists == "do_nothing":
            return json_response(ThreadInfo.load(store, graphs, existing).as_json())
        raise ConflictError(f"thread {thread_id!r} already exists")
    mark_audited(request)
    if graph is not None:
        config = thread_config(thread_id, ns)
        for superstep in body.supersteps or ():
            update = superstep.updates[0]
            values: Any = update.values
            if update.command is not None:
                command = update.command
                values = Command(update=command.update, resume=command.resume,
                                 goto=command.goto or ())
            graph.update_state(config, values, as_node=update.as_node)
    return json_response(ThreadInfo.load(store, graphs, record).as_json())


def _superstep_graph(graphs: Graphs, metadata: dict[str, Any],
                     body: ThreadCreate) -> CompiledGraph:
    """The graph that applies a new thread's supersteps (checked before the thread exists)."""
    for number, superstep in enumerate(body.supersteps or ()):
        if len(superstep.updates) != 1:
            raise InvalidRequestError(
                f"supersteps[{number}]: this server applies one update per superstep"
            )
    for key in ("graph_id", "assistant_id"):
        name = metadata.get(key)
        found = find_graph(graphs, name) if isinstance(name, str) else None
        if found is not None:
            return found[1]
    raise ThreadHasNoGraphError(
        "supersteps need the thread's graph: give graph_id (metadata.graph_id) naming a "
        "registered graph"
    )


@router.get("/threads/{thread_id}", response_model=ThreadModel, summary="Get a thread")
def get_thread(thread_id: ThreadId, store: Store, graphs: Graphs, who: Viewer) -> Response:
    """The thread: metadata, status, latest values and pending interrupts."""
    return json_response(_info(store, graphs, thread_id, who.namespace).as_json())


@router.patch("/threads/{thread_id}", response_model=ThreadModel,
              summary="Update a thread's metadata")
def patch_thread(thread_id: ThreadId, body: ThreadPatch, request: Request, store: Store,
                 graphs: Graphs, who: Operator,
                 prefer: Annotated[str | None, Header()] = None) -> Response:
    """Merge ``metadata`` into the thread's metadata. ``Prefer: return=minimal`` answers 204."""
    _unsupported(body.ttl, "ttl")
    record = find_thread(store, thread_id, who.namespace)
    merged = {**record.metadata, **(body.metadata or {})}
    updated = store.update_thread(record.thread_id, merged, namespace=who.namespace,
                                  audit=audit_event(who, "thread.update", record.thread_id,
                                                    thread_id=record.thread_id))
    if updated is None:
        raise NotFoundError(f"no thread {thread_id!r}")
    mark_audited(request)
    if prefer == "return=minimal":
        return Response(status_code=204)
    return json_response(ThreadInfo.load(store, graphs, updated).as_json())


@router.delete("/threads/{thread_id}", status_code=204, summary="Delete a thread",
               response_class=Response)
def delete_thread(thread_id: ThreadId, request: Request, store: Store,
                  who: Operator) -> Response:
    """Delete the thread with its checkpoints, runs and executions; its pending and running
    runs are cancelled first. Afterwards the thread is a 404."""
    record = find_thread(store, thread_id, who.namespace)
    _delete(store, record.thread_id, who)
    mark_audited(request)
    return Response(status_code=204)


def _delete(store: Store, thread_id: str, who: Principal) -> None:
    """Cancel the thread's active runs, then delete it, each change with its event."""
    namespace = who.namespace
    for status in ACTIVE:
        for run in store.list_runs(thread_id=thread_id, namespace=namespace, status=status,
                                   limit=1000):
            store.request_cancel(namespace, run.run_id, "interrupt", audit=audit_event(
                who, "run.cancel", run.run_id, run_id=run.run_id, thread_id=thread_id))
    store.delete_thread(thread_id, namespace=namespace, audit=audit_event(
        who, "thread.delete", thread_id, thread_id=thread_id))


@router.post("/threads/prune", summary="Delete threads, or all but their latest checkpoint")
def prune_threads(body: ThreadPruneRequest, request: Request, store: Store,
                  who: Operator) -> Response:
    """``delete``: delete each thread (as ``DELETE /threads/{id}``); ``keep_latest``: keep
    only each thread's latest checkpoint (its state). Unknown ids are skipped.
    Answers ``{"pruned_count"}``, the threads pruned."""
    pruned = 0
    for thread_id in dict.fromkeys(body.thread_ids):
        try:
            record = find_thread(store, thread_id, who.namespace)
        except NotFoundError:
            continue
        if body.strategy == "delete":
            _delete(store, record.thread_id, who)
            mark_audited(request)
        else:
            store.prune_checkpoints(record.thread_id, keep=1, namespace=who.namespace,
                                    audit=audit_event(who, "thread.prune", record.thread_id,
                                                      thread_id=record.thread_id))
            mark_audited(request)
        pruned += 1
    return json_response({"pruned_count": pruned})


@router.post("/threads/{thread_id}/copy", response_model=ThreadModel,
             summary="Copy a thread")
def copy_thread(thread_id: ThreadId, request: Request, store: Store, graphs: Graphs,
                who: Operator) -> Response:
    """A new thread (new id) with the same checkpoints and metadata; runs are not copied, so
    the copy records its graph in ``metadata.graph_id``."""
    info = _info(store, graphs, thread_id, who.namespace)
    data = export_thread(store, info.thread_id, namespace=who.namespace)
    data["runs"], data["executions"] = [], []
    new_id = import_thread(store, data, thread_id=str(uuid.uuid4()))
    metadata = dict(info.record.metadata)
    if info.graph_name is not None:
        metadata.setdefault("graph_id", info.graph_name)
    record = store.update_thread(new_id, metadata, namespace=who.namespace,
                                 audit=audit_event(who, "thread.copy", new_id, thread_id=new_id))
    if record is None:
        raise NotFoundError(f"the copy {new_id!r} was deleted while it was being made")
    mark_audited(request)
    return json_response(ThreadInfo.load(store, graphs, record).as_json())


@router.get("/threads/{thread_id}/export", summary="Export a thread's whole history")
def export(thread_id: ThreadId, store: Store, who: Viewer) -> Response:
    """The thread's checkpoints (with blobs and pending writes), runs and executions as
    JSON (format ``threadloom.thread/1``), values as the store holds them."""
    record = find_thread(store, thread_id, who.namespace)
    return json_response(export_thread(store, record.thread_id, namespace=who.namespace))


# -- search ----------------------------------------------------------------------------------


def _contains(doc: Any, query: Any) -> bool:
    """JSON containment, as Postgres' ``@>`` (LangGraph's metadata and values filters)."""
    if isinstance(query, dict):
        return isinstance(doc, dict) and all(
            k in doc and _contains(doc[k], v) for k, v in query.items()
        )
    if isinstance(query, list):
        return isinstance(doc, list) and all(any(_contains(d, q) for d in doc) for q in query)
    return bool(doc == query and type(doc) is type(query)) or (
        isinstance(doc, int | float) and isinstance(query, int | float)
        and not isinstance(doc, bool) and not isinstance(query, bool) and doc == query
    )


def _records(store: Store, namespace: str, ids: list[str] | None,
             metadata: dict[str, Any] | None) -> list[ThreadRecord]:
    """The namespace's threads (of ``ids`` if given) whose metadata contains ``metadata``,
    most recently updated first."""
    found: list[ThreadRecord] = []
    if ids:
        for thread_id in dict.fromkeys(ids):
            if 1 <= len(thread_id) <= 255 and thread_id.isprintable():
                record = store.get_thread(thread_id, namespace=namespace)
                if record is not None and record.namespace == namespace:
                    found.append(record)
        found.sort(key=lambda r: (r.updated_at, r.thread_id), reverse=True)
    else:
        while batch := store.list_threads(namespace=namespace, limit=_PAGE,
                                          offset=len(found)):
            found += batch
    return [r for r in found if not metadata or _contains(r.metadata, metadata)]


def _with_state(store: Store, graphs: Graphs, records: list[ThreadRecord],
                values: dict[str, Any] | None,
                status: str | None) -> list[tuple[ThreadInfo, StateSnapshot | None]]:
    """The threads whose state has ``values`` and whose status is ``status``, with it."""
    found: list[tuple[ThreadInfo, StateSnapshot | None]] = []
    for record in records:
        info = ThreadInfo.load(store, graphs, record)
        snapshot = info.snapshot()
        if values and not (snapshot is not None and snapshot.created_at is not None
                           and _contains(to_jsonable(snapshot.values), values)):
            continue
        if status and info.status(snapshot) != status:
            continue
        found.append((info, snapshot))
    return found


_RECORD_ORDER: dict[str, Callable[[ThreadRecord], Any]] = {
    "thread_id": lambda r: r.thread_id,
    "created_at": lambda r: r.created_at,
    "updated_at": lambda r: r.updated_at,
    "state_updated_at": lambda r: r.updated_at,
}


@router.post("/threads/search", response_model=list[ThreadModel], summary="Search threads")
def search_threads(body: ThreadSearchRequest, store: Store, graphs: Graphs,
                   who: Viewer) -> Response:
    """Threads of the namespace matching ``metadata`` and ``values`` (JSON containment),
    ``status`` and ``ids``; sorted by ``sort_by`` (default ``updated_at``, newest first),
    ``limit`` from ``offset``. ``X-Pagination-Next`` gives the next offset when more match.
    Only the threads of the page are read beyond their row, unless a filter or the sort
    needs every thread's state or status."""
    _unsupported(body.extract, "extract")
    records = _records(store, who.namespace, body.ids, body.metadata)
    descending = (body.sort_order or "desc").lower() == "desc"
    window = slice(body.offset, body.offset + body.limit)
    if body.values or body.status or body.sort_by == "status":
        loaded = _with_state(store, graphs, records, body.values, body.status)
        items = [info.as_json(snapshot) for info, snapshot in loaded]
        if body.sort_by is not None:
            key: str = body.sort_by
            items.sort(key=lambda t: (t[key] is not None, t[key] or ""), reverse=descending)
        total, page = len(items), items[window]
    else:
        if body.sort_by is not None:
            records.sort(key=_RECORD_ORDER[body.sort_by], reverse=descending)
        total = len(records)
        page = [ThreadInfo.load(store, graphs, r).as_json() for r in records[window]]
    if body.select:
        page = [{k: t[k] for k in body.select if k in t} for t in page]
    headers = {"X-Pagination-Total": str(total)}
    if total > body.offset + body.limit:
        headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return json_response(page, headers=headers)


@router.post("/threads/count", response_model=int, summary="Count threads")
def count_threads(body: ThreadCountRequest, store: Store, graphs: Graphs,
                  who: Viewer) -> Response:
    """How many threads of the namespace match the filters of a search."""
    records = _records(store, who.namespace, None, body.metadata)
    if body.values or body.status:
        return json_response(len(_with_state(store, graphs, records, body.values,
                                             body.status)))
    return json_response(len(records))


# -- state -----------------------------------------------------------------------------------


def _state(info: ThreadInfo, checkpoint_id: str | None, subgraphs: bool) -> Response:
    if info.graph is None:
        # no graph, no checkpoint to show: a checkpoint id is answered as on a thread with
        # one (malformed: 400 invalid_config; well formed: 404), not with an empty state
        if checkpoint_seq(checkpoint_id) is not None:
            raise CheckpointNotFoundError(
                f"no checkpoint {checkpoint_id!r} on thread {info.record.thread_id!r}")
        return json_response(state_json(_EMPTY))
    snapshot = info.graph.get_state(info.config(checkpoint_id), subgraphs=subgraphs)
    return json_response(state_json(snapshot))


@router.get("/threads/{thread_id}/state", response_model=ThreadStateModel,
            summary="Get a thread's state")
def get_state(thread_id: ThreadId, store: Store, graphs: Graphs, who: Viewer,
              subgraphs: bool = False) -> Response:
    """The thread's latest state (with its subgraphs' states if ``subgraphs``)."""
    return _state(_info(store, graphs, thread_id, who.namespace), None, subgraphs)


@router.get("/threads/{thread_id}/state/{checkpoint_id}", response_model=ThreadStateModel,
            summary="Get a thread's state at a checkpoint")
def get_state_at(thread_id: ThreadId, checkpoint_id: str, store: Store, graphs: Graphs,
                 who: Viewer, subgraphs: bool = False) -> Response:
    """The thread's state at ``checkpoint_id``."""
    return _state(_info(store, graphs, thread_id, who.namespace), checkpoint_id, subgraphs)


@router.post("/threads/{thread_id}/state/checkpoint", response_model=ThreadStateModel,
             summary="Get a thread's state at a checkpoint")
def post_state_at(thread_id: ThreadId, body: StateCheckpointRequest, store: Store,
                  graphs: Graphs, who: Viewer) -> Response:
    """The thread's state at ``checkpoint.checkpoint_id`` (its latest without one)."""
    info = _info(store, graphs, thread_id, who.namespace)
    _root_only(body.checkpoint)
    return _state(info, body.checkpoint.checkpoint_id, body.subgraphs)


def _root_only(ref: CheckpointRef | None) -> None:
    if ref is not None and ref.checkpoint_ns:
        raise InvalidRequestError(
            "checkpoint_ns names a subgraph; address the parent's checkpoint (subgraph "
            "states are in get_state with subgraphs=true)"
        )


@router.post("/threads/{thread_id}/state", response_model=ThreadUpdateStateResponse,
             summary="Update a thread's state")
def update_state(thread_id: ThreadId, body: StateUpdate, request: Request, store: Store,
                 graphs: Graphs, who: Operator) -> Response:
    """Apply ``values`` as if node ``as_node`` had returned them (forking from
    ``checkpoint`` / ``checkpoint_id`` if given); a new checkpoint. 409 while a run of the
    thread is pending or running; 400 when the thread has no graph yet."""
    info = _info(store, graphs, thread_id, who.namespace)
    if info.active:
        raise ThreadBusyError(f"thread {thread_id!r} has a pending or running run")
    if info.graph is None:
        raise ThreadHasNoGraphError(
            f"thread {thread_id!r} has no graph: it has no runs and its metadata names no "
            "graph_id; run it first, or set metadata.graph_id"
        )
    _root_only(body.checkpoint)
    checkpoint_id = (body.checkpoint.checkpoint_id if body.checkpoint else None) or (
        body.checkpoint_id)
    # the new checkpoint and its audit event are one transaction
    with audited(audit_event(who, "state.update", info.thread_id, thread_id=info.thread_id)):
        written = info.graph.update_state(info.config(checkpoint_id), body.values,
                                          as_node=body.as_node)
    mark_audited(request)
    checkpoint = checkpoint_json(written)
    return json_response({
        "checkpoint": checkpoint,
        "configurable": checkpoint,
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
    })


# -- history -----------------------------------------------------------------------------------


def _history(info: ThreadInfo, *, limit: int, before: str | CheckpointRef | None,
             metadata: dict[str, Any] | None, checkpoint: CheckpointRef | None) -> Response:
    if info.graph is None:
        return json_response([])
    _root_only(checkpoint)
    before_id = before.checkpoint_id if isinstance(before, CheckpointRef) else before
    before_config = info.config(before_id) if before_id else None
    if checkpoint is not None and checkpoint.checkpoint_id:
        # a checkpoint names one snapshot, as LangGraph's checkpointers list it
        one = info.graph.get_state(info.config(checkpoint.checkpoint_id))
        keep = all((one.metadata or {}).get(k) == v for k, v in (metadata or {}).items())
        if before_id and one.config["configurable"]["checkpoint_id"] >= before_id:
            keep = False
        return json_response([state_json(one)] if keep else [])
    snapshots = info.graph.get_state_history(info.config(), filter=metadata,
                                             before=before_config, limit=limit)
    return json_response([state_json(s) for s in snapshots])


@router.get("/threads/{thread_id}/history", response_model=list[ThreadStateModel],
            summary="List a thread's past states")
def get_history(thread_id: ThreadId, store: Store, graphs: Graphs, who: Viewer,
                limit: Annotated[int, Query(ge=1, le=1000)] = 10,
                before: str | None = None) -> Response:
    """The thread's checkpoints as states, newest first (older than ``before``)."""
    info = _info(store, graphs, thread_id, who.namespace)
    return _history(info, limit=limit, before=before, metadata=None, checkpoint=None)


@router.post("/threads/{thread_id}/history", response_model=list[ThreadStateModel],
             summary="List a thread's past states")
def post_history(thread_id: ThreadId, body: ThreadHistoryRequest, store: Store,
                 graphs: Graphs, who: Viewer) -> Response:
    """The thread's checkpoints as states, newest first: at most ``limit``, older than
    ``before``, whose metadata has the ``metadata`` given."""
    info = _info(store, graphs, thread_id, who.namespace)
    return _history(info, limit=body.limit, before=body.before, metadata=body.metadata,
                    checkpoint=body.checkpoint)

