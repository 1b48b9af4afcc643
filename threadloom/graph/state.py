"""The graph builder: ``StateGraph``, shaped like LangGraph's so existing programs run after
changing their imports."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from threadloom.checkpoint.serde import allow_schema
from threadloom.circuit import CircuitBreaker
from threadloom.config import resolve_durability
from threadloom.engine._spec import END, START, ChannelSpec
from threadloom.errors import GraphValidationError
from threadloom.graph._draw import reachable
from threadloom.graph._schema import callable_info, channels_of, is_schema
from threadloom.types import CachePolicy, Command, RetryPolicy

if TYPE_CHECKING:
    from threadloom.checkpoint.base import Store
    from threadloom.graph.compiled import CompiledGraph
    from threadloom.types import Durability

__all__ = ["END", "START", "StateGraph"]

_RESERVED_CHARS = ("|", ":")


@dataclass(slots=True)
class _NodeDef:
    name: str
    action: Any
    input_schema: Any
    retry: tuple[RetryPolicy, ...]
    timeout: float | None
    cache: CachePolicy | None
    destinations: tuple[str, ...] | None
    metadata: dict[str, Any]
    defer: bool
    circuit: CircuitBreaker | None = None
    labels: dict[str, str] = field(default_factory=dict)  # destination -> edge label


@dataclass(slots=True)
class _BranchDef:
    source: str
    path: Callable[..., Any]
    path_map: dict[Hashable, str] | None
    targets: tuple[str, ...] | None  # statically known destinations, for checks and drawing


@dataclass(slots=True)
class _Definition:
    nodes: dict[str, _NodeDef] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    joins: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    branches: list[_BranchDef] = field(default_factory=list)


class StateGraph:
    """A graph whose nodes read and update a shared state.

    Each key of the state schema is a channel. A key annotated ``Annotated[T, reducer]``
    merges every write with ``reducer(current, update)``; any other key keeps the last value
    written and accepts one write per step.

    Example:
        >>> from typing import TypedDict
        >>> from threadloom.graph import StateGraph, START, END
        >>> class State(TypedDict):
        ...     step: int
        >>> builder = StateGraph(State)
        >>> builder.add_node("increment", lambda s: {"step": s["step"] + 1})
        >>> builder.add_edge(START, "increment")
        >>> builder.add_edge("increment", END)
        >>> builder.compile().invoke({"step": 0})
        {'step': 1}

    Args:
        state_schema: a TypedDict, dataclass or Pydantic model describing the state.
        config_schema: accepted for compatibility; not used.
        input_schema: the keys accepted as input (default: the state schema).
        output_schema: the keys returned as output (default: the state schema).
        context_schema: accepted for compatibility; not used.
    """

    def __init__(
        self,
        state_schema: Any = None,
        config_schema: Any = None,
        *,
        input_schema: Any = None,
        output_schema: Any = None,
        context_schema: Any = None,
        **legacy: Any,
    ) -> None:
        unknown = set(legacy) - {"input", "output"}
        if unknown:
            raise TypeError(f"StateGraph() got unexpected keyword arguments {sorted(unknown)}")
        input_schema = input_schema if input_schema is not None else legacy.get("input")
        output_schema = output_schema if output_schema is not None else legacy.get("output")
        if state_schema is None:
            if input_schema is None:
                raise GraphValidationError("StateGraph needs a state schema")
            state_schema = input_schema
        self.state_schema = state_schema
        self.input_schema = input_schema if input_schema is not None else state_schema
        self.output_schema = output_schema if output_schema is not None else state_schema
        self.context_schema = context_schema if context_schema is not None else config_schema
        self.channels: dict[str, ChannelSpec] = {}
        for schema in (self.state_schema, self.input_schema, self.output_schema):
            self._add_schema(schema)
        self._def = _Definition()
        self.compiled = False
        # set by @entrypoint: the whole input goes to one channel, one channel is the output
        self.input_channel: str | None = None
        self.output_channel: str | None = None

    def _add_schema(self, schema: Any) -> None:
        allow_schema(schema)  # what the state declares it holds may be stored
        for key, channel in channels_of(schema).items():
            existing = self.channels.get(key)
            if existing is None or (existing.reducer is None and channel.reducer is not None):
                self.channels[key] = channel

    # -- nodes ----------------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, Any]:
        """Node name -> the function or graph given to ``add_node``."""
        return {name: n.action for name, n in self._def.nodes.items()}

    def add_node(
        self,
        node: str | Callable[..., Any] | Any,
        action: Callable[..., Any] | Any = None,
        *,
        defer: bool = False,
        metadata: dict[str, Any] | None = None,
        input_schema: Any = None,
        retry_policy: RetryPolicy | Sequence[RetryPolicy] | None = None,
        cache_policy: CachePolicy | None = None,
        destinations: Sequence[str] | dict[str, str] | None = None,
        timeout: float | None = None,
        circuit: CircuitBreaker | None = None,
        **legacy: Any,
    ) -> StateGraph:
        """Add a node: a function of the state (sync or async) or a compiled graph.

        Args:
            node: the node's name, or the function itself (its name is then inferred).
            action: the function or compiled graph, when ``node`` is a name.
            defer: hold the node back, once triggered, until the run has nothing else to
                do (no other node is due; ``Send`` tasks do not count), e.g. a join after
                fan-out branches of uneven length. As in LangGraph.
            metadata: free-form metadata kept with the node.
            input_schema: the keys the node reads (default: inferred from the type hint of
                its first parameter, else the state schema).
            retry_policy: one policy, or several tried in order.
            cache_policy: cache the node's result by its input (needs ``compile(cache=...)``).
            destinations: the nodes a ``Command`` returned by this node may go to (a dict
                maps each to the label of its edge in drawings). Not needed to run: it
                draws the node's edges and informs ``compile(strict=True)``.
            timeout: seconds after which the node execution fails with ``NodeTimeoutError``.
            circuit: a :class:`~threadloom.circuit.CircuitBreaker` every attempt goes
                through; while it is open the node fails at once with ``CircuitOpenError``.

        Returns:
            The builder, for chaining.

        Raises:
            GraphValidationError: bad or duplicate name, or the graph is already compiled;
                ``circuit`` is not a ``CircuitBreaker``.
        """
        if "input" in legacy:
            input_schema = legacy.pop("input")
        if "retry" in legacy:
            retry_policy = legacy.pop("retry")
        if legacy:
            raise TypeError(f"add_node() got unexpected keyword arguments {sorted(legacy)}")
        if not isinstance(node, str):
            action, name = node, _infer_name(node)
        else:
            name = node
        if action is None:
            raise GraphValidationError(f"node {name!r} needs a function or a compiled graph")
        self._check_name(name)
        if circuit is not None and not isinstance(circuit, CircuitBreaker):
            raise GraphValidationError(
                f"node {name!r}: circuit must be a CircuitBreaker, got {circuit!r}"
            )
        if timeout is not None and timeout <= 0:
            raise GraphValidationError(f"node {name!r}: timeout must be greater than 0")
        if input_schema is None and callable(action) and not _is_compiled(action):
            input_schema = _first_param_schema(action)
        if input_schema is not None:
            self._add_schema(input_schema)
        retry: tuple[RetryPolicy, ...]
        if retry_policy is None:
            retry = ()
        elif isinstance(retry_policy, RetryPolicy):
            retry = (retry_policy,)
        else:
            retry = tuple(retry_policy)
        dests = tuple(destinations) if destinations is not None else _command_destinations(action)
        self._def.nodes[name] = _NodeDef(
            name, action, input_schema, retry, timeout, cache_policy, dests,
            dict(metadata or {}), bool(defer), circuit,
            labels=dict(destinations) if isinstance(destinations, dict) else {},
        )
        return self

    def _check_name(self, name: str) -> None:
        if self.compiled:
            raise GraphValidationError("the graph is already compiled; build a new StateGraph")
        if name in (START, END):
            raise GraphValidationError(f"node name {name!r} is reserved")
        if not name or not isinstance(name, str):
            raise GraphValidationError(f"node name must be a non-empty string, got {name!r}")
        for char in _RESERVED_CHARS:
            if char in name:
                raise GraphValidationError(
                    f"node name {name!r} contains {char!r}, which is reserved"
                )
        if name in self._def.nodes:
            raise GraphValidationError(f"node {name!r} is already present")

    def add_sequence(
        self, nodes: Sequence[Callable[..., Any] | tuple[str, Callable[..., Any]]]
    ) -> StateGraph:
        """Add nodes that run one after the other, linked by plain edges.

        Raises:
            GraphValidationError: the sequence is empty or a name repeats.
        """
        if not nodes:
            raise GraphValidationError("add_sequence needs at least one node")
        previous: str | None = None
        for item in nodes:
            if isinstance(item, tuple):
                name, action = item
            else:
                name, action = _infer_name(item), item
            self.add_node(name, action)
            if previous is not None:
                self.add_edge(previous, name)
            previous = name
        return self

    # -- edges ----------------------------------------------------------------------------

    def add_edge(self, start_key: str | Sequence[str], end_key: str) -> StateGraph:
        """Run ``end_key`` after ``start_key``; with a list of starts, after all of them.

        Raises:
            GraphValidationError: END used as a start, START as an end, or already compiled.
        """
        if self.compiled:
            raise GraphValidationError("the graph is already compiled; build a new StateGraph")
        if end_key == START:
            raise GraphValidationError("START cannot be the end of an edge")
        if isinstance(start_key, str):
            if start_key == END:
                raise GraphValidationError("END cannot be the start of an edge")
            self._def.edges.append((start_key, end_key))
            return self
        starts = tuple(start_key)
        if not starts:
            raise GraphValidationError("add_edge needs at least one start node")
        for s in starts:
            if s == START:
                raise GraphValidationError("START cannot be part of a join edge")
            if s == END:
                raise GraphValidationError("END cannot be the start of an edge")
        if len(starts) == 1:
            self._def.edges.append((starts[0], end_key))
        else:
            self._def.joins.append((starts, end_key))
        return self

    def add_conditional_edges(
        self,
        source: str,
        path: Callable[..., Any],
        path_map: dict[Hashable, str] | list[str] | None = None,
        then: str | None = None,
    ) -> StateGraph:
        """After ``source``, call ``path`` on the state to choose the next node(s).

        ``path`` may return a node name, ``END``, a :class:`~threadloom.types.Send`, or a list
        of those; with ``path_map`` its results are looked up in the map first (a list maps
        each name to itself).

        Raises:
            GraphValidationError: the graph is already compiled, or ``source`` already has a
                conditional edge whose path function has the same name (as in LangGraph,
                where lambdas and other unnamed callables all share one name).
        """
        if self.compiled:
            raise GraphValidationError("the graph is already compiled; build a new StateGraph")
        name = _branch_name(path)
        if any(b.source == source and _branch_name(b.path) == name for b in self._def.branches):
            raise GraphValidationError(
                f"node {source!r} already has a conditional edge whose path function is named "
                f"{name!r}: give each path function of a node its own name (or route with "
                "one function)"
            )
        if then is not None:
            raise GraphValidationError("add_conditional_edges(then=...) is not supported")
        mapping: dict[Hashable, str] | None
        if path_map is None:
            mapping = None
            targets = _literal_returns(path)
        elif isinstance(path_map, dict):
            mapping = dict(path_map)
            targets = tuple(dict.fromkeys(mapping.values()))
        else:
            mapping = {name: name for name in path_map}
            targets = tuple(path_map)
        self._def.branches.append(_BranchDef(source, path, mapping, targets))
        return self

    def set_entry_point(self, key: str) -> StateGraph:
        """Start the graph at ``key`` (same as ``add_edge(START, key)``)."""
        return self.add_edge(START, key)

    def set_conditional_entry_point(
        self, path: Callable[..., Any], path_map: dict[Hashable, str] | list[str] | None = None
    ) -> StateGraph:
        """Choose the first node(s) with ``path`` (same as a conditional edge from START)."""
        return self.add_conditional_edges(START, path, path_map)

    def set_finish_point(self, key: str) -> StateGraph:
        """Finish the graph after ``key`` (same as ``add_edge(key, END)``)."""
        return self.add_edge(key, END)

    # -- compile --------------------------------------------------------------------------

    def validate(self, interrupt: Sequence[str] = (), *, strict: bool = False) -> StateGraph:
        """Check the graph as LangGraph does: known nodes on every edge, an entry point,
        interrupt names that exist. A node that nothing leads to is allowed (it never runs).

        Args:
            interrupt: node names given to ``interrupt_before`` / ``interrupt_after``.
            strict: also require every node to be reachable from START (see
                :meth:`compile`).

        Raises:
            GraphValidationError: with a message naming the problem.
        """
        d = self._def
        known = set(d.nodes)
        for start, end in d.edges:
            if start != START and start not in known:
                raise GraphValidationError(f"edge starts at unknown node {start!r}")
            if end != END and end not in known:
                raise GraphValidationError(f"edge ends at unknown node {end!r}")
        for starts, end in d.joins:
            for start in starts:
                if start not in known:
                    raise GraphValidationError(f"join edge starts at unknown node {start!r}")
            if end != END and end not in known:
                raise GraphValidationError(f"join edge ends at unknown node {end!r}")
        for branch in d.branches:
            if branch.source != START and branch.source not in known:
                raise GraphValidationError(
                    f"conditional edge starts at unknown node {branch.source!r}"
                )
            for target in branch.targets or ():
                if target != END and target not in known:
                    raise GraphValidationError(
                        f"conditional edge from {branch.source!r} leads to unknown node "
                        f"{target!r}"
                    )
        for node in d.nodes.values():
            for target in node.destinations or ():
                if target != END and target not in known:
                    raise GraphValidationError(
                        f"node {node.name!r} declares the destination {target!r}, which is "
                        "not a node"
                    )
        if not any(s == START for s, _ in d.edges) and not any(
            b.source == START for b in d.branches
        ):
            raise GraphValidationError(
                "the graph has no entry point: add an edge from START to a node "
                "(add_edge(START, 'node') or set_entry_point('node'))"
            )
        for name in interrupt:
            if name != "*" and name not in known:
                raise GraphValidationError(f"interrupt names unknown node {name!r}")
        if strict:
            self._check_reachable()
        return self

    def _check_reachable(self) -> None:
        d = self._def
        out: dict[str, set[str]] = {START: set()}
        for name in d.nodes:
            out[name] = set()
        dynamic = False
        for start, end in d.edges:
            out[start].add(end)
        for branch in d.branches:
            if branch.targets is None:
                dynamic = True
            else:
                out[branch.source].update(branch.targets)
        for node in d.nodes.values():
            if node.destinations is None:
                if _may_return_command(node.action):
                    dynamic = True
            else:
                out[node.name].update(node.destinations)
        if dynamic:
            return  # a router with unknown destinations may reach any node
        seen = reachable(out, d.joins)
        unreachable = [n for n in d.nodes if n not in seen]
        if unreachable:
            raise GraphValidationError(
                f"node(s) {unreachable} cannot be reached from START: add edges to them or "
                "remove them (a node reached through Command(goto=...) must be declared with "
                "add_node(..., destinations=[...]) or a -> Command[Literal[...]] return hint)"
            )

    def compile(
        self,
        checkpointer: Store | None | bool = None,
        *,
        cache: Any = None,
        store: Any = None,
        interrupt_before: Sequence[str] | Literal["*"] | None = None,
        interrupt_after: Sequence[str] | Literal["*"] | None = None,
        durability: Durability | None = None,
        debug: bool = False,
        name: str | None = None,
        serde: Any = None,
        lease_ttl: float = 30.0,
        strict: bool = False,
    ) -> CompiledGraph:
        """Validate the graph and freeze it into a runnable :class:`CompiledGraph`.

        Args:
            checkpointer: a store (``InMemorySaver()``, ``SqliteSaver``...) to persist
                threads, runs and executions; ``None`` runs in memory only.
            cache: a cache for nodes with a ``cache_policy`` (e.g.
                :class:`threadloom.cache.InMemoryCache`); without one nothing is cached.
            store: accepted for compatibility; long-term memory stores are not supported.
            interrupt_before: nodes to pause before (``"*"``: all).
            interrupt_after: nodes to pause after (``"*"``: all).
            durability: default durability mode (``"async"`` when not given).
            debug: stream debug events to stderr as the graph runs.
            name: the graph's name (recorded on runs), default ``"graph"``.
            serde: how values are serialized for the store (default: JSON for plain data,
                typed JSON for an allowlist of other types, never pickle unless asked; see
                :mod:`threadloom.checkpoint.serde`), encrypted when
                ``THREADLOOM_ENCRYPTION_KEY`` is set (:mod:`threadloom.checkpoint.crypto`).
            lease_ttl: seconds a run's lease on its thread lasts without a heartbeat; a
                crashed run's thread can be taken over after this.
            strict: also reject nodes that cannot be reached from START through edges,
                conditional edges with known destinations, or declared ``Command``
                destinations (``destinations=`` or a ``-> Command[Literal[...]]`` hint).
                Off by default, as in LangGraph, which compiles such nodes and never runs
                them. A router whose destinations are unknowable (no path map, or a node
                whose code builds a ``Command`` without declaring them) may reach any node,
                so then nothing is reported.

        Raises:
            GraphValidationError: see :meth:`validate`.
            InvalidConfigError: ``durability`` is not ``"sync"``, ``"async"`` or ``"exit"``.
        """
        from threadloom.graph.compiled import CompiledGraph

        before = _interrupt_list(interrupt_before)
        after = _interrupt_list(interrupt_after)
        if durability is not None:
            resolve_durability(durability, "async")
        self.validate(interrupt=(*before, *after), strict=strict)
        graph = CompiledGraph(
            self,
            checkpointer=checkpointer,
            cache=cache,
            interrupt_before=before,
            interrupt_after=after,
            durability=durability,
            debug=debug,
            name=name or "graph",
            serde=serde,
            lease_ttl=lease_ttl,
        )
        self.compiled = True
        return graph


def _interrupt_list(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _is_compiled(obj: Any) -> bool:
    from threadloom.graph.compiled import CompiledGraph

    return isinstance(obj, CompiledGraph)


def _infer_name(action: Any) -> str:
    if _is_compiled(action):
        return str(action.name)
    name = getattr(action, "__name__", None) or type(action).__name__
    if name == "<lambda>":
        raise GraphValidationError("a lambda node needs a name: add_node('name', lambda s: ...)")
    return str(name)


def _first_param_schema(action: Callable[..., Any]) -> Any:
    """The schema class annotated on a node function's first parameter, if any."""
    fn = action if inspect.isfunction(action) or inspect.ismethod(action) else None
    if fn is None:
        call = getattr(action, "__call__", None)  # noqa: B004
        fn = call if inspect.ismethod(call) else None
    if fn is None:
        return None
    params, hints = callable_info(fn)
    if not params:
        return None
    hint = hints.get(params[0].name)
    return hint if is_schema(hint) else None


