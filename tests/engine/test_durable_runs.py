"""Run ids (design §3): given or generated, validated, carried by every record, queryable,
and an idempotency key: a succeeded run is not run again, an unfinished one is resumed.

Every test runs on each backend x durability mode (see ``conftest.py``)."""

from __future__ import annotations

import contextlib
import operator
import threading
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.config import get_config
from threadloom.errors import (
    EmptyInputError,
    RunConflictError,
    RunNotFoundError,
    ThreadloomError,
)
from threadloom.graph import END, START, StateGraph
from threadloom.types import interrupt


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def pipeline(calls: Any, broken: set[str] | None = None,
             seen: list[str] | None = None) -> StateGraph:
    """``a -> b -> c``; each node appends its name to ``log``. A node whose name is in
    ``broken`` raises ``RuntimeError("<name> is broken")`` (empty the set to fix it);
    ``seen`` collects the run id each node saw in its config."""
    broken = broken if broken is not None else set()

    def make(name: str) -> Callable[[State], dict[str, Any]]:
        def node(state: State) -> dict[str, Any]:
            calls.hit(name)
            if seen is not None:
                seen.append(get_config()["run_id"])
            if name in broken:
                raise RuntimeError(f"{name} is broken")
            return {"x": state["x"] + 1, "log": [name]}

        return node

    builder = StateGraph(State)
    for name in ("a", "b", "c"):
        builder.add_node(name, make(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder


def config(thread: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    return {**thread, "run_id": run_id} if run_id else dict(thread)


def test_run_id_is_generated_as_uuid4_when_not_given(compile_graph, calls, thread):
    seen: list[str] = []
    graph = compile_graph(pipeline(calls, seen=seen))

    graph.invoke({"x": 0, "log": []}, thread)

    (run,) = graph.list_runs(thread_id=thread["thread_id"])
    assert uuid.UUID(run.run_id).version == 4
    assert str(uuid.UUID(run.run_id)) == run.run_id
    assert seen == [run.run_id] * 3


def test_given_run_id_is_carried_by_the_run_every_checkpoint_and_execution(
    compile_graph, calls, thread, durability
):
    seen: list[str] = []
    graph = compile_graph(pipeline(calls, seen=seen))
    cfg = config(thread, "customer-42-request-7")

    graph.invoke({"x": 0, "log": []}, cfg)

    assert seen == ["customer-42-request-7"] * 3
    run = graph.get_run("customer-42-request-7")
    assert run is not None
    assert (run.thread_id, run.graph, run.durability) == (
        thread["thread_id"], "graph", durability)
    history = list(graph.get_state_history(thread))
    assert {h.metadata["run_id"] for h in history} == {"customer-42-request-7"}
    # sync/async: the input checkpoint and one per step; exit: one when the run ends
    assert len(history) == (1 if durability == "exit" else 4)
    executions = graph.list_executions("customer-42-request-7")
    assert [e.node for e in executions] == ["a", "b", "c"]
    assert {(e.run_id, e.thread_id, e.status) for e in executions} == {
        ("customer-42-request-7", thread["thread_id"], "SUCCEEDED")}
    by_run = list(graph.get_state_history(thread, filter={"run_id": "customer-42-request-7"}))
    assert len(by_run) == len(history)


@pytest.mark.parametrize(
    "bad_run_id",
    ["", "x" * 256, "line\nbreak", "tab\there", "nul\x00"],
    ids=["empty", "256-chars", "newline", "tab", "nul"],
)
def test_invalid_run_id_raises_value_error_before_anything_runs_or_is_stored(
    compile_graph, calls, thread, store, bad_run_id
):
    graph = compile_graph(pipeline(calls))

    with pytest.raises(ValueError, match="run_id"):
        graph.invoke({"x": 0, "log": []}, {**thread, "run_id": bad_run_id})

    assert calls.snapshot() == {}
    assert graph.list_runs() == []
    assert store.get_thread(thread["thread_id"]) is None
    assert graph.get_state(thread).values == {}


def test_run_id_of_255_printable_characters_is_accepted(compile_graph, calls, thread):
    run_id = "r" * 254 + "é"
    graph = compile_graph(pipeline(calls))

    graph.invoke({"x": 0, "log": []}, config(thread, run_id))

    assert graph.get_run(run_id).status == "succeeded"


def test_run_statuses_succeeded_failed_and_interrupted(compile_graph, calls, thread):
    broken = {"b"}
    graph = compile_graph(pipeline(calls, broken))
    with pytest.raises(RuntimeError, match="b is broken"):
        graph.invoke({"x": 0, "log": []}, config(thread, "failing"))
    failed = graph.get_run("failing")
    assert failed.status == "failed"
    assert failed.error == "RuntimeError: b is broken"
    assert failed.output is None
    assert failed.ended_at is not None

    broken.clear()
    other = {"thread_id": thread["thread_id"] + "-ok"}
    assert graph.invoke({"x": 0, "log": []}, config(other, "fine")) == {
        "x": 3, "log": ["a", "b", "c"]}
    succeeded = graph.get_run("fine")
    assert succeeded.status == "succeeded"
    assert succeeded.error is None
    assert succeeded.input == {"x": 0, "log": []}
    assert succeeded.output == {"x": 3, "log": ["a", "b", "c"]}
    assert succeeded.executions == 3

    paused = {"thread_id": thread["thread_id"] + "-paused"}
    graph.invoke({"x": 0, "log": []}, config(paused, "paused"), interrupt_before=["c"])
    assert graph.get_run("paused").status == "interrupted"
    assert graph.get_run("never-recorded") is None


def test_list_runs_filters_by_thread_and_status_and_pages_newest_first(
    compile_graph, calls, thread
):
    broken: set[str] = set()
    graph = compile_graph(pipeline(calls, broken))
    other = {"thread_id": thread["thread_id"] + "-other"}
    for i in range(5):
        graph.invoke({"x": i, "log": []}, config(thread, f"run-{i}"))
    graph.invoke({"x": 0, "log": []}, config(other, "other-ok"))
    broken.add("a")
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 9, "log": []}, config(other, "other-failed"))

    mine = [r.run_id for r in graph.list_runs(thread_id=thread["thread_id"])]
    assert mine == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    pages = [
        [r.run_id for r in graph.list_runs(thread_id=thread["thread_id"], limit=2, offset=o)]
        for o in (0, 2, 4, 6)
    ]
    assert pages == [["run-4", "run-3"], ["run-2", "run-1"], ["run-0"], []]
    assert [r.run_id for r in graph.list_runs(status="failed")] == ["other-failed"]
    assert [r.run_id for r in graph.list_runs(thread_id=other["thread_id"],
                                              status="succeeded")] == ["other-ok"]
    everything = [r.run_id for r in graph.list_runs()]
    assert everything[:2] == ["other-failed", "other-ok"]
    assert len(everything) == 7


def test_list_runs_only_shows_the_graphs_own_runs(store, durability, calls, thread):
    first = pipeline(calls).compile(checkpointer=store, durability=durability, name="first")
    second = pipeline(calls).compile(checkpointer=store, durability=durability, name="second")
    first.invoke({"x": 0, "log": []}, config(thread, "run-of-first"))
    second.invoke({"x": 0, "log": []}, {"thread_id": thread["thread_id"] + "-2"})

    assert [r.run_id for r in first.list_runs()] == ["run-of-first"]
    assert [r.graph for r in second.list_runs()] == ["second"]


@pytest.mark.parametrize("again", ["same-input", "none"])
def test_reinvoking_a_succeeded_run_returns_its_recorded_output_and_runs_nothing(
    compile_graph, calls, thread, again
):
    graph = compile_graph(pipeline(calls))
    cfg = config(thread, "order-88291")
    first = graph.invoke({"x": 0, "log": []}, cfg)
    before = calls.snapshot()
    history = len(list(graph.get_state_history(thread)))

    second = graph.invoke({"x": 0, "log": []} if again == "same-input" else None, cfg)

    assert second == first == {"x": 3, "log": ["a", "b", "c"]}
    assert calls.snapshot() == before == {"a": 1, "b": 1, "c": 1}
    assert len(list(graph.get_state_history(thread))) == history
    assert [r.run_id for r in graph.list_runs()] == ["order-88291"]
    assert graph.resume("order-88291") == first
    assert calls.snapshot() == before


@pytest.mark.parametrize("again", ["same-input", "none"])
def test_reinvoking_an_unfinished_run_id_resumes_it_without_rerunning_completed_steps(
    compile_graph, calls, thread, again
):
    broken = {"c"}
    graph = compile_graph(pipeline(calls, broken))
    cfg = config(thread, "job-7")
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0, "log": []}, cfg)
    broken.clear()

    out = graph.invoke({"x": 0, "log": []} if again == "same-input" else None, cfg)

    assert out == {"x": 3, "log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 1, "c": 2}
    run = graph.get_run("job-7")
    assert run.status == "succeeded"
    assert run.output == out
    assert [r.run_id for r in graph.list_runs()] == ["job-7"]
    assert [e.node for e in graph.list_executions("job-7") if e.status == "SUCCEEDED"] == [
        "a", "b", "c"]


def test_run_id_recorded_on_another_thread_raises_run_conflict(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 0, "log": []}, config(thread, "shared-id"))
    before = calls.snapshot()

    with pytest.raises(RunConflictError, match="thread"):
        graph.invoke({"x": 0, "log": []}, {"thread_id": "someone-else", "run_id": "shared-id"})

    assert calls.snapshot() == before
    assert graph.get_run("shared-id").thread_id == thread["thread_id"]
    assert graph.get_state({"thread_id": "someone-else"}).values == {}


