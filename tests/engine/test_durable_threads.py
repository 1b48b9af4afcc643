"""Threads (design §3, §4, seed 002): state shared by the runs of a thread, isolated between
threads, inspected with ``get_state`` / ``get_state_history``, changed with
``update_state``, and forked by invoking from a ``checkpoint_id``.

Every test runs on each backend x durability mode (see ``conftest.py``)."""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.graph import END, START, StateGraph


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def pipeline(calls: Any) -> StateGraph:
    """``a -> b -> c``: ``a`` adds 1 to ``x``, ``b`` multiplies it by 10; each appends its
    name to ``log``."""

    def a(state: State) -> dict[str, Any]:
        calls.hit("a")
        return {"x": state["x"] + 1, "log": ["a"]}

    def b(state: State) -> dict[str, Any]:
        calls.hit("b")
        return {"x": state["x"] * 10, "log": ["b"]}

    def c(state: State) -> dict[str, Any]:
        calls.hit("c")
        return {"log": ["c"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_node("c", c)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder


def checkpoint_id(snapshot_or_config: Any) -> str:
    config = getattr(snapshot_or_config, "config", snapshot_or_config)
    return str(config["configurable"]["checkpoint_id"])


# -- seed 002 -------------------------------------------------------------------------------


class ChatState(TypedDict):
    messages: list


def chatbot(state: ChatState) -> dict[str, Any]:
    new_msg = f"Bot: I received -> {state['messages'][-1]}"
    return {"messages": state["messages"] + [new_msg]}


def test_seed002_two_invokes_on_one_thread_share_state_and_the_later_value_wins(
    compile_graph, durability
):
    builder = StateGraph(ChatState)
    builder.add_node("chat", chatbot)
    builder.set_entry_point("chat")
    builder.add_edge("chat", END)
    graph = compile_graph(builder)
    config = {"configurable": {"thread_id": "user-1"}}

    out1 = graph.invoke({"messages": ["Hello"]}, config)
    out2 = graph.invoke({"messages": ["How are you?"]}, config)

    # exactly what the seed prints (and LangGraph 1.2.22 returns)
    assert out1 == {"messages": ["Hello", "Bot: I received -> Hello"]}
    assert out2 == {"messages": ["How are you?", "Bot: I received -> How are you?"]}
    assert graph.get_state(config).values == out2
    runs = graph.list_runs(thread_id="user-1")
    assert [r.output for r in runs] == [out2, out1]
    history = list(graph.get_state_history(config))
    # exit: one checkpoint per run; otherwise the input checkpoint and one per step
    assert len(history) == (2 if durability == "exit" else 4)
    assert history[-1].metadata["run_id"] == runs[1].run_id
    assert history[0].metadata["run_id"] == runs[0].run_id


def test_threads_are_isolated(compile_graph, calls):
    graph = compile_graph(pipeline(calls))

    alice = graph.invoke({"x": 1, "log": []}, {"thread_id": "alice"})
    bob = graph.invoke({"x": 5, "log": ["bob"]}, {"thread_id": "bob"})

    assert alice == {"x": 20, "log": ["a", "b", "c"]}
    assert bob == {"x": 60, "log": ["bob", "a", "b", "c"]}
    assert graph.get_state({"thread_id": "alice"}).values == alice
    assert graph.get_state({"thread_id": "bob"}).values == bob
    assert graph.get_state({"thread_id": "carol"}).values == {}
    assert [r.thread_id for r in graph.list_runs(thread_id="alice")] == ["alice"]


def test_a_reducer_channel_accumulates_across_the_runs_of_a_thread(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))

    graph.invoke({"x": 1, "log": ["first"]}, thread)
    second = graph.invoke({"x": 2, "log": ["second"]}, thread)

    # x is a plain channel: the second input wins; log is appended to across both runs
    assert second == {"x": 30, "log": ["first", "a", "b", "c", "second", "a", "b", "c"]}
    assert graph.get_state(thread).values == second


def test_thread_id_at_top_level_and_under_configurable_name_the_same_thread(
    compile_graph, calls
):
    graph = compile_graph(pipeline(calls))

    graph.invoke({"x": 1, "log": []}, {"thread_id": "same"})
    out = graph.invoke({"x": 2, "log": []}, {"configurable": {"thread_id": "same"}})

    assert out["log"] == ["a", "b", "c", "a", "b", "c"]
    assert graph.get_state({"thread_id": "same"}) == graph.get_state(
        {"configurable": {"thread_id": "same"}})
    both = {"thread_id": "same", "configurable": {"thread_id": "same"}}
    assert graph.get_state(both).values == out
    with pytest.raises(ValueError, match="thread_id"):
        graph.invoke({"x": 3, "log": []},
                     {"thread_id": "one", "configurable": {"thread_id": "two"}})
    assert calls["a"] == 2


def test_get_state_returns_values_next_config_metadata_created_at_and_parent(
    compile_graph, calls, thread, durability
):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 1, "log": []}, {**thread, "run_id": "r1"}, interrupt_before=["b"])

    paused = graph.get_state(thread)

    assert paused.values == {"x": 2, "log": ["a"]}
    assert paused.next == ("b",)
    assert [t.name for t in paused.tasks] == ["b"]
    assert paused.config["configurable"]["thread_id"] == thread["thread_id"]
    assert isinstance(checkpoint_id(paused), str)
    assert paused.metadata["run_id"] == "r1"
    assert paused.metadata["step"] == 1
    assert datetime.fromisoformat(paused.created_at).tzinfo is not None
    if durability == "exit":
        assert paused.metadata["source"] == "exit"
        assert paused.parent_config is None
    else:
        assert paused.metadata["source"] == "loop"
        parent = graph.get_state(paused.parent_config)
        assert parent.metadata["source"] == "input"
        assert parent.values == {"x": 1, "log": []}
        assert parent.next == ("a",)

    graph.invoke(None, thread)
    done = graph.get_state(thread)
    assert done.values == {"x": 20, "log": ["a", "b", "c"]}
    assert done.next == ()
    assert done.tasks == ()
    assert done.metadata["step"] == 3
    assert checkpoint_id(done) > checkpoint_id(paused)
    # the paused checkpoint can still be read back by its id
    assert graph.get_state(paused.config).values == {"x": 2, "log": ["a"]}
    assert graph.get_state(paused.config).next == ("b",)


