"""Subgraph checkpoints (issue 11 item 9): a compiled graph used as a node of a durable graph
checkpoints into the parent's thread, under the namespace ``"<node>:<execution id>"``, so an
interrupt (or a failure) inside it resumes inside it: the nodes before the interrupt do not
run again. Each scenario runs on LangGraph 1.2.22 (installed for these tests) and on
threadloom on every backend x durability mode (``conftest.py``); both must call the same
nodes the same number of times and return the same values."""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

import threadloom.errors
import threadloom.graph
import threadloom.types

langgraph_graph = pytest.importorskip("langgraph.graph")
langgraph_types = pytest.importorskip("langgraph.types")
langgraph_memory = pytest.importorskip("langgraph.checkpoint.memory")

THREADLOOM = SimpleNamespace(graph=threadloom.graph, types=threadloom.types)
LANGGRAPH = SimpleNamespace(graph=langgraph_graph, types=langgraph_types)


class State(TypedDict):
    log: Annotated[list, operator.add]


def node(lib: SimpleNamespace, calls: Counter[str], name: str, asks: int = 0,
         asynchronous: bool = False) -> Any:
    """Appends ``name`` (with the answers to its ``asks`` interrupts) to ``log``."""

    def run() -> dict[str, Any]:
        calls[name] += 1
        answers = [lib.types.interrupt(f"{name}?{i}") for i in range(asks)]
        return {"log": [f"{name}:{','.join(answers)}" if asks else name]}

    if asynchronous:
        async def anode(state: State) -> dict[str, Any]:
            await asyncio.sleep(0)
            return run()
        return anode
    return lambda state: run()


def parent(lib: SimpleNamespace, calls: Counter[str], asynchronous: bool = False,
           s2_asks: int = 1, s3_asks: int = 0) -> Any:
    """p1 -> sub (s1 -> s2 -> s3) -> p2."""
    sub = lib.graph.StateGraph(State)
    sub.add_node("s1", node(lib, calls, "s1", 0, asynchronous))
    sub.add_node("s2", node(lib, calls, "s2", s2_asks, asynchronous))
    sub.add_node("s3", node(lib, calls, "s3", s3_asks, asynchronous))
    sub.add_edge(lib.graph.START, "s1")
    sub.add_edge("s1", "s2")
    sub.add_edge("s2", "s3")
    builder = lib.graph.StateGraph(State)
    builder.add_node("p1", node(lib, calls, "p1"))
    builder.add_node("sub", sub.compile())
    builder.add_node("p2", node(lib, calls, "p2"))
    builder.add_edge(lib.graph.START, "p1")
    builder.add_edge("p1", "sub")
    builder.add_edge("sub", "p2")
    return builder


def plain(out: Any) -> Any:
    """An output with its interrupts reduced to their values (ids differ by library; in a
    parallel step LangGraph lists them in the order they were raised)."""
    if isinstance(out, dict) and "__interrupt__" in out:
        return {**out, "__interrupt__": sorted(i.value for i in out["__interrupt__"])}
    return out


def converse(graph: Any, lib: SimpleNamespace, calls: Counter[str], answers: list[str],
             config: dict[str, Any]) -> list[tuple[Any, dict[str, int]]]:
    """Start, then answer each interrupt in turn; the output and call counts each time."""
    seen = [(plain(graph.invoke({"log": []}, config)), dict(calls))]
    for answer in answers:
        seen.append((plain(graph.invoke(lib.types.Command(resume=answer), config)),
                     dict(calls)))
    return seen


def on_langgraph(answers: list[str], **shape: Any) -> list[tuple[Any, dict[str, int]]]:
    calls: Counter[str] = Counter()
    graph = parent(LANGGRAPH, calls, **shape).compile(
        checkpointer=langgraph_memory.InMemorySaver())
    return converse(graph, LANGGRAPH, calls, answers, {"configurable": {"thread_id": "t"}})


