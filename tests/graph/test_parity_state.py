"""Parity: state channels, reducers and how node writes are applied.

Every expected value here is LangGraph 1.2.22's observed behaviour for the same graph (each
case was run under LangGraph first); threadloom must match it so that LangGraph programs run
unchanged after their imports are switched.
"""

import asyncio
import operator
import threading
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.errors import InvalidUpdateError
from threadloom.graph import START, StateGraph


class Log(TypedDict):
    log: Annotated[list, operator.add]


class Mixed(TypedDict):
    log: Annotated[list, operator.add]
    total: Annotated[int, operator.add]
    x: str
    y: str


class Plain(TypedDict):
    x: str


def log(name: str):
    """A node that appends its own name to ``log``."""
    return lambda state: {"log": [name]}


def fan_out(names: list[str]) -> StateGraph:
    """START -> every node in ``names`` (added in the given order), all in one step."""
    builder = StateGraph(Log)
    for name in names:
        builder.add_node(name, log(name))
        builder.add_edge(START, name)
    return builder


# --- order of writes -------------------------------------------------------------------


def test_parallel_writes_are_applied_in_node_name_order_not_insertion_order() -> None:
    graph = fan_out(["c", "a", "b"]).compile()
    assert graph.invoke({"log": []}) == {"log": ["a", "b", "c"]}


def test_node_name_order_is_plain_string_order() -> None:
    # Upper case sorts before "_", which sorts before lower case (code point order).
    graph = fan_out(["a", "B", "_c", "A2"]).compile()
    assert graph.invoke({})["log"] == ["A2", "B", "_c", "a"]


def test_writes_of_later_steps_follow_earlier_ones() -> None:
    builder = StateGraph(Log)
    for name in ["s", "y", "x"]:
        builder.add_node(name, log(name))
    builder.add_edge(START, "s")
    builder.add_edge("s", "y")
    builder.add_edge("s", "x")
    assert builder.compile().invoke({}) == {"log": ["s", "x", "y"]}


def test_write_order_does_not_depend_on_which_sync_node_finishes_first() -> None:
    z_done = threading.Event()

    def a_slow(state: Log) -> dict[str, Any]:
        z_done.wait(timeout=5)  # when nodes run in parallel, "z_fast" finishes first
        return {"log": ["a_slow"]}

    def z_fast(state: Log) -> dict[str, Any]:
        z_done.set()
        return {"log": ["z_fast"]}

    builder = StateGraph(Log)
    builder.add_node("a_slow", a_slow)
    builder.add_node("z_fast", z_fast)
    builder.add_edge(START, "a_slow")
    builder.add_edge(START, "z_fast")
    assert builder.compile().invoke({}) == {"log": ["a_slow", "z_fast"]}


async def test_write_order_does_not_depend_on_which_async_node_finishes_first() -> None:
    z_done = asyncio.Event()

    async def a_slow(state: Log) -> dict[str, Any]:
        try:
            await asyncio.wait_for(z_done.wait(), timeout=5)
        except TimeoutError:
            pass
        return {"log": ["a_slow"]}

    async def z_fast(state: Log) -> dict[str, Any]:
        z_done.set()
        return {"log": ["z_fast"]}

    builder = StateGraph(Log)
    builder.add_node("a_slow", a_slow)
    builder.add_node("z_fast", z_fast)
    builder.add_edge(START, "a_slow")
    builder.add_edge(START, "z_fast")
    assert await builder.compile().ainvoke({}) == {"log": ["a_slow", "z_fast"]}


# --- plain channels --------------------------------------------------------------------


@pytest.mark.parametrize("values", [("a", "b"), ("same", "same")], ids=["different", "equal"])
def test_two_writes_to_a_plain_key_in_one_step_is_invalid(values: tuple[str, str]) -> None:
    builder = StateGraph(Plain)
    builder.add_node("a", lambda state: {"x": values[0]})
    builder.add_node("b", lambda state: {"x": values[1]})
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    graph = builder.compile()
    # LangGraph: "At key 'x': Can receive only one value per step. Use an Annotated key ..."
    # It raises even when both writes carry the same value.
    with pytest.raises(InvalidUpdateError, match="'x'"):
        graph.invoke({"x": ""})


def test_plain_key_takes_the_last_value_across_steps() -> None:
    builder = StateGraph(Plain)
    builder.add_node("a", lambda state: {"x": state["x"] + "a"})
    builder.add_node("b", lambda state: {"x": state["x"] + "b"})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    assert builder.compile().invoke({"x": "0"}) == {"x": "0ab"}


# --- reducers ---------------------------------------------------------------------------


def test_reducer_channels_default_to_empty_values_in_the_output() -> None:
    builder = StateGraph(Mixed)
    builder.add_node("a", lambda state: {"x": "hi"})
    builder.add_edge(START, "a")
    graph = builder.compile()
    # list and int reducer channels start at list() and int(); plain "y" was never written
    # and so is absent.
    assert graph.invoke({}) == {"log": [], "total": 0, "x": "hi"}
    assert graph.invoke({"y": "in"}) == {"log": [], "total": 0, "x": "hi", "y": "in"}


