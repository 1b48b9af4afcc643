"""The superstep loop: apply the input, then plan, run and merge steps until the frontier is
empty. :class:`Run` holds the logic shared by the sync and async drivers
(:func:`run_sync`, :func:`run_async`); only the way tasks are executed differs."""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from threadloom import _metrics, _tracing
from threadloom import logging as _logs
from threadloom.engine._algo import (
    Frontier,
    PlannedTask,
    TaskResult,
    advance,
    apply_writes,
    initial_values,
    output_values,
    plan_tasks,
    route,
    settle_deferred,
)
from threadloom.engine._runner import StepOutcome, arun_step, run_step
from threadloom.engine._spec import START, GraphSpec
from threadloom.engine._tasks import TaskCalls, TaskRecorder
from threadloom.errors import (
    EmptyInputError,
    GraphInterrupt,
    GraphRecursionError,
    InvalidConfigError,
    InvalidUpdateError,
    ParentCommand,
    RunCancelled,
    RunTimeoutError,
)
from threadloom.types import CancelToken, Command, Interrupt

if TYPE_CHECKING:
    from threadloom._tracing import RunTrace

__all__ = ["Run", "RunContext", "Sink", "run_async", "run_sync"]

log = logging.getLogger(__name__)


class Sink:
    """Where stream chunks go: ``put(mode, chunk)``, thread-safe, for the modes asked."""

    __slots__ = ("put", "values", "updates", "custom", "debug")

    def __init__(self, modes: frozenset[str], put: Callable[[str, Any], None]) -> None:
        self.put = put
        self.values = "values" in modes
        self.updates = "updates" in modes
        self.custom = "custom" in modes
        self.debug = "debug" in modes


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class RunContext:
    """Per-run facts and callbacks shared by the loop and the runner."""

    __slots__ = (
        "spec",
        "run_id",
        "thread_id",
        "node_config",
        "step",
        "deadline",
        "custom_writer",
        "sink",
        "_pool",
        "_task_pool",
        "cache",
        "cancel",
        "metrics",
        "trace",
    )

    def __init__(
        self,
        spec: GraphSpec,
        run_id: str,
        thread_id: str | None,
        node_config: dict[str, Any],
        sink: Sink | None,
        pool: Callable[[], concurrent.futures.Executor],
        timeout: float | None = None,
        task_pool: Callable[[], concurrent.futures.Executor] | None = None,
        cache: Any = None,
    ) -> None:
        self.spec = spec
        self.run_id = run_id
        self.thread_id = thread_id
        self.node_config = node_config
        self.step = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.sink = sink
        self._pool = pool
        self._task_pool = task_pool
        self.cache = cache  # node result cache (compile(cache=...)), or None
        self.cancel = cancel_token(node_config)
        self.metrics = _metrics.for_graph(spec.name)  # None when metrics are off
        self.trace: RunTrace | None = None  # the run's spans, set by the driver when traced
        self.custom_writer: Callable[[Any], None] | None = None
        if sink is not None and sink.custom:
            put = sink.put
            self.custom_writer = lambda chunk: put("custom", chunk)

    def pool(self) -> concurrent.futures.Executor:
        """The executor for sync nodes that run in parallel (or off the event loop)."""
        return self._pool()

    def task_pool(self) -> concurrent.futures.Executor | None:
        """The executor for ``@task`` calls (kept apart from nodes so that nodes waiting on
        their tasks can never take every worker)."""
        return self._task_pool() if self._task_pool is not None else None

    def task_calls(self, scope: Any) -> TaskCalls:
        """The ``@task`` calls of one node execution (not recorded: no checkpointer)."""
        return TaskCalls(_PoolRecorder(self.task_pool()))

    def task_id(self, task: PlannedTask) -> str:
        """An id for the task, unique within the run."""
        if task.push >= 0:
            return f"{self.step}:{task.name}:{task.push}"
        return f"{self.step}:{task.name}"

    def resume_for(self, task_id: str) -> list[Any] | None:
        """Resume values for the task's ``interrupt()`` calls."""
        return None

    def _debug(self, kind: str, payload: dict[str, Any]) -> None:
        assert self.sink is not None
        self.sink.put(
            "debug",
            {
                "type": kind,
                "timestamp": _now_iso(),
                "step": self.step,
                "run_id": self.run_id,
                "thread_id": self.thread_id,
                "payload": payload,
            },
        )

    def on_task_start(self, task: PlannedTask, task_id: str, input: Any) -> None:
        """Called in the task's thread before the node runs, with its input."""
        sink = self.sink
        if sink is not None and sink.debug:
            self._debug(
                "task",
                {"id": task_id, "name": task.name, "input": input,
                 "triggers": (f"send:{task.push}",) if task.push >= 0 else (task.name,)},
            )

    def on_attempt_failed(
        self, task: PlannedTask, task_id: str, attempt: int, started: float, exc: BaseException
    ) -> None:
        """Called in the task's thread when an attempt raised."""

    def on_retry(self, task: PlannedTask) -> None:
        """Called in the task's thread when a failed attempt will be retried."""

    def on_task_output(self, task: PlannedTask, writes: list[tuple[str, Any]]) -> None:
        """Called in the task's thread, when the run streams, as soon as the node returned
        and before its conditional edges run: its ``updates`` chunk goes out now, even if a
        path function then fails (as in LangGraph)."""
        sink = self.sink
        if sink is not None and sink.updates:
            sink.put("updates", {task.name: dict(writes) if writes else None})

    def on_task_done(self, result: TaskResult, task_id: str, attempts: int) -> None:
        """Called in the task's thread when the task finished successfully."""
        sink = self.sink
        if sink is None:
            return
        update = dict(result.writes) if result.writes else None
        if sink.debug:
            self._debug(
                "task_result",
                {"id": task_id, "name": result.task.name, "error": None,
                 "result": update or {}, "interrupts": []},
            )


