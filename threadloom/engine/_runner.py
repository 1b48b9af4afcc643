"""Running a step's tasks: one inline, several on a thread pool or as asyncio tasks, each
with its retry policy and timeout, inside its own task scope."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from threadloom import _context
from threadloom.engine._algo import (
    PlannedTask,
    TaskResult,
    extract_update,
    fresh_values,
    node_input,
    route,
)
from threadloom.engine._spec import BranchSpec
from threadloom.errors import (
    GraphInterrupt,
    InvalidUpdateError,
    NodeTimeoutError,
    ParentCommand,
    RunTimeoutError,
)
from threadloom.types import RetryPolicy, Send

if TYPE_CHECKING:
    from threadloom._tracing import NodeSpan
    from threadloom.engine._loop import RunContext

__all__ = ["StepOutcome", "run_step", "arun_step"]

log = logging.getLogger(__name__)


class StepOutcome:
    """The results of a step's tasks in planned order, with the first error raised (if any),
    every task that raised with its error, and the interrupts raised (a ``GraphInterrupt``
    per interrupted task)."""

    __slots__ = ("results", "error", "error_task", "failed", "interrupts")

    def __init__(self) -> None:
        self.results: list[TaskResult] = []
        self.error: BaseException | None = None
        self.error_task: PlannedTask | None = None
        self.failed: list[tuple[PlannedTask, BaseException]] = []
        self.interrupts: list[BaseException] = []

    def fail(self, task: PlannedTask, exc: BaseException) -> None:
        """Record that ``task`` raised ``exc`` (the first one raised is the step's error)."""
        if self.error is None:
            self.error = exc
            self.error_task = task
        self.failed.append((task, exc))


def _retry_policy(policies: Sequence[RetryPolicy], exc: BaseException) -> RetryPolicy | None:
    for policy in policies:
        if policy.should_retry(exc):
            return policy
    return None


def _annotate(exc: BaseException, ctx: RunContext, task: PlannedTask, task_id: str) -> None:
    exc.add_note(
        f"During node {task.name!r} (execution {task_id}) of run {ctx.run_id!r}"
        + (f" on thread {ctx.thread_id!r}" if ctx.thread_id else "")
    )


def _node_writes(ctx: RunContext, task: PlannedTask, output: Any) -> tuple[list[Any], list[Any]]:
    """A node's output as channel writes and validated ``goto`` targets."""
    writes, goto = extract_update(ctx.spec.channels, output, task.name)
    nodes = ctx.spec.nodes
    for target in goto:
        name = target.node if isinstance(target, Send) else target
        if name not in nodes:
            raise InvalidUpdateError(f"node {task.name!r} sent control to unknown node {name!r}")
    return writes, goto


def _branch_inputs(ctx: RunContext, task: PlannedTask, writes: list[Any],
                   values: dict[str, Any]) -> list[tuple[BranchSpec, Any]]:
    """Each conditional edge of the node with the state it reads: the step's snapshot plus
    this task's own writes."""
    fresh = fresh_values(ctx.spec.channels, values, writes)
    return [(b, fresh if b.coerce is None else b.coerce(fresh)) for b in task.node.branches]


def _finish(ctx: RunContext, task: PlannedTask, scope: _context.TaskScope, output: Any,
            values: dict[str, Any]) -> TaskResult:
    """Turn a node's output into a TaskResult, evaluating its conditional edges."""
    writes, goto = _node_writes(ctx, task, output)
    if ctx.sink is not None:
        ctx.on_task_output(task, writes)
    if task.node.branches:
        for branch, state in _branch_inputs(ctx, task, writes, values):
            result = branch.path(state, scope.config)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    f"the conditional edge from {task.name!r} is async; use ainvoke or astream"
                )
            goto = goto + route(branch, result, ctx.spec.nodes, task.name)
    return TaskResult(task, writes, goto)


async def _afinish(ctx: RunContext, task: PlannedTask, scope: _context.TaskScope, output: Any,
                   values: dict[str, Any]) -> TaskResult:
    """Like :func:`_finish`, awaiting async path functions."""
    writes, goto = _node_writes(ctx, task, output)
    if ctx.sink is not None:
        ctx.on_task_output(task, writes)
    if task.node.branches:
        for branch, state in _branch_inputs(ctx, task, writes, values):
            result = branch.path(state, scope.config)
            if inspect.isawaitable(result):
                result = await result
            goto = goto + route(branch, result, ctx.spec.nodes, task.name)
    return TaskResult(task, writes, goto)


def _open_scope(ctx: RunContext, task: PlannedTask) -> tuple[str, _context.TaskScope, Any]:
    """The task's id and scope, made current; returns the token to reset it with."""
    task_id = ctx.task_id(task)
    scope = _context.TaskScope(ctx.node_config, task.name, ctx.step, task_id, ctx.custom_writer,
                               ctx.resume_for(task_id), ctx)
    return task_id, scope, _context.task_scope(scope)


