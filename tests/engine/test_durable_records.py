"""Run and execution records match what is committed (issue 11 item 8), and a failed run is
recorded with its last good state in every mode, also when a node's output cannot be
serialized (item 5).

* The run record's ``steps`` and ``executions`` ride in each step's commit.
* A node's execution record is ``RUNNING`` (with ``started_at``) while the node runs, and
  ``PENDING`` while the run is paused before it: the commit that schedules a step records its
  executions (no second transaction per step).
* A run fenced out of its thread does not stay ``running``: the run that takes the thread
  over records it as failed.

Every test runs on each backend x durability mode (see ``conftest.py``)."""

from __future__ import annotations

import asyncio
import operator
import threading
import time
import uuid
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.checkpoint.base import Commit, ExecutionRecord, RunRecord
from threadloom.errors import GraphRecursionError
from threadloom.graph import END, START, StateGraph
from threadloom.types import Send


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


class Gate:
    """A node body that signals ``inside`` and blocks until ``release``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, state: State) -> dict[str, Any]:
        self.inside.set()
        assert self.release.wait(10), "the test never released the gate"
        return {"log": [self.name]}


def counting_then_gate(gate: Gate, rounds: int = 6) -> StateGraph:
    """``count`` runs ``rounds`` times (x: 0 -> rounds), then ``gate``."""
    builder = StateGraph(State)
    builder.add_node("count", lambda s: {"x": s["x"] + 1, "log": ["count"]})
    builder.add_node("gate", gate)
    builder.add_edge(START, "count")
    builder.add_conditional_edges("count", lambda s: "count" if s["x"] < rounds else "gate",
                                  ["count", "gate"])
    builder.add_edge("gate", END)
    return builder


class Background:
    def __init__(self, fn: Any) -> None:
        self.error: BaseException | None = None
        self.value: Any = None
        self._thread = threading.Thread(target=self._run, args=(fn,))
        self._thread.start()

    def _run(self, fn: Any) -> None:
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc

    def result(self) -> Any:
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.value


# -- the run record's counters ------------------------------------------------------------


def test_run_counters_match_the_committed_checkpoints_while_the_run_is_mid_way(
    compile_graph, thread, durability, wait_until
):
    gate = Gate("gate")
    graph = compile_graph(counting_then_gate(gate))
    run = Background(lambda: graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"}))
    try:
        assert gate.inside.wait(10)
        if durability == "exit":
            assert graph.get_run("r") is None  # exit: invisible while it runs
        else:
            def committed() -> int:
                return len(list(graph.get_state_history(thread, filter={"run_id": "r"})))

            # the input checkpoint and six steps of count are committed before gate runs
            assert wait_until(lambda: committed() == 7)
            record = graph.get_run("r")
            assert (record.status, record.steps, record.executions) == ("running", 7, 6)
    finally:
        gate.release.set()
    run.result()
    record = graph.get_run("r")
    assert (record.status, record.steps, record.executions) == ("succeeded", 8, 7)


# -- execution records while nodes run ----------------------------------------------------


def test_a_node_has_a_running_execution_record_while_it_runs(
    compile_graph, thread, durability, wait_until
):
    gate = Gate("gate")
    graph = compile_graph(counting_then_gate(gate, rounds=1))
    run = Background(lambda: graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"}))
    try:
        assert gate.inside.wait(10)
        if durability == "exit":
            assert graph.list_executions("r") == []
        else:
            def statuses() -> list[tuple[str, str]]:
                return [(e.node, e.status) for e in graph.list_executions("r")]

            assert wait_until(lambda: statuses() == [("count", "SUCCEEDED"), ("gate", "RUNNING")])
            running = graph.list_executions("r")[1]
            assert running.started_at is not None and running.ended_at is None
            assert running.parents == (graph.list_executions("r")[0].id,)
            assert graph.get_state({**thread, "checkpoint_id": running.checkpoint_id}).next == (
                "gate",)
    finally:
        gate.release.set()
    run.result()
    executions = graph.list_executions("r")
    assert [(e.node, e.status) for e in executions] == [
        ("count", "SUCCEEDED"), ("gate", "SUCCEEDED")]
    assert executions[1].outputs == {"log": ["gate"]}


async def test_an_async_node_has_a_running_execution_record_while_it_runs(
    compile_graph, thread, durability, wait_until
):
    inside, release = threading.Event(), threading.Event()

    async def gate(state: State) -> dict[str, Any]:
        inside.set()
        # the watcher thread reads the store meanwhile, then releases the gate
        assert await asyncio.to_thread(release.wait, 10)
        return {"log": ["gate"]}

    builder = StateGraph(State)
    builder.add_node("gate", gate)
    builder.add_edge(START, "gate")
    graph = compile_graph(builder)
    reader: list[Any] = []

    def watch() -> None:
        assert inside.wait(10)
        try:
            if durability != "exit":
                assert wait_until(lambda: [e.status for e in graph.list_executions("r")] == [
                    "RUNNING"])
            reader.append(graph.list_executions("r"))
        finally:
            release.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    await graph.ainvoke({"x": 0, "log": []}, {**thread, "run_id": "r"})
    watcher.join(10)
    if durability == "exit":
        assert reader == [[]]
    else:
        assert reader[0][0].started_at is not None
    assert [e.status for e in graph.list_executions("r")] == ["SUCCEEDED"]


def test_parallel_nodes_and_sends_are_running_together(
    compile_graph, thread, durability, wait_until
):
    gates = {name: Gate(name) for name in ("left", "right", "each")}

    def each(arg: Any) -> dict[str, Any]:
        gates["each"](arg)
        return {"log": [f"each:{arg['item']}"]}

    builder = StateGraph(State)
    builder.add_node("start", lambda s: {"x": 1})
    builder.add_node("left", gates["left"])
    builder.add_node("right", gates["right"])
    builder.add_node("each", each)
    builder.add_edge(START, "start")
    builder.add_edge("start", "left")
    builder.add_edge("start", "right")
    builder.add_conditional_edges("start", lambda s: [Send("each", {"item": 7})], ["each"])
    graph = compile_graph(builder)
    run = Background(lambda: graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"}))
    try:
        for gate in gates.values():
            assert gate.inside.wait(10)
        if durability != "exit":
            def running() -> dict[str, Any]:
                return {e.node: e for e in graph.list_executions("r") if e.status == "RUNNING"}

            assert wait_until(lambda: set(running()) == {"left", "right", "each"})
            assert running()["each"].inputs == {"item": 7}
    finally:
        for gate in gates.values():
            gate.release.set()
    run.result()
    assert sorted((e.node, e.status) for e in graph.list_executions("r")) == [
        ("each", "SUCCEEDED"), ("left", "SUCCEEDED"), ("right", "SUCCEEDED"),
        ("start", "SUCCEEDED")]


def pipeline() -> StateGraph:
    builder = StateGraph(State)
    for name in ("a", "b", "c"):
        builder.add_node(name, lambda s, name=name: {"log": [name]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    return builder


@pytest.mark.parametrize("breakpoint", ["interrupt_before", "interrupt_after"])
def test_executions_a_paused_run_will_run_next_are_pending(
    compile_graph, thread, durability, breakpoint
):
    node = "b" if breakpoint == "interrupt_before" else "a"
    graph = compile_graph(pipeline(), **{breakpoint: [node]})
    graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"})

    records = graph.list_executions("r")
    if durability == "exit":  # exit records finished executions only
        assert [(e.node, e.status) for e in records] == [("a", "SUCCEEDED")]
    else:
        assert [(e.node, e.status) for e in records] == [("a", "SUCCEEDED"), ("b", "PENDING")]
        assert records[1].started_at is None
        assert records[1].parents == (records[0].id,)
    graph.invoke(None, thread)
    assert [(e.node, e.status) for e in graph.list_executions("r")] == [
        ("a", "SUCCEEDED"), ("b", "SUCCEEDED"), ("c", "SUCCEEDED")]


def test_a_run_that_fails_leaves_no_execution_running_or_pending(compile_graph, thread):
    builder = StateGraph(State)
    builder.add_node("loop", lambda s: {"x": s["x"] + 1})
    builder.add_edge(START, "loop")
    builder.add_edge("loop", "loop")
    graph = compile_graph(builder)

    with pytest.raises(GraphRecursionError):
        graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r", "recursion_limit": 3})

    statuses = [e.status for e in graph.list_executions("r")]
    assert "RUNNING" not in statuses and "PENDING" not in statuses
    assert statuses.count("SUCCEEDED") == 3
    assert graph.get_run("r").status == "failed"


def test_every_node_that_raised_in_a_step_is_recorded_failed(compile_graph, thread):
    def broken(name: str) -> Any:
        def node(state: State) -> dict[str, Any]:
            raise RuntimeError(f"{name} is broken")
        return node

    builder = StateGraph(State)
    builder.add_node("ok", lambda s: {"log": ["ok"]})
    builder.add_node("bad1", broken("bad1"))
    builder.add_node("bad2", broken("bad2"))
    for name in ("ok", "bad1", "bad2"):
        builder.add_edge(START, name)
    graph = compile_graph(builder)

    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"})

    records = {e.node: e for e in graph.list_executions("r")}
    assert {n: e.status for n, e in records.items()} == {
        "ok": "SUCCEEDED", "bad1": "FAILED", "bad2": "FAILED"}
    assert "bad2 is broken" in records["bad2"].error


# -- a run whose process died or lost its lease ----------------------------------------------


@pytest.mark.parametrize("taker", ["invoke", "update_state"])
def test_a_run_left_running_is_recorded_failed_by_whoever_takes_the_thread_over(
    compile_graph, store, thread, taker
):
    """A process holding the thread died mid-run: its run is ``running``, its node's record
    ``RUNNING``, its lease lapsed. The next run (other input, so not a retry), or an
    ``update_state``, takes the thread's lease and records it."""
    tid = thread["thread_id"]
    lease = store.acquire_lease(tid, "dead-process", 0.05)
    now = time.time()
    store.commit([Commit(tid, lease_token=lease.token, runs=[RunRecord(
        "dead", tid, "graph", "running", created_at=now, updated_at=now, started_at=now,
    )], executions=[ExecutionRecord(
        uuid.uuid4().hex, "dead", tid, "graph", "a", 1, "RUNNING", attempt=1, created_at=now,
        started_at=now,
    )])])
    threading.Event().wait(0.1)  # the lease lapses (its owner is gone)

    graph = compile_graph(pipeline())
    if taker == "invoke":
        graph.invoke({"x": 1, "log": []}, {**thread, "run_id": "next"})
        by = "run 'next' took the thread over"
    else:
        graph.update_state(thread, {"x": 1}, as_node="a")
        by = "update_state took the thread over"

    dead = graph.get_run("dead")
    assert dead.status == "failed"
    assert by in dead.error and "LeaseLostError" in dead.error
    assert dead.ended_at is not None
    executions = graph.list_executions("dead")
    assert [(e.node, e.status) for e in executions] == [("a", "FAILED")]
    assert by in executions[0].error
    if taker == "invoke":
        assert graph.get_run("next").status == "succeeded"
        assert [r.run_id for r in graph.list_runs(thread_id=tid)] == ["next", "dead"]


