"""One writer per thread (design §4): a second invoke on a busy thread gets
``ThreadBusyError`` at once or waits with ``wait=True``; different threads run fully in
parallel; a writer whose lease was taken over cannot commit.

Every test runs on each backend x durability mode (see ``conftest.py``) unless it says why
not. Nodes block on events, never on timing; the lease tests shorten ``lease_ttl``."""

from __future__ import annotations

import asyncio
import gc
import operator
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.checkpoint.memory import InMemorySaver
from threadloom.errors import LeaseLostError, ThreadBusyError
from threadloom.graph import START, CompiledGraph, StateGraph


class State(TypedDict):
    log: Annotated[list[str], operator.add]


class Gate:
    """A node that, for the inputs it is told to hold, signals ``inside`` and blocks until
    ``open()``."""

    def __init__(self, hold: Callable[[State], bool]) -> None:
        self.hold = hold
        self.inside = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def __call__(self, state: State) -> dict[str, Any]:
        if self.hold(state):
            self.inside.set()
            assert self._open.wait(10), "the test never opened the gate"
        return {"log": [f"gate<{state['log'][-1]}>"]}


def gated_graph(compile_graph: Callable[..., CompiledGraph], gate: Gate,
                **options: Any) -> CompiledGraph:
    """``gate -> after``."""
    builder = StateGraph(State)
    builder.add_node("gate", gate)
    builder.add_node("after", lambda s: {"log": ["after"]})
    builder.add_edge(START, "gate")
    builder.add_edge("gate", "after")
    return compile_graph(builder, **options)


