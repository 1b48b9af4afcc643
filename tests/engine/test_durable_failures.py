"""Failures (design §4 "Failures", seed 004): node retry policies with recorded attempts,
failed runs that keep every completed step and continue from the failure point once the
cause is fixed, node and run timeouts.

Every test runs on each backend x durability mode (see ``conftest.py``) unless it says why
not."""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.checkpoint.memory import InMemorySaver
from threadloom.errors import NodeTimeoutError, RunTimeoutError
from threadloom.graph import END, START, StateGraph
from threadloom.types import RetryPolicy, Send

FAST = {"initial_interval": 0.001, "jitter": False}


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def node_that(calls: Any, name: str, broken: set[str]) -> Callable[[State], dict[str, Any]]:
    """A node that counts its calls and raises ``RuntimeError`` while ``name in broken``."""

    def node(state: State) -> dict[str, Any]:
        calls.hit(name)
        if name in broken:
            raise RuntimeError(f"{name} failed")
        return {"log": [name]}

    return node


def chain(calls: Any, broken: set[str], names: tuple[str, ...] = ("a", "b", "c")
          ) -> StateGraph:
    builder = StateGraph(State)
    for name in names:
        builder.add_node(name, node_that(calls, name, broken))
    builder.add_edge(START, names[0])
    for first, second in zip(names, names[1:], strict=False):
        builder.add_edge(first, second)
    builder.add_edge(names[-1], END)
    return builder


def test_node_retry_policy_retries_and_records_every_attempt(compile_graph, calls, thread):
    def flaky(state: State) -> dict[str, Any]:
        attempt = calls.hit("flaky")
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt} refused")
        return {"log": ["flaky"]}

    builder = StateGraph(State)
    builder.add_node("flaky", flaky, retry_policy=RetryPolicy(max_attempts=3, **FAST))
    builder.add_edge(START, "flaky")
    graph = compile_graph(builder)

    out = graph.invoke({"log": []}, {**thread, "run_id": "r"})

    assert out == {"log": ["flaky"]}
    assert calls["flaky"] == 3
    (execution,) = graph.list_executions("r")
    assert (execution.node, execution.status, execution.attempt) == ("flaky", "SUCCEEDED", 3)
    assert [(a.number, a.error) for a in execution.attempts] == [
        (1, "ConnectionError: attempt 1 refused"), (2, "ConnectionError: attempt 2 refused")]
    assert all(a.started_at <= a.ended_at for a in execution.attempts)
    assert graph.get_run("r").status == "succeeded"


def test_retry_policy_only_retries_what_retry_on_accepts(compile_graph, calls, thread):
    def picky(state: State) -> dict[str, Any]:
        calls.hit("picky")
        raise ValueError("bad input is not transient")

    builder = StateGraph(State)
    builder.add_node("picky", picky, retry_policy=RetryPolicy(
        max_attempts=5, retry_on=ConnectionError, **FAST))
    builder.add_edge(START, "picky")
    graph = compile_graph(builder)

    with pytest.raises(ValueError, match="not transient"):
        graph.invoke({"log": []}, thread)

    assert calls["picky"] == 1


def test_retries_exhausted_fail_the_run_with_the_error(compile_graph, calls, thread):
    def down(state: State) -> dict[str, Any]:
        calls.hit("down")
        raise ConnectionError("dependency down")

    builder = StateGraph(State)
    builder.add_node("ok", lambda s: {"log": ["ok"]})
    builder.add_node("down", down, retry_policy=RetryPolicy(max_attempts=2, **FAST))
    builder.add_edge(START, "ok")
    builder.add_edge("ok", "down")
    graph = compile_graph(builder)

    with pytest.raises(ConnectionError, match="dependency down") as info:
        graph.invoke({"log": []}, {**thread, "run_id": "r"})

    assert calls["down"] == 2
    assert any("'down'" in note and "'r'" in note for note in info.value.__notes__)
    run = graph.get_run("r")
    assert (run.status, run.error) == ("failed", "ConnectionError: dependency down")
    snapshot = graph.get_state(thread)
    assert snapshot.values == {"log": ["ok"]}
    assert snapshot.next == ("down",)


def test_a_failed_node_has_a_failed_execution_record_with_its_attempts(
    compile_graph, calls, thread
):
    def down(state: State) -> dict[str, Any]:
        calls.hit("down")
        raise ConnectionError("dependency down")

    builder = StateGraph(State)
    builder.add_node("down", down, retry_policy=RetryPolicy(max_attempts=2, **FAST))
    builder.add_edge(START, "down")
    graph = compile_graph(builder)
    with pytest.raises(ConnectionError):
        graph.invoke({"log": []}, {**thread, "run_id": "r"})

    failed = [e for e in graph.list_executions("r") if e.node == "down"]

    assert [(e.status, e.error, e.attempt) for e in failed] == [
        ("FAILED", "ConnectionError: dependency down", 2)]
    assert [a.error for a in failed[0].attempts] == ["ConnectionError: dependency down"] * 2
    (task,) = graph.get_state(thread).tasks
    assert task.error == "ConnectionError: dependency down"


