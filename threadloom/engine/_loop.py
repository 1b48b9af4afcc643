"""The superstep loop: apply the input, then plan, run and merge steps until the frontier is
empty. :class:`Run` holds the logic shared by the sync and async drivers
(:func:`run_sync`, :func:`run_async`); only the way tasks are executed differs."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

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
)
from threadloom.engine._runner import StepOutcome, arun_step, run_step
from threadloom.engine._spec import START, GraphSpec
from threadloom.errors import GraphRecursionError, RunTimeoutError

__all__ = ["Run", "RunContext", "Sink", "run_async", "run_sync"]


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
    ) -> None:
        self.spec = spec
        self.run_id = run_id
        self.thread_id = thread_id
        self.node_config = node_config
        self.step = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.sink = sink
        self._pool = pool
        self.custom_writer: Callable[[Any], None] | None = None
        if sink is not None and sink.custom:
            put = sink.put
            self.custom_writer = lambda chunk: put("custom", chunk)

    def pool(self) -> concurrent.futures.Executor:
        """The executor for sync nodes that run in parallel (or off the event loop)."""
        return self._pool()

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

    def on_task_start(self, task: PlannedTask, task_id: str) -> None:
        """Called in the task's thread before the node runs."""
        sink = self.sink
        if sink is not None and sink.debug:
            self._debug(
                "task",
                {"id": task_id, "name": task.name, "input": task.arg if task.push >= 0 else None,
                 "triggers": (f"send:{task.push}",) if task.push >= 0 else (task.name,)},
            )

    def on_attempt_failed(
        self, task: PlannedTask, task_id: str, attempt: int, started: float, exc: BaseException
    ) -> None:
        """Called in the task's thread when an attempt raised."""

    def on_task_done(self, result: TaskResult, task_id: str, attempts: int) -> None:
        """Called in the task's thread when the task finished successfully."""
        sink = self.sink
        if sink is None:
            return
        update = dict(result.writes) if result.writes else None
        if sink.updates:
            sink.put("updates", {result.task.name: update})
        if sink.debug:
            self._debug(
                "task_result",
                {"id": task_id, "name": result.task.name, "error": None,
                 "result": update or {}, "interrupts": []},
            )


class Run:
    """One invocation's state machine, shared by the sync and async drivers."""

    __slots__ = ("ctx", "spec", "values", "frontier", "limit", "stop", "started", "_output_keys")

    def __init__(self, ctx: RunContext, limit: int) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.values: dict[str, Any] = initial_values(ctx.spec)
        self.frontier = Frontier()
        self.limit = limit
        self.stop = limit
        self.started = False
        self._output_keys = frozenset(ctx.spec.output_keys)

    def start(self, input: Any) -> bool:
        """Apply the input (step 0); return whether there is anything to run."""
        spec = self.spec
        writes = _input_writes(spec, input)
        if not writes:
            return False
        self.started = True
        self.ctx.step = 0
        start = PlannedTask(START, None)  # type: ignore[arg-type]
        updated = apply_writes(spec.channels, self.values, [TaskResult(start, writes, [])])
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
        self.frontier = Frontier(sorted(triggered), sends, {})
        self._emit_values(updated)
        self.ctx.step = 1
        return True

    def next_tasks(self) -> list[PlannedTask] | None:
        """The tasks of the next step, or ``None`` when the run is done.

        Raises:
            GraphRecursionError: the step limit is reached.
            RunTimeoutError: the run's deadline passed.
        """
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
        return plan_tasks(self.spec, self.frontier)

    def finish_step(self, outcome: StepOutcome) -> None:
        """Merge a finished step, or raise the first error of its tasks."""
        if outcome.error is not None:
            raise outcome.error
        if outcome.interrupts:
            raise outcome.interrupts[0]
        results = outcome.results
        updated = apply_writes(self.spec.channels, self.values, results)
        self.frontier = advance(self.spec, self.frontier, results)
        self._emit_values(updated)
        self.ctx.step += 1

    def _emit_values(self, updated: set[str]) -> None:
        sink = self.ctx.sink
        if sink is not None and sink.values and not self._output_keys.isdisjoint(updated):
            sink.put("values", output_values(self.spec, self.values))

    def output(self) -> dict[str, Any] | None:
        """The run's result: output keys with values, or ``None`` if nothing ran."""
        if not self.started:
            return None
        return output_values(self.spec, self.values)


def _input_writes(spec: GraphSpec, input: Any) -> list[tuple[str, Any]]:
    if input is None:
        return []
    if isinstance(input, Mapping):
        keys = spec.input_keys
        return [(k, v) for k, v in input.items() if k in keys]
    from threadloom.engine._algo import extract_update

    writes, _ = extract_update(spec.channels, input, START)
    keys = spec.input_keys
    return [(k, v) for k, v in writes if k in keys]


def run_sync(run: Run, input: Any) -> dict[str, Any] | None:
    """Drive a run to the end in this thread."""
    if run.start(input):
        while (tasks := run.next_tasks()) is not None:
            run.finish_step(run_step(run.ctx, tasks, run.values))
    return run.output()


async def run_async(run: Run, input: Any) -> dict[str, Any] | None:
    """Drive a run to the end on the running event loop."""
    if run.start(input):
        while (tasks := run.next_tasks()) is not None:
            run.finish_step(await arun_step(run.ctx, tasks, run.values))
    return run.output()
