"""Freezing a ``StateGraph`` definition into the engine's :class:`GraphSpec`."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadloom.engine._spec import END, START, BarrierSpec, BranchSpec, GraphSpec, NodeSpec
from threadloom.graph._schema import callable_info, coercer_for, keys_of

if TYPE_CHECKING:
    from threadloom._context import TaskScope
    from threadloom.graph.state import StateGraph, _BranchDef, _NodeDef

__all__ = ["build_spec"]


def _is_async_callable(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def _injections(fn: Any) -> tuple[int, bool, bool]:
    """(positional params before injections, wants ``config``, wants ``writer``)."""
    params = callable_info(fn)[0]
    if not params and not inspect.isfunction(fn):
        return 1, False, False
    wants_config = any(
        p.name == "config" or "RunnableConfig" in str(p.annotation) for p in params[1:]
    )
    wants_writer = any(p.name == "writer" for p in params[1:])
    positional = 1 if params else 0
    return positional, wants_config, wants_writer


def _config_param(fn: Any) -> str:
    for p in callable_info(fn)[0][1:]:
        if p.name == "config" or "RunnableConfig" in str(p.annotation):
            return p.name
    return "config"


def adapt_callable(fn: Callable[..., Any]) -> Callable[[Any, TaskScope], Any]:
    """``call(input, scope)`` for a user function that may ask for ``config``/``writer``."""
    positional, wants_config, wants_writer = _injections(fn)
    if positional == 0:
        return lambda inp, scope: fn()
    if not wants_config and not wants_writer:
        return lambda inp, scope: fn(inp)
    config_name = _config_param(fn) if wants_config else ""
    if wants_config and not wants_writer:
        return lambda inp, scope: fn(inp, **{config_name: scope.config})
    if wants_writer and not wants_config:
        return lambda inp, scope: fn(inp, writer=scope.writer)
    return lambda inp, scope: fn(inp, writer=scope.writer, **{config_name: scope.config})


def _subgraph_call(graph: Any, asynchronous: bool) -> Callable[[Any, TaskScope], Any]:
    def child_config(scope: TaskScope) -> dict[str, Any]:
        parent = scope.config
        configurable = {
            k: v for k, v in (parent.get("configurable") or {}).items()
            if k not in ("thread_id", "run_id", "checkpoint_id")
        }
        return {
            "configurable": configurable,
            "recursion_limit": parent.get("recursion_limit"),
            "run_id": str(uuid.uuid4()),
            "metadata": {"parent_run_id": parent.get("run_id"), "parent_node": scope.name},
        }

    if asynchronous:
        return lambda inp, scope: graph._arun_nested(inp, child_config(scope), scope)
    return lambda inp, scope: graph._run_nested(inp, child_config(scope), scope)


def _branch_spec(
    branch: _BranchDef, coerce: Callable[[dict[str, Any]], Any] | None
) -> BranchSpec:
    path = branch.path
    _, wants_config, _ = _injections(path)
    call: Callable[[Any, Any], Any]
    if wants_config:
        name = _config_param(path)
        call = lambda state, config: path(state, **{name: config})  # noqa: E731
    else:
        call = lambda state, config: path(state)  # noqa: E731
    return BranchSpec(call, branch.path_map, coerce, _is_async_callable(path))


def _restrict(
    keys: tuple[str, ...], coerce: Callable[[dict[str, Any]], Any] | None
) -> Callable[[dict[str, Any]], Any]:
    def build(values: dict[str, Any]) -> Any:
        state = {k: values[k] for k in keys if k in values}
        return state if coerce is None else coerce(state)

    return build


def build_spec(builder: StateGraph, name: str) -> GraphSpec:
    """Everything about the graph that does not depend on the state, decided once."""
    from threadloom.graph.compiled import CompiledGraph

    d = builder._def
    channels = dict(builder.channels)
    all_keys = set(channels)
    state_keys = keys_of(builder.state_schema)
    state_coerce = coercer_for(builder.state_schema)
    branch_coerce = (
        state_coerce if set(state_keys) == all_keys else _restrict(state_keys, state_coerce)
    )

    static: dict[str, list[str]] = {}
    for start, end in d.edges:
        if end != END:
            static.setdefault(start, []).append(end)
    # a join into END waits for nothing that could run after it: it needs no barrier
    joins = [(starts, end) for starts, end in d.joins if end != END]
    barriers = tuple(BarrierSpec(frozenset(starts), end) for starts, end in joins)
    feeds: dict[str, list[int]] = {}
    for index, (starts, _) in enumerate(joins):
        for start in dict.fromkeys(starts):
            feeds.setdefault(start, []).append(index)
    branches: dict[str, list[BranchSpec]] = {}
    for branch in d.branches:
        branches.setdefault(branch.source, []).append(_branch_spec(branch, branch_coerce))

    nodes: dict[str, NodeSpec] = {}
    for node in d.nodes.values():
        nodes[node.name] = _node_spec(
            node, all_keys, state_keys, state_coerce,
            tuple(dict.fromkeys(static.get(node.name, ()))),
            tuple(branches.get(node.name, ())),
            tuple(feeds.get(node.name, ())),
            CompiledGraph,
        )
    input_keys = tuple(k for k in keys_of(builder.input_schema) if k in channels)
    output_keys = tuple(k for k in keys_of(builder.output_schema) if k in channels)
    return GraphSpec(
        name=name,
        channels=channels,
        input_keys=input_keys,
        output_keys=output_keys,
        nodes=nodes,
        start_next=tuple(dict.fromkeys(static.get(START, ()))),
        start_branches=tuple(branches.get(START, ())),
        barriers=barriers,
        coerce_state=state_coerce,
        input_channel=builder.input_channel,
        output_channel=builder.output_channel,
    )


def _node_spec(
    node: _NodeDef,
    all_keys: set[str],
    state_keys: tuple[str, ...],
    state_coerce: Callable[[dict[str, Any]], Any] | None,
    static_next: tuple[str, ...],
    branches: tuple[BranchSpec, ...],
    barriers: tuple[int, ...],
    compiled_type: type,
) -> NodeSpec:
    action = node.action
    if isinstance(action, compiled_type):
        is_async = bool(action.has_async_nodes)  # type: ignore[attr-defined]
        call = _subgraph_call(action, is_async)
        keys: tuple[str, ...] = state_keys
        coerce = None
        subgraph: Any = action
    else:
        is_async = _is_async_callable(action)
        call = adapt_callable(action)
        schema = node.input_schema
        keys = keys_of(schema) if schema is not None else state_keys
        coerce = coercer_for(schema) if schema is not None else state_coerce
        subgraph = None
    reads = None if set(keys) == all_keys else keys
    return NodeSpec(
        name=node.name,
        call=call,
        is_async=is_async,
        reads=reads,
        coerce=coerce,
        static_next=static_next,
        branches=branches,
        barriers=barriers,
        retry=node.retry,
        timeout=node.timeout,
        cache=node.cache,
        subgraph=subgraph,
        destinations=node.destinations or (),
        metadata=node.metadata,
        circuit=node.circuit,
        defer=node.defer,
    )
