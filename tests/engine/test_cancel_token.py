"""``config["cancel"]``: a :class:`~threadloom.types.CancelToken` stops a run at its next step
boundary and wakes a node blocked on a ``@task`` future at once (issue 12: cancellation reaches
a running run between steps and interrupts a long node's task waits).

Every test that takes ``compile_graph`` runs on each backend x durability mode."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.errors import InvalidConfigError, RunCancelled
from threadloom.func import task
from threadloom.graph import START, StateGraph
from threadloom.types import CancelToken


def _append(left: list[str], right: list[str]) -> list[str]:
    return left + right


class State(TypedDict):
    log: Annotated[list[str], _append]


def chain(*nodes: tuple[str, Any]) -> StateGraph:
    builder = StateGraph(State)
    previous = START
    for name, fn in nodes:
        builder.add_node(name, fn)
        builder.add_edge(previous, name)
        previous = name
    return builder


def test_a_cancelled_token_stops_the_run_before_its_next_step(compile_graph, calls, thread):
    token = CancelToken()

    def first(state: State) -> dict[str, Any]:
        calls.hit("first")
        token.cancel("operator asked")
        return {"log": ["first"]}

    def second(state: State) -> dict[str, Any]:
        calls.hit("second")
        return {"log": ["second"]}

    graph = compile_graph(chain(("first", first), ("second", second)))

    with pytest.raises(RunCancelled, match="operator asked"):
        graph.invoke({"log": []}, {**thread, "run_id": "r-cancel", "cancel": token})

    assert calls.snapshot() == {"first": 1}
    assert graph.get_run("r-cancel").status == "cancelled"
    # the cancelled run keeps its finished step and continues from there
    out = graph.resume("r-cancel")
    assert out["log"] == ["first", "second"]
    assert calls.snapshot() == {"first": 1, "second": 1}


def test_a_node_waiting_on_a_task_is_woken_by_the_cancellation(compile_graph, calls, thread):
    release = threading.Event()
    started = threading.Event()
    token = CancelToken()

    @task
    def slow() -> str:
        started.set()
        release.wait(60)
        return "done"

    def node(state: State) -> dict[str, Any]:
        calls.hit("node")
        return {"log": [slow().result()]}

    graph = compile_graph(chain(("node", node)))
    threading.Thread(target=lambda: started.wait(60) and token.cancel("stop"),
                     daemon=True).start()
    try:
        with pytest.raises(RunCancelled, match="stop"):
            graph.invoke({"log": []}, {**thread, "run_id": "r-task", "cancel": token})
        # the run ended while the task was still blocked: the wait did not hold it
        assert not release.is_set()
        assert graph.get_run("r-task").status == "cancelled"
    finally:
        release.set()
        # the task records its result before the store is closed
        graph._get_task_pool().shutdown(wait=True)


def test_an_async_node_awaiting_a_task_is_woken_by_the_cancellation(compile_graph, thread):
    release = threading.Event()
    started = threading.Event()
    token = CancelToken()

    @task
    def slow() -> str:
        started.set()
        release.wait(60)
        return "done"

    async def node(state: State) -> dict[str, Any]:
        return {"log": [await slow()]}

    graph = compile_graph(chain(("node", node)))
    threading.Thread(target=lambda: started.wait(60) and token.cancel(), daemon=True).start()
    try:
        with pytest.raises(RunCancelled):
            asyncio.run(graph.ainvoke({"log": []}, {**thread, "cancel": token}))
        assert not release.is_set()
    finally:
        release.set()
        # the task records its result before the store is closed
        graph._get_task_pool().shutdown(wait=True)


def test_a_token_cancelled_before_the_run_starts_runs_nothing(compile_graph, calls, thread):
    token = CancelToken()
    token.cancel()

    def node(state: State) -> dict[str, Any]:
        calls.hit("node")
        return {"log": ["x"]}

    graph = compile_graph(chain(("node", node)))
    with pytest.raises(RunCancelled):
        graph.invoke({"log": []}, {**thread, "cancel": token})
    assert calls.snapshot() == {}


def test_a_stream_stops_at_the_step_boundary_after_a_cancellation(compile_graph, thread):
    token = CancelToken()

    def first(state: State) -> dict[str, Any]:
        return {"log": ["first"]}

    def second(state: State) -> dict[str, Any]:
        return {"log": ["second"]}

    graph = compile_graph(chain(("first", first), ("second", second)))
    seen: list[Any] = []
    with pytest.raises(RunCancelled):
        for chunk in graph.stream({"log": []}, {**thread, "cancel": token},
                                  stream_mode="updates"):
            seen.append(chunk)
            token.cancel()
    assert seen == [{"first": {"log": ["first"]}}]


def test_a_task_finishing_normally_is_not_affected_by_the_token(compile_graph, thread):
    token = CancelToken()

    @task
    def double(x: int) -> int:
        return 2 * x

    def node(state: State) -> dict[str, Any]:
        return {"log": [str(double(21).result())]}

    graph = compile_graph(chain(("node", node)))
    assert graph.invoke({"log": []}, {**thread, "cancel": token}) == {"log": ["42"]}


def test_the_token_works_without_a_checkpointer():
    token = CancelToken()

    def first(state: State) -> dict[str, Any]:
        token.cancel()
        return {"log": ["first"]}

    graph = chain(("first", first), ("second", lambda s: {"log": ["second"]})).compile()
    with pytest.raises(RunCancelled):
        graph.invoke({"log": []}, {"cancel": token})


def test_anything_but_a_cancel_token_is_refused():
    graph = chain(("a", lambda s: {"log": ["a"]})).compile()
    with pytest.raises(InvalidConfigError, match="CancelToken"):
        graph.invoke({"log": []}, {"cancel": threading.Event()})


def test_callbacks_run_once_and_can_be_removed():
    token = CancelToken()
    hits: list[str] = []
    remove = token.add_callback(lambda: hits.append("removed"))
    token.add_callback(lambda: hits.append("kept"))
    remove()
    token.cancel("first")
    token.cancel("second")
    token.add_callback(lambda: hits.append("late"))
    assert hits == ["kept", "late"]
    assert token.reason == "first"
    assert token.is_set() and token.wait(0)
