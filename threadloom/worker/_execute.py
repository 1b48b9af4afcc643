"""Executing one claimed run: from its queue row and payload to the engine's stream, the run's
events, and what becomes of the claim.

A claimed run is either **fresh** (its record is ``pending`` and no process started it: it
starts with the payload's input or command) or **continued** (it was started before: its
worker died, it was handed back at shutdown, or it was requeued by a retry; it continues from
its own last checkpoint, ``graph.stream(None, {"run_id": ...})``, so under ``sync`` no
completed step runs again).

Events: ``metadata`` ``{run_id, attempt}`` first, then one event per stream chunk, then
``error`` on failure, then ``end`` once the run's record is final. A run that is handed back
or whose claim was lost gets no ``end``: its next attempt writes the rest.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from threadloom.checkpoint.base import Commit, RunRecord
from threadloom.checkpoint.queue import CancelAction, QueuedRun, RuntimeStore
from threadloom.errors import (
    LeaseLostError,
    RunCancelled,
    StoreUnavailableError,
    ThreadBusyError,
)
from threadloom.graph.compiled import CompiledGraph
from threadloom.types import CancelToken, Command, RunnableConfig, Send, StreamMode
from threadloom.worker._events import UNWATCHED_DELAY, EventBuffer, EventPump

__all__ = ["Claimed", "Outcome", "execute", "run_config"]

_INTERRUPT = "__interrupt__"  # the key of a paused run's interrupts in its result

log = logging.getLogger("threadloom.worker")

Outcome = Literal["finished", "released", "lost"]
"""What became of a claim: the run ended (``finish_claim``), it was handed back
(``release_claim``), or the claim was lost (someone else holds the run now)."""

_MODES: tuple[StreamMode, ...] = ("values", "updates", "custom", "debug")


@dataclass(slots=True)
class Claimed:
    """A run this worker holds: its claim and the means to stop it.

    ``action`` is how it is being stopped: a cancellation (``interrupt`` / ``rollback``),
    ``handback`` (the worker shuts down) or ``lost`` (the claim lapsed and another worker may
    have it)."""

    claim: QueuedRun
    token: CancelToken = field(default_factory=CancelToken)
    action: CancelAction | Literal["handback", "lost"] | None = None

    def stop(self, action: CancelAction | Literal["handback", "lost"], reason: str) -> None:
        """Stop the run at its next step boundary (a cancellation beats a hand-back)."""
        if self.action is None or self.action == "handback":
            self.action = action
        self.token.cancel(reason)


def execute(store: RuntimeStore, graph: CompiledGraph, held: Claimed, pump: EventPump | None,
            lease_wait: float) -> Outcome:
    """Run ``held``'s claimed run to its end (or until it is stopped) and settle the claim.

    ``lease_wait``: how long to wait for the thread's lease (a dead worker's lapses within
    its run lease)."""
    claim = held.claim
    ns, run_id = claim.namespace, claim.run_id
    payload = _payload(claim)
    fresh = claim.attempts == 1 and not payload.get("resume")
    if not fresh:  # claimed before, or queued again: what did the run do so far?
        record = store.get_run(run_id, namespace=ns)
        if record is None:  # rolled back meanwhile
            store.finish_claim(claim)
            return "finished"
        fresh = _fresh(record, payload)
    # a run someone streams has its events written at once; the others' may wait a little
    # (most end first, and write them with the claim's end)
    events = EventBuffer(store, ns, run_id, pump,
                         0.0 if payload.get("streamed", True) else UNWATCHED_DELAY)
    events.add("metadata", {"run_id": run_id, "attempt": claim.attempts})
    asked = set(payload.get("stream_mode") or ()) | {"values"}
    modes: list[StreamMode] = [m for m in _MODES if m in asked]
    error: BaseException | None = None
    result: Any = None
    try:
        config = run_config(claim, payload, held.token, lease_wait, fresh=fresh)
        # the chunks are recorded, not pulled: the run streams into the buffer from this
        # thread (no producer thread and hand-off per chunk, as graph.stream has)
        result = graph.stream_to(events.add, _input(payload) if fresh else None,
                                 cast("RunnableConfig", config), stream_mode=modes)
    except RunCancelled as exc:
        error = exc
    except (ThreadBusyError, StoreUnavailableError) as exc:
        # the thread's lease is still held (a worker that lost its claim has not stopped
        # yet), or the store is away: try again a little later
        log.warning("run %r handed back: %s", run_id, exc)
        events.flush()
        store.release_claim(claim, delay=min(lease_wait, 5.0))
        return "released"
    except LeaseLostError:
        events.flush()
        return "lost"  # another worker took the thread over: the run is its now
    except Exception as exc:
        error = exc
        events.add("error", {"error": type(exc).__name__, "message": str(exc)})
        _record_refusal(store, claim, exc)
    return _settle(store, held, events, error, result, modes)


def _record_refusal(store: RuntimeStore, claim: QueuedRun, exc: Exception) -> None:
    """A run the engine refused before starting it (a config it cannot run, an input that
    does not fit) has no failure on record, since the engine records only runs it started:
    record it failed here, so that it does not stay ``pending`` forever."""
    try:
        record = store.get_run(claim.run_id, namespace=claim.namespace)
        if record is None or record.status != "pending":
            return  # the engine recorded how it ended
        now = time.time()
        failed = replace(record, status="failed", error=f"{type(exc).__name__}: {exc}",
                         updated_at=now, ended_at=now)
        store.commit([Commit(record.thread_id, namespace=claim.namespace, runs=[failed])])
    except Exception:  # the claim still ends; its record says pending, as before
        log.exception("could not record the failure of run %r", claim.run_id)


def _settle(store: RuntimeStore, held: Claimed, events: EventBuffer,
            error: BaseException | None, result: Any, modes: list[StreamMode]) -> Outcome:
    claim = held.claim
    if isinstance(error, RunCancelled):  # stopped: how, says the action (None: interrupt)
        if held.action == "lost":
            events.flush()
            return "lost"
        if held.action == "handback":
            events.flush()
            store.release_claim(claim)
            return "released"
        if held.action == "rollback":
            events.flush()
            store.rollback_run(claim.namespace, claim.run_id)
            store.finish_claim(claim)  # gone with the run; rollback_run signalled "done"
            return "finished"
    if error is None and "values" in modes:
        _interrupt_values(result, events)
    events.add("end", None)  # the record is final: "end" goes with the last events
    return "finished" if events.finish(claim) else "lost"


def _interrupt_values(result: Any, events: EventBuffer) -> None:
    """A run that paused on ``interrupt()`` ends its ``values`` stream with the pending
    interrupts, as LangGraph's server does: ``{"__interrupt__": [{value, id}, ...]}``.
    ``result`` is what the run returned (a paused run's holds its interrupts)."""
    pending = result.get(_INTERRUPT) if isinstance(result, dict) else None
    if pending:
        events.add("values", {_INTERRUPT: list(pending)})


def _payload(claim: QueuedRun) -> dict[str, Any]:
    try:
        payload = json.loads(claim.payload or b"{}")
    except ValueError:
        payload = {}
    return payload if isinstance(payload, dict) else {}


def _fresh(record: RunRecord, payload: dict[str, Any]) -> bool:
    """Whether the run starts now (with its input), rather than continuing what it did. A
    first claim of a run queued once is fresh without asking: a run's first attempt is the
    one that starts it (a retry or an API resume is queued again with ``resume``)."""
    return (record.status == "pending" and record.started_at is None
            and not payload.get("resume"))


def _input(payload: dict[str, Any]) -> Any:
    """What a fresh run starts with: its command, else its input."""
    command = payload.get("command")
    if isinstance(command, dict) and command:
        return Command(update=command.get("update"), resume=command.get("resume"),
                       goto=_goto(command.get("goto")))
    return payload.get("input")


def _goto(goto: Any) -> Any:
    """A command's ``goto`` with each ``{"node", "input"}`` object (a ``Send`` in
    LangGraph's API, and what the seed 001 create-states route queues) as a :class:`Send`."""
    if not goto:
        return ()
    items = goto if isinstance(goto, list) else [goto]
    return [Send(g["node"], g.get("input")) if isinstance(g, dict) else g for g in items]


def run_config(claim: QueuedRun, payload: dict[str, Any], token: CancelToken,
               lease_wait: float, *, fresh: bool = True) -> dict[str, Any]:
    """The engine config of a claimed run (see the module docstring of
    :mod:`threadloom.checkpoint.queue` for the payload)."""
    raw = payload.get("config")
    given: dict[str, Any] = raw if isinstance(raw, dict) else {}
    configurable = dict(given.get("configurable") or {})
    for key in ("thread_id", "run_id", "checkpoint_id", "checkpoint_ns"):
        configurable.pop(key, None)
    config: dict[str, Any] = {
        "run_id": claim.run_id,
        "thread_id": claim.thread_id,
        "namespace": claim.namespace,
        "configurable": configurable,
        "metadata": dict(payload.get("metadata") or {}),
        "cancel": token,
        "wait": lease_wait,
    }
    for key in ("recursion_limit", "tags"):
        if given.get(key) is not None:
            config[key] = given[key]
    if claim.timeout is not None:
        config["timeout"] = claim.timeout
    if payload.get("durability"):
        config["durability"] = payload["durability"]
    for key in ("interrupt_before", "interrupt_after"):
        value = payload.get(key)
        if value:
            config[key] = ["*"] if value == "*" else list(value)
    if fresh and payload.get("checkpoint_id"):
        config["checkpoint_id"] = payload["checkpoint_id"]
    return config