def _branch_name(path: Callable[..., Any]) -> str:
    """A conditional edge's name: its path function's, or ``"condition"`` when it has none
    (a lambda, a partial, a callable object)."""
    name = getattr(path, "__name__", None)
    if (inspect.isfunction(path) or inspect.ismethod(path)) and name and name != "<lambda>":
        return str(name)
    return "condition"


def _literal_names(hint: Any) -> tuple[str, ...] | None:
    if get_origin(hint) is Literal:
        return tuple(str(a) for a in get_args(hint))
    return None


def _literal_returns(path: Callable[..., Any]) -> tuple[str, ...] | None:
    """Destinations named by a ``-> Literal[...]`` return hint of a path function."""
    return _literal_names(callable_info(path)[1].get("return"))


def _command_destinations(action: Any) -> tuple[str, ...] | None:
    """Destinations named by a ``-> Command[Literal[...]]`` return hint."""
    if _is_compiled(action) or not callable(action):
        return None
    hint = callable_info(action)[1].get("return")
    if hint is None:
        return None
    candidates = get_args(hint) if get_origin(hint) is typing.Union else (hint,)
    for candidate in candidates:
        if get_origin(candidate) is Command:
            args = get_args(candidate)
            names = _literal_names(args[0]) if args else None
            if names is not None:
                return names
    return None


def _may_return_command(action: Any) -> bool:
    """Whether a node could return a ``Command`` (its code names ``Command``)."""
    if _is_compiled(action):
        return False
    code = getattr(action, "__code__", None)
    if code is None:
        call = getattr(type(action), "__call__", None)  # noqa: B004
        code = getattr(call, "__code__", None)
    if code is None:
        return True  # partials, builtins: cannot tell
    stack = [code]
    while stack:
        current = stack.pop()
        if "Command" in current.co_names:
            return True
        stack.extend(c for c in current.co_consts if inspect.iscode(c))
    return False