def test_get_state_history_is_newest_first_and_filters_by_source_before_and_limit(
    compile_graph, calls, thread, durability
):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 1, "log": []}, {**thread, "run_id": "first"})
    graph.update_state(thread, {"log": ["edited"]})
    graph.invoke({"x": 2, "log": []}, {**thread, "run_id": "second"})

    history = list(graph.get_state_history(thread))

    ids = [checkpoint_id(h) for h in history]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    for newer, older in zip(history, history[1:], strict=False):
        assert checkpoint_id(newer.parent_config) == checkpoint_id(older)
    sources = [h.metadata["source"] for h in history]
    if durability == "exit":
        assert sources == ["exit", "update", "exit"]
    else:
        assert sources == ["loop"] * 3 + ["input", "update"] + ["loop"] * 3 + ["input"]
    assert history[0].values == graph.get_state(thread).values

    updates = list(graph.get_state_history(thread, filter={"source": "update"}))
    assert [h.values["log"][-1] for h in updates] == ["edited"]
    by_run = list(graph.get_state_history(thread, filter={"run_id": "first"}))
    assert {h.metadata["run_id"] for h in by_run} == {"first"}
    assert len(by_run) == (1 if durability == "exit" else 4)

    older = list(graph.get_state_history(thread, before=history[1].config))
    assert [checkpoint_id(h) for h in older] == ids[2:]
    assert [checkpoint_id(h) for h in graph.get_state_history(thread, limit=2)] == ids[:2]
    limited = graph.get_state_history(thread, before=history[0].config, limit=1)
    assert [checkpoint_id(h) for h in limited] == ids[1:2]


