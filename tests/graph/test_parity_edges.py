"""Parity: edges, conditional edges, joins, entry and finish points, ``add_sequence``.

Every expected value here is LangGraph 1.2.22's observed behaviour for the same graph (each
case was run under LangGraph first).
"""

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.graph import END, START, StateGraph


class State(TypedDict):
    log: Annotated[list, operator.add]
    route: str


def log(name: str):
    """A node that appends its own name to ``log``."""
    return lambda state: {"log": [name]}


def branching(
    path: Callable[..., Any], path_map: Any = None, nodes: tuple[str, ...] = ("a", "b", "c")
) -> StateGraph:
    """START -> "start", then a conditional edge from "start" to some of ``nodes``.

    With a path map, ``nodes`` lists exactly its destinations.
    """
    builder = StateGraph(State)
    builder.add_node("start", log("start"))
    for name in nodes:
        builder.add_node(name, log(name))
    builder.add_edge(START, "start")
    if path_map is None:
        builder.add_conditional_edges("start", path)
    else:
        builder.add_conditional_edges("start", path, path_map)
    return builder


# --- conditional edges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "expected"),
    [("b", ["start", "b"]), (END, ["start"])],
    ids=["node", "END"],
)
def test_path_returning_a_node_name_without_a_path_map(route: str, expected: list) -> None:
    graph = branching(lambda state: state["route"]).compile()
    assert graph.invoke({"route": route}) == {"log": expected, "route": route}


def test_path_returning_a_list_runs_all_in_one_step_in_name_order() -> None:
    graph = branching(lambda state: ["c", "a"]).compile()
    assert graph.invoke({"route": ""}) == {"log": ["start", "a", "c"], "route": ""}


def test_path_returning_a_list_with_end_runs_the_other_destinations() -> None:
    graph = branching(lambda state: ["b", END]).compile()
    assert graph.invoke({"route": ""}) == {"log": ["start", "b"], "route": ""}


@pytest.mark.parametrize(("route", "expected"), [("yes", "a"), ("no", "b")])
def test_path_returning_a_bool_with_a_dict_path_map(route: str, expected: str) -> None:
    graph = branching(
        lambda state: state["route"] == "yes", {True: "a", False: "b"}, nodes=("a", "b")
    ).compile()
    assert graph.invoke({"route": route})["log"] == ["start", expected]


@pytest.mark.parametrize(("route", "expected"), [("x", ["start", "a"]), ("y", ["start"])])
def test_path_returning_a_str_with_a_dict_path_map(route: str, expected: list) -> None:
    graph = branching(lambda state: state["route"], {"x": "a", "y": END}, nodes=("a",)).compile()
    assert graph.invoke({"route": route})["log"] == expected


def test_path_returning_a_key_missing_from_the_dict_path_map_raises_key_error() -> None:
    graph = branching(lambda state: state["route"], {"x": "a", "y": END}, nodes=("a",)).compile()
    with pytest.raises(KeyError):
        graph.invoke({"route": "zz"})


def test_path_with_a_list_path_map() -> None:
    graph = branching(lambda state: state["route"], ["a", "b"], nodes=("a", "b")).compile()
    assert graph.invoke({"route": "b"})["log"] == ["start", "b"]
    with pytest.raises(KeyError):
        graph.invoke({"route": "c"})


def test_path_returning_none_is_a_value_error() -> None:
    graph = branching(lambda state: None).compile()
    # LangGraph: ValueError("Branch did not return a valid destination")
    with pytest.raises(ValueError, match="valid destination"):
        graph.invoke({"route": ""})


def test_conditional_loop_until_end() -> None:
    class Counter(TypedDict):
        n: int

    builder = StateGraph(Counter)
    builder.add_node("inc", lambda state: {"n": state["n"] + 1})
    builder.add_edge(START, "inc")
    builder.add_conditional_edges("inc", lambda state: "inc" if state["n"] < 5 else END)
    assert builder.compile().invoke({"n": 0}) == {"n": 5}


# --- joins and fan-in -------------------------------------------------------------------


def three_and_one() -> StateGraph:
    """START -> a -> a2 -> a3 and START -> b: branches of three steps and of one step."""
    builder = StateGraph(State)
    for name in ["a", "a2", "a3", "b", "j"]:
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "a2")
    builder.add_edge("a2", "a3")
    builder.add_edge(START, "b")
    return builder


def test_join_edge_waits_for_all_sources_across_steps_of_different_lengths() -> None:
    builder = three_and_one()
    builder.add_edge(["a3", "b"], "j")
    builder.add_edge("j", END)
    assert builder.compile().invoke({}) == {"log": ["a", "b", "a2", "a3", "j"]}