def test_an_interrupt_inside_a_subgraph_resumes_inside_it(compile_graph, thread):
    calls: Counter[str] = Counter()
    graph = compile_graph(parent(THREADLOOM, calls))

    ours = converse(graph, THREADLOOM, calls, ["yes"], thread)

    assert ours == on_langgraph(["yes"])
    assert ours[-1][1]["s1"] == 1  # the node before the interrupt did not run again
    assert ours[-1][0] == {"log": ["p1", "p1", "s1", "s2:yes", "s3", "p2"]}


def test_several_interrupts_in_one_subgraph_node_and_in_the_next(compile_graph, thread):
    calls: Counter[str] = Counter()
    graph = compile_graph(parent(THREADLOOM, calls, s2_asks=2, s3_asks=1))

    ours = converse(graph, THREADLOOM, calls, ["a", "b", "c"], thread)

    assert ours == on_langgraph(["a", "b", "c"], s2_asks=2, s3_asks=1)
    assert ours[-1][1] == {"p1": 1, "s1": 1, "s2": 3, "s3": 2, "p2": 1}


async def test_an_async_subgraph_resumes_inside_it(compile_graph, thread):
    calls: Counter[str] = Counter()
    graph = compile_graph(parent(THREADLOOM, calls, asynchronous=True))

    first = await graph.ainvoke({"log": []}, thread)
    second = await graph.ainvoke(threadloom.types.Command(resume="yes"), thread)

    assert [plain(first), plain(second)] == [out for out, _ in on_langgraph(["yes"])]
    assert calls == Counter({"p1": 1, "s1": 1, "s2": 2, "s3": 1, "p2": 1})


def test_resume_by_interrupt_id_reaches_the_subgraph(compile_graph, thread):
    calls: Counter[str] = Counter()
    graph = compile_graph(parent(THREADLOOM, calls))
    paused = graph.invoke({"log": []}, thread)
    (pending,) = paused["__interrupt__"]
    assert graph.get_state(thread).interrupts == (pending,)

    out = graph.invoke(threadloom.types.Command(resume={pending.id: "by id"}), thread)

    assert out["log"][-3:] == ["s2:by id", "s3", "p2"]
    assert calls["s1"] == 1


def test_get_state_with_subgraphs_shows_the_subgraph_state(compile_graph, thread):
    graph = compile_graph(parent(THREADLOOM, Counter()))
    graph.invoke({"log": []}, thread)
    lg = parent(LANGGRAPH, Counter()).compile(checkpointer=langgraph_memory.InMemorySaver())
    lg_config = {"configurable": {"thread_id": "t"}}
    lg.invoke({"log": []}, lg_config)

    ours = graph.get_state(thread, subgraphs=True)
    theirs = lg.get_state(lg_config, subgraphs=True)

    assert ours.next == theirs.next == ("sub",)
    (task,) = ours.tasks
    (their_task,) = theirs.tasks
    assert task.state is not None
    assert task.state.values == their_task.state.values == {"log": ["p1", "s1"]}
    assert task.state.next == their_task.state.next == ("s2",)
    assert [i.value for i in task.state.interrupts] == ["s2?0"]
    assert task.state.config["configurable"]["checkpoint_ns"] == f"sub:{task.id}"
    assert graph.get_state(thread).tasks[0].state is None  # only when asked


def test_a_failure_inside_a_subgraph_continues_from_the_failed_node(compile_graph, thread):
    def scenario(lib: SimpleNamespace, graph_of: Any, config: dict[str, Any]) -> Any:
        calls: Counter[str] = Counter()
        broken = [True]

        def s2(state: State) -> dict[str, Any]:
            calls["s2"] += 1
            if broken[0]:
                raise ConnectionError("down")
            return {"log": ["s2"]}

        sub = lib.graph.StateGraph(State)
        sub.add_node("s1", node(lib, calls, "s1"))
        sub.add_node("s2", s2)
        sub.add_edge(lib.graph.START, "s1")
        sub.add_edge("s1", "s2")
        builder = lib.graph.StateGraph(State)
        builder.add_node("sub", sub.compile())
        builder.add_edge(lib.graph.START, "sub")
        graph = graph_of(builder)
        with pytest.raises(ConnectionError):
            graph.invoke({"log": []}, config)
        broken[0] = False
        return graph.invoke(None, config), dict(calls)

    theirs = scenario(LANGGRAPH, lambda b: b.compile(
        checkpointer=langgraph_memory.InMemorySaver()), {"configurable": {"thread_id": "t"}})
    ours = scenario(THREADLOOM, compile_graph, thread)
    assert ours == theirs
    assert ours[1] == {"s1": 1, "s2": 2}