# -- a node output that cannot be serialized ------------------------------------------------


class Unserializable:
    """Refuses every serializer (pickle included)."""

    def __reduce__(self) -> Any:
        raise TypeError("Unserializable cannot be serialized")


def test_a_node_output_that_cannot_be_serialized_fails_the_run_with_its_last_good_state(
    compile_graph, thread, calls
):
    fixed = threading.Event()

    def bad(state: State) -> dict[str, Any]:
        calls.hit("bad")
        return {"log": ["bad" if fixed.is_set() else Unserializable()]}  # type: ignore[list-item]

    builder = StateGraph(State)
    builder.add_node("a", lambda s: {"x": s["x"] + 1, "log": ["a"]})
    builder.add_node("bad", bad)
    builder.add_node("c", lambda s: {"log": ["c"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "bad")
    builder.add_edge("bad", "c")
    graph = compile_graph(builder)

    with pytest.raises(Exception, match="Unserializable") as caught:
        graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"})
    assert caught.type.__name__ in ("TypeError", "SerializationError")

    run = graph.get_run("r")
    assert run is not None and run.status == "failed"
    assert "Unserializable" in run.error
    state = graph.get_state(thread)
    assert state.values == {"x": 1, "log": ["a"]}
    assert state.next == ("bad",)
    records = {e.node: e.status for e in graph.list_executions("r")}
    assert records == {"a": "SUCCEEDED", "bad": "FAILED"}

    fixed.set()
    out = graph.resume("r")

    assert out == {"x": 1, "log": ["a", "bad", "c"]}
    assert graph.get_run("r").status == "succeeded"
    assert calls["bad"] == 2


def test_a_parallel_step_with_one_unserializable_output_keeps_the_others_results(
    compile_graph, thread, calls
):
    fixed = threading.Event()

    def good(state: State) -> dict[str, Any]:
        calls.hit("good")
        return {"log": ["good"]}

    def bad(state: State) -> dict[str, Any]:
        calls.hit("bad")
        return {"x": 5 if fixed.is_set() else Unserializable()}  # type: ignore[dict-item]

    builder = StateGraph(State)
    builder.add_node("good", good)
    builder.add_node("bad", bad)
    builder.add_edge(START, "good")
    builder.add_edge(START, "bad")
    graph = compile_graph(builder)

    with pytest.raises(Exception, match="Unserializable"):
        graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"})
    assert graph.get_run("r").status == "failed"
    assert graph.get_state(thread).values == {"x": 0, "log": []}

    fixed.set()
    assert graph.resume("r") == {"x": 5, "log": ["good"]}
    assert calls.snapshot() == {"good": 1, "bad": 2}


@pytest.mark.parametrize("stop", ["interrupt", "error"])
def test_results_recorded_before_a_replay_are_counted_and_recorded_once(
    compile_graph, thread, stop: str
):
    """``x`` finishes in a step whose other node ``y`` pauses or fails: on the replay, ``x``'s
    recorded result is reused, and neither counted again nor its record rewritten."""
    from threadloom.types import Command, interrupt

    fail = [True]

    def y(state: State) -> dict[str, Any]:
        if stop == "interrupt":
            return {"log": [f"y:{interrupt('go?')}"]}
        if fail[0]:
            raise RuntimeError("y failed")
        return {"log": ["y"]}

    builder = StateGraph(State)
    builder.add_node("x", lambda s: {"log": ["x"]})
    builder.add_node("y", y)
    builder.add_edge(START, "x")
    builder.add_edge(START, "y")
    builder.add_edge(["x", "y"], END)
    graph = compile_graph(builder)
    config = {**thread, "run_id": "r"}
    if stop == "interrupt":
        graph.invoke({"x": 0, "log": []}, config)
        out = graph.invoke(Command(resume="ok"), config)
    else:
        with pytest.raises(RuntimeError):
            graph.invoke({"x": 0, "log": []}, config)
        fail[0] = False
        out = graph.invoke(None, config)
    assert sorted(out["log"]) == sorted(["x", "y:ok" if stop == "interrupt" else "y"])
    record = graph.get_run("r")
    succeeded = [e for e in graph.list_executions("r") if e.status == "SUCCEEDED"]
    assert sorted(e.node for e in succeeded) == ["x", "y"]
    assert (record.status, record.executions) == ("succeeded", len(succeeded))
