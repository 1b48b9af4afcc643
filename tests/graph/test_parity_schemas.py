"""Parity: state schemas (TypedDict, dataclass, Pydantic) and input / output schemas.

Every expected value here is LangGraph 1.2.22's observed behaviour for the same graph (each
case was run under LangGraph first). Notably, with a dataclass or Pydantic state a node gets
an *instance* with the defaults filled in, but ``invoke`` returns a plain dict of only the
channels that hold a value: a default that was never written is not in the output.
"""

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

import pydantic
import pytest

from threadloom.graph import START, StateGraph


@dataclass
class DataState:
    name: str
    count: int = 0
    tags: Annotated[list, operator.add] = field(default_factory=list)
    note: str = "dflt"


class ModelState(pydantic.BaseModel):
    name: str
    count: int = 0
    tags: Annotated[list[str], operator.add] = pydantic.Field(default_factory=list)
    note: str = "dflt"


def counting_graph(schema: type) -> tuple[StateGraph, list[Any]]:
    """One node that records the state it got, increments ``count`` and tags ``name``."""
    seen: list[Any] = []

    def node(state: Any) -> dict[str, Any]:
        seen.append(state)
        return {"count": state.count + 1, "tags": [state.name]}

    builder = StateGraph(schema)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    return builder, seen


# --- dataclass and Pydantic state ---------------------------------------------------------


def test_dataclass_node_gets_an_instance_with_defaults_output_is_a_dict() -> None:
    builder, seen = counting_graph(DataState)
    result = builder.compile().invoke({"name": "x"})
    assert seen == [DataState(name="x", count=0, tags=[], note="dflt")]
    assert type(seen[0]) is DataState
    assert result == {"name": "x", "count": 1, "tags": ["x"]}


def test_pydantic_node_gets_an_instance_with_defaults_output_is_a_dict() -> None:
    builder, seen = counting_graph(ModelState)
    result = builder.compile().invoke({"name": "x"})
    assert seen == [ModelState(name="x", count=0, tags=[], note="dflt")]
    assert type(seen[0]) is ModelState
    assert result == {"name": "x", "count": 1, "tags": ["x"]}


@pytest.mark.parametrize("schema", [DataState, ModelState], ids=["dataclass", "pydantic"])
def test_an_instance_as_input_writes_every_field(schema: type) -> None:
    builder, _ = counting_graph(schema)
    result = builder.compile().invoke(schema(name="y", count=5))
    assert result == {"name": "y", "count": 6, "tags": ["y"], "note": "dflt"}


@pytest.mark.parametrize("schema", [DataState, ModelState], ids=["dataclass", "pydantic"])
def test_a_node_may_return_an_instance_which_writes_every_field(schema: type) -> None:
    builder = StateGraph(schema)
    builder.add_node("node", lambda state: schema(name="z", count=9))
    builder.add_edge(START, "node")
    result = builder.compile().invoke({"name": "x"})
    assert result == {"name": "z", "count": 9, "tags": [], "note": "dflt"}


def test_dataclass_values_stream_yields_dicts() -> None:
    builder, _ = counting_graph(DataState)
    chunks = list(builder.compile().stream({"name": "x"}, stream_mode="values"))
    assert chunks == [{"name": "x", "tags": []}, {"name": "x", "count": 1, "tags": ["x"]}]


def test_dataclass_input_missing_a_required_field_fails_building_the_instance() -> None:
    builder, seen = counting_graph(DataState)
    with pytest.raises(TypeError, match="name"):
        builder.compile().invoke({"count": 1})
    assert seen == []


def test_pydantic_input_is_coerced() -> None:
    builder, seen = counting_graph(ModelState)
    assert builder.compile().invoke({"name": "x", "count": "4"})["count"] == 5
    assert seen[0].count == 4


@pytest.mark.parametrize("bad_input", [{"count": 1}, {"name": 123}], ids=["missing", "type"])
def test_pydantic_input_is_validated(bad_input: dict[str, Any]) -> None:
    builder, seen = counting_graph(ModelState)
    with pytest.raises(pydantic.ValidationError):
        builder.compile().invoke(bad_input)
    assert seen == []