class _PoolRecorder(TaskRecorder):
    """Records nothing; runs tasks on the graph's task pool."""

    def __init__(self, pool: concurrent.futures.Executor | None) -> None:
        self._pool = pool

    def pool(self) -> concurrent.futures.Executor | None:
        return self._pool


class Run:
    """One invocation's state machine, shared by the sync and async drivers.

    The drivers call :meth:`begin`, then :meth:`next_tasks` / :meth:`finish_step` until no
    tasks are left, then :meth:`complete`; :meth:`abort` if anything raised. A durable run
    (``threadloom.engine._durable``) overrides these hooks to load and persist.
    """

    __slots__ = ("ctx", "spec", "values", "frontier", "limit", "stop", "has_output",
                 "interrupts", "paused", "interrupt_before", "interrupt_after",
                 "skip_breakpoint", "cancelled", "_output_keys", "gate", "agate")

    def __init__(self, ctx: RunContext, limit: int,
                 interrupt_before: frozenset[str] = frozenset(),
                 interrupt_after: frozenset[str] = frozenset()) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.values: dict[str, Any] = initial_values(ctx.spec)
        self.frontier = Frontier()
        self.limit = limit
        self.stop = limit
        self.has_output = False
        self.interrupts: list[Interrupt] = []
        self.paused = False
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.skip_breakpoint = False
        self.cancelled: str | None = None
        self._output_keys = frozenset(ctx.spec.output_keys)
        # set by stream()/astream(): wait before each step until the consumer has taken
        # every chunk so far and asks for more, so that a stream never runs ahead of it
        self.gate: Callable[[], None] | None = None
        self.agate: Callable[[], Awaitable[None]] | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run before its next step (a running step finishes first)."""
        self.cancelled = reason

    def check_cancelled(self) -> None:
        """Raise ``RunCancelled`` if :meth:`cancel` was called or the config's
        ``CancelToken`` was cancelled."""
        token = self.ctx.cancel
        if self.cancelled is None and token is not None and token.is_set():
            self.cancelled = token.reason
        if self.cancelled is not None:
            raise RunCancelled(self.cancelled)

    def stored_traceparent(self) -> str | None:
        """The ``traceparent`` stored with the run (a durable run's record), if any."""
        return None

    def begin(self, input: Any) -> bool:
        """Apply the input (step 0); return whether there is anything to run."""
        spec = self.spec
        if input is None:
            raise EmptyInputError(
                "received no input: pass the input state (None only continues a thread that "
                "has a checkpointer)"
            )
        self.ctx.step = 0
        updated = self.apply_input(_input_writes(spec, input))
        self.frontier = self.start_frontier()
        self._emit_values(updated)
        self.ctx.step = 1
        return True

    def apply_input(self, writes: list[tuple[str, Any]]) -> set[str]:
        """Merge input writes into the values, as the START node's update."""
        start = PlannedTask(START, None)  # type: ignore[arg-type]
        return apply_writes(self.spec.channels, self.values, [TaskResult(start, writes, [])])

    def start_frontier(self) -> Frontier:
        """The nodes the input triggers: START's edges and conditional edges."""
        spec = self.spec
        triggered: dict[str, None] = dict.fromkeys(spec.start_next)
        sends = []
        for branch in spec.start_branches:
            state = self.values if branch.coerce is None else branch.coerce(dict(self.values))
            result = branch.path(state, self.ctx.node_config)
            for target in route(branch, result, spec.nodes, START):
                if isinstance(target, str):
                    triggered[target] = None
                else:
                    sends.append(target)
        return settle_deferred(spec, triggered, sends, {})

    def next_tasks(self) -> list[PlannedTask] | None:
        """The tasks of the next step, or ``None`` when the run is done or paused.

        Raises:
            GraphRecursionError: the step limit is reached.
            RunTimeoutError: the run's deadline passed.
        """
        if self.paused:
            return None
        self.check_cancelled()
        ctx = self.ctx
        if ctx.step > self.stop:
            raise GraphRecursionError(
                f"Recursion limit of {self.limit} reached without hitting a stop condition. "
                "Raise it with the `recursion_limit` config key, e.g. "
                "graph.invoke(input, {'recursion_limit': 50000})."
            )
        if not self.frontier:
            return None
        if ctx.deadline is not None and time.monotonic() > ctx.deadline:
            raise RunTimeoutError(f"run {ctx.run_id!r} exceeded its timeout")
        tasks = plan_tasks(self.spec, self.frontier)
        if self.interrupt_before and not self.skip_breakpoint and _hits(
            self.interrupt_before, tasks
        ):
            self.paused = True  # a breakpoint: stop before these tasks
            return None
        self.skip_breakpoint = False
        return tasks

    def finish_step(self, outcome: StepOutcome) -> None:
        """Merge a finished step; raise the first error of its tasks; pause on interrupts."""
        if outcome.error is not None:
            raise outcome.error
        if outcome.interrupts:
            self.paused = True
            for signal in outcome.interrupts:
                self.interrupts.extend(signal.interrupts)  # type: ignore[attr-defined]
            return
        self.merge(outcome.results)
        if self.interrupt_after and _hits(self.interrupt_after, outcome.results):
            self.paused = True

    def merge(self, results: list[TaskResult]) -> set[str]:
        """Apply a step's results and advance the frontier."""
        updated = apply_writes(self.spec.channels, self.values, results)
        self.frontier = advance(self.spec, self.frontier, results)
        self._emit_values(updated)
        self.ctx.step += 1
        return updated

    def _emit_values(self, updated: set[str]) -> None:
        if not updated:
            return
        if not self.has_output and not self._output_keys.isdisjoint(updated):
            self.has_output = True
        sink = self.ctx.sink
        if sink is not None and sink.values:
            # LangGraph streams every channel; output_schema filters only the final result
            values = self.values
            sink.put("values", {k: values[k] for k in self.spec.channels if k in values})

    def abort(self, exc: BaseException) -> None:
        """Called when the run raised; a durable run records the failure."""

    def complete(self) -> Any:
        """The run's result: the output keys that hold a value (``None`` if no output key was
        ever written, as LangGraph returns the last ``values`` chunk), plus
        ``"__interrupt__"`` when ``interrupt()`` paused the run."""
        if self.interrupts:
            sink = self.ctx.sink
            if sink is not None and sink.updates:
                sink.put("updates", {"__interrupt__": tuple(self.interrupts)})
            out = {} if self.spec.output_channel else output_values(self.spec, self.values)
            out["__interrupt__"] = list(self.interrupts)
            return out
        if self.spec.output_channel is not None:
            return self.values.get(self.spec.output_channel)
        if not self.has_output:
            return None
        return output_values(self.spec, self.values)


def cancel_token(config: Mapping[str, Any]) -> CancelToken | None:
    """The run's ``config["cancel"]``, if any.

    Raises:
        InvalidConfigError: it is not a :class:`~threadloom.types.CancelToken`.
    """
    token = config.get("cancel")
    if token is None or isinstance(token, CancelToken):
        return token
    raise InvalidConfigError(
        f"config['cancel'] must be a threadloom.types.CancelToken, got {type(token).__name__}"
    )


def _hits(names: frozenset[str], items: Sequence[PlannedTask] | Sequence[TaskResult]) -> bool:
    if "*" in names:
        return bool(items)
    for item in items:
        name = item.task.name if isinstance(item, TaskResult) else item.name
        if name in names:
            return True
    return False


def _input_writes(spec: GraphSpec, input: Any) -> list[tuple[str, Any]]:
    if spec.input_channel is not None:
        return [(spec.input_channel, input)]
    if isinstance(input, Mapping):
        keys = spec.input_keys
        return [(k, v) for k, v in input.items() if k in keys]
    from threadloom.engine._algo import extract_update

    if not isinstance(input, Command) and not _is_state_object(input):
        raise InvalidUpdateError(
            f"the graph's input must be a dict of its input keys {list(spec.input_keys)} or "
            f"an instance of its input schema: expected dict, got {_short(input)} "
            f"({type(input).__name__})"
        )
    writes, _ = extract_update(spec.channels, input, START)
    keys = spec.input_keys
    return [(k, v) for k, v in writes if k in keys]


def _is_state_object(obj: Any) -> bool:
    """Whether ``obj`` is a dataclass or Pydantic instance (an input given as the schema)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return True
    return hasattr(obj, "model_fields_set") and isinstance(
        getattr(type(obj), "model_fields", None), dict
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _top_level(exc: BaseException) -> BaseException:
    if isinstance(exc, ParentCommand):
        return InvalidUpdateError("Command(graph=Command.PARENT) was sent by a graph that is "
                                  "not running as a node of a parent graph")
    return exc


def _failed_status(exc: BaseException) -> str:
    """The status a run that raised ``exc`` ends with (as its run record says)."""
    return "cancelled" if isinstance(exc, RunCancelled) else "failed"


def _ended_status(run: Run) -> str:
    """The status of a run that returned: paused by an interrupt or breakpoint, or done."""
    return "interrupted" if run.paused or run.interrupts else "succeeded"


def _gate_passed(run: Run) -> None:
    """After waiting for the stream's consumer: stop if it went away meanwhile."""
    run.check_cancelled()


def _enter_logs(run: Run) -> contextvars.Token[Any]:
    """Stamp this context's log records with the run (see :mod:`threadloom.logging`)."""
    ctx = run.ctx
    persistence = getattr(run, "p", None)
    token = _logs.enter_run(ctx.run_id, ctx.thread_id, ctx.spec.name,
                            getattr(persistence, "namespace", "default"),
                            getattr(run, "store", None))
    log.info("run started (graph %s)", ctx.spec.name)
    return token


def _log_step(run: Run, tasks: Sequence[PlannedTask]) -> None:
    log.debug("step %d: %s", run.ctx.step, [task.name for task in tasks])


def _log_end(run: Run, exc: BaseException | None, seconds: float) -> None:
    if exc is None:
        if run.interrupts or run.paused:
            log.info("run interrupted after %.3fs (step %d)", seconds, run.ctx.step)
        else:
            log.info("run succeeded in %.3fs", seconds)
    elif isinstance(exc, RunCancelled):
        log.info("run cancelled: %s", exc)
    elif isinstance(exc, GraphInterrupt):
        log.info("run interrupted after %.3fs", seconds)
    else:
        log.error("run failed after %.3fs: %s: %s", seconds, type(exc).__name__, exc)


def _start_trace(run: Run) -> None:
    """Open the run span once ``begin`` has settled the run's id and stored parent."""
    trace = run.ctx.trace
    if trace is not None:
        trace.start(run.ctx.run_id, run.ctx.thread_id, run.spec.name, run.stored_traceparent())


def _trace_failed(run: Run, exc: BaseException) -> None:
    trace = run.ctx.trace
    if trace is not None:
        _start_trace(run)  # begin itself may have failed
        trace.end(_failed_status(exc), error=exc)


def _trace_ended(run: Run) -> None:
    trace = run.ctx.trace
    if trace is not None:
        _start_trace(run)
        trace.end(_ended_status(run), run.interrupts)


class _Outcome:
    """Where a run's end is told, once for both drivers: its metrics, its trace span and (for a
    top-level run) its log line."""

    __slots__ = ("run", "metrics", "started", "logged", "began")

    def __init__(self, run: Run, nested: bool) -> None:
        self.run = run
        self.metrics = None if nested else run.ctx.metrics
        self.started = time.perf_counter() if self.metrics is not None else 0.0
        self.logged = not nested
        self.began = time.monotonic() if self.logged else 0.0
        run.ctx.trace = _tracing.run_trace(nested)  # None unless an app installed a tracer

    def failed(self, exc: BaseException, raised: BaseException | None = None) -> None:
        """The run stopped on ``exc`` (the caller sees ``raised``, if it translates it)."""
        _trace_failed(self.run, exc)
        if self.metrics is not None:
            self.metrics.run(_failed_status(exc), time.perf_counter() - self.started)
        if self.logged:
            _log_end(self.run, raised or exc, time.monotonic() - self.began)

    def ended(self) -> None:
        """The run finished or paused."""
        _trace_ended(self.run)
        if self.metrics is not None:
            self.metrics.run(_ended_status(self.run), time.perf_counter() - self.started)
        if self.logged:
            _log_end(self.run, None, time.monotonic() - self.began)


def _stopped(run: Run, outcome: _Outcome, exc: BaseException, nested: bool) -> BaseException:
    """What a run that stopped on ``exc`` raises: the error itself, or a ``ParentCommand``
    that reached the top, as the error it is there."""
    run.abort(exc)
    raised = exc if nested or not isinstance(exc, ParentCommand) else _top_level(exc)
    outcome.failed(exc, raised)
    return raised


def _complete(run: Run, outcome: _Outcome) -> Any:
    try:
        out = run.complete()
    except BaseException as exc:
        outcome.failed(exc)
        raise
    outcome.ended()
    return out


def run_sync(run: Run, input: Any, nested: bool = False) -> Any:
    """Drive a run to the end (or a pause) in this thread."""
    if nested:
        return _run_sync(run, input, True)
    token = _enter_logs(run)
    try:
        return _run_sync(run, input, False)
    finally:
        _logs.exit_run(token)


def _run_sync(run: Run, input: Any, nested: bool) -> Any:
    outcome = _Outcome(run, nested)
    debug = log.isEnabledFor(logging.DEBUG)
    try:
        if run.begin(input):
            _start_trace(run)
            while (tasks := run.next_tasks()) is not None:
                if debug:
                    _log_step(run, tasks)
                if run.gate is not None:
                    run.gate()
                    _gate_passed(run)
                run.finish_step(run_step(run.ctx, tasks, run.values))
    except BaseException as exc:
        raised = _stopped(run, outcome, exc, nested)
        if raised is exc:
            raise
        raise raised from None
    return _complete(run, outcome)


async def run_async(run: Run, input: Any, nested: bool = False) -> Any:
    """Drive a run to the end (or a pause) on the running event loop."""
    if nested:
        return await _run_async(run, input, True)
    token = _enter_logs(run)
    try:
        return await _run_async(run, input, False)
    finally:
        _logs.exit_run(token)


async def _run_async(run: Run, input: Any, nested: bool) -> Any:
    outcome = _Outcome(run, nested)
    debug = log.isEnabledFor(logging.DEBUG)
    try:
        if run.begin(input):
            _start_trace(run)
            while (tasks := run.next_tasks()) is not None:
                if debug:
                    _log_step(run, tasks)
                if run.agate is not None:
                    await run.agate()
                    _gate_passed(run)
                run.finish_step(await arun_step(run.ctx, tasks, run.values))
    except BaseException as exc:
        raised = _stopped(run, outcome, exc, nested)
        if raised is exc:
            raise
        raise raised from None
    return _complete(run, outcome)