def test_join_edge_into_end_does_not_disturb_other_joins() -> None:
    builder = StateGraph(State)
    for name in "abcde":
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge(["a", "b"], END)
    builder.add_edge("a", "c")
    builder.add_edge("b", "d")
    builder.add_edge(["c", "d"], "e")
    assert builder.compile().invoke({"log": []}) == {"log": ["a", "b", "c", "d", "e"]}


def test_two_conditional_edges_of_a_node_need_differently_named_paths() -> None:
    def route(state: State) -> str:
        return END

    def other(state: State) -> str:
        return END

    builder = StateGraph(State)
    builder.add_node("a", log("a"))
    builder.add_node("b", log("b"))
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", route)
    builder.add_conditional_edges("b", route)  # another node may reuse the name
    builder.add_conditional_edges("a", other)
    with pytest.raises(ValueError, match="route"):
        builder.add_conditional_edges("a", route)
    builder.add_conditional_edges("a", lambda state: END)
    with pytest.raises(ValueError):  # unnamed paths (lambdas) share one name
        builder.add_conditional_edges("a", lambda state: END)
    assert builder.compile().invoke({"log": []}) == {"log": ["a"]}


def test_separate_edges_into_one_node_trigger_it_once_per_arrival() -> None:
    builder = three_and_one()
    builder.add_edge("a3", "j")
    builder.add_edge("b", "j")
    assert builder.compile().invoke({}) == {"log": ["a", "b", "a2", "j", "a3", "j"]}


def test_two_edges_into_one_node_in_the_same_step_run_it_once() -> None:
    builder = StateGraph(State)
    for name in ["a", "b", "c"]:
        builder.add_node(name, log(name))
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge("a", "c")
    builder.add_edge("b", "c")
    assert builder.compile().invoke({}) == {"log": ["a", "b", "c"]}


def test_node_without_outgoing_edges_ends_the_run() -> None:
    builder = StateGraph(State)
    builder.add_node("a", log("a"))
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["a"]}


# --- entry, finish, sequences, names -----------------------------------------------------


def test_set_entry_point_and_set_finish_point() -> None:
    builder = StateGraph(State)
    builder.add_node("a", log("a"))
    builder.add_node("b", log("b"))
    builder.set_entry_point("a")
    builder.add_edge("a", "b")
    builder.set_finish_point("b")
    assert builder.compile().invoke({}) == {"log": ["a", "b"]}


def test_set_conditional_entry_point_with_a_path_map() -> None:
    builder = StateGraph(State)
    builder.add_node("a", log("a"))
    builder.add_node("b", log("b"))
    builder.set_conditional_entry_point(lambda state: state["route"], {"x": "a", "y": "b"})
    assert builder.compile().invoke({"route": "y"}) == {"log": ["b"], "route": "y"}


def test_set_conditional_entry_point_returning_a_list() -> None:
    builder = StateGraph(State)
    builder.add_node("a", log("a"))
    builder.add_node("b", log("b"))
    builder.set_conditional_entry_point(lambda state: [state["route"], "a"])
    assert builder.compile().invoke({"route": "b"}) == {"log": ["a", "b"], "route": "b"}


def test_add_sequence_names_nodes_by_function_or_by_pair() -> None:
    def one(state: State) -> dict[str, Any]:
        return {"log": ["one"]}

    def two(state: State) -> dict[str, Any]:
        return {"log": ["two"]}

    builder = StateGraph(State)
    builder.add_sequence([one, ("second", two), ("third", log("3"))])
    builder.add_edge(START, "one")
    assert builder.compile().invoke({}) == {"log": ["one", "two", "3"]}


def test_add_sequence_of_nothing_is_a_value_error() -> None:
    # LangGraph: ValueError("Sequence requires at least one node.")
    with pytest.raises(ValueError):
        StateGraph(State).add_sequence([])


def test_add_node_infers_the_name_from_the_function() -> None:
    def alpha(state: State) -> dict[str, Any]:
        return {"log": ["alpha"]}

    builder = StateGraph(State)
    builder.add_node(alpha)
    builder.add_edge(START, "alpha")
    assert builder.compile().invoke({}) == {"log": ["alpha"]}


def test_a_builder_compiles_into_independent_graphs() -> None:
    class Counter(TypedDict):
        n: int

    builder = StateGraph(Counter)
    builder.add_node("inc", lambda state: {"n": state["n"] + 1})
    builder.add_edge(START, "inc")
    first, second = builder.compile(), builder.compile()
    assert (first.invoke({"n": 1}), second.invoke({"n": 10})) == ({"n": 2}, {"n": 11})
