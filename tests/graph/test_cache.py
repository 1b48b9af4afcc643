"""Node caching: compile(cache=InMemoryCache()) with add_node(cache_policy=...)."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

import pytest

from threadloom.cache import InMemoryCache
from threadloom.graph import END, START, StateGraph
from threadloom.types import CachePolicy


class State(TypedDict):
    x: int
    out: Annotated[list, operator.add]


def _graph(calls: list[int], policy: CachePolicy, asynchronous: bool = False):
    if asynchronous:
        async def expensive(state: State):
            calls.append(state["x"])
            return {"out": [state["x"] * 10]}
    else:
        def expensive(state: State):  # type: ignore[misc]
            calls.append(state["x"])
            return {"out": [state["x"] * 10]}

    builder = StateGraph(State)
    builder.add_node("expensive", expensive, cache_policy=policy)
    builder.add_edge(START, "expensive")
    builder.add_edge("expensive", END)
    return builder


def test_a_cached_node_runs_once_per_distinct_input():
    calls: list[int] = []
    graph = _graph(calls, CachePolicy()).compile(cache=InMemoryCache())
    assert graph.invoke({"x": 1, "out": []}) == {"x": 1, "out": [10]}
    assert graph.invoke({"x": 1, "out": []}) == {"x": 1, "out": [10]}
    assert graph.invoke({"x": 2, "out": []}) == {"x": 2, "out": [20]}
    assert calls == [1, 2]


async def test_async_nodes_are_cached_too():
    calls: list[int] = []
    graph = _graph(calls, CachePolicy(), asynchronous=True).compile(cache=InMemoryCache())
    for _ in range(3):
        assert await graph.ainvoke({"x": 3, "out": []}) == {"x": 3, "out": [30]}
    assert calls == [3]


def test_the_key_function_decides_what_counts_as_the_same_input():
    calls: list[int] = []
    policy = CachePolicy(key_func=lambda state: str(state["x"] % 2))
    graph = _graph(calls, policy).compile(cache=InMemoryCache())
    graph.invoke({"x": 1, "out": []})
    assert graph.invoke({"x": 3, "out": []}) == {"x": 3, "out": [10]}  # same key as x=1
    assert calls == [1]


def test_entries_expire_after_their_ttl(monkeypatch):
    import threadloom.cache as cache_module

    clock = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: clock[0])
    calls: list[int] = []
    graph = _graph(calls, CachePolicy(ttl=60)).compile(cache=InMemoryCache())
    graph.invoke({"x": 1, "out": []})
    clock[0] += 59
    graph.invoke({"x": 1, "out": []})
    clock[0] += 2
    graph.invoke({"x": 1, "out": []})
    assert calls == [1, 1]


@pytest.mark.parametrize("cache", [None, InMemoryCache()])
def test_without_a_policy_or_without_a_cache_nothing_is_cached(cache):
    calls: list[int] = []
    builder = StateGraph(State)
    builder.add_node("plain", lambda s: calls.append(s["x"]) or {"out": [s["x"]]})
    builder.add_edge(START, "plain")
    graph = builder.compile(cache=cache)
    graph.invoke({"x": 1, "out": []})
    graph.invoke({"x": 1, "out": []})
    assert calls == [1, 1]
    calls.clear()
    uncached = _graph(calls, CachePolicy()).compile()  # a policy but no cache
    uncached.invoke({"x": 1, "out": []})
    uncached.invoke({"x": 1, "out": []})
    assert calls == [1, 1]
