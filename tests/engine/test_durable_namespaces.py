"""Namespaces in the library (issue 12 item 0): ``config["namespace"]`` selects the store
namespace a run, its state, history and records live in. The same thread id and run id in two
namespaces are two threads and two runs that run independently; run-id idempotency and
``RunConflictError`` hold within one namespace. A config without a namespace is the
``"default"`` namespace, as before.

Every test runs on each backend x durability mode (see ``conftest.py``)."""

from __future__ import annotations

import operator
import os
from collections import Counter
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.checkpoint.crypto import EncryptedSerializer
from threadloom.checkpoint.retention import export_thread, import_thread
from threadloom.config import get_config
from threadloom.errors import InvalidConfigError, RunConflictError, RunNotFoundError
from threadloom.graph import END, START, StateGraph
from threadloom.types import Command, interrupt

A, B = "tenant-a", "tenant-b"


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def pipeline(calls: Any, broken: set[str] | None = None,
             seen: list[Any] | None = None) -> StateGraph:
    """``a -> b``: each adds 1 to ``x`` and its name to ``log``; a node named in ``broken``
    fails; ``seen`` collects the namespace each node saw in its config."""
    broken = broken if broken is not None else set()

    def make(name: str) -> Any:
        def node(state: State) -> dict[str, Any]:
            calls.hit(name)
            if seen is not None:
                seen.append(get_config().get("namespace"))
            if name in broken:
                raise RuntimeError(f"{name} is broken")
            return {"x": state["x"] + 1, "log": [name]}

        return node

    builder = StateGraph(State)
    builder.add_node("a", make("a"))
    builder.add_node("b", make("b"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder


def test_the_same_thread_and_run_id_run_independently_in_two_namespaces(
    compile_graph, calls, thread
):
    seen: list[Any] = []
    graph = compile_graph(pipeline(calls, seen=seen))
    out_a = graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r1", "namespace": A})
    out_b = graph.invoke({"x": 10, "log": []},
                         {"configurable": {**thread, "namespace": B}, "run_id": "r1"})
    assert (out_a["x"], out_b["x"]) == (2, 12)
    assert seen == [A, A, B, B]  # a node's config names its namespace
    assert calls.snapshot() == {"a": 2, "b": 2}
    state_a = graph.get_state({**thread, "namespace": A})
    state_b = graph.get_state({"configurable": {**thread, "namespace": B}})
    assert (state_a.values["x"], state_b.values["x"]) == (2, 12)
    assert state_a.config["configurable"]["namespace"] == A  # it addresses the namespace
    assert graph.get_state(state_a.config).values == state_a.values
    assert graph.get_state(thread).values == {}  # the default namespace has no such thread
    run_a, run_b = graph.get_run("r1", namespace=A), graph.get_run("r1", namespace=B)
    assert run_a is not None and run_b is not None
    assert (run_a.input["x"], run_b.input["x"]) == (0, 10)
    assert (run_a.namespace, run_b.namespace) == (A, B)
    assert graph.get_run("r1") is None
    assert [r.run_id for r in graph.list_runs(namespace=A)] == ["r1"]
    assert graph.list_runs() == []
    assert [e.outputs["x"] for e in graph.list_executions("r1", namespace=B)] == [11, 12]
    history = list(graph.get_state_history({**thread, "namespace": B}))
    assert history[0].values["x"] == 12  # ("exit" keeps the last checkpoint only)
    assert {s.values["x"] for s in history} <= {12, 11, 10}
    assert all(s.config["configurable"]["namespace"] == B for s in history)


def test_run_id_idempotency_holds_within_a_namespace(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))
    config = {**thread, "run_id": "r1", "namespace": A}
    first = graph.invoke({"x": 0, "log": []}, config)
    again = graph.invoke({"x": 0, "log": []}, config)  # succeeded: not run again
    assert again == first
    assert calls.snapshot() == {"a": 1, "b": 1}
    graph.invoke({"x": 0, "log": []}, {**config, "namespace": B})  # another run: it runs
    assert calls.snapshot() == {"a": 2, "b": 2}


def test_run_conflict_is_raised_only_within_a_namespace(compile_graph, calls):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 0, "log": []}, {"thread_id": "t1", "run_id": "r1", "namespace": A})
    graph.invoke({"x": 0, "log": []}, {"thread_id": "t2", "run_id": "r1", "namespace": B})
    with pytest.raises(RunConflictError):
        graph.invoke({"x": 0, "log": []}, {"thread_id": "t2", "run_id": "r1", "namespace": A})
    with pytest.raises(RunConflictError):
        graph.invoke({"x": 0, "log": []}, {"thread_id": "t1", "run_id": "r1", "namespace": B})
    graph.invoke({"x": 0, "log": []}, {"thread_id": "t3", "run_id": "r1"})  # "default"
    run = graph.get_run("r1")
    assert run is not None and run.thread_id == "t3"


