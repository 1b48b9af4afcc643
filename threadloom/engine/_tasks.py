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
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from threadloom.errors import RunCancelled

if TYPE_CHECKING:
    from threadloom._tracing import RunTrace
    from threadloom.types import CancelToken

__all__ = ["TaskCalls", "TaskFuture", "TaskRecorder", "TaskRunnable"]

T = TypeVar("T")


class TaskRunnable(Protocol):
    """What :class:`TaskCalls` needs of a task function."""

    name: str

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any],
             on_attempt_failed: Callable[[int, float, BaseException], None]) -> Any: ...


class TaskFuture(Generic[T]):
    """The pending result of a task call: ``.result()`` blocks for it, ``await`` waits for it
    without blocking the event loop. When the run's ``CancelToken`` is cancelled, a wait
    raises ``RunCancelled`` at once."""

    __slots__ = ("_future", "_cancel")

    def __init__(self, future: concurrent.futures.Future[T],
                 cancel: CancelToken | None = None) -> None:
        self._future = future
        self._cancel = cancel

    def result(self, timeout: float | None = None) -> T:
        """The task's return value (or its exception, raised).

        Raises:
            RunCancelled: the run was cancelled while (or before) waiting.
            TimeoutError: ``timeout`` seconds passed first.
        """
        token = self._cancel
        future = self._future
        if token is None or future.done():
            return future.result(timeout)
        wake = threading.Event()
        future.add_done_callback(lambda _: wake.set())
        remove = token.add_callback(wake.set)
        try:
            woke = wake.wait(timeout)
        finally:
            remove()
        if future.done():
            return future.result()
        if token.is_set():
            raise RunCancelled(token.reason)
        assert not woke
        raise concurrent.futures.TimeoutError()

    def done(self) -> bool:
        """Whether the task has finished."""
        return self._future.done()

    def _wait_quietly(self) -> None:
        """Wait until the task finishes or the run is cancelled; raise nothing."""
        try:
            self.result()
        except BaseException:  # noqa: BLE001 - the caller only waits
            pass

    def __await__(self) -> Generator[Any, None, T]:
        if self._cancel is None:
            return asyncio.wrap_future(self._future).__await__()
        return self._await_or_cancel(self._cancel).__await__()

    async def _await_or_cancel(self, token: CancelToken) -> T:
        wrapped = asyncio.wrap_future(self._future)
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not stop.done():
                stop.set_result(None)

        def cancelled() -> None:
            loop.call_soon_threadsafe(wake)

        remove = token.add_callback(cancelled)
        try:
            await asyncio.wait((wrapped, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            remove()
            stop.cancel()
        if wrapped.done():
            return wrapped.result()
        raise RunCancelled(token.reason)


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

    def __init__(self, recorder: TaskRecorder | None,
                 cancel: CancelToken | None = None) -> None:
        self.recorder = recorder or TaskRecorder()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.futures: list[concurrent.futures.Future[Any]] = []
        self.cancel = cancel  # the run's CancelToken: waits on futures end when it fires
        self.trace: RunTrace | None = None  # the run's spans, when it is traced
        self.node = ""  # the calling node execution's name and step (for task spans)
        self.step = 0

    def settle(self) -> None:
        """Wait for every call started by the execution, whatever became of the node: a
        task must not outlive its node (its result is recorded under the node's lease).
        Except when the run was cancelled: then the node ends at once and its tasks finish
        on their own (a thread cannot be stopped), still recording a result they reach."""
        if not self.futures:
            return
        token = self.cancel
        if token is None:
            concurrent.futures.wait(self.futures)
            return
        pending = [f for f in self.futures if not f.done()]
        while pending and not token.is_set():
            TaskFuture(pending[0], token)._wait_quietly()
            pending = [f for f in pending if not f.done()]

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
            return TaskFuture(future, self.cancel)
        attempts: list[tuple[int, float, float, str]] = []
        failures: list[BaseException] = []
        trace = self.trace

        def failed(number: int, started: float, exc: BaseException) -> None:
            attempts.append((number, started, time.time(), f"{type(exc).__name__}: {exc}"))
            if trace is not None:
                failures.append(exc)

        def run() -> Any:
            if trace is None:
                result = fn._run(args, kwargs, failed)
                self.recorder.record(fn.name, index, args, result, attempts)
                return result
            span = trace.task(fn.name, self.node, self.step)
            ran = False
            try:
                result = fn._run(args, kwargs, failed)
                ran = True
                self.recorder.record(fn.name, index, args, result, attempts)
            except BaseException as exc:
                span.failed(exc)
                raise
            finally:
                retried = failures if ran else failures[:-1]  # the last one failed the call
                for number, error in enumerate(retried, 1):
                    span.retry(number, error)
                span.end(len(retried) + 1)
            return result

        pool = self.recorder.pool()
        context = contextvars.copy_context()
        if pool is None:
            thread = threading.Thread(target=_settle, args=(future, context, run), daemon=True)
            thread.start()
        else:
            pool.submit(_settle, future, context, run)
        return TaskFuture(future, self.cancel)


def _settle(future: concurrent.futures.Future[Any], context: contextvars.Context,
            run: Callable[[], Any]) -> None:
    try:
        future.set_result(context.run(run))
    except BaseException as exc:
        future.set_exception(exc)
