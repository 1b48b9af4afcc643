"""Parity: the config a node receives, run ids and thread ids.

Unless marked ``threadloom_only``, each expected behaviour is LangGraph 1.2.22's, observed by
running the same graph under LangGraph. The deliberate differences:

* the run id is part of a node's config as ``config["run_id"]``: the one given by the caller,
  or a generated UUID4 string (LangGraph gives the node ``None`` there);
* the run id is validated (1 to 255 printable characters) before anything runs;
* a thread id given both at the top level and in ``configurable`` with different values is a
  ``ValueError`` (LangGraph lets the top-level one win silently);
* ``get_state`` accepts a top-level thread id too (LangGraph raises ``KeyError``).
"""

import asyncio
import uuid
from typing import Any, TypedDict

import pytest

from threadloom.checkpoint.memory import InMemorySaver
from threadloom.config import get_config
from threadloom.graph import START, StateGraph
from threadloom.types import RunnableConfig


class State(TypedDict):
    x: str


def recording_graph(checkpointer: Any = None) -> tuple[Any, list[dict[str, Any]]]:
    """Two nodes in a row, each recording the config it was given."""
    configs: list[dict[str, Any]] = []

    def first(state: State, config: RunnableConfig) -> dict[str, Any]:
        configs.append(config)
        return {"x": state.get("x", "") + "1"}

    def second(state: State, config) -> dict[str, Any]:  # untyped: injected by name
        configs.append(config)
        assert get_config() == config
        return {"x": state["x"] + "2"}

    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    return builder.compile(checkpointer=checkpointer), configs


# --- config injection (parity) ----------------------------------------------------------


def test_node_config_carries_the_callers_configurable_keys() -> None:
    graph, configs = recording_graph()
    graph.invoke({"x": ""}, {"configurable": {"user": "bob"}})
    assert [c["configurable"]["user"] for c in configs] == ["bob", "bob"]


def test_node_config_carries_tags_and_metadata() -> None:
    graph, configs = recording_graph()
    graph.invoke({"x": ""}, {"tags": ["t1"], "metadata": {"m": 1}})
    assert configs[0]["tags"] == ["t1"]
    assert configs[0]["metadata"]["m"] == 1


def test_top_level_thread_id_reaches_the_node_as_configurable_thread_id() -> None:
    # LangGraph moves unknown top-level config keys into "configurable", so a top-level
    # thread_id is honoured there too.
    graph, configs = recording_graph()
    graph.invoke({"x": ""}, {"thread_id": "t-1"})
    assert configs[0]["configurable"]["thread_id"] == "t-1"


def test_async_node_gets_config_and_get_config() -> None:
    async def node(state: State, config: RunnableConfig) -> dict[str, Any]:
        return {"x": config["configurable"]["k"] + get_config()["configurable"]["k"]}

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    result = asyncio.run(builder.compile().ainvoke({}, {"configurable": {"k": "v"}}))
    assert result == {"x": "vv"}


def test_top_level_thread_id_keeps_state_across_invokes_with_a_checkpointer() -> None:
    graph, _ = recording_graph(InMemorySaver())
    assert graph.invoke({"x": "a"}, {"thread_id": "t"}) == {"x": "a12"}
    assert graph.invoke({}, {"thread_id": "t"}) == {"x": "a1212"}
    assert graph.invoke({}, {"configurable": {"thread_id": "t"}}) == {"x": "a121212"}
    assert graph.invoke({}, {"thread_id": "other"}) == {"x": "12"}


# --- run id (threadloom only) -----------------------------------------------------------


@pytest.mark.threadloom_only
def test_given_run_id_is_in_every_node_config() -> None:
    graph, configs = recording_graph()
    graph.invoke({"x": ""}, {"run_id": "customer-42-request-7", "thread_id": "t"})
    assert [c["run_id"] for c in configs] == ["customer-42-request-7"] * 2


@pytest.mark.threadloom_only
def test_generated_run_id_is_a_uuid4_shared_by_the_run_and_new_per_run() -> None:
    graph, configs = recording_graph()
    graph.invoke({"x": ""})
    graph.invoke({"x": ""})
    first_run, second_run = {configs[0]["run_id"], configs[1]["run_id"]}, configs[2]["run_id"]
    assert len(first_run) == 1
    (run_id,) = first_run
    assert isinstance(run_id, str)
    assert uuid.UUID(run_id).version == 4
    assert second_run != run_id
    assert configs[3]["run_id"] == second_run


@pytest.mark.threadloom_only
@pytest.mark.parametrize(
    "run_id", ["x", "x" * 255, "order 88291/validation ✓"], ids=["1", "255", "unicode"]
)
def test_run_id_of_1_to_255_printable_characters_is_accepted(run_id: str) -> None:
    graph, configs = recording_graph()
    assert graph.invoke({"x": ""}, {"run_id": run_id}) == {"x": "12"}
    assert configs[0]["run_id"] == run_id


@pytest.mark.threadloom_only
@pytest.mark.parametrize(
    "run_id",
    ["", "x" * 256, "a\nb", "a\tb", "nul\x00"],
    ids=["empty", "256", "newline", "tab", "nul"],
)
def test_invalid_run_id_is_a_value_error_before_anything_runs(run_id: str) -> None:
    graph, configs = recording_graph()
    with pytest.raises(ValueError):
        graph.invoke({"x": ""}, {"run_id": run_id})
    assert configs == []


@pytest.mark.threadloom_only
def test_invalid_run_id_fails_before_anything_runs_in_stream_too() -> None:
    graph, configs = recording_graph()
    with pytest.raises(ValueError):
        list(graph.stream({"x": ""}, {"run_id": ""}))
    assert configs == []


# --- thread id (threadloom only) --------------------------------------------------------


@pytest.mark.threadloom_only
def test_thread_id_given_twice_with_different_values_is_a_value_error() -> None:
    graph, configs = recording_graph()
    with pytest.raises(ValueError):
        graph.invoke({"x": ""}, {"thread_id": "a", "configurable": {"thread_id": "b"}})
    assert configs == []


def test_thread_id_given_twice_with_the_same_value_is_fine() -> None:
    graph, configs = recording_graph()
    graph.invoke({"x": ""}, {"thread_id": "a", "configurable": {"thread_id": "a"}})
    assert configs[0]["configurable"]["thread_id"] == "a"


@pytest.mark.threadloom_only
def test_get_state_accepts_a_top_level_thread_id() -> None:
    graph, _ = recording_graph(InMemorySaver())
    graph.invoke({"x": "a"}, {"thread_id": "t"})
    assert graph.get_state({"thread_id": "t"}).values == {"x": "a12"}
    assert graph.get_state({"configurable": {"thread_id": "t"}}).values == {"x": "a12"}
