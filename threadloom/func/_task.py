"""``@task``: side effects that run in parallel, are recorded once they succeed, and are not
run again when the node that called them is replayed."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from threadloom import _context
from threadloom.circuit import CircuitBreaker
from threadloom.engine._tasks import TaskCalls, TaskFuture
from threadloom.errors import InvalidConfigError
from threadloom.logging import enter_task_attempt, exit_task_attempt
from threadloom.types import RetryPolicy

__all__ = ["TaskFunction", "task"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class TaskFunction(Generic[P, T]):
    """A function decorated with ``@task``. Calling it inside a node (or an entrypoint)
    starts it in the background and returns a :class:`TaskFuture`."""

    def __init__(self, fn: Callable[P, T], name: str | None = None,
                 retry_policy: RetryPolicy | None = None,
                 circuit: CircuitBreaker | None = None) -> None:
        if circuit is not None and not isinstance(circuit, CircuitBreaker):
            raise InvalidConfigError(f"@task circuit must be a CircuitBreaker, got {circuit!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "task"))
        self.retry_policy = retry_policy
        self.circuit = circuit
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[T]:
        scope = _context.current_task(f"task {self.name!r}")
        calls: TaskCalls | None = scope.extras.get("tasks")
        if calls is None:
            services = scope.services
            calls = services.task_calls(scope) if services is not None else TaskCalls(None)
            calls.cancel = getattr(services, "cancel", None)  # the run's CancelToken
            calls.trace = getattr(services, "trace", None)
            calls.node, calls.step = scope.name, scope.step
            scope.extras["tasks"] = calls
        return calls.start(self, args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any],
             on_attempt_failed: Callable[[int, float, BaseException], None]) -> Any:
        attempt = 1
        while True:
            started = time.time()
            token = enter_task_attempt(attempt)
            try:
                return self._attempt(args, kwargs)
            except Exception as exc:
                on_attempt_failed(attempt, started, exc)
                policy = self.retry_policy
                if policy is None or not policy.should_retry(exc) or attempt >= policy.max_attempts:
                    log.warning("task %s failed on attempt %d: %s: %s", self.name, attempt,
                                type(exc).__name__, exc)
                    raise
                delay = policy.interval(attempt)
                log.warning("task %s failed on attempt %d, retrying in %.2fs: %s: %s",
                            self.name, attempt, delay, type(exc).__name__, exc)
                time.sleep(delay)
                attempt += 1
            finally:
                exit_task_attempt(token)

    def _attempt(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One call of the function, through the task's circuit breaker."""
        if self.circuit is None:
            return self._call(args, kwargs)
        with self.circuit.guard():
            return self._call(args, kwargs)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.is_async:
            return asyncio.run(self.fn(*args, **kwargs))  # type: ignore[arg-type]
        return self.fn(*args, **kwargs)


@overload
def task(fn: Callable[P, T], /) -> TaskFunction[P, T]: ...


@overload
def task(
    *, name: str | None = None, retry_policy: RetryPolicy | None = None,
    circuit: CircuitBreaker | None = None, **kwargs: Any
) -> Callable[[Callable[P, T]], TaskFunction[P, T]]: ...


def task(
    fn: Callable[P, T] | None = None, /, *, name: str | None = None,
    retry_policy: RetryPolicy | None = None, circuit: CircuitBreaker | None = None,
    **kwargs: Any,
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
        circuit: a :class:`~threadloom.circuit.CircuitBreaker` every call goes through (a
            recorded result returned on replay does not); while it is open the call fails
            at once with ``CircuitOpenError``.
    """
    retry = retry_policy or kwargs.pop("retry", None)
    if fn is not None:
        return TaskFunction(fn, name, retry, circuit)
    return lambda f: TaskFunction(f, name, retry, circuit)
