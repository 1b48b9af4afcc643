"""Parity: ``recursion_limit`` bounds the number of supersteps.

Every expected value here is LangGraph 1.2.22's observed behaviour for the same graph (each
case was run under LangGraph first). The rule observed: a run whose nodes need N supersteps
succeeds when ``recursion_limit > N`` and raises ``GraphRecursionError`` when
``recursion_limit <= N``, after running exactly ``recursion_limit`` supersteps. Parallel nodes
of one step count once.
"""

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.errors import GraphRecursionError
from threadloom.graph import END, START, StateGraph


class Log(TypedDict):
    log: Annotated[list, operator.add]


def log(name: str):
    """A node that appends its own name to ``log``."""
    return lambda state: {"log": [name]}


def chain(length: int) -> Any:
    names = [f"n{i}" for i in range(length)]
    builder = StateGraph(Log)
    for name in names:
        builder.add_node(name, log(name))
    builder.add_edge(START, names[0])
    for source, target in zip(names, names[1:], strict=False):
        builder.add_edge(source, target)
    return builder.compile()


@pytest.mark.parametrize("limit", [6, 7, 100])
def test_five_node_chain_succeeds_when_the_limit_exceeds_five(limit: int) -> None:
    result = chain(5).invoke({}, {"recursion_limit": limit})
    assert result == {"log": ["n0", "n1", "n2", "n3", "n4"]}


@pytest.mark.parametrize("limit", [1, 4, 5])
def test_five_node_chain_fails_when_the_limit_is_five_or_less(limit: int) -> None:
    with pytest.raises(GraphRecursionError):
        chain(5).invoke({}, {"recursion_limit": limit})


def test_one_node_needs_a_limit_of_two() -> None:
    assert chain(1).invoke({}, {"recursion_limit": 2}) == {"log": ["n0"]}
    with pytest.raises(GraphRecursionError):
        chain(1).invoke({}, {"recursion_limit": 1})


def test_recursion_error_is_a_recursion_error() -> None:
    with pytest.raises(RecursionError):
        chain(3).invoke({}, {"recursion_limit": 2})


def test_limit_of_zero_is_a_value_error() -> None:
    # LangGraph: ValueError("recursion_limit must be at least 1")
    with pytest.raises(ValueError):
        chain(1).invoke({}, {"recursion_limit": 0})


def test_endless_loop_runs_exactly_limit_steps_then_raises() -> None:
    class Counter(TypedDict):
        n: int

    calls: list[int] = []

    def inc(state: Counter) -> dict[str, Any]:
        calls.append(state["n"])
        return {"n": state["n"] + 1}

    builder = StateGraph(Counter)
    builder.add_node("inc", inc)
    builder.add_edge(START, "inc")
    builder.add_edge("inc", "inc")
    with pytest.raises(GraphRecursionError):
        builder.compile().invoke({"n": 0}, {"recursion_limit": 3})
    assert calls == [0, 1, 2]


def test_stream_yields_the_completed_steps_before_raising() -> None:
    chunks: list[Any] = []
    with pytest.raises(GraphRecursionError):
        for chunk in chain(5).stream({}, {"recursion_limit": 3}, stream_mode="updates"):
            chunks.append(chunk)
    assert chunks == [{"n0": {"log": ["n0"]}}, {"n1": {"log": ["n1"]}}, {"n2": {"log": ["n2"]}}]


def test_parallel_nodes_of_one_step_count_once() -> None:
    builder = StateGraph(Log)
    for name in ["a", "b", "c", "d"]:
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge("a", "c")
    builder.add_edge("b", "d")
    graph = builder.compile()
    assert graph.invoke({}, {"recursion_limit": 3}) == {"log": ["a", "b", "c", "d"]}
    with pytest.raises(GraphRecursionError):
        graph.invoke({}, {"recursion_limit": 2})


def test_ainvoke_raises_too() -> None:
    with pytest.raises(GraphRecursionError):
        asyncio.run(chain(5).ainvoke({}, {"recursion_limit": 5}))
    assert asyncio.run(chain(5).ainvoke({}, {"recursion_limit": 6})) == {
        "log": ["n0", "n1", "n2", "n3", "n4"]
    }


# --- the seeds' graphs ------------------------------------------------------------------


def seed000_graph() -> Any:
    class State(TypedDict):
        step: int
        done: bool

    builder = StateGraph(State)
    builder.add_node("increment", lambda s: {"step": s["step"] + 1})
    builder.add_node("check", lambda s: {"done": s["step"] >= 3})
    builder.set_entry_point("increment")
    builder.add_edge("increment", "check")
    builder.add_conditional_edges(
        "check", lambda s: END if s["done"] else "increment", {"increment": "increment", END: END}
    )
    return builder.compile()


def seed004_graph() -> Any:
    class State(TypedDict):
        step: int
        result: str

    builder = StateGraph(State)
    builder.add_node("planner", lambda s: {"step": s["step"] + 1})
    builder.add_node("worker", lambda s: {"result": f"Processed step {s['step']}"})
    builder.add_node("controller", lambda s: {})
    builder.set_entry_point("planner")
    builder.add_edge("planner", "worker")
    builder.add_edge("worker", "controller")
    builder.add_conditional_edges(
        "controller",
        lambda s: END if s["step"] >= 3 else "planner",
        {"planner": "planner", END: END},
    )
    return builder.compile()


def test_seed000_graph_takes_six_steps() -> None:
    graph = seed000_graph()
    assert graph.invoke({"step": 0, "done": False}, {"recursion_limit": 7}) == {
        "step": 3,
        "done": True,
    }
    with pytest.raises(GraphRecursionError):
        graph.invoke({"step": 0, "done": False}, {"recursion_limit": 6})


def test_seed004_graph_succeeds_with_the_seeds_limit_of_ten() -> None:
    graph = seed004_graph()
    config = {"thread_id": "user-session-001", "recursion_limit": 10}
    assert graph.invoke({"step": 0, "result": ""}, config) == {
        "step": 3,
        "result": "Processed step 3",
    }
    with pytest.raises(GraphRecursionError):
        graph.invoke({"step": 0, "result": ""}, {"recursion_limit": 9})
