"""The runs service: what the runs routes (and the CLI) do, apart from HTTP.

- :func:`create_run` checks a run request, queues the run (its ``pending`` record and its
  queue row, in one transaction, with the multitask strategy) and names the thread's graph;
- :func:`wait_for_run` waits, without busy polling, until a run leaves the queue (the
  ``"done"`` signal wakes it; a slow re-read covers a missed signal);
- :func:`run_result` is what ``wait`` / ``join`` answer: the thread's values, with
  ``__interrupt__`` when the run paused, or ``__error__`` when it failed;
- :func:`cancel_run`, :func:`retry_run`, :func:`run_json` (the run object of LangGraph's API).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from threadloom._json import to_jsonable
from threadloom._tracing import valid_traceparent
from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.queue import (
    AuditEvent,
    CancelAction,
    MultitaskStrategy,
    QueuedRun,
    RuntimeStore,
)
from threadloom.config import resolve_recursion_limit, validate_run_id
from threadloom.errors import CheckpointNotFoundError, InvalidConfigError
from threadloom.graph._threads import checkpoint_seq
from threadloom.graph.compiled import CompiledGraph
from threadloom.server._done import done_watcher
from threadloom.server._shapes import interrupt_json, iso
from threadloom.server._threadinfo import check_thread_id, find_graph, thread_config
from threadloom.server.deps import assistant_id_for
from threadloom.server.errors import InvalidRequestError, NotFoundError

__all__ = [
    "RunRequest",
    "await_run",
    "cancel_run",
    "create_run",
    "find_run",
    "is_done",
    "retry_run",
    "run_json",
    "run_result",
    "run_stats",
    "run_status",
    "wait_for_run",
]

log = logging.getLogger(__name__)

STREAM_MODES = ("values", "updates", "custom", "debug")
_HIDDEN = "threadloom."  # run metadata keys the engine keeps for itself
_TIMEOUTS = ("run_timeout", "node_timeout")
_T = TypeVar("_T")


@dataclass(slots=True)
class RunRequest:
    """A run as a client asks for it (the fields of LangGraph's run-create body that the
    runtime acts on)."""

    assistant_id: str
    input: Any = None
    command: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: list[str] | None = None
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: list[str] | Literal["*"] | None = None
    interrupt_after: list[str] | Literal["*"] | None = None
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    after_seconds: float | None = None
    checkpoint_id: str | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    timeout: float | None = None
    run_id: str | None = None
    traceparent: str | None = None  # the creating HTTP request's header (issue 14)
    streamed: bool = False  # the request streams the run's events (a ``stream`` route)


def create_run(store: RuntimeStore, graphs: Mapping[str, CompiledGraph], namespace: str,
               thread_id: str | None, request: RunRequest, *,
               reread: bool = True,
               audit: AuditEvent | None = None,
               claim_for: tuple[str, float] | None = None) -> tuple[RunRecord, QueuedRun]:
    """Queue a run of ``request`` on ``thread_id`` (``None``: a new thread, as for a
    stateless run) in ``namespace``. Returns the run and its queue row as stored
    (``reread=False``: as written, for a caller that needs their ids only). ``audit`` is
    logged with the run's ids, in the transaction that queues it. ``claim_for``: ``(worker,
    ttl)`` of a worker of this process that executes the run itself if it can start at once
    (``enqueue_claimed``); the row returned is then its claim (``status == "claimed"``).

    Raises:
        NotFoundError: no such assistant, or no such thread and ``if_not_exists`` is not
            ``create``.
        InvalidRequestError: a stream mode, breakpoint, run id or option is not acceptable.
        ThreadBusyError: ``reject`` and the thread has an active run.
        RunConflictError: the run id is taken.
    """
    found = find_graph(graphs, request.assistant_id)
    if found is None:
        raise NotFoundError(f"no assistant {request.assistant_id!r}")
    graph_name, graph = found
    thread = None
    if thread_id is None:
        thread_id = str(uuid.uuid4())
    else:
        check_thread_id(thread_id)
        thread = store.get_thread(thread_id, namespace=namespace)
        if thread is None and request.if_not_exists != "create":
            raise NotFoundError(f"no thread {thread_id!r}")
    run_id = _run_id(request.run_id)
    payload = _payload(graph, request)
    _check_checkpoint(store, namespace, thread_id, request)
    now = time.time()
    metadata = dict(request.metadata or {})
    record = RunRecord(run_id, thread_id, graph_name, "pending", namespace=namespace,
                       metadata=metadata, traceparent=valid_traceparent(request.traceparent))
    available = now + request.after_seconds if request.after_seconds else 0.0
    row = QueuedRun(namespace, run_id, thread_id, graph_name, payload, available_at=available,
                    timeout=request.timeout)
    # the thread's metadata names its graph (graph_id), as LangGraph's server does
    named = thread is not None and thread.metadata.get("graph_id") == graph_name
    event = None if audit is None else replace(audit, target=run_id, run_id=run_id,
                                               thread_id=thread_id)
    metadata_keys = None if named else {"graph_id": graph_name}
    if claim_for is not None:
        claim = store.enqueue_claimed(record, row, *claim_for, request.multitask_strategy,
                                      thread_metadata=metadata_keys, audit=event)
        row = claim or row
    else:
        store.enqueue(record, row, request.multitask_strategy, thread_metadata=metadata_keys,
                      audit=event)
    if not reread:
        return record, row
    queued = store.get_queued(namespace, run_id) or row
    stored = store.get_run(run_id, namespace=namespace) or record
    return stored, queued


def _check_checkpoint(store: RuntimeStore, namespace: str, thread_id: str,
                      request: RunRequest) -> None:
    """A run from a checkpoint needs that checkpoint (the worker could only fail the run).

    Raises:
        CheckpointNotFoundError: the thread has no such checkpoint.
    """
    configurable = (request.config or {}).get("configurable") or {}
    checkpoint_id = request.checkpoint_id or configurable.get("checkpoint_id")
    seq = checkpoint_seq(checkpoint_id)
    if seq is not None and store.get_checkpoint(thread_id, "", seq,
                                                namespace=namespace) is None:
        raise CheckpointNotFoundError(
            f"no checkpoint {checkpoint_id!r} on thread {thread_id!r}")


def _run_id(given: str | None) -> str:
    if given is None:
        return str(uuid.uuid4())
    try:
        return validate_run_id(given)
    except InvalidConfigError as exc:
        raise InvalidRequestError(str(exc)) from None


def _payload(graph: CompiledGraph, request: RunRequest) -> bytes:
    modes = request.stream_mode or ["values"]
    unknown = [m for m in modes if m not in STREAM_MODES]
    if unknown:
        raise InvalidRequestError(
            f"stream mode {unknown[0]!r} is not supported; use {', '.join(STREAM_MODES)}")
    for key in ("interrupt_before", "interrupt_after"):
        names = getattr(request, key)
        if names is None or names == "*":
            continue
        missing = [n for n in names if n != "*" and n not in graph.spec.nodes]
        if missing:
            raise InvalidRequestError(
                f"{key} names unknown node {missing[0]!r}; the graph's nodes are "
                f"{sorted(graph.spec.nodes)}")
    if request.after_seconds is not None and request.after_seconds < 0:
        raise InvalidRequestError("after_seconds must not be negative")
    if request.timeout is not None and request.timeout <= 0:
        raise InvalidRequestError("timeout must be positive")
    if request.input is not None and request.command:
        raise InvalidRequestError("give input or command, not both")
    config = dict(request.config or {})
    configurable = config.get("configurable") or {}
    if not isinstance(configurable, dict):
        raise InvalidRequestError("config.configurable must be an object")
    configurable = dict(configurable)
    tags = config.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise InvalidRequestError("config.tags must be a list of strings")
    if config.get("recursion_limit") is not None:
        resolve_recursion_limit(config)  # InvalidConfigError: 400, as the engine would say
    checkpoint_id = request.checkpoint_id or configurable.pop("checkpoint_id", None)
    checkpoint_seq(checkpoint_id)  # a malformed id is refused now, not by the worker
    config["configurable"] = configurable
    body = {
        "input": request.input,
        "command": request.command or None,
        "config": config,
        "context": request.context,
        "metadata": request.metadata or {},
        "stream_mode": list(dict.fromkeys(modes)),
        "stream_subgraphs": request.stream_subgraphs,
        "stream_resumable": request.stream_resumable,
        "interrupt_before": request.interrupt_before,
        "interrupt_after": request.interrupt_after,
        "durability": request.durability,
        "checkpoint_id": checkpoint_id,
        "multitask_strategy": request.multitask_strategy,
        "resume": False,
        # whether someone will read the events as they come: the worker writes them at once
        # then, and may hold the others' back a little (see threadloom.worker._events)
        "streamed": request.streamed or request.stream_resumable,
    }
    try:
        return json.dumps(body, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the run request is not JSON: {exc}") from None


def find_run(store: RuntimeStore, namespace: str, thread_id: str, run_id: str) -> RunRecord:
    """The run ``run_id`` of thread ``thread_id`` in ``namespace``.

    Raises:
        InvalidRequestError: ``run_id`` is not a run id (1 to 255 printable characters).
        NotFoundError: there is none (also for a rolled-back run).
    """
    record = store.get_run(_run_id(run_id), namespace=namespace)
    if record is None or record.namespace != namespace or record.thread_id != thread_id:
        raise NotFoundError(f"no run {run_id!r} on thread {thread_id!r}")
    return record


def is_done(store: RuntimeStore, namespace: str, run_id: str) -> bool:
    """Whether the run left the queue (finished, cancelled, rolled back, or never queued)."""
    row = store.get_queued(namespace, run_id)
    if row is None:
        return True
    return row.status == "done"


async def wait_for_run(store: RuntimeStore, namespace: str, run_id: str, *,
                       poll: float = 1.0, timeout: float | None = None,
                       fresh: bool = False) -> bool:
    """Wait until the run leaves the queue (see :func:`await_run`). Returns whether it did
    (``False`` when ``timeout`` passed first)."""

    def read() -> bool | None:
        return True if is_done(store, namespace, run_id) else None

    return bool(await await_run(store, namespace, run_id, read, poll=poll, timeout=timeout,
                                fresh=fresh, inline=store.reads_are_local))


async def await_run(store: RuntimeStore, namespace: str, run_id: str,
                    read: Callable[[], _T | None], *, poll: float = 1.0,
                    timeout: float | None = None, fresh: bool = False,
                    inline: bool = False) -> _T | None:
    """Wait until ``read()`` (called in a worker thread, once the run may have left the
    queue; on the event loop if ``inline``, for a read of a store whose reads are local)
    returns something other than ``None``, and return that (``None`` when ``timeout``
    passed first). Woken by the ``"done"`` signal (one subscription per
    process, :mod:`threadloom.server._done`), with a re-read every ``poll`` seconds in case
    a signal was missed. ``fresh``: the caller just queued the run, so the first read waits
    for its signal (or the first ``poll``)."""
    loop = asyncio.get_running_loop()
    name = f"{namespace}/{run_id}"
    watcher = done_watcher(store)
    woken = watcher.watch(name)
    deadline = None if timeout is None else loop.time() + timeout
    look = not fresh
    try:
        while True:
            if look or woken.is_set():
                found = read() if inline else await asyncio.to_thread(read)
                if found is not None:
                    return found
                watcher.rearm(name, woken)  # a signal of an earlier attempt, or none
            look = True
            wait = poll if deadline is None else min(poll, deadline - loop.time())
            if wait <= 0:
                return None
            try:
                await asyncio.wait_for(woken.wait(), wait)
            except TimeoutError:
                pass
    finally:
        watcher.forget(name, woken)


def run_status(record: RunRecord) -> str:
    """The run's status in LangGraph's words (``runtime.md``'s table)."""
    status = record.status
    if status == "succeeded":
        return "success"
    if status == "failed":
        code = record.metadata.get("threadloom.error_code")
        return "timeout" if code in _TIMEOUTS else "error"
    if status == "cancelled":
        return "interrupted"
    return status


def run_json(record: RunRecord, queued: QueuedRun | None) -> dict[str, Any]:
    """The run object of LangGraph's API."""
    kwargs: dict[str, Any] = {}
    strategy = "enqueue"
    if queued is not None:
        try:
            payload = json.loads(queued.payload or b"{}")
        except ValueError:
            payload = {}
        if isinstance(payload, dict):
            strategy = payload.pop("multitask_strategy", None) or strategy
            payload.pop("resume", None)
            payload.pop("streamed", None)
            kwargs = payload
    return {
        "run_id": record.run_id,
        "thread_id": record.thread_id,
        "assistant_id": assistant_id_for(record.graph),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "status": run_status(record),
        "metadata": to_jsonable({k: v for k, v in record.metadata.items()
                                 if not k.startswith(_HIDDEN)}),
        "kwargs": kwargs,
        "multitask_strategy": strategy,
        "stats": run_stats(record),
    }


def run_stats(record: RunRecord) -> dict[str, Any]:
    """What the run did and cost, as its record holds it (a key LangGraph's run object does
    not have; clients ignore it): steps and node executions, retried attempts, per-node
    durations, the wait in the queue (``None``: not queued, or not started yet) and the bytes
    its commits wrote."""
    stats = record.stats
    return {"steps": record.steps, "executions": record.executions,
            "retries": int(stats.get("retries", 0)),
            "queue_wait_ms": stats.get("queue_wait_ms"),
            "bytes_written": int(stats.get("bytes_written", 0)),
            "nodes": stats.get("nodes", {})}


def run_result(store: RuntimeStore, graphs: Mapping[str, CompiledGraph],
               record: RunRecord) -> dict[str, Any]:
    """What ``wait`` and ``join`` answer for a run that left the queue."""
    if record.status == "failed":
        error, _, message = (record.error or "Error: ").partition(": ")
        return {"__error__": {"error": error or "Error", "message": message}}
    found = find_graph(graphs, record.graph)
    if found is None:
        return {}
    snapshot = found[1].get_state(thread_config(record.thread_id, record.namespace))
    values = to_jsonable(snapshot.values)
    body: dict[str, Any] = dict(values) if isinstance(values, dict) else {"value": values}
    if record.status == "interrupted" and snapshot.interrupts:
        body["__interrupt__"] = [interrupt_json(i) for i in snapshot.interrupts]
    return body


def cancel_run(store: RuntimeStore, namespace: str, thread_id: str, run_id: str,
               action: CancelAction = "interrupt", *,
               audit: AuditEvent | None = None) -> str:
    """Ask for the run to be cancelled (see ``RuntimeStore.request_cancel``; ``audit`` is
    logged in its transaction, with what the cancellation did as its outcome).

    Raises:
        NotFoundError: no such run on the thread.
    """
    find_run(store, namespace, thread_id, run_id)
    outcome = store.request_cancel(namespace, run_id, action, audit=audit)
    if outcome == "unknown":
        raise NotFoundError(f"no run {run_id!r} on thread {thread_id!r}")
    log.info("cancel (%s) of run %r in namespace %r: %s", action, run_id, namespace, outcome)
    return outcome


def retry_run(store: RuntimeStore, namespace: str, run_id: str, *,
              audit: AuditEvent | None = None) -> QueuedRun:
    """Queue a failed or cancelled run again: a worker continues it from its last
    checkpoint (``audit`` is logged in the same transaction).

    Raises:
        RunNotFoundError: no such run.
        ThreadBusyError: the run is queued or running already.
    """
    row = store.get_queued(namespace, run_id)
    payload: dict[str, Any] = {}
    if row is not None:
        try:
            payload = json.loads(row.payload or b"{}")
        except ValueError:
            payload = {}
    payload["resume"] = True
    return store.requeue(namespace, run_id, payload=json.dumps(payload).encode(), audit=audit)
