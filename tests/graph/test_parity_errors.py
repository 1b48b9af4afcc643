"""Parity: graph validation at compile time, errors at run time, node retry policies.

Unless marked ``threadloom_only``, each expected behaviour is LangGraph 1.2.22's, observed by
running the same graph under LangGraph. LangGraph raises a plain ``ValueError`` for an
invalid graph; threadloom raises ``GraphValidationError``, which is a ``ValueError``, so
LangGraph code that catches ``ValueError`` keeps working.

Reachability: as LangGraph, ``compile()`` accepts nodes that nothing leads to (they never
run). ``compile(strict=True)`` (threadloom only) rejects nodes that no edge can reach from
START. There a node reached only through ``Command.goto`` counts as reachable when its source
declares it, by a ``-> Command[Literal[...]]`` return annotation or
``add_node(..., destinations=...)``; a conditional edge without a path map, or a node whose
code builds a ``Command`` without declaring where it goes, can go anywhere, so then nothing is
reported.
"""

import asyncio
import operator
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypedDict

import pytest

from threadloom.config import get_config, get_stream_writer
from threadloom.errors import (
    EmptyInputError,
    GraphRecursionError,
    GraphValidationError,
    InvalidUpdateError,
    ThreadloomError,
)
from threadloom.graph import END, START, StateGraph
from threadloom.types import Command, RetryPolicy


class State(TypedDict):
    log: Annotated[list, operator.add]


def log(name: str):
    """A node that appends its own name to ``log``."""
    return lambda state: {"log": [name]}


def with_nodes(*names: str) -> StateGraph:
    builder = StateGraph(State)
    for name in names:
        builder.add_node(name, log(name))
    return builder


def test_error_classes_keep_the_builtin_bases_langgraph_users_catch() -> None:
    assert issubclass(GraphValidationError, ValueError)
    assert issubclass(GraphRecursionError, RecursionError)
    for error in (GraphValidationError, GraphRecursionError, InvalidUpdateError):
        assert issubclass(error, ThreadloomError)


# --- invalid graphs (LangGraph raises ValueError for each) ------------------------------


