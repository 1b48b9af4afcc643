"""Parity: a compiled graph used as a node of another graph.

Every expected value here is LangGraph 1.2.22's observed behaviour for the same graph (each
case was run under LangGraph first). A subgraph node's update to its parent is the
subgraph's whole final state (restricted to the keys the parent has), not just what its own
nodes wrote; so a shared ``operator.add`` key gets the parent's value appended again.
"""

import operator
from typing import Annotated, TypedDict

from threadloom.graph import START, StateGraph
from threadloom.types import Command


class State(TypedDict):
    log: Annotated[list, operator.add]
    x: str


def log(name: str):
    """A node that appends its own name to ``log``."""
    return lambda state: {"log": [name]}


def child():
    """s1 (appends "!" to x) -> s2."""
    builder = StateGraph(State)
    builder.add_node("s1", lambda state: {"log": ["s1"], "x": state["x"] + "!"})
    builder.add_node("s2", log("s2"))
    builder.add_edge(START, "s1")
    builder.add_edge("s1", "s2")
    return builder.compile()


def parent():
    """p1 -> child (a compiled graph) -> p2."""
    builder = StateGraph(State)
    builder.add_node("p1", log("p1"))
    builder.add_node("child", child())
    builder.add_node("p2", log("p2"))
    builder.add_edge(START, "p1")
    builder.add_edge("p1", "child")
    builder.add_edge("child", "p2")
    return builder.compile()


def test_compiled_graph_runs_on_its_own() -> None:
    assert child().invoke({"x": "a"}) == {"log": ["s1", "s2"], "x": "a!"}


def test_subgraph_node_shares_keys_and_returns_its_whole_state() -> None:
    # "p1" appears twice: the child's final log ["p1", "s1", "s2"] is appended to ["p1"].
    assert parent().invoke({"x": "a"}) == {"log": ["p1", "p1", "s1", "s2", "p2"], "x": "a!"}


def test_subgraph_update_in_the_parents_updates_stream() -> None:
    assert list(parent().stream({"x": "a"}, stream_mode="updates")) == [
        {"p1": {"log": ["p1"]}},
        {"child": {"log": ["p1", "s1", "s2"], "x": "a!"}},
        {"p2": {"log": ["p2"]}},
    ]


def test_subgraph_that_does_not_write_a_shared_reducer_key_still_returns_it() -> None:
    inner = StateGraph(State)
    inner.add_node("s1", lambda state: {"x": state["x"] + "!"})
    inner.add_edge(START, "s1")
    builder = StateGraph(State)
    builder.add_node("p1", log("p1"))
    builder.add_node("child", inner.compile())
    builder.add_edge(START, "p1")
    builder.add_edge("p1", "child")
    assert builder.compile().invoke({"x": "a"}) == {"log": ["p1", "p1"], "x": "a!"}


def test_subgraph_with_another_schema_exchanges_only_the_shared_keys() -> None:
    class Inner(TypedDict):
        x: str
        inner: str

    inner = StateGraph(Inner)
    inner.add_node("i1", lambda state: {"inner": "in", "x": state["x"] + "?"})
    inner.add_edge(START, "i1")
    builder = StateGraph(State)
    builder.add_node("child", inner.compile())
    builder.add_edge(START, "child")
    assert builder.compile().invoke({"x": "a", "log": ["z"]}) == {"log": ["z"], "x": "a?"}


def test_subgraph_invoked_inside_a_node_function() -> None:
    class Inner(TypedDict):
        x: str
        inner: str

    inner_builder = StateGraph(Inner)
    inner_builder.add_node("i1", lambda state: {"inner": "in", "x": state["x"] + "?"})
    inner_builder.add_edge(START, "i1")
    inner = inner_builder.compile()

    def call_inner(state: State) -> dict[str, str]:
        result = inner.invoke({"x": state["x"]})
        return {"x": result["x"] + result["inner"]}

    builder = StateGraph(State)
    builder.add_node("call", call_inner)
    builder.add_edge(START, "call")
    assert builder.compile().invoke({"x": "a"}) == {"log": [], "x": "a?in"}


def test_command_parent_goes_to_a_node_of_the_parent_graph() -> None:
    def jump(state: State) -> Command:
        return Command(graph=Command.PARENT, goto="p2", update={"log": ["jump"]})

    inner = StateGraph(State)
    inner.add_node("jump", jump)
    inner.add_edge(START, "jump")
    builder = StateGraph(State)
    builder.add_node("child", inner.compile(), destinations=("p2",))
    builder.add_node("p2", lambda state: {"log": ["p2"], "x": state["x"] + "2"})
    builder.add_edge(START, "child")
    graph = builder.compile()
    assert graph.invoke({"x": "a"}) == {"log": ["jump", "p2"], "x": "a2"}
    assert list(graph.stream({"x": "a"}, stream_mode="updates")) == [
        {"child": {"log": ["jump"]}},
        {"p2": {"log": ["p2"], "x": "a2"}},
    ]


async def test_async_subgraph_node() -> None:
    async def s1(state: State) -> dict[str, object]:
        return {"log": ["s1"], "x": state["x"] + "!"}

    inner = StateGraph(State)
    inner.add_node("s1", s1)
    inner.add_edge(START, "s1")
    builder = StateGraph(State)
    builder.add_node("p1", log("p1"))
    builder.add_node("child", inner.compile())
    builder.add_edge(START, "p1")
    builder.add_edge("p1", "child")
    assert await builder.compile().ainvoke({"x": "a"}) == {"log": ["p1", "p1", "s1"], "x": "a!"}
