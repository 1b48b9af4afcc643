"""Public value types: control commands, interrupts, policies and snapshots."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeAlias, TypedDict, TypeVar

from threadloom import _context
from threadloom.errors import CircuitOpenError

__all__ = [
    "CachePolicy",
    "CancelToken",
    "Command",
    "Durability",
    "ExecutionInfo",
    "Interrupt",
    "RetryPolicy",
    "RunInfo",
    "RunnableConfig",
    "Send",
    "StateSnapshot",
    "StateTask",
    "StreamMode",
    "StreamWriter",
    "default_retry_on",
    "interrupt",
]

Durability: TypeAlias = Literal["sync", "async", "exit"]
"""When a run's progress is persisted: every step atomically, in the background, or at exit."""

StreamMode: TypeAlias = Literal["values", "updates", "custom", "debug"]
"""What ``stream`` yields: full state, per-node updates, node-written data, or debug events."""

StreamWriter: TypeAlias = Callable[[Any], None]
"""A callable injected into nodes that emits a chunk on the ``custom`` stream."""

N = TypeVar("N", bound=Hashable)


class RunnableConfig(TypedDict, total=False):
    """The config dict accepted by ``invoke`` and friends (LangGraph-compatible keys)."""

    run_id: str
    thread_id: str
    namespace: str
    configurable: dict[str, Any]
    recursion_limit: int
    tags: list[str]
    metadata: dict[str, Any]
    callbacks: Any
    max_concurrency: int | None
    run_name: str
    durability: Durability
    interrupt_before: Sequence[str] | Literal["*"]
    interrupt_after: Sequence[str] | Literal["*"]
    timeout: float | None
    cancel: CancelToken


