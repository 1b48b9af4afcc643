"""Parity: ``stream`` / ``astream`` modes, ``ainvoke`` with async nodes, ``batch``.

Every expected value here is LangGraph 1.2.22's observed behaviour for the same graph (each
case was run under LangGraph first). Within one step LangGraph emits ``updates`` chunks in
the order the nodes finish, so for parallel steps the tests compare those chunks as a
multiset; the order of steps, and of ``values`` chunks, is exact.
"""

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.config import get_stream_writer
from threadloom.graph import START, StateGraph
from threadloom.types import Command, RunnableConfig, Send, StreamWriter


class State(TypedDict):
    log: Annotated[list, operator.add]
    x: int


def log(name: str):
    """A node that appends its own name to ``log``."""
    return lambda state: {"log": [name]}


def chain() -> StateGraph:
    """START -> a -> b -> c; "a" also increments x."""
    builder = StateGraph(State)
    builder.add_node("a", lambda state: {"x": state["x"] + 1, "log": ["a"]})
    builder.add_node("b", log("b"))
    builder.add_node("c", log("c"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    return builder


def diamond() -> StateGraph:
    """START -> a -> (b, c) in parallel."""
    builder = StateGraph(State)
    builder.add_node("a", lambda state: {"x": state["x"] + 1, "log": ["a"]})
    builder.add_node("b", log("b"))
    builder.add_node("c", log("c"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "c")
    return builder


def unordered(chunks: list[Any]) -> list[Any]:
    """Chunks in a canonical order, to compare those of one step as a multiset."""
    return sorted(chunks, key=repr)


# --- values and updates -----------------------------------------------------------------


def test_values_mode_yields_the_input_then_the_state_after_each_step() -> None:
    chunks = list(diamond().compile().stream({"x": 0}, stream_mode="values"))
    assert chunks == [
        {"log": [], "x": 0},
        {"log": ["a"], "x": 1},
        {"log": ["a", "b", "c"], "x": 1},
    ]


def test_updates_mode_yields_each_nodes_writes() -> None:
    chunks = list(chain().compile().stream({"x": 0}, stream_mode="updates"))
    assert chunks == [
        {"a": {"x": 1, "log": ["a"]}},
        {"b": {"log": ["b"]}},
        {"c": {"log": ["c"]}},
    ]


def test_updates_mode_yields_one_chunk_per_node_of_a_parallel_step() -> None:
    chunks = list(diamond().compile().stream({"x": 0}, stream_mode="updates"))
    assert chunks[0] == {"a": {"x": 1, "log": ["a"]}}
    assert unordered(chunks[1:]) == [{"b": {"log": ["b"]}}, {"c": {"log": ["c"]}}]


def test_default_stream_mode_of_a_state_graph_is_updates() -> None:
    graph = chain().compile()
    assert list(graph.stream({"x": 0})) == list(graph.stream({"x": 0}, stream_mode="updates"))


def test_a_list_of_modes_yields_mode_chunk_pairs() -> None:
    chunks = list(chain().compile().stream({"x": 0}, stream_mode=["updates", "values"]))
    assert chunks == [
        ("values", {"log": [], "x": 0}),
        ("updates", {"a": {"x": 1, "log": ["a"]}}),
        ("values", {"log": ["a"], "x": 1}),
        ("updates", {"b": {"log": ["b"]}}),
        ("values", {"log": ["a", "b"], "x": 1}),
        ("updates", {"c": {"log": ["c"]}}),
        ("values", {"log": ["a", "b", "c"], "x": 1}),
    ]


def test_a_list_of_one_mode_still_yields_pairs() -> None:
    chunks = list(chain().compile().stream({"x": 0}, stream_mode=["values"]))
    assert chunks[0] == ("values", {"log": [], "x": 0})
    assert chunks[-1] == ("values", {"log": ["a", "b", "c"], "x": 1})


def test_steps_that_write_nothing_yield_none_updates_and_no_values() -> None:
    builder = StateGraph(State)
    builder.add_node("a", lambda state: None)
    builder.add_node("b", lambda state: {})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    graph = builder.compile()
    assert list(graph.stream({"x": 0}, stream_mode="updates")) == [{"a": None}, {"b": None}]
    assert list(graph.stream({"x": 0}, stream_mode="values")) == [{"log": [], "x": 0}]


def test_values_mode_skips_the_input_chunk_when_the_input_is_empty() -> None:
    class Plain(TypedDict):
        x: int

    builder = StateGraph(Plain)
    builder.add_node("a", lambda state: {"x": 1})
    builder.add_edge(START, "a")
    assert list(builder.compile().stream({}, stream_mode="values")) == [{"x": 1}]


def test_updates_of_send_tasks_are_keyed_by_the_node_name() -> None:
    builder = StateGraph(State)
    builder.add_node("w", lambda arg: {"log": [arg]})
    builder.add_conditional_edges(START, lambda state: [Send("w", "p"), Send("w", "q")])
    chunks = list(builder.compile().stream({"x": 0}, stream_mode="updates"))
    assert unordered(chunks) == [{"w": {"log": ["p"]}}, {"w": {"log": ["q"]}}]


def test_updates_and_values_of_a_command_node() -> None:
    builder = StateGraph(State)
    builder.add_node("cm", lambda state: Command(update={"x": 9}, goto="b"), destinations=("b",))
    builder.add_node("b", log("b"))
    builder.add_edge(START, "cm")
    graph = builder.compile()
    assert list(graph.stream({"x": 0}, stream_mode="updates")) == [
        {"cm": {"x": 9}},
        {"b": {"log": ["b"]}},
    ]
    assert list(graph.stream({"x": 0}, stream_mode="values")) == [
        {"log": [], "x": 0},
        {"log": [], "x": 9},
        {"log": ["b"], "x": 9},
    ]


# --- custom -----------------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True])
def test_a_nodes_update_is_streamed_before_its_conditional_edge_fails(use_async: bool) -> None:
    def broken_route(state: State) -> str:
        raise LookupError("no route")

    builder = StateGraph(State)
    builder.add_node("a", log("a"))
    builder.add_node("b", log("b"))
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", broken_route, ["b"])
    graph = builder.compile()
    chunks: list[Any] = []

    async def consume() -> None:
        async for chunk in graph.astream({"log": [], "x": 0}):
            chunks.append(chunk)

    with pytest.raises(LookupError):
        if use_async:
            asyncio.run(consume())
        else:
            chunks.extend(graph.stream({"log": [], "x": 0}))
    assert chunks == [{"a": {"log": ["a"]}}]


def custom_writers() -> StateGraph:
    def via_get_stream_writer(state: State) -> dict[str, Any]:
        write = get_stream_writer()
        write({"progress": 1})
        write("two")
        return {"log": ["g"]}

    def via_typed_parameter(state: State, writer: StreamWriter) -> dict[str, Any]:
        writer({"p": 2})
        return {"log": ["t"]}

    def via_untyped_parameter(state, writer):  # injected by its name alone
        writer("untyped")
        return {"log": ["u"]}

    builder = StateGraph(State)
    builder.add_node("g", via_get_stream_writer)
    builder.add_node("t", via_typed_parameter)
    builder.add_node("u", via_untyped_parameter)
    builder.add_edge(START, "g")
    builder.add_edge("g", "t")
    builder.add_edge("t", "u")
    return builder


def test_custom_mode_yields_what_nodes_write() -> None:
    chunks = list(custom_writers().compile().stream({"x": 0}, stream_mode="custom"))
    assert chunks == [{"progress": 1}, "two", {"p": 2}, "untyped"]


def test_custom_chunks_of_a_node_come_before_its_update() -> None:
    chunks = list(custom_writers().compile().stream({"x": 0}, stream_mode=["custom", "updates"]))
    assert chunks == [
        ("custom", {"progress": 1}),
        ("custom", "two"),
        ("updates", {"g": {"log": ["g"]}}),
        ("custom", {"p": 2}),
        ("updates", {"t": {"log": ["t"]}}),
        ("custom", "untyped"),
        ("updates", {"u": {"log": ["u"]}}),
    ]


def test_stream_writer_is_a_no_op_when_not_streaming_custom() -> None:
    assert custom_writers().compile().invoke({"x": 0}) == {"log": ["g", "t", "u"], "x": 0}


def test_custom_mode_with_no_writes_yields_nothing() -> None:
    assert list(chain().compile().stream({"x": 0}, stream_mode="custom")) == []


# --- async ------------------------------------------------------------------------------


def async_chain() -> StateGraph:
    async def aa(state: State) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"x": state["x"] + 1, "log": ["aa"]}

    builder = StateGraph(State)
    builder.add_node("aa", aa)
    builder.add_node("b", log("b"))  # a sync node in an async run
    builder.add_edge(START, "aa")
    builder.add_edge("aa", "b")
    return builder


def test_ainvoke_runs_async_and_sync_nodes() -> None:
    result = asyncio.run(async_chain().compile().ainvoke({"x": 1}))
    assert result == {"log": ["aa", "b"], "x": 2}


async def test_astream_updates() -> None:
    graph = async_chain().compile()
    chunks = [chunk async for chunk in graph.astream({"x": 1}, stream_mode="updates")]
    assert chunks == [{"aa": {"x": 2, "log": ["aa"]}}, {"b": {"log": ["b"]}}]


async def test_astream_values() -> None:
    graph = async_chain().compile()
    chunks = [chunk async for chunk in graph.astream({"x": 1}, stream_mode="values")]
    assert chunks == [{"log": [], "x": 1}, {"log": ["aa"], "x": 2}, {"log": ["aa", "b"], "x": 2}]


async def test_astream_custom_from_async_nodes() -> None:
    async def by_parameter(state: State, writer: StreamWriter) -> dict[str, Any]:
        writer("hello")
        return {}

    async def by_getter(state: State) -> dict[str, Any]:
        get_stream_writer()("gsw")
        return {}

    builder = StateGraph(State)
    builder.add_node("p", by_parameter)
    builder.add_node("q", by_getter)
    builder.add_edge(START, "p")
    builder.add_edge("p", "q")
    graph = builder.compile()
    chunks = [c async for c in graph.astream({"x": 1}, stream_mode=["custom", "values"])]
    assert chunks == [("values", {"log": [], "x": 1}), ("custom", "hello"), ("custom", "gsw")]


# --- batch ------------------------------------------------------------------------------


def doubler() -> StateGraph:
    builder = StateGraph(State)
    builder.add_node("a", lambda state: {"x": state["x"] * 2})
    builder.add_edge(START, "a")
    return builder


def test_batch_returns_outputs_in_input_order() -> None:
    graph = doubler().compile()
    assert graph.batch([{"x": 1}, {"x": 2}, {"x": 3}]) == [
        {"log": [], "x": 2},
        {"log": [], "x": 4},
        {"log": [], "x": 6},
    ]
    assert graph.batch([]) == []


def test_abatch() -> None:
    outputs = asyncio.run(doubler().compile().abatch([{"x": 1}, {"x": 2}]))
    assert outputs == [{"log": [], "x": 2}, {"log": [], "x": 4}]


def test_batch_with_one_config_per_input_or_one_for_all() -> None:
    def from_config(state: State, config: RunnableConfig) -> dict[str, Any]:
        return {"log": [config["configurable"]["k"]]}

    builder = StateGraph(State)
    builder.add_node("a", from_config)
    builder.add_edge(START, "a")
    graph = builder.compile()
    configs = [{"configurable": {"k": 1}}, {"configurable": {"k": 2}}]
    assert graph.batch([{}, {"log": ["z"]}], configs) == [{"log": [1]}, {"log": ["z", 2]}]
    assert graph.batch([{}, {}], {"configurable": {"k": 3}}) == [{"log": [3]}, {"log": [3]}]


def test_batch_raises_the_first_error_or_returns_errors_when_asked() -> None:
    def fails_on_nonempty(state: State) -> dict[str, Any]:
        if state["log"]:
            raise ValueError("x")
        return {"log": ["ok"]}

    builder = StateGraph(State)
    builder.add_node("a", fails_on_nonempty)
    builder.add_edge(START, "a")
    graph = builder.compile()
    with pytest.raises(ValueError, match="x"):
        graph.batch([{}, {"log": [1]}])
    ok, error = graph.batch([{}, {"log": [1]}], return_exceptions=True)
    assert ok == {"log": ["ok"]}
    assert isinstance(error, ValueError) and str(error) == "x"