def test_run_id_reused_with_other_input_raises_run_conflict(compile_graph, calls, thread):
    broken = {"b"}
    graph = compile_graph(pipeline(calls, broken))
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0, "log": []}, config(thread, "unfinished"))
    other_thread = {"thread_id": thread["thread_id"] + "-done"}
    broken.clear()
    graph.invoke({"x": 0, "log": []}, config(other_thread, "done"))
    before = calls.snapshot()

    with pytest.raises(RunConflictError, match="different input"):
        graph.invoke({"x": 1, "log": []}, config(thread, "unfinished"))
    with pytest.raises(RunConflictError, match="different input"):
        graph.invoke({"x": 1, "log": []}, config(other_thread, "done"))

    assert calls.snapshot() == before
    assert graph.get_run("unfinished").status == "failed"


def test_run_id_of_another_graph_raises_run_conflict(store, durability, calls, thread):
    first = pipeline(calls).compile(checkpointer=store, durability=durability, name="first")
    second = pipeline(calls).compile(checkpointer=store, durability=durability, name="second")
    first.invoke({"x": 0, "log": []}, config(thread, "run-1"))

    with pytest.raises(RunConflictError, match="graph"):
        second.invoke({"x": 0, "log": []}, config(thread, "run-1"))


def seed000_graph(calls: Any, broken: set[str]) -> StateGraph:
    """Seed 000's increment/check loop; ``check`` raises while ``"check"`` is in ``broken``."""

    class Seed(TypedDict):
        step: int
        done: bool

    def increment(state: Seed) -> dict[str, Any]:
        calls.hit("increment")
        return {"step": state["step"] + 1}

    def check(state: Seed) -> dict[str, Any]:
        calls.hit("check")
        if "check" in broken and state["step"] == 2:
            raise ConnectionError("checker unreachable")
        return {"done": state["step"] >= 3}

    builder = StateGraph(Seed)
    builder.add_node("increment", increment)
    builder.add_node("check", check)
    builder.set_entry_point("increment")
    builder.add_edge("increment", "check")
    builder.add_conditional_edges(
        "check", lambda s: END if s["done"] else "increment", {"increment": "increment", END: END}
    )
    return builder


