"""``@task``: side effects that run in parallel, are recorded once they succeed, and are not
run again when the node that called them is replayed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Generic, ParamSpec, TypeVar, overload

from threadloom import _context
from threadloom.types import RetryPolicy

__all__ = ["TaskFunction", "TaskFuture", "task"]

P = ParamSpec("P")
T = TypeVar("T")


class TaskFuture(Generic[T]):
    """The pending result of a task call: ``.result()`` blocks for it, ``await`` waits for it
    without blocking the event loop."""

    __slots__ = ("_future",)

    def __init__(self, future: concurrent.futures.Future[T]) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> T:
        """The task's return value (or its exception, raised)."""
        return self._future.result(timeout)

    def done(self) -> bool:
        """Whether the task has finished."""
        return self._future.done()

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self._future).__await__()


class TaskFunction(Generic[P, T]):
    """A function decorated with ``@task``. Calling it inside a node (or an entrypoint)
    starts it in the background and returns a :class:`TaskFuture`."""

    def __init__(self, fn: Callable[P, T], name: str | None = None,
                 retry_policy: RetryPolicy | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "task")
        self.retry_policy = retry_policy
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[T]:
        scope = _context.current_task(f"task {self.name!r}")
        calls: TaskCalls | None = scope.extras.get("tasks")
        if calls is None:
            services = scope.services
            calls = services.task_calls(scope) if services is not None else TaskCalls(None)
            scope.extras["tasks"] = calls
        return calls.start(self, args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any],
             on_attempt_failed: Callable[[int, float, BaseException], None]) -> Any:
        attempt = 1
        while True:
            started = time.time()
            try:
                if self.is_async:
                    return asyncio.run(self.fn(*args, **kwargs))  # type: ignore[arg-type]
                return self.fn(*args, **kwargs)
            except Exception as exc:
                on_attempt_failed(attempt, started, exc)
                policy = self.retry_policy
                if policy is None or not policy.should_retry(exc) or attempt >= policy.max_attempts:
                    raise
                time.sleep(policy.interval(attempt))
                attempt += 1


class TaskRecorder:
    """Where an execution's task results are looked up and recorded (set by durable runs)."""

    def recorded(self, name: str, index: int) -> tuple[bool, Any]:
        """``(True, value)`` when call ``index`` of task ``name`` already succeeded."""
        return False, None

    def record(self, name: str, index: int, args: tuple[Any, ...], value: Any,
               attempts: list[tuple[int, float, float, str]]) -> None:
        """Persist a successful call."""

    def pool(self) -> concurrent.futures.Executor | None:
        """The executor tasks run on (``None``: a private one)."""
        return None


class TaskCalls:
    """The task calls made by one node execution: their call indexes, replay and recording."""

    def __init__(self, recorder: TaskRecorder | None) -> None:
        self.recorder = recorder or TaskRecorder()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def start(self, fn: TaskFunction[Any, Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> TaskFuture[Any]:
        with self.lock:
            index = self.counts.get(fn.name, 0)
            self.counts[fn.name] = index + 1
        hit, value = self.recorder.recorded(fn.name, index)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if hit:
            future.set_result(value)
            return TaskFuture(future)
        attempts: list[tuple[int, float, float, str]] = []

        def failed(number: int, started: float, exc: BaseException) -> None:
            attempts.append((number, started, time.time(), f"{type(exc).__name__}: {exc}"))

        def run() -> Any:
            result = fn._run(args, kwargs, failed)
            self.recorder.record(fn.name, index, args, result, attempts)
            return result

        pool = self.recorder.pool()
        context = contextvars.copy_context()
        if pool is None:
            thread = threading.Thread(target=_settle, args=(future, context, run), daemon=True)
            thread.start()
        else:
            pool.submit(_settle, future, context, run)
        return TaskFuture(future)


def _settle(future: concurrent.futures.Future[Any], context: contextvars.Context,
            run: Callable[[], Any]) -> None:
    try:
        future.set_result(context.run(run))
    except BaseException as exc:
        future.set_exception(exc)


@overload
def task(fn: Callable[P, T], /) -> TaskFunction[P, T]: ...


@overload
def task(
    *, name: str | None = None, retry_policy: RetryPolicy | None = None, **kwargs: Any
) -> Callable[[Callable[P, T]], TaskFunction[P, T]]: ...


def task(
    fn: Callable[P, T] | None = None, /, *, name: str | None = None,
    retry_policy: RetryPolicy | None = None, **kwargs: Any,
) -> TaskFunction[P, T] | Callable[[Callable[P, T]], TaskFunction[P, T]]:
    """Make a function a task: calling it inside a node or an ``@entrypoint`` runs it in
    parallel and returns a future; with a checkpointer its result is recorded as soon as it
    succeeds (keyed by run, node execution, task name and call index), and a replayed node
    gets the recorded result back instead of running the task again. Put side effects (API
    calls, writes to other systems, randomness) in tasks.

    Example:
        >>> @task
        ... def fetch(url: str) -> str:
        ...     return requests.get(url).text
        >>> def node(state):
        ...     pages = [fetch(u) for u in state["urls"]]
        ...     return {"pages": [p.result() for p in pages]}

    Args:
        name: the task's name (default: the function's).
        retry_policy: retry a failing call; attempts are recorded on its execution record.
    """
    retry = retry_policy or kwargs.pop("retry", None)
    if fn is not None:
        return TaskFunction(fn, name, retry)
    return lambda f: TaskFunction(f, name, retry)
