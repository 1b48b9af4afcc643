"""Running ``@task`` calls for a node execution: call indexes, replay of recorded results,
recording of new ones, and the futures callers wait on. The ``@task`` decorator itself is
in :mod:`threadloom.func`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["TaskCalls", "TaskFuture", "TaskRecorder", "TaskRunnable"]

T = TypeVar("T")


class TaskRunnable(Protocol):
    """What :class:`TaskCalls` needs of a task function."""

    name: str

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any],
             on_attempt_failed: Callable[[int, float, BaseException], None]) -> Any: ...


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


class TaskRecorder:
    """Where an execution's task results are looked up and recorded (set by durable runs)."""

    def recorded(self, name: str, index: int) -> tuple[bool, Any]:
        """``(True, value)`` when call ``index`` of task ``name`` already succeeded."""
        return False, None

    def record(self, name: str, index: int, args: tuple[Any, ...], value: Any,
               attempts: list[tuple[int, float, float, str]]) -> None:
        """Persist a successful call."""
        return None

    def pool(self) -> concurrent.futures.Executor | None:
        """The executor tasks run on (``None``: a private one)."""
        return None


class TaskCalls:
    """The task calls made by one node execution: their call indexes, replay and recording."""

    def __init__(self, recorder: TaskRecorder | None) -> None:
        self.recorder = recorder or TaskRecorder()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.futures: list[concurrent.futures.Future[Any]] = []

    def settle(self) -> None:
        """Wait for every call started by the execution, whatever became of the node: a
        task must not outlive its node (its result is recorded under the node's lease)."""
        if self.futures:
            concurrent.futures.wait(self.futures)

    def start(self, fn: TaskRunnable, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> TaskFuture[Any]:
        with self.lock:
            index = self.counts.get(fn.name, 0)
            self.counts[fn.name] = index + 1
        hit, value = self.recorder.recorded(fn.name, index)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self.lock:
            self.futures.append(future)
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