def test_graph_resume_by_run_id_continues_a_failed_run_seed000(compile_graph, calls):
    broken = {"check"}
    graph = compile_graph(seed000_graph(calls, broken))
    config = {"run_id": "demo-run-001", "thread_id": "user-session-42"}
    with pytest.raises(ConnectionError):
        graph.invoke({"step": 0, "done": False}, config=config)
    assert calls.snapshot() == {"increment": 2, "check": 2}
    broken.clear()

    result = graph.resume(run_id="demo-run-001")

    assert result == {"step": 3, "done": True}
    assert calls.snapshot() == {"increment": 3, "check": 4}
    run = graph.get_run("demo-run-001")
    assert (run.status, run.thread_id, run.output) == ("succeeded", "user-session-42", result)


def test_invoke_none_continues_the_threads_unfinished_run(compile_graph, calls, thread):
    broken = {"b"}
    graph = compile_graph(pipeline(calls, broken))
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0, "log": []}, thread)
    (failed,) = graph.list_runs()
    broken.clear()

    out = graph.invoke(None, thread)

    assert out == {"x": 3, "log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 2, "c": 1}
    (run,) = graph.list_runs()
    assert (run.run_id, run.status) == (failed.run_id, "succeeded")
    assert {h.metadata["run_id"] for h in graph.get_state_history(thread)} == {failed.run_id}


def test_resume_of_an_unknown_run_id_raises_run_not_found(compile_graph, calls):
    graph = compile_graph(pipeline(calls))

    with pytest.raises(RunNotFoundError, match="no-such-run") as info:
        graph.resume("no-such-run")

    assert isinstance(info.value, KeyError)
    assert info.value.code == "run_not_found"
    assert calls.snapshot() == {}


def test_progress_is_visible_mid_run_except_under_exit(
    compile_graph, calls, thread, durability, wait_until
):
    inside, release = threading.Event(), threading.Event()

    def gate(state: State) -> dict[str, Any]:
        inside.set()
        assert release.wait(10)
        return {"log": ["gate"]}

    builder = StateGraph(State)
    builder.add_node("first", lambda s: {"log": ["first"]})
    builder.add_node("gate", gate)
    builder.add_edge(START, "first")
    builder.add_edge("first", "gate")
    graph = compile_graph(builder)
    runner = threading.Thread(
        target=graph.invoke, args=({"x": 0, "log": []}, config(thread, "watched")))
    runner.start()
    try:
        assert inside.wait(10)
        if durability == "exit":
            # nothing is written until the run ends
            assert graph.get_run("watched") is None
            assert graph.get_state(thread).values == {}
        else:
            assert wait_until(lambda: graph.get_state(thread).next == ("gate",))
            assert graph.get_state(thread).values == {"x": 0, "log": ["first"]}
            assert graph.get_run("watched").status == "running"
    finally:
        release.set()
        runner.join(10)
    assert graph.get_run("watched").status == "succeeded"
    assert graph.get_state(thread).values["log"] == ["first", "gate"]


async def test_ainvoke_with_async_nodes_records_and_resumes_runs(compile_graph, calls, thread):
    async def ask(state: State) -> dict[str, Any]:
        calls.hit("ask")
        answer = interrupt("name?")
        return {"log": [f"hello {answer}"]}

    async def done(state: State) -> dict[str, Any]:
        calls.hit("done")
        return {"x": state["x"] + 1}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_node("done", done)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "done")
    graph = compile_graph(builder)

    paused = await graph.ainvoke({"x": 0, "log": []}, config(thread, "async-run"))
    assert [i.value for i in paused["__interrupt__"]] == ["name?"]
    assert graph.get_run("async-run").status == "interrupted"

    out = graph.resume("async-run", value="ada")

    assert out == {"x": 1, "log": ["hello ada"]}
    assert calls.snapshot() == {"ask": 2, "done": 1}
    assert graph.get_run("async-run").status == "succeeded"


