"""Differential tests against LangGraph 1.2.22: ``stream``/``astream`` are lazy and
``get_state().values`` shows reducer channels that no node wrote (issue 11, item 11).

Each test runs the same program on both libraries and compares what a user sees: the lines
printed by nodes and by the loop consuming the stream, in order (``capsys``), and the state
values. Within a step whose nodes run in parallel the order of those lines is not fixed on
either library, so those steps are compared as sets, and every line of a step must come
before every line of the next.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import langgraph.checkpoint.memory
import langgraph.graph
import pytest

import threadloom.checkpoint.memory
import threadloom.graph

LIBS = {
    "langgraph": SimpleNamespace(
        graph=langgraph.graph, saver=langgraph.checkpoint.memory.InMemorySaver
    ),
    "threadloom": SimpleNamespace(
        graph=threadloom.graph, saver=threadloom.checkpoint.memory.InMemorySaver
    ),
}


class State(TypedDict):
    log: Annotated[list, operator.add]


def printing(name: str, ran: list[str] | None = None) -> Callable[[Any], Any]:
    def node(state: Any) -> Any:
        print(f"run {name}")
        if ran is not None:
            ran.append(name)
        return {"log": [name]}

    return node


def aprinting(name: str, ran: list[str] | None = None) -> Callable[[Any], Any]:
    async def node(state: Any) -> Any:
        print(f"run {name}")
        if ran is not None:
            ran.append(name)
        return {"log": [name]}

    return node


def chain(lib: str, make: Callable[..., Any] = printing, ran: list[str] | None = None,
          checkpointer: bool = False) -> Any:
    """START -> a -> b -> c, each node printing its name."""
    g = LIBS[lib].graph
    builder = g.StateGraph(State)
    for name in "abc":
        builder.add_node(name, make(name, ran))
    builder.add_edge(g.START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    return builder.compile(checkpointer=LIBS[lib].saver() if checkpointer else None)


def fan(lib: str) -> Any:
    """START -> a -> (b, c) -> join d."""
    g = LIBS[lib].graph
    builder = g.StateGraph(State)
    for name in "abcd":
        builder.add_node(name, printing(name))
    builder.add_edge(g.START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "c")
    builder.add_edge(["b", "c"], "d")
    return builder.compile()


def consume(graph: Any, **kwargs: Any) -> None:
    for chunk in graph.stream({"log": []}, **kwargs):
        print(f"chunk {chunk}")


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    "stream_mode", ["updates", "values", ["updates", "values"], ["values"]]
)
def test_node_output_interleaves_with_chunks_as_in_langgraph(
    capsys: pytest.CaptureFixture[str], stream_mode: Any
) -> None:
    seen = {}
    for lib in LIBS:
        consume(chain(lib), stream_mode=stream_mode)
        seen[lib] = lines(capsys)
    assert seen["threadloom"] == seen["langgraph"]
    assert seen["langgraph"].index("run b") > seen["langgraph"].index("run a") + 1


@pytest.mark.parametrize("checkpointer", [False, True])
def test_no_node_starts_after_the_consumer_breaks(
    capsys: pytest.CaptureFixture[str], checkpointer: bool
) -> None:
    seen, ran = {}, {}
    for lib in LIBS:
        ran[lib] = []
        graph = chain(lib, ran=ran[lib], checkpointer=checkpointer)
        for chunk in graph.stream({"log": []}, {"configurable": {"thread_id": "t"}}):
            print(f"chunk {chunk}")
            break
        print("after break")
        seen[lib] = lines(capsys)
        if checkpointer:  # the thread is left where the consumer stopped it
            assert graph.get_state({"configurable": {"thread_id": "t"}}).next == ("b",)
    assert seen["threadloom"] == seen["langgraph"]
    assert ran["threadloom"] == ran["langgraph"] == ["a"]


def test_a_stopped_astream_leaves_the_thread_where_it_stopped() -> None:
    async def stop_after_first(graph: Any, config: Any) -> None:
        async for _ in graph.astream({"log": []}, config):
            break

    seen, ran = {}, {}
    for lib in LIBS:
        ran[lib] = []
        graph = chain(lib, aprinting, ran[lib], checkpointer=True)
        config = {"configurable": {"thread_id": "t"}}
        asyncio.run(stop_after_first(graph, config))
        seen[lib] = (graph.get_state(config).next, graph.get_state(config).values)
    assert seen["threadloom"] == seen["langgraph"] == (("b",), {"log": ["a"]})
    assert ran["threadloom"] == ran["langgraph"] == ["a"]


def test_a_stopped_stream_leaves_the_thread_free_to_continue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = {}
    for lib in LIBS:
        graph = chain(lib, checkpointer=True)
        config = {"configurable": {"thread_id": "t"}}
        for _ in graph.stream({"log": []}, config):
            break
        results[lib] = graph.invoke(None, config)
    assert results["threadloom"] == results["langgraph"] == {"log": ["a", "b", "c"]}


def steps_of(out: list[str], step: dict[str, int]) -> list[tuple[int, frozenset[str]]]:
    """The printed lines grouped by the step they belong to (``step``: node -> step)."""
    groups: list[tuple[int, set[str]]] = []
    for line in out:
        node = line.split()[1] if line.startswith("run ") else line.split("'")[1]
        number = step[node]
        if not groups or groups[-1][0] != number:
            groups.append((number, set()))
        groups[-1][1].add(line)
    return [(n, frozenset(g)) for n, g in groups]


def test_a_parallel_step_starts_only_after_the_previous_steps_chunks_are_taken(
    capsys: pytest.CaptureFixture[str],
) -> None:
    step = {"a": 1, "b": 2, "c": 2, "d": 3}
    seen = {}
    for lib in LIBS:
        consume(fan(lib))
        seen[lib] = steps_of(lines(capsys), step)
    assert seen["threadloom"] == seen["langgraph"]
    assert [n for n, _ in seen["threadloom"]] == [1, 2, 3]  # no step's lines mix


@pytest.mark.parametrize("make", [printing, aprinting])
def test_astream_is_lazy_as_in_langgraph(
    capsys: pytest.CaptureFixture[str], make: Callable[..., Any]
) -> None:
    async def consume_async(graph: Any, stop_after: int | None) -> None:
        count = 0
        async for chunk in graph.astream({"log": []}):
            print(f"chunk {chunk}")
            count += 1
            if count == stop_after:
                break
        print("after loop")

    for stop_after in (None, 1):
        seen, ran = {}, {}
        for lib in LIBS:
            ran[lib] = []
            asyncio.run(consume_async(chain(lib, make, ran[lib]), stop_after))
            seen[lib] = lines(capsys)
        assert seen["threadloom"] == seen["langgraph"]
        assert ran["threadloom"] == ran["langgraph"]
    assert ran["threadloom"] == ["a"]


def test_sync_stream_over_async_nodes_is_lazy(capsys: pytest.CaptureFixture[str]) -> None:
    # threadloom only: LangGraph's sync stream cannot run async nodes
    ran: list[str] = []
    graph = chain("threadloom", aprinting, ran)
    for chunk in graph.stream({"log": []}):
        print(f"chunk {chunk}")
        break
    assert lines(capsys) == ["run a", "chunk {'a': {'log': ['a']}}"]
    assert ran == ["a"]
    assert [list(c) for c in graph.stream({"log": []})] == [["a"], ["b"], ["c"]]


# --- get_state().values -------------------------------------------------------------------


class Reducers(TypedDict):
    x: int
    log: Annotated[list, operator.add]
    tags: Annotated[set, operator.or_]
    total: Annotated[int, operator.add]


def reducer_graph(lib: str) -> Any:
    g = LIBS[lib].graph
    builder = g.StateGraph(Reducers)
    builder.add_node("a", lambda state: {"x": 1})
    builder.add_node("b", lambda state: {"x": 2})
    builder.add_edge(g.START, "a")
    builder.add_edge("a", "b")
    return builder.compile(checkpointer=LIBS[lib].saver())


def test_get_state_shows_reducer_channels_no_node_wrote() -> None:
    seen: dict[str, list[Any]] = {}
    for lib in LIBS:
        graph = reducer_graph(lib)
        config = {"configurable": {"thread_id": "t"}}
        out: list[Any] = [graph.get_state(config).values]
        paused = graph.invoke({"x": 0}, config, interrupt_before=["b"])
        out += [paused, graph.get_state(config).values]
        done = graph.invoke(None, config)
        out += [done, graph.get_state(config).values]
        # every snapshot of the history shows them too (threadloom records no snapshot
        # before the input is applied, so compare the ones both have)
        out.append([s.values for s in graph.get_state_history(config)][:3])
        other = {"configurable": {"thread_id": "u"}}
        graph.update_state(other, {"x": 5}, as_node="a")
        out.append(graph.get_state(other).values)
        seen[lib] = out
    assert seen["threadloom"] == seen["langgraph"]
    assert seen["threadloom"][2] == {"x": 1, "log": [], "tags": set(), "total": 0}
    assert seen["threadloom"][3] == seen["threadloom"][4]  # invoke's output == get_state
