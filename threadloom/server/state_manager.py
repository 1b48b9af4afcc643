"""Seed 001's state-manager routes, under ``/v0/namespace/{ns}``.

A *state* is a node execution (:class:`~threadloom.checkpoint.base.ExecutionRecord`) shown
in Exosphere's words: ``POST /graph/{graph}/states/create`` starts a run whose first step
executes the given nodes with the given inputs; ``GET /states/`` and
``GET /states/run/{run_id}`` list states; ``GET /runs`` lists runs, and
``/runs/{run_id}/cancel``, ``/retry``, ``/metrics`` and ``/checkpoints`` act on one.

Every list pages by keyset over ``(created_at, id)``: ``limit`` (default 100, at most
1000) items, and ``next_cursor``, an opaque string to send back as ``cursor`` for the next
page (``null`` on the last). ``status`` takes the seed's status names (``runtime.md``'s
statuses table), ``since`` (inclusive) and ``until`` (exclusive) are ISO 8601 times of
``created_at``, ``run_id_prefix`` matches run ids that start with it.

The path's namespace must be one the key covers; any other answers 404 ``not_found``,
exactly as a missing run does, so a key learns nothing of other namespaces. Reads need the
``viewer`` role; create, cancel and retry ``operator``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from threadloom._ids import execution_id
from threadloom._json import to_jsonable
from threadloom._tracing import trace_id
from threadloom.checkpoint.base import Commit, ExecutionRecord, RunRecord, format_checkpoint_id
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.errors import RunConflictError, ThreadloomError
from threadloom.graph.compiled import CompiledGraph
from threadloom.server._runs import RunRequest, cancel_run, create_run, retry_run
from threadloom.server._shapes import iso, json_response
from threadloom.server._threadinfo import check_thread_id, find_graph, thread_config
from threadloom.server.auth import Principal
from threadloom.server.deps import Graphs, Store
from threadloom.server.deps import NamespaceOperator as Operator
from threadloom.server.deps import NamespaceViewer as Viewer
from threadloom.server.errors import ConflictError, InvalidRequestError, NotFoundError

__all__ = ["STATE_STATUSES", "RUN_STATUSES", "router", "run_item", "state_status"]

router = APIRouter(prefix="/v0/namespace/{ns}", tags=["state manager (seed 001)"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_TIMEOUT_ERRORS = ("NodeTimeoutError:", "RunTimeoutError:")

# seed status -> (engine status, timed out?, whether a RUNNING execution is between attempts)
STATE_STATUSES: dict[str, tuple[str, bool | None, bool | None]] = {
    "CREATED": ("PENDING", None, None),
    "QUEUED": ("RUNNING", None, False),
    "RETRY_CREATED": ("RUNNING", None, True),
    "SUCCESS": ("SUCCEEDED", None, None),
    "ERRORED": ("FAILED", False, None),
    "TIMEDOUT": ("FAILED", True, None),
    "INTERRUPTED": ("INTERRUPTED", None, None),
    "CANCELLED": ("CANCELLED", None, None),
}
"""A state status filter: the engine status, the timeout condition and the retry condition
it stands for (``runtime.md``'s statuses table)."""

RUN_STATUSES: dict[str, tuple[str, bool | None]] = {
    "CREATED": ("pending", None),
    "RUNNING": ("running", None),
    "INTERRUPTED": ("interrupted", None),
    "SUCCESS": ("succeeded", None),
    "ERRORED": ("failed", False),
    "TIMEDOUT": ("failed", True),
    "CANCELLED": ("cancelled", None),
}
"""A run status filter: the engine run status and the timeout condition it stands for."""


# -- shapes ------------------------------------------------------------------------------------


class RequestState(BaseModel):
    """One state to create: a first execution of node ``identifier`` with ``inputs``."""

    model_config = ConfigDict(extra="forbid")

    identifier: str = Field(description="The node's key in the graph.")
    inputs: dict[str, Any] = Field(default_factory=dict,
                                   description="The node's input (a Send argument).")


class CreateRequest(BaseModel):
    """Exosphere's ``CreateRequestModel``, plus an optional ``thread_id``."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(description="The run's id, 1 to 255 printable characters.")
    states: list[RequestState] = Field(min_length=1)
    thread_id: str | None = Field(None, description="The thread (default: the run id).")


class ResponseState(BaseModel):
    """A created state (Exosphere's ``ResponseStateModel``)."""

    state_id: str
    node_name: str
    identifier: str
    graph_name: str
    run_id: str
    inputs: dict[str, Any]
    created_at: str


class CreateResponse(BaseModel):
    """Exosphere's ``CreateResponseModel``."""

    status: str
    states: list[ResponseState]


class StateItem(BaseModel):
    """A state in a list (Exosphere's ``StateListItem``, plus attempts and times)."""

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


class CurrentStates(BaseModel):
    """``GET /states/``: Exosphere's ``CurrentStatesResponse`` and a cursor."""

    namespace: str
    count: int
    states: list[StateItem]
    run_ids: list[str]
    next_cursor: str | None


class StatesByRunId(BaseModel):
    """``GET /states/run/{run_id}``: Exosphere's ``StatesByRunIdResponse`` and a cursor."""

    namespace: str
    run_id: str
    count: int
    states: list[StateItem]
    next_cursor: str | None


class RunItem(BaseModel):
    """A run in the seed's words."""

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


class RunList(BaseModel):
    """``GET /runs``."""

    namespace: str
    count: int
    runs: list[RunItem]
    next_cursor: str | None


class CheckpointItem(BaseModel):
    """One checkpoint a run wrote: the state after a step, and what the step wrote."""

    checkpoint_id: str
    step: int
    created_at: str | None
    values: Any
    next: list[str]
    writes: Any


class CheckpointList(BaseModel):
    """``GET /runs/{run_id}/checkpoints``, oldest first."""

    namespace: str
    run_id: str
    count: int
    checkpoints: list[CheckpointItem]
    next_cursor: str | None


# -- statuses ----------------------------------------------------------------------------------


def _timed_out(error: str | None) -> bool:
    return error is not None and error.startswith(_TIMEOUT_ERRORS)


def _retrying(record: ExecutionRecord) -> bool:
    """A running execution whose last attempt failed: another one is scheduled."""
    return bool(record.attempts) and record.attempts[-1].error is not None


def state_status(record: ExecutionRecord) -> str:
    """The execution's status in the seed's words (``runtime.md``'s statuses table)."""
    status = record.status
    if status == "PENDING":
        return "CREATED"
    if status == "RUNNING":
        return "RETRY_CREATED" if _retrying(record) else "QUEUED"
    if status == "SUCCEEDED":
        return "SUCCESS"
    if status == "FAILED":
        return "TIMEDOUT" if _timed_out(record.error) else "ERRORED"
    return status


def _run_status(record: RunRecord) -> str:
    status = record.status
    if status == "failed":
        return "TIMEDOUT" if _timed_out(record.error) else "ERRORED"
    return {"pending": "CREATED", "succeeded": "SUCCESS"}.get(status, status.upper())


def run_item(record: RunRecord) -> dict[str, Any]:
    """The run item of the seed routes."""
    duration = None
    if record.started_at is not None and record.ended_at is not None:
        duration = round((record.ended_at - record.started_at) * 1000, 3)
    return {
        "run_id": record.run_id,
        "thread_id": record.thread_id,
        "graph_name": record.graph,
        "status": _run_status(record),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "started_at": iso(record.started_at),
        "ended_at": iso(record.ended_at),
        "duration_ms": duration,
        "steps": record.steps,
        "state_count": record.executions,
        "error": record.error,
    }


# -- query parameters --------------------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-1000).")]
Cursor = Annotated[str | None, Query(description="The next_cursor of the previous page.")]
Since = Annotated[str | None, Query(description="created_at >= this ISO 8601 time.")]
Until = Annotated[str | None, Query(description="created_at < this ISO 8601 time.")]
Prefix = Annotated[str | None, Query(max_length=255, description="Run ids starting with it.")]


def _reach(who: Principal, ns: str, missing: str) -> None:
    """404 with ``missing`` (the message a missing target gets) unless the key covers
    ``ns`` (a namespace no key can name, e.g. with a NUL, is covered by none)."""
    if not who.covers(ns) or not _printable(ns, 64):
        raise NotFoundError(missing)


def _printable(value: str, longest: int = 255) -> bool:
    return 0 < len(value) <= longest and value.isprintable()


def _check_id(name: str, value: str | None) -> None:
    """422 unless ``value`` (a run id, a graph name) could be stored: 1 to 255 printable
    characters."""
    if value is not None and not _printable(value):
        raise InvalidRequestError(f"{name} must be 1 to 255 printable characters")


def _time(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(f"{name} is not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _prefix(value: str | None) -> str | None:
    if value is not None and not value.isprintable():
        raise InvalidRequestError("run_id_prefix must be printable characters")
    return value or None


def encode_cursor(*key: Any) -> str:
    """An opaque cursor for a page that ends at ``key``."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error):
        raise InvalidRequestError("cursor is not one this API gave out") from None
    if not isinstance(key, list):
        raise InvalidRequestError("cursor is not one this API gave out")
    return key


def _time_cursor(cursor: str | None) -> tuple[float, str] | None:
    """The ``(created_at, id)`` a cursor of a states or runs page holds."""
    if cursor is None:
        return None
    key = _decode(cursor)
    if (len(key) != 2 or not isinstance(key[0], int | float) or isinstance(key[0], bool)
            or not isinstance(key[1], str)):
        raise InvalidRequestError("cursor is not one this API gave out")
    return float(key[0]), key[1]


# -- state items -------------------------------------------------------------------------------


def _node_name(graph: CompiledGraph | None, identifier: str) -> str:
    """The name of the function behind node ``identifier`` (the identifier if unknown)."""
    if graph is None:
        return identifier
    action = graph.builder.nodes.get(identifier)
    if action is None:
        return identifier
    return getattr(action, "__name__", None) or type(action).__name__


def _object(value: Any) -> dict[str, Any]:
    """A JSON object: ``value`` itself if it is a mapping, else ``{"value": value}``."""
    plain = to_jsonable(value)
    if plain is None:
        return {}
    return plain if isinstance(plain, dict) else {"value": plain}


class _Items:
    """Builds the state items of a page: decodes inputs and outputs with the graph's codec,
    reads the state an edge-triggered node received, and maps parents to identifiers."""

    def __init__(self, store: RuntimeStore, graphs: Mapping[str, CompiledGraph],
                 namespace: str) -> None:
        self.store = store
        self.graphs = graphs
        self.namespace = namespace
        self._states: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._runs: dict[tuple[str, str], dict[str, ExecutionRecord]] = {}

    def graph(self, name: str) -> CompiledGraph | None:
        found = find_graph(self.graphs, name)
        return None if found is None else found[1]

    def item(self, record: ExecutionRecord) -> dict[str, Any]:
        graph = self.graph(record.graph)
        updated = record.ended_at or record.started_at or record.created_at
        return {
            "id": record.id,
            "node_name": _node_name(graph, record.node),
            "namespace_name": record.namespace,
            "identifier": record.node,
            "graph_name": record.graph,
            "run_id": record.run_id,
            "status": state_status(record),
            "inputs": self._inputs(graph, record),
            "outputs": self._decoded(graph, record, "outputs"),
            "error": record.error,
            "parents": self._parents(record),
            "created_at": iso(record.created_at),
            "updated_at": iso(max(updated, record.created_at)),
            "attempt": record.attempt,
            "started_at": iso(record.started_at),
            "ended_at": iso(record.ended_at),
        }

    def _decoded(self, graph: CompiledGraph | None, record: ExecutionRecord,
                 field: str) -> dict[str, Any]:
        if graph is None or getattr(record, field) is None:
            return {}
        try:
            codec = graph._durable(self.namespace)[1]
            return _object(codec.decode_execution(record, field))
        except ThreadloomError:
            return {}  # not decodable here (e.g. sealed with a key this server lacks)

    def _inputs(self, graph: CompiledGraph | None, record: ExecutionRecord) -> dict[str, Any]:
        """What the node received: its Send argument, or the state of the checkpoint its
        step started from."""
        if record.inputs is not None or graph is None or record.checkpoint_seq is None:
            return self._decoded(graph, record, "inputs")
        key = (record.graph, record.thread_id, record.checkpoint_seq)
        if key not in self._states:
            config = thread_config(record.thread_id, self.namespace,
                                   format_checkpoint_id(record.checkpoint_seq))
            try:
                self._states[key] = _object(graph.get_state(config).values)
            except ThreadloomError:
                self._states[key] = {}
        return self._states[key]

    def _parents(self, record: ExecutionRecord) -> dict[str, str]:
        """Each ancestor's identifier -> the id of its latest execution before this one
        (ancestors within the run; parents recorded by an earlier run are given by id)."""
        if not record.parents:
            return {}
        key = (record.thread_id, record.run_id)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = {
                e.id: e for e in self.store.list_executions(
                    run_id=record.run_id, thread_id=record.thread_id, namespace=self.namespace)
            }
        found: dict[str, ExecutionRecord] = {}
        todo = list(record.parents)
        seen: set[str] = set()
        out: dict[str, str] = {}
        while todo:
            parent_id = todo.pop()
            if parent_id in seen:
                continue
            seen.add(parent_id)
            parent = run.get(parent_id)
            if parent is None:
                out.setdefault(parent_id, parent_id)
                continue
            best = found.get(parent.node)
            if best is None or (parent.step, parent.created_at) > (best.step, best.created_at):
                found[parent.node] = parent
            todo.extend(parent.parents)
        out.update({node: e.id for node, e in found.items()})
        return out


def _page_states(store: RuntimeStore, namespace: str, *, status: str | None, limit: int,
                 after: tuple[float, str] | None, descending: bool,
                 **filters: Any) -> tuple[list[ExecutionRecord], str | None]:
    """A page of executions for a state list, and its next cursor."""
    engine: str | None = None
    timed_out: bool | None = None
    keep: Callable[[ExecutionRecord], bool] = lambda _: True  # noqa: E731
    if status is not None:
        if status not in STATE_STATUSES:
            raise InvalidRequestError(
                f"unknown status {status!r}; use one of {', '.join(STATE_STATUSES)}")
        engine, timed_out, retrying = STATE_STATUSES[status]
        if retrying is not None:
            keep = lambda e: _retrying(e) == retrying  # noqa: E731
    found: list[ExecutionRecord] = []
    while len(found) <= limit:
        batch = store.page_executions(
            namespace=namespace, status=engine, timed_out=timed_out, after=after,
            descending=descending, limit=limit + 1, **filters)
        found += [e for e in batch if keep(e)]
        if len(batch) <= limit:
            break
        after = (batch[-1].created_at, batch[-1].id)
    page = found[:limit]
    more = len(found) > limit
    return page, encode_cursor(page[-1].created_at, page[-1].id) if more else None


def _states_query(status: str | None, since: str | None, until: str | None,
                  run_id_prefix: str | None, cursor: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "created_after": _time("since", since),
        "created_before": _time("until", until),
        "run_id_prefix": _prefix(run_id_prefix),
        "after": _time_cursor(cursor),
    }


# -- routes: states ----------------------------------------------------------------------------


@router.post("/graph/{graph}/states/create", response_model=CreateResponse,
             summary="Create states: start a run whose first step runs the given nodes")
def create_states(ns: str, graph: str, body: CreateRequest, request: Request, store: Store,
                  graphs: Graphs, who: Operator) -> Response:
    """Start run ``run_id`` of ``graph`` on ``thread_id`` (default: a thread named after the
    run): each state is a first execution of node ``identifier`` with ``inputs`` (as
    ``Send(identifier, inputs)`` from START), and the run then follows the graph's edges.
    Posting the same body again answers the same states; the same run id with another body
    is a 409; an unknown graph or node a 404."""
    _reach(who, ns, f"no graph {graph!r}")
    _check_id("run_id", body.run_id)
    found = find_graph(graphs, graph)
    if found is None:
        raise NotFoundError(f"no graph {graph!r}")
    graph_name, compiled = found
    missing = [s.identifier for s in body.states if s.identifier not in compiled.spec.nodes]
    if missing:
        raise NotFoundError(f"graph {graph_name!r} has no node {missing[0]!r}")
    if "/" in body.run_id:
        raise InvalidRequestError("a run id here is 1 to 255 printable characters other than '/'")
    thread_id = check_thread_id(body.thread_id or body.run_id)
    goto = [{"node": s.identifier, "input": s.inputs} for s in body.states]
    record = store.get_run(body.run_id, namespace=ns)
    if record is None:
        if store.get_checkpoint(thread_id, namespace=ns) is not None:
            raise ConflictError(
                f"thread {thread_id!r} has state already: created states start a new thread")
        asked = RunRequest(assistant_id=graph_name, command={"goto": goto},
                           if_not_exists="create", multitask_strategy="reject",
                           run_id=body.run_id, traceparent=request.headers.get("traceparent"))
        try:
            record, _ = create_run(store, graphs, ns, thread_id, asked)
        except RunConflictError:
            record = store.get_run(body.run_id, namespace=ns)
            if record is None:
                raise
            _check_same(store, ns, record, graph_name, thread_id, goto)
    else:
        _check_same(store, ns, record, graph_name, thread_id, goto)
    states = [
        {
            "state_id": execution_id(thread_id, -1, s.identifier, index),
            "node_name": _node_name(compiled, s.identifier),
            "identifier": s.identifier,
            "graph_name": graph_name,
            "run_id": record.run_id,
            "inputs": s.inputs,
            "created_at": iso(record.created_at),
        }
        for index, s in enumerate(body.states)
    ]
    return json_response({"status": "CREATED", "states": states})


def _check_same(store: RuntimeStore, ns: str, record: RunRecord, graph_name: str,
                thread_id: str, goto: list[dict[str, Any]]) -> None:
    """Nothing, if run ``record`` was created by the same create-states body; else 409."""
    queued = store.get_queued(ns, record.run_id)
    asked: Any = None
    if queued is not None:
        try:
            asked = (json.loads(queued.payload or b"{}").get("command") or {}).get("goto")
        except (ValueError, AttributeError):
            asked = None
    if record.graph != graph_name or record.thread_id != thread_id or asked != goto:
        raise ConflictError(
            f"run {record.run_id!r} exists with another graph, thread or states")


@router.get("/states/", response_model=CurrentStates,
            summary="List the namespace's states, newest first")
def current_states(ns: str, store: Store, graphs: Graphs, who: Viewer,
                   status: str | None = None, since: Since = None, until: Until = None,
                   run_id_prefix: Prefix = None, limit: Limit = DEFAULT_LIMIT,
                   cursor: Cursor = None) -> Response:
    _reach(who, ns, f"no namespace {ns!r}")
    page, next_cursor = _page_states(store, ns, limit=limit, descending=True,
                                     **_states_query(status, since, until, run_id_prefix,
                                                     cursor))
    items = _Items(store, graphs, ns)
    states = [items.item(e) for e in page]
    return json_response({
        "namespace": ns,
        "count": len(states),
        "states": states,
        "run_ids": list(dict.fromkeys(e.run_id for e in page)),
        "next_cursor": next_cursor,
    })


@router.get("/states/run/{run_id}", response_model=StatesByRunId,
            summary="List a run's states in execution order")
def states_by_run(ns: str, run_id: str, store: Store, graphs: Graphs, who: Viewer,
                  status: str | None = None, since: Since = None, until: Until = None,
                  run_id_prefix: Prefix = None, limit: Limit = DEFAULT_LIMIT,
                  cursor: Cursor = None) -> Response:
    _reach(who, ns, f"no namespace {ns!r}")
    _check_id("run_id", run_id)
    page, next_cursor = _page_states(store, ns, run_id=run_id, limit=limit, descending=False,
                                     **_states_query(status, since, until, run_id_prefix,
                                                     cursor))
    items = _Items(store, graphs, ns)
    states = [items.item(e) for e in page]
    return json_response({"namespace": ns, "run_id": run_id, "count": len(states),
                          "states": states, "next_cursor": next_cursor})


# -- routes: runs ------------------------------------------------------------------------------


@router.get("/runs", response_model=RunList, summary="List the namespace's runs, newest first")
def list_runs(ns: str, store: Store, who: Viewer, status: str | None = None,
              graph: str | None = None, since: Since = None, until: Until = None,
              run_id_prefix: Prefix = None, limit: Limit = DEFAULT_LIMIT,
              cursor: Cursor = None) -> Response:
    _reach(who, ns, f"no namespace {ns!r}")
    _check_id("graph", graph)
    engine: str | None = None
    timed_out: bool | None = None
    if status is not None:
        if status not in RUN_STATUSES:
            raise InvalidRequestError(
                f"unknown status {status!r}; use one of {', '.join(RUN_STATUSES)}")
        engine, timed_out = RUN_STATUSES[status]
    found = store.page_runs(
        namespace=ns, status=engine, timed_out=timed_out, graph=graph,
        run_id_prefix=_prefix(run_id_prefix), created_after=_time("since", since),
        created_before=_time("until", until), after=_time_cursor(cursor), limit=limit + 1)
    page = found[:limit]
    next_cursor = (encode_cursor(page[-1].created_at, page[-1].run_id)
                   if len(found) > limit else None)
    return json_response({"namespace": ns, "count": len(page),
                          "runs": [run_item(r) for r in page], "next_cursor": next_cursor})


def _run(store: RuntimeStore, who: Principal, ns: str, run_id: str) -> RunRecord:
    """The run ``run_id`` of ``ns``, or 404 (also when the key does not cover ``ns``)."""
    missing = f"no run {run_id!r}"
    _reach(who, ns, missing)
    _check_id("run_id", run_id)
    record = store.get_run(run_id, namespace=ns)
    if record is None:
        raise NotFoundError(missing)
    return record


@router.post("/runs/{run_id}/cancel", response_model=RunItem, summary="Cancel a whole run")
def cancel(ns: str, run_id: str, store: Store, who: Operator) -> Response:
    """Stop the run: a queued one never starts, a running one stops at its next step, one
    that waits for a human (``INTERRUPTED``) is recorded cancelled with its waiting states.
    Answers the run as it is now; a finished run is answered unchanged."""
    record = _run(store, who, ns, run_id)
    if record.status in ("pending", "running"):
        cancel_run(store, ns, record.thread_id, run_id)
    elif record.status == "interrupted":
        _cancel_paused(store, record)
    return json_response(run_item(store.get_run(run_id, namespace=ns) or record))


def _cancel_paused(store: RuntimeStore, record: RunRecord) -> None:
    """Record a run that waits for a human (``interrupted``, so no worker holds it) as
    cancelled, with its waiting executions, holding its thread's lease meanwhile so that no
    resume runs it at the same time.

    Raises:
        ThreadBusyError: a worker holds the thread (it is being resumed): 409.
    """
    ns, thread_id = record.namespace, record.thread_id
    lease = store.acquire_lease(thread_id, f"api-cancel-{record.run_id}", 10.0, namespace=ns)
    try:
        current = store.get_run(record.run_id, namespace=ns)
        if current is None or current.status != "interrupted":
            return
        now = time.time()
        stopped = [
            replace(e, status="CANCELLED", ended_at=now)
            for e in store.list_executions(run_id=record.run_id, thread_id=thread_id,
                                           namespace=ns)
            if e.status in ("INTERRUPTED", "PENDING", "RUNNING")
        ]
        cancelled = replace(current, status="cancelled", updated_at=now, ended_at=now)
        store.commit([Commit(thread_id, namespace=ns, lease_token=lease.token,
                             runs=[cancelled], executions=stopped)])
    finally:
        store.release_lease(lease)


@router.post("/runs/{run_id}/retry", response_model=RunItem,
             summary="Retry a failed or cancelled run from its last checkpoint")
def retry(ns: str, run_id: str, store: Store, who: Operator) -> Response:
    """Queue a failed or cancelled run again: a worker continues it from its last
    checkpoint, so the states that succeeded are not run again. 409 for a run in any other
    status."""
    record = _run(store, who, ns, run_id)
    if record.status not in ("failed", "cancelled"):
        raise ConflictError(
            f"run {run_id!r} is {_run_status(record)}: only an ERRORED, TIMEDOUT or "
            "CANCELLED run can be retried")
    retry_run(store, ns, run_id)
    return json_response(run_item(store.get_run(run_id, namespace=ns) or record))


@router.get("/runs/{run_id}/metrics", summary="A run's counts, attempts and durations")
def metrics(ns: str, run_id: str, store: Store, who: Viewer) -> Response:
    """From the run's stored records: steps, states by status, attempts and retries, and
    durations (the run's, and per node: count, total, mean and max of the executions that
    started and ended); from the statistics stored with the run: how long it waited in the
    queue (``queue_wait_ms``, ``null`` if it was not queued or has not started) and the bytes
    its commits wrote (``bytes_written``); and the id of its trace (``trace_id``)."""
    record = _run(store, who, ns, run_id)
    executions = store.list_executions(run_id=run_id, thread_id=record.thread_id,
                                       namespace=ns)
    by_status: dict[str, int] = {}
    nodes: dict[str, list[float]] = {}
    attempts = 0
    for e in executions:
        by_status[state_status(e)] = by_status.get(state_status(e), 0) + 1
        attempts += max(e.attempt, len(e.attempts))
        if e.started_at is not None and e.ended_at is not None:
            nodes.setdefault(e.node, []).append((e.ended_at - e.started_at) * 1000)
    item = run_item(record)
    queued = store.get_queued(ns, run_id)
    return json_response({
        "namespace": ns,
        "run_id": run_id,
        "status": item["status"],
        "steps": record.steps,
        "executions": len(executions),
        "states_by_status": by_status,
        "attempts": attempts,
        "retries": sum(max(0, max(e.attempt, len(e.attempts)) - 1) for e in executions),
        "run_attempts": queued.attempts if queued is not None else None,
        "duration_ms": item["duration_ms"],
        "queue_wait_ms": record.stats.get("queue_wait_ms"),
        "bytes_written": int(record.stats.get("bytes_written", 0)),
        "trace_id": trace_id(run_id, record.traceparent),
        "nodes": {
            node: {"count": len(ms), "total_ms": round(sum(ms), 3),
                   "mean_ms": round(sum(ms) / len(ms), 3), "max_ms": round(max(ms), 3)}
            for node, ms in sorted(nodes.items())
        },
        "as_of": iso(time.time()),
    })


@router.get("/runs/{run_id}/checkpoints", response_model=CheckpointList,
            summary="A run's checkpoints in order, to diff state between steps")
def checkpoints(ns: str, run_id: str, store: Store, graphs: Graphs, who: Viewer,
                limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
    record = _run(store, who, ns, run_id)
    after = -1
    if cursor is not None:
        key = _decode(cursor)
        if len(key) != 1 or not isinstance(key[0], int) or isinstance(key[0], bool):
            raise InvalidRequestError("cursor is not one this API gave out")
        after = key[0]
    found = find_graph(graphs, record.graph)
    written = sorted((c for c in store.list_checkpoints(record.thread_id, run_id=run_id,
                                                        namespace=ns) if c.seq > after),
                     key=lambda c: c.seq)
    page = written[:limit]
    items = []
    for cp in page:
        values: Any = None
        writes: Any = None
        if found is not None:
            config = thread_config(record.thread_id, ns, cp.checkpoint_id)
            snapshot = found[1].get_state(config)
            values = to_jsonable(snapshot.values)
            writes = to_jsonable((snapshot.metadata or {}).get("writes"))
        items.append({"checkpoint_id": cp.checkpoint_id, "step": cp.step,
                      "created_at": iso(cp.created_at), "values": values,
                      "next": list(cp.next), "writes": writes})
    next_cursor = encode_cursor(page[-1].seq) if len(written) > limit else None
    return json_response({"namespace": ns, "run_id": run_id, "count": len(items),
                          "checkpoints": items, "next_cursor": next_cursor})