def _cache_key(ctx: RunContext, node: Any, inp: Any) -> tuple[str, str | bytes] | None:
    """The cache key of a node call, when the node has a cache policy and the graph a cache."""
    if node.cache is None or ctx.cache is None:
        return None
    return (node.name, node.cache.key_func(inp))


def _settle_tasks(scope: _context.TaskScope) -> None:
    calls = scope.extras.get("tasks")
    if calls is not None:
        calls.settle()


def _retry_delay(ctx: RunContext, task: PlannedTask, task_id: str, attempt: int,
                 started: float, exc: Exception, span: NodeSpan | None) -> float | None:
    """Record a failed attempt; the seconds to wait before the next one, or ``None`` when the
    node's retry policy gives up (the caller re-raises)."""
    policy = _retry_policy(task.node.retry, exc)
    ctx.on_attempt_failed(task, task_id, attempt, started, exc)
    if policy is None or attempt >= policy.max_attempts:
        log.error("node %s failed on attempt %d: %s: %s", task.name, attempt,
                  type(exc).__name__, exc, exc_info=exc)
        return None
    if ctx.metrics is not None:
        ctx.metrics.retry(task.name)
    ctx.on_retry(task)
    delay = policy.interval(attempt)
    log.warning("node %s failed on attempt %d, retrying in %.2fs: %s: %s", task.name, attempt,
                delay, type(exc).__name__, exc)
    if span is not None:
        span.retry(attempt, exc, delay)
    return delay


def _parent_command(task: PlannedTask, signal: ParentCommand) -> Any:
    """A subgraph node's ``Command(graph=PARENT)`` becomes this node's own result."""
    if task.node.subgraph is None:
        raise signal
    return signal.command


def _execute(ctx: RunContext, task: PlannedTask, values: dict[str, Any]) -> TaskResult:
    """Run one task to completion in this thread (sync nodes only)."""
    node = task.node
    metrics = ctx.metrics
    began = time.perf_counter() if metrics is not None else 0.0
    task_id, scope, token = _open_scope(ctx, task)
    trace = ctx.trace
    span = trace.node(task.name, ctx.step, task_id) if trace is not None else None
    attempt = 1
    try:
        inp = task.arg if task.push >= 0 else node_input(node, values)
        ctx.on_task_start(task, task_id, inp)
        cache_key = _cache_key(ctx, node, inp)
        hit, output = ctx.cache.get(cache_key) if cache_key is not None else (False, None)
        attempt = 0 if hit else 1
        while not hit:
            started = time.time()
            try:
                output = _attempt(ctx, task, inp, scope)
                break
            except ParentCommand as signal:
                output = _parent_command(task, signal)
                break
            except Exception as exc:
                delay = _retry_delay(ctx, task, task_id, attempt, started, exc, span)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1
                scope.attempt = attempt
        if cache_key is not None and not hit:
            ctx.cache.set(cache_key, output, node.cache.ttl_seconds())  # type: ignore[union-attr]
        result = _finish(ctx, task, scope, output, values)
    except BaseException as exc:
        if isinstance(exc, Exception):
            _annotate(exc, ctx, task, task_id)
        if span is not None:
            span.failed(exc)
        raise
    finally:
        _context.reset_scope(token)
        _settle_tasks(scope)
        if span is not None:
            span.end(attempt)
        if metrics is not None:
            metrics.node(task.name, time.perf_counter() - began)
    ctx.on_task_done(result, task_id, attempt)
    return result


def _attempt(ctx: RunContext, task: PlannedTask, inp: Any, scope: _context.TaskScope) -> Any:
    """One attempt of a sync node: through its circuit breaker, within its timeout."""
    node = task.node
    if node.circuit is None:
        return _call(ctx, task, inp, scope)
    with node.circuit.guard():
        return _call(ctx, task, inp, scope)


def _call(ctx: RunContext, task: PlannedTask, inp: Any, scope: _context.TaskScope) -> Any:
    node = task.node
    if node.timeout is None:
        return node.call(inp, scope)
    return _call_with_timeout(ctx, node.call, inp, scope, node.timeout, task.name)


async def _aattempt(task: PlannedTask, inp: Any, scope: _context.TaskScope) -> Any:
    """One attempt of an async node: through its circuit breaker, within its timeout."""
    node = task.node
    if node.circuit is None:
        return await _acall(task, inp, scope)
    with node.circuit.guard():
        return await _acall(task, inp, scope)


async def _acall(task: PlannedTask, inp: Any, scope: _context.TaskScope) -> Any:
    node = task.node
    output = node.call(inp, scope)
    if inspect.isawaitable(output):
        output = await _await_with_timeout(output, node.timeout, task.name)
    return output


def _call_with_timeout(ctx: RunContext, call: Callable[[Any, Any], Any], inp: Any,
                       scope: _context.TaskScope, timeout: float, name: str) -> Any:
    context = contextvars.copy_context()
    future = ctx.pool().submit(context.run, call, inp, scope)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise NodeTimeoutError(f"node {name!r} timed out after {timeout}s") from None


