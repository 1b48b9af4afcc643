"""``@entrypoint``: a workflow written as one function, durable like a graph."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

from threadloom.graph import END, START, CompiledGraph, StateGraph
from threadloom.types import RetryPolicy

__all__ = ["entrypoint"]

R = TypeVar("R")
S = TypeVar("S")

INPUT = "__input__"
OUTPUT = "__output__"
PREVIOUS = "__previous__"


class _EntrypointState(TypedDict, total=False):
    __input__: Any
    __output__: Any
    __previous__: Any


class entrypoint:  # noqa: N801 - a decorator, named like LangGraph's
    """Turn a function into a runnable, durable workflow (a compiled graph of one node).

    The function takes the input (and optionally ``previous``: what the last run on the
    thread returned or saved, ``config``, ``writer``); it may call ``@task`` functions and
    ``interrupt()``. Resuming replays it from the start, with recorded task results
    returned instead of running the tasks again.

    Example:
        >>> @entrypoint(checkpointer=InMemorySaver())
        ... def workflow(topic: str) -> str:
        ...     draft = write(topic).result()
        ...     approved = interrupt({"draft": draft})
        ...     return draft if approved else ""
        >>> workflow.invoke("cats", {"thread_id": "1"})

    Args:
        checkpointer: the store that makes runs durable.
        retry_policy: retry the whole function on failure.
    """

    @dataclass(frozen=True, slots=True)
    class final(Generic[R, S]):  # noqa: N801 - LangGraph's name
        """Return ``value`` to the caller but save ``save`` as ``previous`` for next time."""

        value: R
        save: S

    def __init__(self, checkpointer: Any = None, store: Any = None, cache: Any = None,
                 context_schema: Any = None, cache_policy: Any = None,
                 retry_policy: RetryPolicy | None = None, **kwargs: Any) -> None:
        self.checkpointer = checkpointer
        self.retry_policy = retry_policy or kwargs.pop("retry", None)

    def __call__(self, fn: Any) -> CompiledGraph:
        name = getattr(fn, "__name__", "entrypoint")
        params = inspect.signature(fn).parameters
        wants = {k for k in ("previous", "config", "writer") if k in params}

        def call_kwargs(state: dict[str, Any], config: Any, writer: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if "previous" in wants:
                out["previous"] = state.get(PREVIOUS)
            if "config" in wants:
                out["config"] = config
            if "writer" in wants:
                out["writer"] = writer
            return out

        def wrap(result: Any) -> dict[str, Any]:
            if isinstance(result, entrypoint.final):
                return {OUTPUT: result.value, PREVIOUS: result.save}
            return {OUTPUT: result, PREVIOUS: result}

        node: Any
        if inspect.iscoroutinefunction(fn):
            async def node(state: dict[str, Any], config: Any, writer: Any) -> dict[str, Any]:
                return wrap(await fn(state.get(INPUT), **call_kwargs(state, config, writer)))
        else:
            def node(state: dict[str, Any], config: Any, writer: Any) -> dict[str, Any]:
                return wrap(fn(state.get(INPUT), **call_kwargs(state, config, writer)))

        builder = StateGraph(_EntrypointState)
        builder.add_node(name, node, retry_policy=self.retry_policy)
        builder.add_edge(START, name)
        builder.add_edge(name, END)
        builder.input_channel = INPUT
        builder.output_channel = OUTPUT
        return builder.compile(checkpointer=self.checkpointer, name=name)