def test_node_sees_reducer_default_even_when_the_input_is_empty() -> None:
    seen: list[dict[str, Any]] = []

    def look(state: Log) -> dict[str, Any]:
        seen.append(dict(state))
        return {}

    builder = StateGraph(Log)
    builder.add_node("look", look)
    builder.add_edge(START, "look")
    builder.compile().invoke({})
    assert seen == [{"log": []}]


def test_reducer_is_applied_to_the_input_too() -> None:
    builder = StateGraph(Log)
    builder.add_node("a", log("a"))
    builder.add_edge(START, "a")
    assert builder.compile().invoke({"log": ["in"]}) == {"log": ["in", "a"]}


def test_custom_reducer_merges_parallel_writes_in_node_name_order() -> None:
    def merge(left: dict, right: dict) -> dict:
        return {**left, **right}

    class State(TypedDict):
        d: Annotated[dict, merge]

    builder = StateGraph(State)
    builder.add_node("b", lambda state: {"d": {"b": 2, "k": "from b"}})
    builder.add_node("a", lambda state: {"d": {"a": 1, "k": "from a"}})
    builder.add_edge(START, "b")
    builder.add_edge(START, "a")
    result = builder.compile().invoke({"d": {"z": 0}})
    assert result == {"d": {"z": 0, "a": 1, "k": "from b", "b": 2}}
    assert list(result["d"]) == ["z", "a", "k", "b"]


def test_integer_reducer_sums_parallel_writes() -> None:
    class State(TypedDict):
        total: Annotated[int, operator.add]

    builder = StateGraph(State)
    for name, amount in [("one", 1), ("two", 2), ("four", 4)]:
        builder.add_node(name, lambda state, amount=amount: {"total": amount})
        builder.add_edge(START, name)
    assert builder.compile().invoke({"total": 10}) == {"total": 17}


# --- what an invoke returns -------------------------------------------------------------


@pytest.mark.parametrize("returned", [None, {}], ids=["None", "empty-dict"])
def test_empty_input_and_no_writes_returns_none(returned: dict | None) -> None:
    builder = StateGraph(Plain)
    builder.add_node("a", lambda state: returned)
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) is None


def test_empty_input_and_no_writes_returns_none_even_with_a_reducer_channel() -> None:
    # The node sees {"log": []} (test above), but nothing was ever written, so invoke
    # returns None rather than {"log": []}.
    builder = StateGraph(Log)
    builder.add_node("a", lambda state: {})
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) is None


def test_empty_input_with_a_write_returns_only_written_keys() -> None:
    builder = StateGraph(Plain)
    builder.add_node("a", lambda state: {"x": "v"})
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"x": "v"}


def test_node_returning_none_leaves_the_state_unchanged() -> None:
    builder = StateGraph(Log)
    builder.add_node("a", lambda state: None)
    builder.add_edge(START, "a")
    assert builder.compile().invoke({"log": [1]}) == {"log": [1]}


def test_unknown_keys_in_a_node_update_are_silently_ignored() -> None:
    builder = StateGraph(Plain)
    builder.add_node("a", lambda state: {"x": "v", "not_a_channel": 1})
    builder.add_edge(START, "a")
    assert builder.compile().invoke({"x": "a"}) == {"x": "v"}


def test_unknown_keys_in_the_input_are_silently_ignored() -> None:
    seen: list[dict[str, Any]] = []

    def look(state: Plain) -> None:
        seen.append(dict(state))

    builder = StateGraph(Plain)
    builder.add_node("look", look)
    builder.add_edge(START, "look")
    assert builder.compile().invoke({"x": "a", "stray": 2}) == {"x": "a"}
    assert seen == [{"x": "a"}]


def test_output_keys_follow_the_schema_declaration_order_not_the_write_order() -> None:
    builder = StateGraph(Mixed)
    builder.add_node("a", lambda state: {"y": "1"})
    builder.add_node("b", lambda state: {"x": "2", "log": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    result = builder.compile().invoke({"total": 5})
    assert list(result) == ["log", "total", "x", "y"]


@pytest.mark.parametrize("value", [1, ["x"], ("x", 1)], ids=["int", "list", "tuple"])
def test_non_dict_node_return_is_an_invalid_update(value: Any) -> None:
    builder = StateGraph(Plain)
    builder.add_node("a", lambda state: value)
    builder.add_edge(START, "a")
    # LangGraph: "Expected dict, got 1" / "Expected dict, got ['x']" / "... got ('x', 1)";
    # threadloom may say more around it.
    with pytest.raises(InvalidUpdateError, match=r"(?i)expected dict, got "):
        builder.compile().invoke({"x": ""})