@pytest.mark.parametrize("how", ["invoke-none", "resume-run-id"])
def test_after_fixing_the_cause_the_run_continues_from_the_failed_step(
    compile_graph, calls, thread, how
):
    broken = {"c"}
    graph = compile_graph(chain(calls, broken, ("a", "b", "c", "d")))
    with pytest.raises(RuntimeError, match="c failed"):
        graph.invoke({"log": []}, {**thread, "run_id": "job"})
    assert graph.get_state(thread).values == {"log": ["a", "b"]}
    broken.clear()  # the cause is fixed

    out = graph.invoke(None, thread) if how == "invoke-none" else graph.resume("job")

    assert out == {"log": ["a", "b", "c", "d"]}
    assert calls.snapshot() == {"a": 1, "b": 1, "c": 2, "d": 1}
    (run,) = graph.list_runs()
    assert (run.run_id, run.status, run.output) == ("job", "succeeded", out)


def test_a_run_that_keeps_failing_can_be_continued_again_and_again(compile_graph, calls, thread):
    broken = {"b"}
    graph = compile_graph(chain(calls, broken))
    for _ in range(3):
        with pytest.raises(RuntimeError):
            graph.invoke(None if calls["a"] else {"log": []}, thread)
    broken.clear()

    assert graph.invoke(None, thread) == {"log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 4, "c": 1}
    assert [r.status for r in graph.list_runs()] == ["succeeded"]


def test_a_run_continued_to_success_no_longer_reports_the_old_error(compile_graph, calls, thread):
    broken = {"b"}
    graph = compile_graph(chain(calls, broken))
    with pytest.raises(RuntimeError):
        graph.invoke({"log": []}, {**thread, "run_id": "r"})
    broken.clear()

    graph.resume("r")

    run = graph.get_run("r")
    assert (run.status, run.error) == ("succeeded", None)


def test_when_one_parallel_node_fails_only_it_runs_again(compile_graph, calls, thread):
    broken = {"q"}
    builder = StateGraph(State)
    for name in ("p", "q", "r"):
        builder.add_node(name, node_that(calls, name, broken))
        builder.add_edge(START, name)
    builder.add_node("join", node_that(calls, "join", broken))
    builder.add_edge(["p", "q", "r"], "join")
    graph = compile_graph(builder)

    with pytest.raises(RuntimeError, match="q failed"):
        graph.invoke({"log": []}, {**thread, "run_id": "fan"})
    snapshot = graph.get_state(thread)
    assert snapshot.next == ("p", "q", "r")
    results = {t.name: t.result for t in snapshot.tasks}
    assert results == {"p": {"log": ["p"]}, "q": None, "r": {"log": ["r"]}}
    assert graph.get_run("fan").status == "failed"
    broken.clear()

    out = graph.invoke(None, thread)

    assert out == {"log": ["p", "q", "r", "join"]}
    assert calls.snapshot() == {"p": 1, "q": 2, "r": 1, "join": 1}
    succeeded = [e.node for e in graph.list_executions("fan") if e.status == "SUCCEEDED"]
    assert sorted(succeeded) == ["join", "p", "q", "r"]


def test_when_one_send_task_fails_only_it_runs_again(compile_graph, calls, thread):
    broken = {3}

    class Fan(TypedDict):
        items: list[int]
        out: Annotated[list[int], operator.add]

    def work(arg: dict[str, int]) -> dict[str, Any]:
        calls.hit(f"work{arg['i']}")
        if arg["i"] in broken:
            raise RuntimeError(f"item {arg['i']} failed")
        return {"out": [arg["i"] * 10]}

    builder = StateGraph(Fan)
    builder.add_node("work", work)
    builder.add_conditional_edges(START, lambda s: [Send("work", {"i": i}) for i in s["items"]])
    graph = compile_graph(builder)
    with pytest.raises(RuntimeError, match="item 3 failed"):
        graph.invoke({"items": [1, 2, 3, 4], "out": []}, {**thread, "run_id": "fan"})
    results = [t.result for t in graph.get_state(thread).tasks]
    assert results == [{"out": [10]}, {"out": [20]}, None, {"out": [40]}]
    broken.clear()

    out = graph.invoke(None, thread)

    assert out == {"items": [1, 2, 3, 4], "out": [10, 20, 30, 40]}
    assert calls.snapshot() == {"work1": 1, "work2": 1, "work3": 2, "work4": 1}
    inputs = sorted(e.inputs["i"] for e in graph.list_executions("fan") if e.status == "SUCCEEDED")
    assert inputs == [1, 2, 3, 4]


class Seed004State(TypedDict):
    step: int
    result: str


def seed004_builder(calls: Any) -> StateGraph:
    """Seed 004's planner -> worker -> controller loop; the worker fails on its first call
    only (the seed fails at random; the print and sleep calls are left out)."""

    def planner(state: Seed004State) -> dict[str, Any]:
        calls.hit("planner")
        return {"step": state["step"] + 1}

    def worker(state: Seed004State) -> dict[str, Any]:
        if calls.hit("worker") == 1:
            raise RuntimeError("Transient failure")  # simulate cloud failure
        return {"result": f"Processed step {state['step']}"}

    def controller(state: Seed004State) -> str:
        calls.hit("controller")
        if state["step"] >= 3:
            return END
        return "planner"

    builder = StateGraph(Seed004State)
    builder.add_node("planner", planner)
    builder.add_node("worker", worker)
    builder.add_node("controller", lambda s: {})
    builder.set_entry_point("planner")
    builder.add_edge("planner", "worker")
    builder.add_edge("worker", "controller")
    builder.add_conditional_edges("controller", controller, {"planner": "planner", END: END})
    return builder


def test_seed004_retry_loop_resumes_the_failed_run_without_rerunning_the_planner(
    compile_graph, calls
):
    graph = compile_graph(seed004_builder(calls))
    thread_id = "user-session-001"
    state = {"step": 0, "result": ""}
    failures = 0

    # the seed's recovery loop, as written (it retries with the same input)
    while True:
        try:
            state = graph.invoke(state, config={"thread_id": thread_id, "recursion_limit": 10})
            break
        except Exception:
            failures += 1
            assert failures < 3

    assert state == {"step": 3, "result": "Processed step 3"}
    assert failures == 1
    # the failed run was resumed: the planner's first step was not run again
    assert calls.snapshot() == {"planner": 3, "worker": 4, "controller": 3}
    (run,) = graph.list_runs(thread_id=thread_id)
    assert (run.status, run.input, run.output) == (
        "succeeded", {"step": 0, "result": ""}, state)


def test_node_timeout_fails_the_node_with_node_timeout_error(compile_graph, calls, thread):
    stuck = threading.Event()

    def slow(state: State) -> dict[str, Any]:
        if calls.hit("slow") == 1:
            stuck.wait(5)  # released by the test once the timeout has fired
        return {"log": ["slow"]}

    builder = StateGraph(State)
    builder.add_node("slow", slow, timeout=0.05)
    builder.add_edge(START, "slow")
    graph = compile_graph(builder)

    try:
        with pytest.raises(NodeTimeoutError, match="slow") as info:
            graph.invoke({"log": []}, {**thread, "run_id": "r"})
    finally:
        stuck.set()

    assert isinstance(info.value, TimeoutError)
    run = graph.get_run("r")
    assert run.status == "failed"
    assert run.error.startswith("NodeTimeoutError")
    assert graph.invoke(None, thread) == {"log": ["slow"]}
    assert graph.get_run("r").status == "succeeded"


def test_run_timeout_stops_the_run_with_run_timeout_error(compile_graph, calls, thread):
    def first(state: State) -> dict[str, Any]:
        calls.hit("first")
        threading.Event().wait(0.3)  # outlasts the run's 0.2 s budget
        return {"log": ["first"]}

    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("second", node_that(calls, "second", set()))
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    graph = compile_graph(builder)

    with pytest.raises(RunTimeoutError) as info:
        graph.invoke({"log": []}, {**thread, "run_id": "r", "timeout": 0.2})

    assert isinstance(info.value, TimeoutError)
    assert calls.snapshot() == {"first": 1}
    run = graph.get_run("r")
    assert (run.status, run.error.split(":")[0]) == ("failed", "RunTimeoutError")
    # the timeout stopped the run inside `first`, so continuing without the timeout runs
    # `first` again (its late result was discarded) and then `second`
    assert graph.invoke(None, thread) == {"log": ["first", "second"]}
    assert calls.snapshot() == {"first": 2, "second": 1}


def test_run_timeout_stops_a_run_whose_node_hangs(thread):
    """One variant only: the deadline check does not depend on the store or the mode."""
    hung, returned = threading.Event(), threading.Event()

    def hang(state: State) -> dict[str, Any]:
        hung.wait(1)
        returned.set()
        return {"log": ["hang"]}

    builder = StateGraph(State)
    builder.add_node("hang", hang)
    builder.add_edge(START, "hang")
    graph = builder.compile(checkpointer=InMemorySaver(), durability="sync")

    try:
        with pytest.raises(RunTimeoutError):
            graph.invoke({"log": []}, {**thread, "timeout": 0.05})
        assert not returned.is_set()  # the caller got the error while the node still hung
    finally:
        hung.set()
