"""Differential tests against LangGraph 1.2.22: ``get_graph()`` draws the edges of nodes that
return ``Command`` as LangGraph does (issue 11, item 2).

LangGraph draws a dotted edge to each destination a node declares (``destinations=``, with
the dict's values as labels, or a ``-> Command[Literal[...]]`` return hint); a node that
returns ``Command`` without declaring where it goes is drawn as ending the graph; a node that
nothing leads to is drawn alone, without edges. Only the edge sets are compared (source,
target, dotted or not, label): the text layout of the two libraries differs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from types import SimpleNamespace
from typing import Annotated, Any, Literal, TypedDict

import langgraph.graph
import langgraph.types
import pytest

import threadloom.graph
import threadloom.types

LIBS = {
    "langgraph": SimpleNamespace(graph=langgraph.graph, types=langgraph.types),
    "threadloom": SimpleNamespace(graph=threadloom.graph, types=threadloom.types),
}


class State(TypedDict):
    log: Annotated[list, operator.add]


def log(name: str) -> Callable[[Any], Any]:
    return lambda state: {"log": [name]}


def new(lib: SimpleNamespace, *names: str) -> Any:
    builder = lib.graph.StateGraph(State)
    for name in names:
        builder.add_node(name, log(name))
    return builder


def goto_d(lib: SimpleNamespace) -> Callable[[Any], Any]:
    return lambda state: lib.types.Command(goto="d")


def undeclared(lib: SimpleNamespace) -> Any:
    builder = new(lib, "d")
    builder.add_node("c", goto_d(lib))
    builder.add_edge(lib.graph.START, "c")
    return builder


def declared(lib: SimpleNamespace) -> Any:
    builder = new(lib, "d")
    builder.add_node("c", goto_d(lib), destinations=("d",))
    builder.add_edge(lib.graph.START, "c")
    return builder


def labelled(lib: SimpleNamespace) -> Any:
    builder = new(lib, "d", "e")
    builder.add_node("c", goto_d(lib), destinations={"d": "go d", "e": "go e"})
    builder.add_edge(lib.graph.START, "c")
    return builder


def annotated(lib: SimpleNamespace) -> Any:
    Command = lib.types.Command

    def c(state: State) -> Command[Literal["d", "e"]]:  # type: ignore[valid-type]
        return Command(goto="d")

    builder = new(lib, "d", "e")
    builder.add_node("c", c)
    builder.add_edge(lib.graph.START, "c")
    builder.add_edge("d", "e")
    return builder


def with_static_edge(lib: SimpleNamespace) -> Any:
    builder = new(lib, "d", "e")
    builder.add_node("c", goto_d(lib), destinations=("d",))
    builder.add_edge(lib.graph.START, "c")
    builder.add_edge("c", "e")
    return builder


def to_end(lib: SimpleNamespace) -> Any:
    builder = new(lib, "d")
    builder.add_node("c", goto_d(lib), destinations=("d", lib.graph.END))
    builder.add_edge(lib.graph.START, "c")
    return builder


def unreached(lib: SimpleNamespace) -> Any:
    builder = new(lib, "a", "z")
    builder.add_edge(lib.graph.START, "a")
    builder.add_edge("z", "a")
    return builder


def path_map(lib: SimpleNamespace) -> Any:
    builder = new(lib, "a", "b", "c")
    builder.add_edge(lib.graph.START, "a")
    builder.add_conditional_edges("a", lambda state: "yes", {"yes": "b", "no": "c"})
    builder.add_edge(["b", "c"], lib.graph.END)
    return builder


CASES = [undeclared, declared, labelled, annotated, with_static_edge, to_end, unreached,
         path_map]


def edges(graph: Any, lib: str) -> set[tuple[str, str, bool, Any]]:
    drawn = graph.get_graph()
    return {
        (e.source, e.target, e.conditional, e.data if lib == "langgraph" else e.label)
        for e in drawn.edges
    }


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_drawn_edges_match_langgraph(case: Callable[[SimpleNamespace], Any]) -> None:
    seen = {lib: edges(case(ns).compile(), lib) for lib, ns in LIBS.items()}
    assert seen["threadloom"] == seen["langgraph"]


def test_mermaid_and_ascii_show_declared_command_edges_with_their_labels() -> None:
    drawn = labelled(LIBS["threadloom"]).compile().get_graph()
    mermaid = drawn.draw_mermaid()
    assert "c -. go d .-> d;" in mermaid and "c -. go e .-> e;" in mermaid
    ascii_art = drawn.draw_ascii()
    assert "c -.-> d (go d)" in ascii_art and "c -.-> e (go e)" in ascii_art


def test_a_node_nothing_leads_to_is_drawn_without_edges() -> None:
    drawn = unreached(LIBS["threadloom"]).compile().get_graph()
    assert "z" in drawn.nodes
    assert not [e for e in drawn.edges if "z" in (e.source, e.target)]
    assert "\tz(z)" in drawn.draw_mermaid()