def test_resume_by_run_id_looks_in_the_namespace_named(compile_graph, calls, thread):
    broken = {"b"}
    graph = compile_graph(pipeline(calls, broken))
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r1", "namespace": A})
    broken.clear()
    with pytest.raises(RunNotFoundError):
        graph.resume("r1")  # not in "default"
    with pytest.raises(InvalidConfigError):
        graph.resume("r1", namespace=A, config={"namespace": B})
    out = graph.resume("r1", namespace=A)
    assert out["log"] == ["a", "b"]
    assert calls.snapshot() == {"a": 1, "b": 2}  # a did not run again
    run = graph.get_run("r1", namespace=A)
    assert run is not None and run.status == "succeeded"


def test_interrupts_and_update_state_stay_in_their_namespace(compile_graph, thread):
    def ask(state: State) -> dict[str, Any]:
        return {"log": [interrupt("name?")]}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    graph = compile_graph(builder)
    for ns in (A, B):
        paused = graph.invoke({"x": 0, "log": []}, {**thread, "namespace": ns})
        assert [i.value for i in paused["__interrupt__"]] == ["name?"]
    done = graph.invoke(Command(resume="ada"), {**thread, "namespace": A})
    assert done["log"] == ["ada"]
    assert graph.get_state({**thread, "namespace": B}).next == ("ask",)  # still waiting
    updated = graph.update_state({**thread, "namespace": B}, {"x": 5}, as_node="ask")
    assert updated["configurable"]["namespace"] == B
    assert graph.get_state(updated).values["x"] == 5
    assert graph.get_state({**thread, "namespace": A}).values["x"] == 0


def test_a_namespace_is_checked_before_anything_runs(compile_graph, calls, thread, store):
    graph = compile_graph(pipeline(calls))
    bad: list[Any] = ["", "a/b", "x" * 65, "tab\there", 7]
    for name in bad:
        with pytest.raises(InvalidConfigError):
            graph.invoke({"x": 0, "log": []}, {**thread, "namespace": name})
    with pytest.raises(ValueError, match="namespace given twice"):
        graph.invoke({"x": 0, "log": []},
                     {**thread, "namespace": A, "configurable": {"namespace": B}})
    with pytest.raises(InvalidConfigError):
        graph.get_run("r1", namespace="a/b")
    assert calls.snapshot() == {}
    assert store.list_threads(namespace=None) == []
    graph.invoke({"x": 0, "log": []}, {**thread, "namespace": "x" * 64})  # the longest
    graph.invoke({"x": 0, "log": []}, {**thread, "namespace": A, "configurable": {
        "namespace": A}})  # the same in both places


def test_encrypted_values_are_bound_to_their_namespace(store, durability, thread):
    serde = EncryptedSerializer(os.urandom(32))
    calls: Counter[str] = Counter()

    class Hits:
        def hit(self, name: str) -> None:
            calls[name] += 1

    graph = pipeline(Hits()).compile(checkpointer=store, serde=serde, durability=durability)
    graph.invoke({"x": 1, "log": []}, {**thread, "run_id": "r1", "namespace": A})
    assert graph.get_state({**thread, "namespace": A}).values["x"] == 3
    run = graph.get_run("r1", namespace=A)
    assert run is not None and run.input == {"x": 1, "log": []}
    # an export moved into another namespace is sealed again for it
    data = export_thread(store, thread["thread_id"], namespace=A)
    assert data["thread"]["namespace"] == A
    import_thread(store, data, namespace=B, serde=serde)
    moved = graph.get_state({**thread, "namespace": B})
    assert moved.values == graph.get_state({**thread, "namespace": A}).values
    copied = graph.get_run("r1", namespace=B)
    assert copied is not None and copied.input == {"x": 1, "log": []}
    out = graph.invoke({"x": 1, "log": []}, {**thread, "namespace": B})  # and it runs on
    assert out["x"] == 3


def test_get_state_with_subgraphs_reads_the_namespaces_subgraph_checkpoints(
    compile_graph, thread
):
    class Log(TypedDict):
        log: Annotated[list[str], operator.add]

    sub = StateGraph(Log)
    sub.add_node("s1", lambda state: {"log": ["s1"]})
    sub.add_node("s2", lambda state: {"log": [interrupt("ok?")]})
    sub.add_edge(START, "s1")
    sub.add_edge("s1", "s2")
    builder = StateGraph(Log)
    builder.add_node("sub", sub.compile())
    builder.add_edge(START, "sub")
    graph = compile_graph(builder)
    graph.invoke({"log": []}, {**thread, "namespace": A})
    (task,) = graph.get_state({**thread, "namespace": A}, subgraphs=True).tasks
    assert task.state is not None
    assert task.state.values == {"log": ["s1"]}
    assert task.state.config["configurable"]["namespace"] == A
    assert graph.get_state(thread, subgraphs=True).tasks == ()  # nothing in "default"
    out = graph.invoke(Command(resume="yes"), {**thread, "namespace": A})
    assert out == {"log": ["s1", "yes"]}