class CancelToken:
    """A cancellation request for a run, passed as ``config["cancel"]``.

    Calling :meth:`cancel` (from any thread) stops the run before its next step, as
    ``RunCancelled`` (a step in flight finishes first), and at once wakes every node waiting on
    a ``@task`` future (``.result()`` or ``await``), which raises ``RunCancelled`` there: a node
    blocked on a slow task does not hold the run. The task itself keeps running in the
    background (a thread cannot be stopped); its result is still recorded if it succeeds, so
    resuming the run does not repeat its side effect. A durable run records the cancellation
    (status ``cancelled``), and can be resumed later.

    Example:
        >>> token = CancelToken()
        >>> threading.Timer(5, token.cancel).start()
        >>> graph.invoke(inputs, {"thread_id": "t-1", "cancel": token})  # raises RunCancelled
    """

    __slots__ = ("_event", "_lock", "_callbacks", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        """Request cancellation (idempotent: the first reason is kept)."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_set(self) -> bool:
        """Whether cancellation was requested."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancellation is requested or ``timeout`` passes; whether it was."""
        return self._event.wait(timeout)

    def add_callback(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once when cancellation is requested (at once if it was);
        returns a function that removes it."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._remove(callback)
        callback()
        return lambda: None

    def _remove(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


@dataclass(frozen=True, slots=True)
class Send:
    """Run ``node`` in the next step with ``arg`` as its input (map-reduce fan-out).

    Example:
        >>> def fan_out(state):
        ...     return [Send("worker", {"item": x}) for x in state["items"]]
    """

    node: str
    arg: Any

    def __repr__(self) -> str:
        return f"Send(node={self.node!r}, arg={self.arg!r})"


_PARENT = "__parent__"


@dataclass(frozen=True, slots=True)
class Command(Generic[N]):
    """Returned by a node to update state and choose where to go next, or passed as input
    to resume an interrupted run.

    Args:
        update: a state update, applied like a node's return value.
        goto: node name(s) or :class:`Send` packets to run next.
        resume: the value ``interrupt()`` returns when the run resumes; a dict mapping
            interrupt ids to values resumes several pending interrupts at once.
        graph: ``None`` for the current graph, ``Command.PARENT`` for the parent graph.
    """

    update: Any = None
    goto: N | Send | Sequence[N | Send] = ()
    resume: Any = None
    graph: str | None = None

    PARENT: ClassVar[str] = _PARENT

    def goto_targets(self) -> tuple[Any, ...]:
        """The ``goto`` value as a tuple."""
        goto: Any = self.goto
        if isinstance(goto, str | Send):
            return (goto,)
        return tuple(goto)


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A pending pause: the value given to ``interrupt()`` and the id used to resume it."""

    value: Any
    id: str = ""


def interrupt(value: Any) -> Any:
    """Pause the run and surface ``value`` to the caller; return the resume value.

    On the first execution this raises a :class:`~threadloom.errors.GraphInterrupt` that the
    engine records. When the run is resumed with ``Command(resume=...)`` or
    ``graph.resume(run_id, value=...)`` the node runs again from its start and this call
    returns the resume value instead. Several ``interrupt()`` calls in one node are matched
    to resume values by their order.

    Example:
        >>> def review(state):
        ...     answer = interrupt({"question": "approve?", "draft": state["draft"]})
        ...     return {"approved": answer == "yes"}
    """
    return _context.current_task("interrupt()").interrupt(value)


def default_retry_on(exc: Exception) -> bool:
    """Retry on errors that are usually transient: connection problems and timeouts, and
    anything that is not a programming error (``ValueError``, ``TypeError``, lookup errors
    and the like are never retried), nor an open circuit breaker's ``CircuitOpenError``
    (name it in ``retry_on`` to retry it)."""
    if isinstance(exc, CircuitOpenError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return 500 <= status < 600
    return not isinstance(
        exc,
        ValueError
        | TypeError
        | ArithmeticError
        | ImportError
        | LookupError
        | NameError
        | SyntaxError
        | RuntimeError
        | ReferenceError
        | StopIteration
        | StopAsyncIteration
        | OSError,
    )


class RetryPolicy(NamedTuple):
    """How a node (or task) is retried when it raises.

    Attributes:
        initial_interval: seconds before the first retry.
        backoff_factor: multiplier applied to the interval after each retry.
        max_interval: cap on the interval, in seconds.
        max_attempts: attempts in all, the first included.
        jitter: add up to 100% random jitter to each interval.
        retry_on: exception classes to retry, or a predicate on the exception.
    """

    initial_interval: float = 0.5
    backoff_factor: float = 2.0
    max_interval: float = 128.0
    max_attempts: int = 3
    jitter: bool = True
    retry_on: type[Exception] | Sequence[type[Exception]] | Callable[[Exception], bool] = (
        default_retry_on
    )

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one this policy retries."""
        if not isinstance(exc, Exception):
            return False
        on = self.retry_on
        if isinstance(on, type):
            return isinstance(exc, on)
        if isinstance(on, Sequence):
            return isinstance(exc, tuple(on))
        return bool(on(exc))

    def interval(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_interval, self.initial_interval * self.backoff_factor ** (attempt - 1))
        return base + random.uniform(0, base) if self.jitter else base


def _default_cache_key(*args: Any, **kwargs: Any) -> str:
    import hashlib
    import pickle

    return hashlib.sha256(pickle.dumps((args, kwargs), protocol=5)).hexdigest()


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Cache a node's result by its input for ``ttl`` seconds (``None``: forever)."""

    key_func: Callable[..., str | bytes] = _default_cache_key
    ttl: float | timedelta | None = None

    def ttl_seconds(self) -> float | None:
        """The time to live in seconds, or ``None``."""
        if isinstance(self.ttl, timedelta):
            return self.ttl.total_seconds()
        return self.ttl


@dataclass(frozen=True, slots=True)
class StateTask:
    """A task of a step in a :class:`StateSnapshot`: a node that is due or was interrupted."""

    id: str
    name: str
    path: tuple[Any, ...] = ()
    error: str | None = None
    interrupts: tuple[Interrupt, ...] = ()
    result: Any = None
    state: StateSnapshot | None = None
    """For a subgraph node, with ``get_state(..., subgraphs=True)``: the subgraph's own
    state (its latest checkpoint in this execution's namespace), if it has one."""


class StateSnapshot(NamedTuple):
    """The state of a thread at one checkpoint, as returned by ``get_state``."""

    values: dict[str, Any]
    """Current values of the state channels."""
    next: tuple[str, ...]
    """Nodes that will run in the next step (empty when the thread is done)."""
    config: RunnableConfig
    """Config that addresses this checkpoint (thread id and checkpoint id)."""
    metadata: dict[str, Any] | None
    """Checkpoint metadata: run_id, step, source, parents, writes."""
    created_at: str | None
    """ISO-8601 time the checkpoint was written."""
    parent_config: RunnableConfig | None
    """Config of the previous checkpoint, if any."""
    tasks: tuple[StateTask, ...] = ()
    """Tasks due in the next step, with any interrupts they raised."""
    interrupts: tuple[Interrupt, ...] = ()
    """Interrupts pending at this checkpoint."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A recorded run, with its input and output decoded (see ``graph.get_run``)."""

    run_id: str
    thread_id: str
    graph: str
    status: str
    input: Any
    output: Any
    error: str | None
    durability: str
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    steps: int
    executions: int
    resumed_from: str | None
    namespace: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """A recorded node execution, with inputs and outputs decoded (``list_executions``).

    ``inputs`` is the ``Send`` argument for a task started by ``Send``; for a node triggered
    by an edge it is ``None`` and the state it read is the checkpoint ``checkpoint_id``.
    ``parents`` are the executions that triggered it (for a ``@task`` call: its node's).
    """

    id: str
    run_id: str
    thread_id: str
    graph: str
    node: str
    step: int
    status: str
    attempt: int
    inputs: Any
    outputs: Any
    error: str | None
    attempts: tuple[Any, ...]
    parents: tuple[str, ...]
    checkpoint_id: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    namespace: str
