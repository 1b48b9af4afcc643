"""The current task, as a ContextVar: what ``get_config()``, ``interrupt()``,
``get_stream_writer()`` and ``@task`` calls inside a node refer to."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from threadloom._ids import interrupt_id
from threadloom.errors import GraphInterrupt

__all__ = ["TaskScope", "current_task", "current_task_or_none", "interrupt_id", "task_scope"]


def _discard(_chunk: Any) -> None:
    return None


class TaskScope:
    """Everything a running node may ask the engine for.

    Attributes:
        config: the run's config as the node sees it (``run_id``, ``thread_id``,
            ``configurable``...).
        name: the node name; ``step``: the superstep; ``task_id``: the execution id;
            ``attempt``: the attempt running (1, then 2... under a retry policy).
        writer: emits a chunk on the ``custom`` stream (a no-op when nobody listens).
        resume: resume values for this execution's ``interrupt()`` calls, in call order.
        on_interrupt: called with ``(index, value)`` to build the Interrupt raised.
        extras: room for the engine's per-task services (e.g. the ``@task`` runner).
    """

    __slots__ = (
        "config",
        "name",
        "step",
        "task_id",
        "attempt",
        "writer",
        "resume",
        "interrupt_count",
        "extras",
        "services",
    )

    def __init__(
        self,
        config: dict[str, Any],
        name: str,
        step: int,
        task_id: str,
        writer: Callable[[Any], None] | None = None,
        resume: list[Any] | None = None,
        services: Any = None,
    ) -> None:
        self.config = config
        self.name = name
        self.step = step
        self.task_id = task_id
        self.attempt = 1
        self.writer: Callable[[Any], None] = writer or _discard
        self.resume: list[Any] = resume if resume is not None else []
        self.interrupt_count = 0
        self.extras: dict[str, Any] = {}
        self.services = services  # the run's context: task recording, pools

    def interrupt(self, value: Any) -> Any:
        """Return the resume value for the next ``interrupt()`` call, or pause the run."""
        from threadloom.types import Interrupt

        index = self.interrupt_count
        self.interrupt_count += 1
        if index < len(self.resume):
            return self.resume[index]
        raise GraphInterrupt([Interrupt(value=value, id=interrupt_id(self.task_id, index))],
                             index)


_current: ContextVar[TaskScope | None] = ContextVar("threadloom_task", default=None)


def current_task_or_none() -> TaskScope | None:
    """The scope of the node running in this context, if any."""
    return _current.get()


def current_task(what: str) -> TaskScope:
    """The scope of the node running in this context.

    Raises:
        RuntimeError: called outside a running node.
    """
    scope = _current.get()
    if scope is None:
        raise RuntimeError(f"{what} can only be called from inside a node of a running graph")
    return scope


def task_scope(scope: TaskScope | None) -> Any:
    """Set the current scope; returns the token to pass to :func:`reset_scope`."""
    return _current.set(scope)


def reset_scope(token: Any) -> None:
    """Undo a :func:`task_scope`."""
    _current.reset(token)