def test_a_retry_of_the_subgraph_node_starts_it_over(compile_graph, thread):
    def scenario(lib: SimpleNamespace, graph_of: Any, config: dict[str, Any]) -> Any:
        calls: Counter[str] = Counter()
        failures = [1]

        def s2(state: State) -> dict[str, Any]:
            calls["s2"] += 1
            if failures[0]:
                failures[0] -= 1
                raise ConnectionError("down")
            return {"log": ["s2"]}

        sub = lib.graph.StateGraph(State)
        sub.add_node("s1", node(lib, calls, "s1"))
        sub.add_node("s2", s2)
        sub.add_edge(lib.graph.START, "s1")
        sub.add_edge("s1", "s2")
        builder = lib.graph.StateGraph(State)
        retry = lib.types.RetryPolicy(initial_interval=0, jitter=False)
        builder.add_node("sub", sub.compile(), retry_policy=retry)
        builder.add_edge(lib.graph.START, "sub")
        return graph_of(builder).invoke({"log": []}, config), dict(calls)

    theirs = scenario(LANGGRAPH, lambda b: b.compile(
        checkpointer=langgraph_memory.InMemorySaver()), {"configurable": {"thread_id": "t"}})
    ours = scenario(THREADLOOM, compile_graph, thread)
    assert ours == theirs
    assert ours[1] == {"s1": 2, "s2": 2}


def test_without_a_checkpointer_an_interrupt_inside_a_subgraph_pauses_the_parent():
    calls: Counter[str] = Counter()
    ours = plain(parent(THREADLOOM, calls).compile().invoke({"log": []}))
    theirs = plain(parent(LANGGRAPH, Counter()).compile().invoke({"log": []}))
    assert ours == theirs == {"log": ["p1"], "__interrupt__": ["s2?0"]}
    assert "p2" not in calls


def sub_of(lib: SimpleNamespace, calls: Counter[str], prefix: str) -> Any:
    """<prefix>1 -> <prefix>2 (asks once)."""
    builder = lib.graph.StateGraph(State)
    builder.add_node(f"{prefix}1", node(lib, calls, f"{prefix}1"))
    builder.add_node(f"{prefix}2", node(lib, calls, f"{prefix}2", 1))
    builder.add_edge(lib.graph.START, f"{prefix}1")
    builder.add_edge(f"{prefix}1", f"{prefix}2")
    return builder.compile()


def by_value(out: Any, answers: dict[str, str]) -> dict[str, str]:
    return {i.id: answers[i.value] for i in out["__interrupt__"]}


def test_a_subgraph_inside_a_subgraph_resumes_at_each_level(compile_graph, thread):
    def scenario(lib: SimpleNamespace, graph_of: Any, config: dict[str, Any]) -> Any:
        calls: Counter[str] = Counter()
        mid = lib.graph.StateGraph(State)
        mid.add_node("m1", node(lib, calls, "m1"))
        mid.add_node("inner", sub_of(lib, calls, "i"))
        mid.add_node("m2", node(lib, calls, "m2", 1))
        mid.add_edge(lib.graph.START, "m1")
        mid.add_edge("m1", "inner")
        mid.add_edge("inner", "m2")
        top = lib.graph.StateGraph(State)
        top.add_node("t1", node(lib, calls, "t1"))
        top.add_node("mid", mid.compile())
        top.add_edge(lib.graph.START, "t1")
        top.add_edge("t1", "mid")
        return converse(graph_of(top), lib, calls, ["x", "y"], config)

    theirs = scenario(LANGGRAPH, lambda b: b.compile(
        checkpointer=langgraph_memory.InMemorySaver()), {"configurable": {"thread_id": "t"}})
    ours = scenario(THREADLOOM, compile_graph, thread)
    assert ours == theirs
    assert ours[-1][1] == {"t1": 1, "m1": 1, "i1": 1, "i2": 2, "m2": 2}