def edge_to_unknown(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.add_edge("a", "nowhere")


def edge_from_unknown(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.add_edge("nowhere", "a")


def no_entry(b: StateGraph) -> None:
    b.add_edge("a", END)


def reserved_start(b: StateGraph) -> None:
    b.add_node("__start__", log("x"))
    b.add_edge(START, "a")


def reserved_end(b: StateGraph) -> None:
    b.add_node("__end__", log("x"))
    b.add_edge(START, "a")


def duplicate_node(b: StateGraph) -> None:
    b.add_node("a", log("again"))
    b.add_edge(START, "a")


def path_map_to_unknown(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.add_conditional_edges("a", lambda state: "x", {"x": "nowhere"})


def conditional_from_unknown(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.add_conditional_edges("nowhere", lambda state: "a")


def join_with_unknown(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.add_edge(["a", "nowhere"], END)


def entry_point_unknown(b: StateGraph) -> None:
    b.set_entry_point("nowhere")


def finish_point_unknown(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.set_finish_point("nowhere")


def edge_from_end(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.add_edge(END, "a")


def edge_to_start(b: StateGraph) -> None:
    b.add_edge(START, "a")
    b.add_edge("a", START)


@pytest.mark.parametrize(
    "mistake",
    [
        edge_to_unknown,
        edge_from_unknown,
        no_entry,
        reserved_start,
        reserved_end,
        duplicate_node,
        path_map_to_unknown,
        conditional_from_unknown,
        join_with_unknown,
        entry_point_unknown,
        finish_point_unknown,
        edge_from_end,
        edge_to_start,
    ],
)
def test_invalid_graph_is_rejected(mistake: Callable[[StateGraph], None]) -> None:
    # LangGraph raises some of these in add_node / add_edge, the rest in compile().
    with pytest.raises(GraphValidationError):
        builder = with_nodes("a")
        mistake(builder)
        builder.compile()


def test_empty_graph_has_no_entry_point() -> None:
    with pytest.raises(GraphValidationError):
        StateGraph(State).compile()


def test_declared_destination_naming_an_unknown_node_is_rejected() -> None:
    builder = with_nodes("b")
    builder.add_node("a", lambda state: Command(goto="b"), destinations=("b", "nowhere"))
    builder.add_edge(START, "a")
    with pytest.raises(GraphValidationError, match="nowhere"):
        builder.compile()


def test_command_return_hint_naming_an_unknown_node_is_rejected() -> None:
    def a(state: State) -> Command[Literal["nowhere"]]:
        return Command(goto="nowhere")

    builder = with_nodes()
    builder.add_node("a", a)
    builder.add_edge(START, "a")
    with pytest.raises(GraphValidationError, match="nowhere"):
        builder.compile()


def test_interrupt_before_an_unknown_node_is_rejected() -> None:
    builder = with_nodes("a")
    builder.add_edge(START, "a")
    with pytest.raises(GraphValidationError):
        builder.compile(interrupt_before=["nowhere"])


# --- reachability ------------------------------------------------------------------------


def test_node_without_incoming_edges_compiles_and_never_runs() -> None:
    builder = with_nodes("a", "orphan")
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["a"]}


def test_node_reachable_only_from_an_unreachable_node_compiles() -> None:
    builder = with_nodes("a", "orphan", "after_orphan")
    builder.add_edge(START, "a")
    builder.add_edge("orphan", "after_orphan")
    builder.add_edge("orphan", "a")
    assert builder.compile().invoke({}) == {"log": ["a"]}


def test_command_target_not_declared_by_its_source_compiles() -> None:
    def route(state: State) -> Any:
        return make_command()

    def make_command() -> Command[Any]:  # the node's own code never names Command
        return Command(update={"log": ["a"]}, goto="b")

    builder = with_nodes("b")
    builder.add_node("a", route)
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["a", "b"]}


@pytest.mark.threadloom_only
def test_strict_compile_rejects_a_node_without_incoming_edges() -> None:
    builder = with_nodes("a", "orphan")
    builder.add_edge(START, "a")
    with pytest.raises(GraphValidationError, match="orphan"):
        builder.compile(strict=True)


@pytest.mark.threadloom_only
def test_strict_compile_rejects_a_node_reachable_only_from_an_unreachable_node() -> None:
    builder = with_nodes("a", "orphan", "after_orphan")
    builder.add_edge(START, "a")
    builder.add_edge("orphan", "after_orphan")
    builder.add_edge("orphan", "a")
    with pytest.raises(GraphValidationError, match="orphan"):
        builder.compile(strict=True)


@pytest.mark.threadloom_only
def test_strict_compile_stands_down_for_a_node_that_names_command() -> None:
    # a node whose code names Command may route anywhere, so nothing can be called unreachable
    builder = with_nodes("b")
    builder.add_node("a", lambda state: Command(goto="b"))
    builder.add_edge(START, "a")
    assert builder.compile(strict=True).invoke({}) == {"log": ["b"]}


@pytest.mark.threadloom_only
def test_strict_compile_rejects_what_a_plain_node_cannot_reach() -> None:
    builder = with_nodes("b")
    builder.add_node("a", lambda state: {"log": ["a"]})
    builder.add_edge(START, "a")
    with pytest.raises(GraphValidationError, match="b"):
        builder.compile(strict=True)


@pytest.mark.threadloom_only
def test_strict_compile_counts_command_targets_declared_by_return_annotation() -> None:
    def a(state: State) -> Command[Literal["b", "c"]]:
        return Command(update={"log": ["a"]}, goto="b")

    builder = with_nodes("b", "c")
    builder.add_node("a", a)
    builder.add_edge(START, "a")
    assert builder.compile(strict=True).invoke({}) == {"log": ["a", "b"]}


@pytest.mark.threadloom_only
def test_strict_compile_counts_command_targets_declared_by_destinations() -> None:
    builder = with_nodes("b", "c")
    builder.add_node("a", lambda state: Command(goto="c"), destinations=("b", "c"))
    builder.add_edge(START, "a")
    assert builder.compile(strict=True).invoke({}) == {"log": ["c"]}


@pytest.mark.threadloom_only
def test_strict_compile_counts_every_node_after_a_conditional_edge_without_a_map() -> None:
    builder = with_nodes("a", "b", "c")
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda state: "b")
    assert builder.compile(strict=True).invoke({}) == {"log": ["a", "b"]}


@pytest.mark.threadloom_only
def test_strict_compile_still_checks_what_compile_checks() -> None:
    builder = with_nodes("a")
    builder.add_edge(START, "a")
    builder.add_edge("a", "nowhere")
    with pytest.raises(GraphValidationError, match="nowhere"):
        builder.compile(strict=True)


# --- errors at run time -----------------------------------------------------------------


class NodeFailure(Exception):
    pass


def failing_graph(node: Callable[..., Any]) -> StateGraph:
    builder = StateGraph(State)
    builder.add_node("a", node)
    builder.add_edge(START, "a")
    return builder


def test_node_exception_propagates_unchanged() -> None:
    error = NodeFailure("kaboom 42")

    def boom(state: State) -> None:
        raise error

    with pytest.raises(NodeFailure) as caught:
        failing_graph(boom).compile().invoke({})
    assert caught.value is error
    assert str(caught.value) == "kaboom 42"


def test_async_node_exception_propagates_unchanged() -> None:
    async def boom(state: State) -> None:
        raise KeyError("k")

    with pytest.raises(KeyError) as caught:
        asyncio.run(failing_graph(boom).compile().ainvoke({}))
    assert caught.value.args == ("k",)


def test_exception_in_one_parallel_branch_fails_the_run() -> None:
    def bad(state: State) -> None:
        raise ValueError("bad branch")

    builder = with_nodes("ok", "after")
    builder.add_node("bad", bad)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "bad")
    builder.add_edge("ok", "after")
    with pytest.raises(ValueError) as caught:
        builder.compile().invoke({})
    assert str(caught.value) == "bad branch"


def test_non_dict_input_is_an_invalid_update() -> None:
    builder = with_nodes("a")
    builder.add_edge(START, "a")
    # LangGraph: "Expected dict, got 5"; threadloom may say more around it.
    with pytest.raises(InvalidUpdateError, match=r"(?i)expected dict, got 5"):
        builder.compile().invoke(5)


def test_none_input_without_a_checkpointer_is_an_empty_input_error() -> None:
    builder = with_nodes("a")
    builder.add_edge(START, "a")
    with pytest.raises(EmptyInputError):
        builder.compile().invoke(None)


@pytest.mark.parametrize("getter", [get_config, get_stream_writer])
def test_run_context_outside_a_run_is_a_runtime_error(getter: Callable[[], Any]) -> None:
    with pytest.raises(RuntimeError):
        getter()


# --- retry policy -----------------------------------------------------------------------


def flaky(failures: int, error: type[Exception] = NodeFailure) -> tuple[Callable, list[int]]:
    """A node that raises ``error`` on its first ``failures`` calls, then succeeds."""
    calls: list[int] = []

    def node(state: State) -> dict[str, Any]:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise error(f"failure {len(calls)}")
        return {"log": [f"ok after {len(calls)}"]}

    return node, calls


NO_WAIT = RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=False)


def test_node_that_fails_twice_then_succeeds_is_retried() -> None:
    node, calls = flaky(2)
    builder = StateGraph(State)
    builder.add_node("a", node, retry_policy=NO_WAIT)
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["ok after 3"]}
    assert calls == [1, 2, 3]


def test_retries_exhausted_raise_the_last_error() -> None:
    node, calls = flaky(5)
    builder = StateGraph(State)
    builder.add_node("a", node, retry_policy=NO_WAIT)
    builder.add_edge(START, "a")
    with pytest.raises(NodeFailure) as caught:
        builder.compile().invoke({})
    assert str(caught.value) == "failure 3"
    assert calls == [1, 2, 3]


@pytest.mark.parametrize("error", [ValueError, RuntimeError])
def test_default_retry_on_does_not_retry_programming_errors(error: type[Exception]) -> None:
    node, calls = flaky(1, error)
    builder = StateGraph(State)
    builder.add_node("a", node, retry_policy=NO_WAIT)
    builder.add_edge(START, "a")
    with pytest.raises(error):
        builder.compile().invoke({})
    assert calls == [1]


def test_retry_on_chooses_what_is_retried() -> None:
    node, calls = flaky(1, RuntimeError)
    policy = RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=False, retry_on=RuntimeError)
    builder = StateGraph(State)
    builder.add_node("a", node, retry_policy=policy)
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["ok after 2"]}
    assert calls == [1, 2]


def test_node_without_retry_policy_runs_once() -> None:
    node, calls = flaky(1)
    with pytest.raises(NodeFailure):
        failing_graph(node).compile().invoke({})
    assert calls == [1]