def test_update_state_as_node_continues_along_that_nodes_edges(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 1, "log": []}, thread, interrupt_before=["b"])

    new_config = graph.update_state(thread, {"x": 100, "log": ["human"]}, as_node="b")

    snapshot = graph.get_state(thread)
    assert checkpoint_id(new_config) == checkpoint_id(snapshot)
    assert snapshot.values == {"x": 100, "log": ["a", "human"]}
    assert snapshot.next == ("c",)
    assert snapshot.metadata["source"] == "update"
    out = graph.invoke(None, thread)
    assert out == {"x": 100, "log": ["a", "human", "c"]}
    assert calls.snapshot() == {"a": 1, "c": 1}


def test_update_state_without_as_node_keeps_the_pending_next_nodes(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 1, "log": []}, thread, interrupt_before=["b"])

    graph.update_state(thread, {"x": 7})

    snapshot = graph.get_state(thread)
    assert snapshot.values == {"x": 7, "log": ["a"]}
    assert snapshot.next == ("b",)
    assert graph.invoke(None, thread) == {"x": 70, "log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 1, "c": 1}


def test_seed002_human_edits_state_at_interrupt_after_in_config_then_thread_resumes(
    compile_graph, calls, thread
):
    """Seed 002 §9: ``interrupt_after`` given in the invoke config pauses after the node;
    a human changes the state; the thread resumes from there."""
    graph = compile_graph(pipeline(calls))
    config = {**thread, "interrupt_after": ["b"]}

    paused = graph.invoke({"x": 1, "log": []}, config)
    assert paused == {"x": 20, "log": ["a", "b"]}
    assert graph.get_state(thread).next == ("c",)
    assert graph.list_runs()[0].status == "interrupted"

    graph.update_state(thread, {"x": 21})
    out = graph.invoke(None, thread)

    assert out == {"x": 21, "log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 1, "c": 1}
    assert graph.list_runs()[0].status == "succeeded"


def test_invoking_from_a_checkpoint_id_forks_without_altering_the_original_history(
    compile_graph, calls, thread
):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 1, "log": []}, thread, interrupt_after=["a"])
    graph.invoke(None, thread)
    original = list(graph.get_state_history(thread))
    fork_point = next(h for h in original if h.next == ("b",))
    head = original[0]

    graph.update_state(fork_point.config, {"x": 4})
    out = graph.invoke(None, thread)

    assert out == {"x": 40, "log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 2, "c": 2}
    after = list(graph.get_state_history(thread))
    assert len(after) > len(original)
    # the original checkpoints are all still there, unchanged
    by_id = {checkpoint_id(h): h for h in after}
    for old in original:
        kept = by_id[checkpoint_id(old)]
        assert (kept.values, kept.next, kept.parent_config) == (
            old.values, old.next, old.parent_config)
    assert graph.get_state(head.config).values == {"x": 20, "log": ["a", "b", "c"]}
    # the new branch starts at the fork point
    branch = [h for h in after if checkpoint_id(h) not in {checkpoint_id(o) for o in original}]
    assert checkpoint_id(branch[-1].parent_config) == checkpoint_id(fork_point)


def test_invoke_with_checkpoint_id_replays_from_that_checkpoint(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 1, "log": []}, thread, interrupt_after=["a"])
    fork_point = graph.get_state(thread)
    graph.invoke(None, thread)
    head = graph.get_state(thread)

    out = graph.invoke(None, fork_point.config)

    assert out == {"x": 20, "log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 2, "c": 2}
    latest = graph.get_state(thread)
    assert checkpoint_id(latest) > checkpoint_id(head)
    assert graph.get_state(head.config).values == head.values
    assert graph.get_state(fork_point.config).values == {"x": 2, "log": ["a"]}


def test_get_state_of_a_thread_that_never_ran_is_empty(compile_graph, calls):
    graph = compile_graph(pipeline(calls))

    snapshot = graph.get_state({"thread_id": "nobody"})

    assert (snapshot.values, snapshot.next, snapshot.tasks) == ({}, (), ())
    assert snapshot.parent_config is None
    assert list(graph.get_state_history({"thread_id": "nobody"})) == []