@pytest.mark.parametrize("fan_out", ["edges", "send"])
def test_parallel_subgraph_executions_pause_and_resume_separately(compile_graph, thread,
                                                                  fan_out):
    def scenario(lib: SimpleNamespace, graph_of: Any, config: dict[str, Any]) -> Any:
        calls: Counter[str] = Counter()
        top = lib.graph.StateGraph(State)
        if fan_out == "edges":
            top.add_node("A", sub_of(lib, calls, "a"))
            top.add_node("B", sub_of(lib, calls, "b"))
            top.add_edge(lib.graph.START, "A")
            top.add_edge(lib.graph.START, "B")
            answers = {"a2?0": "ra", "b2?0": "rb"}
        else:
            top.add_node("p", node(lib, calls, "p"))
            top.add_node("A", sub_of(lib, calls, "a"))
            top.add_edge(lib.graph.START, "p")
            top.add_conditional_edges("p", lambda state: [
                lib.types.Send("A", {"log": [f"x{i}"]}) for i in range(2)])
            answers = {"a2?0": "r"}
        graph = graph_of(top)
        paused = graph.invoke({"log": []}, config)
        resumed = graph.invoke(lib.types.Command(resume=by_value(paused, answers)), config)
        return plain(paused), plain(resumed), dict(calls)

    theirs = scenario(LANGGRAPH, lambda b: b.compile(
        checkpointer=langgraph_memory.InMemorySaver()), {"configurable": {"thread_id": "t"}})
    ours = scenario(THREADLOOM, compile_graph, thread)
    assert ours == theirs


def test_a_task_called_in_a_subgraph_node_is_not_run_again_on_resume(compile_graph, thread):
    import langgraph.func

    import threadloom.func

    def scenario(lib: SimpleNamespace, task: Any, graph_of: Any, config: dict[str, Any]) -> Any:
        calls: Counter[str] = Counter()

        @task
        def charge(amount: int) -> str:
            calls["charge"] += 1
            return f"charged {amount}"

        def pay(state: State) -> dict[str, Any]:
            calls["pay"] += 1
            receipt = charge(5).result()
            return {"log": [receipt, lib.types.interrupt("ok?")]}

        sub = lib.graph.StateGraph(State)
        sub.add_node("s1", node(lib, calls, "s1"))
        sub.add_node("pay", pay)
        sub.add_edge(lib.graph.START, "s1")
        sub.add_edge("s1", "pay")
        top = lib.graph.StateGraph(State)
        top.add_node("sub", sub.compile())
        top.add_edge(lib.graph.START, "sub")
        return converse(graph_of(top), lib, calls, ["yes"], config)

    theirs = scenario(LANGGRAPH, langgraph.func.task, lambda b: b.compile(
        checkpointer=langgraph_memory.InMemorySaver()), {"configurable": {"thread_id": "t"}})
    ours = scenario(THREADLOOM, threadloom.func.task, compile_graph, thread)
    assert ours == theirs
    assert ours[-1][1] == {"s1": 1, "pay": 2, "charge": 1}


def test_a_subgraph_config_is_refused_rather_than_read_as_the_parents(compile_graph, thread):
    """A config with the subgraph's ``checkpoint_ns`` (from ``get_state(subgraphs=True)``)
    would otherwise address the parent's checkpoint with the same number: reading it would
    show the parent's state, and writing would fork the parent."""
    graph = compile_graph(parent(THREADLOOM, Counter()))
    graph.invoke({"log": []}, thread)
    (task,) = graph.get_state(thread, subgraphs=True).tasks
    assert task.state is not None
    sub_config = task.state.config
    before = graph.get_state(thread)
    for call in (lambda: graph.get_state(sub_config),
                 lambda: graph.update_state(sub_config, {"log": ["edited"]}),
                 lambda: graph.invoke(None, sub_config)):
        with pytest.raises(threadloom.errors.InvalidConfigError, match="subgraph"):
            call()
    assert graph.get_state(thread) == before  # nothing was written
