"""``CompiledGraph.stream_to``: the chunks of ``stream``, pushed from the caller's thread."""

from __future__ import annotations

import threading
from typing import Any, TypedDict

import pytest

from threadloom.graph import END, StateGraph
from threadloom.graph.compiled import CompiledGraph


class State(TypedDict):
    n: int


def _graph(fail: bool = False) -> CompiledGraph:
    def one(state: State) -> dict[str, Any]:
        return {"n": state["n"] + 1}

    def two(state: State) -> dict[str, Any]:
        if fail:
            raise ValueError("two failed")
        return {"n": state["n"] * 10}

    builder = StateGraph(State)
    builder.add_node("one", one)
    builder.add_node("two", two)
    builder.set_entry_point("one")
    builder.add_edge("one", "two")
    builder.add_edge("two", END)
    return builder.compile()


def test_stream_to_pushes_what_stream_yields_from_the_calling_thread() -> None:
    graph = _graph()
    pulled = list(graph.stream({"n": 1}, stream_mode=["values", "updates"]))
    pushed: list[tuple[str, Any]] = []
    threads: set[int] = set()

    def put(mode: str, chunk: Any) -> None:
        threads.add(threading.get_ident())
        pushed.append((mode, chunk))

    assert graph.stream_to(put, {"n": 1}, stream_mode=["values", "updates"]) == {"n": 20}
    assert pushed == pulled
    assert pushed[-1] == ("values", {"n": 20})
    assert threads == {threading.get_ident()}


def test_stream_to_raises_what_the_run_raised_after_pushing_what_came_before() -> None:
    pushed: list[tuple[str, Any]] = []
    with pytest.raises(ValueError, match="two failed"):
        _graph(fail=True).stream_to(lambda m, c: pushed.append((m, c)), {"n": 1},
                                    stream_mode=["updates"])
    assert pushed == [("updates", {"one": {"n": 2}})]


def test_stream_to_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError):
        _graph().stream_to(lambda m, c: None, {"n": 1}, stream_mode=["nope"])  # type: ignore[list-item]