class Background:
    """``graph.invoke`` in a thread; ``result()`` returns its output or raises its error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._out: list[Any] = []
        self._err: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._out.append(call())
        except BaseException as exc:
            self._err.append(exc)

    def result(self) -> Any:
        self._thread.join(20)
        assert not self._thread.is_alive(), "the background invoke never finished"
        if self._err:
            raise self._err[0]
        return self._out[0]


def assert_linear(graph: CompiledGraph, thread: dict[str, Any]) -> list[Any]:
    """Every checkpoint of the thread has the previous one as its parent; returns them,
    oldest first."""
    history = list(graph.get_state_history(thread))[::-1]
    assert history[0].parent_config is None
    for older, newer in zip(history, history[1:], strict=False):
        assert newer.parent_config is not None
        assert (newer.parent_config["configurable"]["checkpoint_id"]
                == older.config["configurable"]["checkpoint_id"])
    return history


def test_a_second_invoke_on_a_busy_thread_raises_thread_busy_at_once(
    compile_graph, thread, durability
):
    gate = Gate(lambda s: s["log"] == ["first"])
    graph = gated_graph(compile_graph, gate)
    first = Background(lambda: graph.invoke({"log": ["first"]}, {**thread, "run_id": "r1"}))
    assert gate.inside.wait(10)
    try:
        with pytest.raises(ThreadBusyError) as info:
            graph.invoke({"log": ["second"]}, {**thread, "run_id": "r2"})
        assert info.value.code == "thread_busy"
        with pytest.raises(ThreadBusyError):
            graph.update_state(thread, {"log": ["edit"]})
    finally:
        gate.open()

    assert first.result() == {"log": ["first", "gate<first>", "after"]}
    assert graph.get_run("r2") is None
    assert [r.run_id for r in graph.list_runs()] == ["r1"]
    assert graph.get_state(thread).values == {"log": ["first", "gate<first>", "after"]}
    if durability != "exit":
        assert_linear(graph, thread)


def test_with_wait_true_a_second_invoke_waits_for_the_thread_then_runs(
    compile_graph, store, thread, monkeypatch
):
    gate = Gate(lambda s: s["log"] == ["first"])
    graph = gated_graph(compile_graph, gate)
    refused = threading.Event()
    acquire = store.acquire_lease

    def watched_acquire(*args: Any, **kwargs: Any) -> Any:
        try:
            return acquire(*args, **kwargs)
        except ThreadBusyError:
            refused.set()
            raise

    monkeypatch.setattr(store, "acquire_lease", watched_acquire)
    first = Background(lambda: graph.invoke({"log": ["first"]}, thread))
    assert gate.inside.wait(10)
    second = Background(lambda: graph.invoke({"log": ["second"]}, thread, wait=True))
    assert refused.wait(10)  # the second invoke found the thread busy and is waiting
    gate.open()

    assert first.result() == {"log": ["first", "gate<first>", "after"]}
    assert second.result() == {
        "log": ["first", "gate<first>", "after", "second", "gate<second>", "after"]}
    assert [r.status for r in graph.list_runs()] == ["succeeded", "succeeded"]


def test_different_threads_run_fully_in_parallel(compile_graph):
    all_inside = threading.Barrier(4, timeout=10)

    def meet(state: State) -> dict[str, Any]:
        all_inside.wait()  # breaks unless the four runs are inside at the same time
        return {"log": ["met"]}

    builder = StateGraph(State)
    builder.add_node("meet", meet)
    builder.add_edge(START, "meet")
    graph = compile_graph(builder)

    runs = [Background(lambda i=i: graph.invoke({"log": [str(i)]}, {"thread_id": f"p{i}"}))
            for i in range(4)]

    assert [r.result() for r in runs] == [{"log": [str(i), "met"]} for i in range(4)]


def test_many_threads_times_many_runs_on_one_store_all_succeed_with_linear_lineage(
    compile_graph, durability
):
    threads, runs_per_thread = 4, 5
    builder = StateGraph(State)
    builder.add_node("one", lambda s: {"log": ["one"]})
    builder.add_node("two", lambda s: {"log": ["two"]})
    builder.add_edge(START, "one")
    builder.add_edge("one", "two")
    graph = compile_graph(builder)

    def worker(t: int) -> list[Any]:
        return [graph.invoke({"log": [f"run{r}"]}, {"thread_id": f"w{t}", "run_id": f"w{t}-{r}"})
                for r in range(runs_per_thread)]

    workers = [Background(lambda t=t: worker(t)) for t in range(threads)]
    outputs = [w.result() for w in workers]  # re-raises any "database is locked"

    for t in range(threads):
        expected: list[str] = []
        for r in range(runs_per_thread):
            expected += [f"run{r}", "one", "two"]
            assert outputs[t][r] == {"log": expected}
        config = {"thread_id": f"w{t}"}
        assert graph.get_state(config).values == {"log": expected}
        statuses = {r.run_id: r.status for r in graph.list_runs(thread_id=f"w{t}")}
        assert statuses == {f"w{t}-{r}": "succeeded" for r in range(runs_per_thread)}
        history = assert_linear(graph, config)
        # exit: one checkpoint per run; otherwise the input checkpoint and one per step
        assert len(history) == runs_per_thread * (1 if durability == "exit" else 3)
        assert [h.metadata["run_id"] for h in history][:: len(history) // runs_per_thread] == [
            f"w{t}-{r}" for r in range(runs_per_thread)]


def test_concurrent_invokes_on_one_thread_with_wait_never_fork_the_lineage(
    compile_graph, durability
):
    builder = StateGraph(State)
    builder.add_node("one", lambda s: {"log": ["one"]})
    builder.add_node("two", lambda s: {"log": ["two"]})
    builder.add_edge(START, "one")
    builder.add_edge("one", "two")
    graph = compile_graph(builder)
    config = {"thread_id": "contended"}
    start = threading.Barrier(4, timeout=10)

    def contend(i: int) -> Any:
        start.wait()
        return graph.invoke({"log": [f"in{i}"]}, {**config, "run_id": f"c{i}"}, wait=True)

    callers = [Background(lambda i=i: contend(i)) for i in range(4)]
    for caller in callers:
        caller.result()

    log = graph.get_state(config).values["log"]
    assert len(log) == 12
    # the runs took turns: each input is followed by its own two steps
    for i in range(0, 12, 3):
        assert log[i].startswith("in") and log[i + 1:i + 3] == ["one", "two"]
    assert sorted(log[::3]) == [f"in{i}" for i in range(4)]
    history = assert_linear(graph, config)
    assert len(history) == 4 * (1 if durability == "exit" else 3)
    assert {r.status for r in graph.list_runs()} == {"succeeded"}


def test_a_writer_whose_lease_was_taken_over_cannot_commit(
    compile_graph, store, thread, durability, monkeypatch
):
    """The first run's heartbeat is stalled (its renewals fail, as in a long GC pause or a
    network partition); its lease lapses, a second invoker waiting with ``wait=True`` takes
    the thread over and finishes; then the first run's node returns and its commit must be
    refused."""
    stalled = threading.Event()
    renew = store.renew_lease

    def stalled_renew(*args: Any, **kwargs: Any) -> Any:
        if stalled.is_set():
            raise LeaseLostError("heartbeat stalled by the test")
        return renew(*args, **kwargs)

    monkeypatch.setattr(store, "renew_lease", stalled_renew)
    gate = Gate(lambda s: s["log"] == ["first"])
    graph = gated_graph(compile_graph, gate, lease_ttl=0.2)
    stalled.set()
    first = Background(lambda: graph.invoke({"log": ["first"]}, {**thread, "run_id": "r1"}))
    assert gate.inside.wait(10)

    second = graph.invoke({"log": ["second"]}, {**thread, "run_id": "r2"}, wait=True)
    gate.open()

    with pytest.raises(LeaseLostError):
        first.result()
    assert "gate<second>" in second["log"]
    state = graph.get_state(thread).values
    assert state == second
    assert "gate<first>" not in state["log"]
    history = list(graph.get_state_history(thread))
    assert all("gate<first>" not in h.values["log"] for h in history)
    assert graph.get_run("r2").status == "succeeded"
    # the run that took the thread over recorded the fenced one as failed (exit: it never
    # wrote anything), and its execution that was running as failed too
    run1 = graph.get_run("r1")
    executions = graph.list_executions("r1")
    if durability == "exit":
        assert run1 is None and executions == []
    else:
        assert run1.status == "failed"
        assert "LeaseLostError" in run1.error and "'r2' took the thread over" in run1.error
        assert [(e.node, e.status) for e in executions] == [("gate", "FAILED")]
        assert "'r2' took the thread over" in executions[0].error


@pytest.mark.parametrize("durability", ["sync"])
def test_a_run_longer_than_its_lease_keeps_the_thread_by_heartbeat(compile_graph, thread):
    """One mode: the heartbeat does not depend on it. Waits 2.3 lease lifetimes (0.7 s)."""
    gate = Gate(lambda s: s["log"] == ["first"])
    graph = gated_graph(compile_graph, gate, lease_ttl=0.3)
    first = Background(lambda: graph.invoke({"log": ["first"]}, thread))
    assert gate.inside.wait(10)
    try:
        threading.Event().wait(0.7)
        with pytest.raises(ThreadBusyError):
            graph.invoke({"log": ["second"]}, thread)
    finally:
        gate.open()
    assert first.result()["log"] == ["first", "gate<first>", "after"]


def test_wait_with_a_number_of_seconds_gives_up_with_thread_busy(compile_graph, thread):
    gate = Gate(lambda s: s["log"] == ["first"])
    graph = gated_graph(compile_graph, gate)
    first = Background(lambda: graph.invoke({"log": ["first"]}, thread))
    assert gate.inside.wait(10)
    try:
        with pytest.raises(ThreadBusyError):
            graph.invoke({"log": ["second"]}, thread, wait=0.05)
    finally:
        gate.open()
    first.result()
    assert len(graph.list_runs()) == 1


def test_batch_over_different_threads_runs_each_on_its_own_thread(compile_graph):
    builder = StateGraph(State)
    builder.add_node("echo", lambda s: {"log": [f"echo {s['log'][0]}"]})
    builder.add_edge(START, "echo")
    graph = compile_graph(builder)
    configs = [{"thread_id": f"b{i}", "run_id": f"batch-{i}"} for i in range(5)]

    outputs = graph.batch([{"log": [str(i)]} for i in range(5)], configs)

    assert outputs == [{"log": [str(i), f"echo {i}"]} for i in range(5)]
    for i, config in enumerate(configs):
        run = graph.get_run(f"batch-{i}")
        assert (run.thread_id, run.status) == (config["thread_id"], "succeeded")


async def test_ainvoke_on_a_busy_thread_raises_thread_busy(compile_graph, thread):
    inside, release = asyncio.Event(), asyncio.Event()

    async def hold(state: State) -> dict[str, Any]:
        if state["log"] == ["first"]:
            inside.set()
            await release.wait()
        return {"log": ["held"]}

    builder = StateGraph(State)
    builder.add_node("hold", hold)
    builder.add_edge(START, "hold")
    graph = compile_graph(builder)

    first = asyncio.ensure_future(graph.ainvoke({"log": ["first"]}, thread))
    await asyncio.wait_for(inside.wait(), 10)
    try:
        with pytest.raises(ThreadBusyError):
            await graph.ainvoke({"log": ["second"]}, thread)
    finally:
        release.set()

    assert await asyncio.wait_for(first, 10) == {"log": ["first", "held"]}


def test_graph_copies_made_per_request_do_not_leak_threads(thread, wait_until):
    """One variant: the heartbeat is the same for every store and mode."""
    builder = StateGraph(State)
    builder.add_node("echo", lambda s: {"log": ["echo"]})
    builder.add_edge(START, "echo")
    base = builder.compile(checkpointer=InMemorySaver(), lease_ttl=0.3)
    base.invoke({"log": []}, thread)
    before = threading.active_count()

    for i in range(10):
        base.with_config(tags=[f"request-{i}"]).invoke({"log": []}, {"thread_id": f"req-{i}"})
    gc.collect()

    assert wait_until(lambda: threading.active_count() <= before + 2, timeout=1.0)