def test_everything_is_persisted_by_the_time_invoke_returns(
    durability, reopen_store, calls, thread
):
    graph = pipeline(calls).compile(checkpointer=reopen_store(), durability=durability)
    out = graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "r"})

    # a new store object on the same database, as a restarted process would open it
    restarted = pipeline(calls).compile(checkpointer=reopen_store(), durability=durability)

    run = restarted.get_run("r")
    assert (run.status, run.output) == ("succeeded", out)
    assert restarted.get_state(thread).values == out
    assert len(list(restarted.get_state_history(thread))) == (1 if durability == "exit" else 4)
    assert [e.node for e in restarted.list_executions("r")] == ["a", "b", "c"]


def test_durability_given_per_invoke_overrides_the_compiled_one(store, calls, thread):
    graph = pipeline(calls).compile(checkpointer=store, durability="sync")

    graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "fast"}, durability="exit")
    graph.invoke({"x": 0, "log": []}, {**thread, "run_id": "safe"})

    assert graph.get_run("fast").durability == "exit"
    assert graph.get_run("safe").durability == "sync"
    assert [h.metadata["source"] for h in graph.get_state_history(thread)] == [
        "loop", "loop", "loop", "input", "exit"]


def test_invoke_none_on_a_thread_with_nothing_to_continue_is_an_error(compile_graph, calls):
    graph = compile_graph(pipeline(calls))

    with pytest.raises(EmptyInputError):
        graph.invoke(None, {"thread_id": "empty"})

    assert graph.list_runs() == []
    assert calls.snapshot() == {}


def test_reinvoking_an_interrupted_run_id_with_equal_input_keeps_it_paused(
    compile_graph, calls, thread
):
    def ask(state: State) -> dict[str, Any]:
        calls.hit("ask")
        return {"log": [f"answer {interrupt('question?')}"]}

    builder = pipeline(calls)
    builder.add_node("ask", ask)
    builder.add_edge("c", "ask")
    graph = compile_graph(builder)
    cfg = config(thread, "paused-run")
    first = graph.invoke({"x": 0, "log": []}, cfg)

    again = graph.invoke({"x": 0, "log": []}, cfg)

    assert again["__interrupt__"] == first["__interrupt__"]
    assert calls.snapshot() == {"a": 1, "b": 1, "c": 1, "ask": 2}
    assert graph.get_run("paused-run").status == "interrupted"
    assert graph.resume("paused-run", value=42)["log"][-1] == "answer 42"
    assert [r.run_id for r in graph.list_runs()] == ["paused-run"]


