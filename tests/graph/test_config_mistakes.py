"""Mistakes in how a graph is compiled or invoked fail at once, with a coded error that
names the mistake (issue 11, item 10).

LangGraph 1.2.22, observed for the same calls: ``compile(durability=...)`` is a
``TypeError`` (it has no such parameter), a per-invoke ``interrupt_before`` naming an
unknown node is ignored, a config given as a string raises ``AttributeError`` and a
non-mapping input raises ``InvalidUpdateError`` ("Expected dict, got 42"). threadloom keeps
the error family where LangGraph has one (``InvalidUpdateError`` for the input) and raises
a :class:`ThreadloomError` with a stable code everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import pytest

from threadloom.checkpoint.memory import InMemorySaver
from threadloom.errors import (
    GraphValidationError,
    InvalidConfigError,
    InvalidUpdateError,
    ThreadloomError,
)
from threadloom.graph import START, StateGraph


class State(TypedDict):
    x: int


def builder() -> StateGraph:
    b = StateGraph(State)
    b.add_node("a", lambda state: {"x": state["x"] + 1})
    b.add_edge(START, "a")
    return b


def test_compile_rejects_an_unknown_durability() -> None:
    with pytest.raises(InvalidConfigError, match="bogus") as caught:
        builder().compile(checkpointer=InMemorySaver(), durability="bogus")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_config"


@pytest.mark.parametrize("mode", ["sync", "async", "exit"])
def test_compile_accepts_every_durability(mode: str) -> None:
    graph = builder().compile(checkpointer=InMemorySaver(), durability=mode)  # type: ignore[arg-type]
    assert graph.invoke({"x": 0}, {"thread_id": "t"}) == {"x": 1}


@pytest.mark.parametrize("key", ["interrupt_before", "interrupt_after"])
@pytest.mark.parametrize("where", ["keyword", "config"])
@pytest.mark.parametrize("durable", [False, True])
def test_per_invoke_breakpoint_on_an_unknown_node_is_rejected(
    key: str, where: str, durable: bool
) -> None:
    graph = builder().compile(checkpointer=InMemorySaver() if durable else None)
    config: dict[str, object] = {"thread_id": "t"}
    kwargs: dict[str, object] = {}
    if where == "keyword":
        kwargs[key] = ["nowhere"]
    else:
        config[key] = ["nowhere"]
    # the same error class as compile(interrupt_before=["nowhere"])
    with pytest.raises(GraphValidationError, match="nowhere") as caught:
        graph.invoke({"x": 0}, config, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_graph"
    with pytest.raises(GraphValidationError, match="nowhere"):
        list(graph.stream({"x": 0}, config, **kwargs))  # type: ignore[arg-type]


def test_per_invoke_breakpoints_on_known_nodes_still_pause() -> None:
    graph = builder().compile(checkpointer=InMemorySaver())
    config = {"thread_id": "t"}
    assert graph.invoke({"x": 0}, config, interrupt_before="a") == {"x": 0}
    assert graph.get_state(config).next == ("a",)
    assert graph.invoke({"x": 0}, {"thread_id": "u"}, interrupt_after=["*"]) == {"x": 1}


@pytest.mark.parametrize("config", ["abc", 42, ["thread_id", "t"]])
def test_a_config_that_is_not_a_mapping_is_rejected(config: object) -> None:
    graph = builder().compile()
    with pytest.raises(InvalidConfigError, match="config must be a mapping") as caught:
        graph.invoke({"x": 0}, config)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_config"
    with pytest.raises(InvalidConfigError, match="config must be a mapping"):
        list(graph.stream({"x": 0}, config))  # type: ignore[arg-type]


def test_a_string_config_is_rejected_by_thread_queries() -> None:
    graph = builder().compile(checkpointer=InMemorySaver())
    with pytest.raises(InvalidConfigError, match="config must be a mapping"):
        graph.get_state("t")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="config must be a mapping"):
        graph.batch([{"x": 0}], "t")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [42, "hi", [1], 1.5])
@pytest.mark.parametrize("durable", [False, True])
def test_an_input_that_is_not_a_mapping_blames_the_input(value: object, durable: bool) -> None:
    graph = builder().compile(checkpointer=InMemorySaver() if durable else None)
    with pytest.raises(InvalidUpdateError) as caught:  # LangGraph's class for this mistake
        graph.invoke(value, {"thread_id": "t"})
    message = str(caught.value)
    assert "input" in message and "__start__" not in message
    assert type(value).__name__ in message and "['x']" in message
    assert isinstance(caught.value, ThreadloomError)
    assert caught.value.code == "invalid_update"


def test_an_input_given_as_a_schema_instance_is_accepted() -> None:
    @dataclass
    class DataState:
        x: int

    b = StateGraph(DataState)
    b.add_node("a", lambda state: {"x": state.x + 1})
    b.add_edge(START, "a")
    assert b.compile().invoke(DataState(x=1)) == {"x": 2}
