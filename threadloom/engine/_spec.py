"""Compiled, immutable descriptions of a graph that the engine executes.

The builder (``threadloom.graph``) turns a ``StateGraph`` into a :class:`GraphSpec` once, at
``compile()``; everything that does not depend on the state at run time (which channels a
node reads, where its static edges lead, which join barriers it feeds, how its input is
coerced) is decided here so that a superstep only touches what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from threadloom.circuit import CircuitBreaker
from threadloom.types import CachePolicy, RetryPolicy

__all__ = ["END", "MISSING", "START", "BarrierSpec", "BranchSpec", "ChannelSpec", "GraphSpec",
           "NodeSpec"]

START = "__start__"
END = "__end__"


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A channel that holds no value."""


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One state key.

    Attributes:
        name: the key.
        reducer: merges a write into the current value; ``None`` for a plain (last value)
            key that accepts one write per step.
        initial: builds the value a reducer channel starts from (``list()`` for a list), or
            ``None`` when the channel starts empty.
    """

    name: str
    reducer: Callable[[Any, Any], Any] | None = None
    initial: Callable[[], Any] | None = None


@dataclass(frozen=True, slots=True)
class BranchSpec:
    """A conditional edge: ``path`` chooses the next node(s) from the state after its source
    node's own writes are applied.

    Attributes:
        path: ``path(state, config) -> Any``, already adapted to the user function's
            signature; may return an awaitable for async path functions.
        path_map: maps the path's results to node names (``None``: results are names).
        coerce: turns the state dict into what the path function expects.
        is_async: the user function is a coroutine function.
    """

    path: Callable[[Any, Any], Any]
    path_map: Mapping[Any, str] | None
    coerce: Callable[[dict[str, Any]], Any] | None
    is_async: bool = False


@dataclass(frozen=True, slots=True)
class BarrierSpec:
    """A join edge: ``target`` runs once every node in ``sources`` has finished."""

    sources: frozenset[str]
    target: str


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node, ready to run.

    Attributes:
        name: node name.
        call: ``call(input, scope) -> output``; adapted to inject ``config``/``writer``.
        is_async: the user function is a coroutine function (``call`` returns an awaitable).
        reads: the channels the node reads (``None``: every channel).
        coerce: builds the node's input from the channel values (``None``: a plain dict).
        static_next: targets of its plain edges (``END`` excluded).
        branches: its conditional edges.
        barriers: indexes into ``GraphSpec.barriers`` this node feeds.
        retry, timeout, cache: failure and caching policies.
        subgraph: the node is a compiled graph.
        destinations: where a ``Command`` returned by the node may go (for drawing).
        circuit: the circuit breaker every attempt goes through, if any.
        defer: the node waits until the run has nothing else to do (``add_node(defer=)``).
    """

    name: str
    call: Callable[[Any, Any], Any]
    is_async: bool = False
    reads: tuple[str, ...] | None = None
    coerce: Callable[[dict[str, Any]], Any] | None = None
    static_next: tuple[str, ...] = ()
    branches: tuple[BranchSpec, ...] = ()
    barriers: tuple[int, ...] = ()
    retry: tuple[RetryPolicy, ...] = ()
    timeout: float | None = None
    cache: CachePolicy | None = None
    subgraph: Any = None
    destinations: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    circuit: CircuitBreaker | None = None
    defer: bool = False


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """A whole compiled graph.

    Attributes:
        name: graph name (recorded on runs).
        channels: every state key.
        input_keys: keys accepted from the input.
        output_keys: keys returned as output (in schema order).
        nodes: the nodes by name.
        start_next: nodes the input triggers through plain edges from START.
        start_branches: conditional edges from START.
        barriers: join edges.
        coerce_state: builds the state schema's type from channel values (``None``: dict).
        input_channel: when set, the whole input is written to this channel.
        output_channel: when set, the run's result is this channel's value.
    """

    name: str
    channels: Mapping[str, ChannelSpec]
    input_keys: tuple[str, ...]
    output_keys: tuple[str, ...]
    nodes: Mapping[str, NodeSpec]
    start_next: tuple[str, ...]
    start_branches: tuple[BranchSpec, ...]
    barriers: tuple[BarrierSpec, ...]
    coerce_state: Callable[[dict[str, Any]], Any] | None = None
    input_channel: str | None = None
    output_channel: str | None = None