def test_resuming_a_run_the_thread_has_moved_past_does_not_adopt_another_runs_result(
    compile_graph, calls, thread
):
    broken = {"b"}
    graph = compile_graph(pipeline(calls, broken))
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0, "log": []}, config(thread, "r1"))
    broken.clear()
    later = graph.invoke({"x": 100, "log": []}, config(thread, "r2"))

    with contextlib.suppress(ThreadloomError):
        graph.resume("r1")

    r1 = graph.get_run("r1")
    assert (r1.status, r1.output) != ("succeeded", later)
    if r1.status == "succeeded":  # resumed from its own last checkpoint
        assert r1.output == {"x": 3, "log": ["a", "b", "c"]}
    else:  # or refused, and still failed
        assert r1.status == "failed"


def test_execution_records_name_the_executions_that_triggered_them(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 0, "log": []}, config(thread, "r"))

    a, b, c = graph.list_executions("r")

    assert [e.parents for e in (a, b, c)] == [(), (a.id,), (b.id,)]


def test_execution_records_carry_start_and_end_times(compile_graph, calls, thread):
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 0, "log": []}, config(thread, "r"))

    for execution in graph.list_executions("r"):
        assert execution.started_at is not None
        assert execution.created_at <= execution.started_at <= execution.ended_at


def test_execution_checkpoint_ids_name_checkpoints_that_exist(
    compile_graph, calls, thread, durability
):
    """Each node execution names the checkpoint it read, whose ``next`` lists it (``exit``
    writes no checkpoint per step: there, and only there, the id is ``None``)."""
    graph = compile_graph(pipeline(calls))
    graph.invoke({"x": 0, "log": []}, config(thread, "r"))

    executions = graph.list_executions("r")
    assert [e.node for e in executions] == ["a", "b", "c"]
    for execution in executions:
        if durability == "exit":
            assert execution.checkpoint_id is None
            continue
        assert execution.checkpoint_id is not None
        snapshot = graph.get_state({**thread, "checkpoint_id": execution.checkpoint_id})
        assert snapshot.next == (execution.node,)


def test_invoke_none_does_not_continue_another_graphs_unfinished_run(
    store, durability, calls, thread
):
    first = pipeline(calls, {"b"}).compile(checkpointer=store, durability=durability,
                                           name="first")
    with pytest.raises(RuntimeError):
        first.invoke({"x": 0, "log": []}, config(thread, "first-run"))
    builder = StateGraph(State)
    builder.add_node("z", lambda s: {"log": ["z"]})
    builder.add_edge(START, "z")
    second = builder.compile(checkpointer=store, durability=durability, name="second")

    with pytest.raises(RunConflictError):
        second.invoke(None, thread)

    assert first.get_run("first-run").status == "failed"


def test_invoke_with_only_a_recorded_run_id_continues_that_run_on_its_thread(
    compile_graph, calls, thread
):
    broken = {"c"}
    graph = compile_graph(pipeline(calls, broken))
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0, "log": []}, config(thread, "lonely-id"))
    broken.clear()

    out = graph.invoke(None, {"run_id": "lonely-id"})

    assert out == {"x": 3, "log": ["a", "b", "c"]}
    assert calls.snapshot() == {"a": 1, "b": 1, "c": 2}
    assert graph.get_run("lonely-id").thread_id == thread["thread_id"]


def test_a_queued_runs_pending_record_is_started_with_its_input(
    compile_graph, calls, thread, store
):
    """A queue writes a ``pending`` record when a run is queued; the worker's invoke starts
    the run (it is not a resume of the thread) and keeps the record's creation time."""
    from threadloom.checkpoint import Commit, RunRecord

    graph = compile_graph(pipeline(calls))
    queued_at = 1_000_000.0
    store.commit([Commit(thread["thread_id"], runs=[RunRecord(
        "queued-1", thread["thread_id"], "graph", "pending", created_at=queued_at,
        updated_at=queued_at, metadata={"source": "queue"})])])

    out = graph.invoke({"x": 0, "log": []}, config(thread, "queued-1"))

    assert out == {"x": 3, "log": ["a", "b", "c"]}
    run = graph.get_run("queued-1")
    assert run.status == "succeeded"
    assert run.created_at == queued_at and run.started_at is not None
    assert run.metadata["source"] == "queue"
    assert calls.snapshot() == {"a": 1, "b": 1, "c": 1}