def test_typed_dict_node_sees_only_keys_that_have_values() -> None:
    class State(TypedDict):
        question: str
        answer: str

    seen: list[Any] = []
    builder = StateGraph(State)
    builder.add_node("look", lambda state: seen.append(dict(state)))
    builder.add_edge(START, "look")
    assert builder.compile().invoke({"question": "q"}) == {"question": "q"}
    assert seen == [{"question": "q"}]


# --- input and output schemas -------------------------------------------------------------


class In(TypedDict):
    question: str


class Out(TypedDict):
    answer: str


class Overall(TypedDict):
    question: str
    answer: str
    scratch: str


def think_then_answer() -> tuple[StateGraph, list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def think(state: In) -> dict[str, Any]:
        seen.append(("think", dict(state)))
        return {"scratch": "thought:" + state["question"]}

    def answer(state: Overall) -> dict[str, Any]:
        seen.append(("answer", dict(state)))
        return {"answer": state["scratch"].upper()}

    builder = StateGraph(Overall, input_schema=In, output_schema=Out)
    builder.add_node("think", think)
    builder.add_node("answer", answer)
    builder.add_edge(START, "think")
    builder.add_edge("think", "answer")
    return builder, seen


def test_input_schema_filters_the_input_and_output_schema_filters_the_result() -> None:
    builder, seen = think_then_answer()
    result = builder.compile().invoke({"question": "q", "scratch": "dropped", "answer": "pre"})
    assert result == {"answer": "THOUGHT:Q"}
    # Keys outside the input schema never reach the state.
    assert seen == [
        ("think", {"question": "q"}),
        ("answer", {"question": "q", "scratch": "thought:q"}),
    ]


def test_values_stream_is_not_filtered_by_the_output_schema() -> None:
    # LangGraph applies output_schema to invoke's result only; stream(values) yields every
    # state channel.
    builder, _ = think_then_answer()
    chunks = list(builder.compile().stream({"question": "q"}, stream_mode="values"))
    assert chunks == [
        {"question": "q"},
        {"question": "q", "scratch": "thought:q"},
        {"question": "q", "answer": "THOUGHT:Q", "scratch": "thought:q"},
    ]


def test_output_schema_alone() -> None:
    builder = StateGraph(Overall, output_schema=Out)
    builder.add_node("answer", lambda state: {"answer": "A", "scratch": "S"})
    builder.add_edge(START, "answer")
    assert builder.compile().invoke({"question": "q"}) == {"answer": "A"}


def test_node_input_schema_limits_what_the_node_sees() -> None:
    seen: list[Any] = []

    def node(state: Any) -> dict[str, Any]:
        seen.append(dict(state))
        return {"answer": "x"}

    builder = StateGraph(Overall)
    builder.add_node("node", node, input_schema=In)
    builder.add_edge(START, "node")
    result = builder.compile().invoke({"question": "q", "scratch": "s"})
    assert result == {"question": "q", "answer": "x", "scratch": "s"}
    assert seen == [{"question": "q"}]


def test_private_channel_declared_by_a_node_schema() -> None:
    class Private(TypedDict):
        secret: str

    seen: list[Any] = []

    def write_secret(state: Overall) -> Private:
        return {"secret": "s3"}

    def read_secret(state: Private) -> dict[str, Any]:
        seen.append(dict(state))
        return {"answer": state["secret"]}

    builder = StateGraph(Overall)
    builder.add_node("write_secret", write_secret)
    builder.add_node("read_secret", read_secret)
    builder.add_edge(START, "write_secret")
    builder.add_edge("write_secret", "read_secret")
    # "secret" is a channel (declared by the nodes' annotations) but not in the output.
    assert builder.compile().invoke({"question": "q"}) == {"question": "q", "answer": "s3"}
    assert seen == [{"secret": "s3"}]