def run_step(ctx: RunContext, tasks: Sequence[PlannedTask], values: dict[str, Any]) -> StepOutcome:
    """Run a step's sync tasks: the first inline, the rest on the pool; wait for all."""
    outcome = StepOutcome()
    deadline = ctx.deadline
    if len(tasks) == 1 and deadline is None:
        _collect(outcome, tasks[0], lambda: _execute(ctx, tasks[0], values))
        return outcome
    pool = ctx.pool()
    # with a run deadline every task runs on the pool, so a hanging node cannot outlive it
    inline = deadline is None
    futures = [
        pool.submit(contextvars.copy_context().run, _execute, ctx, task, values)
        for task in (tasks[1:] if inline else tasks)
    ]
    if inline:
        _collect(outcome, tasks[0], lambda: _execute(ctx, tasks[0], values))
    for task, future in zip(tasks[1:] if inline else tasks, futures, strict=True):
        _collect(outcome, task, lambda f=future: _wait(ctx, f))  # type: ignore[misc]
    return outcome


def _wait(ctx: RunContext, future: concurrent.futures.Future[TaskResult]) -> TaskResult:
    deadline = ctx.deadline
    if deadline is None:
        return future.result()
    try:
        return future.result(max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        raise RunTimeoutError(
            f"run {ctx.run_id!r} exceeded its timeout while a node was running (the node's "
            "thread finishes on its own; its result is discarded)"
        ) from None


def _collect(outcome: StepOutcome, task: PlannedTask, get: Callable[[], TaskResult]) -> None:
    try:
        outcome.results.append(get())
    except GraphInterrupt as exc:
        outcome.interrupts.append(exc)
    except BaseException as exc:
        outcome.fail(task, exc)


async def _aexecute(ctx: RunContext, task: PlannedTask, values: dict[str, Any]) -> TaskResult:
    """Run one task on the event loop (async nodes) or on the pool (sync nodes)."""
    node = task.node
    if not node.is_async and not any(b.is_async for b in node.branches):
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(ctx.pool(), context.run, _execute, ctx, task, values)
    metrics = ctx.metrics
    began = time.perf_counter() if metrics is not None else 0.0
    task_id, scope, token = _open_scope(ctx, task)
    trace = ctx.trace
    span = trace.node(task.name, ctx.step, task_id) if trace is not None else None
    attempt = 1
    try:
        inp = task.arg if task.push >= 0 else node_input(node, values)
        ctx.on_task_start(task, task_id, inp)
        cache_key = _cache_key(ctx, node, inp)
        hit, output = ctx.cache.get(cache_key) if cache_key is not None else (False, None)
        attempt = 0 if hit else 1
        while not hit:
            started = time.time()
            try:
                output = await _aattempt(task, inp, scope)
                break
            except ParentCommand as signal:
                output = _parent_command(task, signal)
                break
            except Exception as exc:
                delay = _retry_delay(ctx, task, task_id, attempt, started, exc, span)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                attempt += 1
                scope.attempt = attempt
        if cache_key is not None and not hit:
            ctx.cache.set(cache_key, output, node.cache.ttl_seconds())  # type: ignore[union-attr]
        result = await _afinish(ctx, task, scope, output, values)
    except BaseException as exc:
        if isinstance(exc, Exception):
            _annotate(exc, ctx, task, task_id)
        if span is not None:
            span.failed(exc)
        raise
    finally:
        _context.reset_scope(token)
        _settle_tasks(scope)
        if span is not None:
            span.end(attempt)
        if metrics is not None:
            metrics.node(task.name, time.perf_counter() - began)
    ctx.on_task_done(result, task_id, attempt)
    return result


async def _await_with_timeout(awaitable: Any, timeout: float | None, name: str) -> Any:
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise NodeTimeoutError(f"node {name!r} timed out after {timeout}s") from None


async def arun_step(
    ctx: RunContext, tasks: Sequence[PlannedTask], values: dict[str, Any]
) -> StepOutcome:
    """Run a step's tasks concurrently on the event loop; wait for all."""
    outcome = StepOutcome()
    if len(tasks) == 1:
        coros = [_aexecute(ctx, tasks[0], values)]
    else:
        coros = [_aexecute(ctx, task, values) for task in tasks]
    gathered = asyncio.gather(*coros, return_exceptions=True)
    if ctx.deadline is not None:
        try:
            results = await asyncio.wait_for(gathered,
                                             max(0.0, ctx.deadline - time.monotonic()))
        except TimeoutError:
            raise RunTimeoutError(f"run {ctx.run_id!r} exceeded its timeout") from None
    else:
        results = await gathered
    for task, item in zip(tasks, results, strict=True):
        if isinstance(item, TaskResult):
            outcome.results.append(item)
        elif isinstance(item, GraphInterrupt):
            outcome.interrupts.append(item)
        else:
            outcome.fail(task, item)
    return outcome
