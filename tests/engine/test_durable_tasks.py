"""``@task`` and ``@entrypoint`` (design §4 "Tasks", seed 003): tasks run in parallel, each
result is recorded as soon as it succeeds (keyed by run, node execution, task name and call
index), and a node replayed after an interrupt or a failure gets recorded results back
instead of running the tasks again.

Every test runs on each backend x durability mode (see ``conftest.py``)."""

from __future__ import annotations

import importlib.util
import operator
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.checkpoint.memory import InMemorySaver
from threadloom.func import entrypoint, task
from threadloom.graph import START, StateGraph
from threadloom.types import Command, RetryPolicy, interrupt

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class State(TypedDict):
    items: list[int]
    results: Annotated[list[Any], operator.add]


def one_node(node: Any) -> StateGraph:
    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    return builder


def test_tasks_called_in_a_node_run_in_parallel(compile_graph, calls, thread):
    all_started = threading.Barrier(3, timeout=10)

    @task
    def fetch(i: int) -> int:
        calls.hit("fetch")
        all_started.wait()  # breaks (and fails the run) unless all three run at once
        return i * 10

    def node(state: State) -> dict[str, Any]:
        futures = [fetch(i) for i in state["items"]]
        return {"results": [f.result() for f in futures]}

    graph = compile_graph(one_node(node))

    out = graph.invoke({"items": [1, 2, 3], "results": []}, thread)

    assert out["results"] == [10, 20, 30]
    assert calls["fetch"] == 3


def test_a_task_result_is_recorded_as_soon_as_the_task_succeeds(
    compile_graph, calls, thread, durability, wait_until
):
    recorded, release = threading.Event(), threading.Event()

    @task
    def charge(amount: int) -> str:
        calls.hit("charge")
        return f"charged {amount}"

    def node(state: State) -> dict[str, Any]:
        receipt = charge(42).result()
        recorded.set()
        assert release.wait(10)
        return {"results": [receipt]}

    graph = compile_graph(one_node(node))
    runner = threading.Thread(
        target=graph.invoke, args=({"items": [], "results": []}, {**thread, "run_id": "pay"}))
    runner.start()
    try:
        assert recorded.wait(10)

        def charge_recorded() -> bool:  # while the node that called it is still running
            return sorted((e.node, e.status, e.outputs) for e in graph.list_executions("pay")) == [
                ("charge", "SUCCEEDED", "charged 42"), ("node", "RUNNING", None)]

        if durability == "sync":
            assert charge_recorded()  # committed before .result() returned
        elif durability == "async":
            assert wait_until(charge_recorded)
        else:
            assert graph.list_executions("pay") == []  # exit: nothing until the run ends
    finally:
        release.set()
        runner.join(10)
    assert {e.node: e.status for e in graph.list_executions("pay")} == {
        "charge": "SUCCEEDED", "node": "SUCCEEDED"}
    assert calls["charge"] == 1


def test_a_node_replayed_after_an_interrupt_gets_recorded_task_results(
    compile_graph, calls, thread
):
    @task
    def side_effect(i: int) -> str:
        calls.hit(f"side_effect({i})")
        return f"done {i}"

    def node(state: State) -> dict[str, Any]:
        calls.hit("node")
        done = [f.result() for f in [side_effect(i) for i in state["items"]]]
        approved = interrupt("approve?")
        return {"results": [*done, approved]}

    graph = compile_graph(one_node(node))
    graph.invoke({"items": [1, 2], "results": []}, {**thread, "run_id": "r"})

    out = graph.resume("r", value="yes")

    assert out["results"] == ["done 1", "done 2", "yes"]
    assert calls.snapshot() == {"node": 2, "side_effect(1)": 1, "side_effect(2)": 1}


def test_invoke_waits_for_tasks_still_running_when_their_node_is_interrupted(
    durability, calls, thread
):
    release, finished = threading.Event(), threading.Event()

    @task
    def side_effect() -> str:
        calls.hit("side_effect")
        release.wait(1)
        finished.set()
        return "done"

    def node(state: State) -> dict[str, Any]:
        pending = side_effect()  # not waited for before the interrupt
        approved = interrupt("approve?")
        return {"results": [pending.result(), approved]}

    graph = one_node(node).compile(checkpointer=InMemorySaver(), durability=durability)
    graph.invoke({"items": [], "results": []}, {**thread, "run_id": "r"})
    returned_while_task_ran = not finished.is_set()
    release.set()
    assert finished.wait(10)

    out = graph.resume("r", value="yes")

    assert out["results"] == ["done", "yes"]
    assert not returned_while_task_ran
    assert calls["side_effect"] == 1


def test_a_node_replayed_after_a_failure_gets_recorded_task_results(
    compile_graph, calls, thread
):
    broken = {"notify"}

    @task
    def reserve(item: int) -> str:
        calls.hit("reserve")
        return f"reserved {item}"

    @task
    def notify(text: str) -> str:
        calls.hit("notify")
        if "notify" in broken:
            raise RuntimeError("mail server down")
        return f"sent: {text}"

    def node(state: State) -> dict[str, Any]:
        calls.hit("node")
        reservation = reserve(7).result()
        return {"results": [reservation, notify(reservation).result()]}

    graph = compile_graph(one_node(node))
    with pytest.raises(RuntimeError, match="mail server down"):
        graph.invoke({"items": [], "results": []}, {**thread, "run_id": "r"})
    assert calls.snapshot() == {"node": 1, "reserve": 1, "notify": 1}
    broken.clear()

    out = graph.invoke(None, thread)

    assert out["results"] == ["reserved 7", "sent: reserved 7"]
    assert calls.snapshot() == {"node": 2, "reserve": 1, "notify": 2}
    assert graph.get_run("r").status == "succeeded"


def test_calls_of_one_task_are_keyed_by_call_index(compile_graph, calls, thread):
    @task
    def square(x: int) -> int:
        calls.hit(f"square({x})")
        return x * x

    def node(state: State) -> dict[str, Any]:
        futures = [square(3), square(4), square(3)]
        results = [f.result() for f in futures]
        return {"results": [*results, interrupt("go on?")]}

    graph = compile_graph(one_node(node))
    graph.invoke({"items": [], "results": []}, {**thread, "run_id": "r"})

    out = graph.resume("r", value="ok")

    assert out["results"] == [9, 16, 9, "ok"]
    # call 0 and call 2 have the same arguments but are different calls: both ran, once
    assert calls.snapshot() == {"square(3)": 2, "square(4)": 1}
    recorded = [(e.node, e.inputs, e.outputs) for e in graph.list_executions("r")
                if e.node == "square"]
    assert sorted(recorded, key=repr) == sorted(
        [("square", [3], 9), ("square", [4], 16), ("square", [3], 9)], key=repr)


def test_a_task_retry_policy_records_its_attempts_on_the_tasks_execution(
    compile_graph, calls, thread
):
    @task(retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False,
                                   retry_on=ConnectionError))
    def call_api(x: int) -> int:
        attempt = calls.hit("call_api")
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt} refused")
        return x + 1

    def node(state: State) -> dict[str, Any]:
        return {"results": [call_api(1).result()]}

    graph = compile_graph(one_node(node))

    out = graph.invoke({"items": [], "results": []}, {**thread, "run_id": "r"})

    assert out["results"] == [2]
    (execution,) = [e for e in graph.list_executions("r") if e.node == "call_api"]
    assert (execution.status, execution.attempt, execution.outputs) == ("SUCCEEDED", 3, 2)
    assert [(a.number, a.error) for a in execution.attempts] == [
        (1, "ConnectionError: attempt 1 refused"), (2, "ConnectionError: attempt 2 refused")]


def test_a_task_that_exhausts_its_retries_fails_the_node(compile_graph, calls, thread):
    @task(retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False))
    def call_api() -> None:
        calls.hit("call_api")
        raise ConnectionError("refused")

    def node(state: State) -> dict[str, Any]:
        return {"results": [call_api().result()]}

    graph = compile_graph(one_node(node))

    with pytest.raises(ConnectionError, match="refused"):
        graph.invoke({"items": [], "results": []}, {**thread, "run_id": "r"})

    assert calls["call_api"] == 2
    run = graph.get_run("r")
    assert (run.status, run.error) == ("failed", "ConnectionError: refused")


def load_seed003() -> Any:
    spec = importlib.util.spec_from_file_location("seed003_durable",
                                                  EXAMPLES / "seed003_durable.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed003_call_api_records_each_request_and_replays_them(
    store, durability, calls, thread, monkeypatch
):
    seed = load_seed003()
    fake_get = seed.requests.get

    def counting_get(url: str) -> Any:
        calls.hit(url)
        return fake_get(url)

    monkeypatch.setattr(seed.requests, "get", counting_get)
    graph = seed.builder.compile(checkpointer=store, durability=durability)
    urls = ["https://example.com/a", "https://example.com/b"]
    config = {"configurable": {"thread_id": thread["thread_id"]}, "run_id": "api"}

    result = graph.invoke({"urls": urls}, config)

    expected = [f"<html><body>Fetched {u}</body></html>" for u in urls]
    assert result == {"urls": urls, "results": expected}
    state = graph.get_state(config)
    assert (state.next, state.values) == ((), result)
    made = [e for e in graph.list_executions("api") if e.node == "_make_request"]
    assert sorted((e.inputs[0], e.outputs) for e in made) == list(zip(urls, expected,
                                                                      strict=True))
    assert calls.snapshot() == dict.fromkeys(urls, 1)
    # re-invoking the run id returns the recorded result: no request is made again
    assert graph.invoke({"urls": urls}, config) == result
    assert calls.snapshot() == dict.fromkeys(urls, 1)


def test_entrypoint_gets_previous_and_final_saves_a_different_value(
    store, durability, calls, thread
):
    @task
    def count_words(text: str) -> int:
        calls.hit("count_words")
        return len(text.split())

    @entrypoint(checkpointer=store)
    def tally(text: str, previous: Any = None) -> Any:
        total = (previous or 0) + count_words(text).result()
        return entrypoint.final(value={"total": total, "previous": previous}, save=total)

    first = tally.invoke("one two three", thread, durability=durability)
    second = tally.invoke("four five", thread, durability=durability)

    assert first == {"total": 3, "previous": None}
    assert second == {"total": 5, "previous": 3}
    assert [r.output for r in tally.list_runs(thread_id=thread["thread_id"])] == [second, first]
    assert calls["count_words"] == 2


def test_entrypoint_without_final_saves_its_return_value_as_previous(store, durability, thread):
    @entrypoint(checkpointer=store)
    def echo(value: int, previous: Any = None) -> list[Any]:
        return [previous, value]

    assert echo.invoke(1, thread, durability=durability) == [None, 1]
    assert echo.invoke(2, thread, durability=durability) == [[None, 1], 2]


def test_an_entrypoint_replayed_after_a_failure_does_not_rerun_recorded_tasks(
    store, durability, calls, thread
):
    broken = {"ship"}

    @task
    def pay(order: str) -> str:
        calls.hit("pay")
        return f"paid {order}"

    @task
    def ship(order: str) -> str:
        calls.hit("ship")
        if "ship" in broken:
            raise RuntimeError("carrier offline")
        return f"shipped {order}"

    @entrypoint(checkpointer=store)
    def fulfil(order: str) -> list[str]:
        return [pay(order).result(), ship(order).result()]

    config = {**thread, "run_id": "order-1"}
    with pytest.raises(RuntimeError, match="carrier offline"):
        fulfil.invoke("A-1", config, durability=durability)
    broken.clear()

    out = fulfil.invoke("A-1", config, durability=durability)

    assert out == ["paid A-1", "shipped A-1"]
    assert calls.snapshot() == {"pay": 1, "ship": 2}
    assert fulfil.get_run("order-1").status == "succeeded"


async def test_async_tasks_in_an_async_node_run_in_parallel_and_replay(
    compile_graph, calls, thread
):
    all_started = threading.Barrier(2, timeout=10)

    @task
    async def lookup(key: str) -> str:
        calls.hit(key)
        all_started.wait()
        return key.upper()

    async def node(state: State) -> dict[str, Any]:
        calls.hit("node")
        futures = [lookup("a"), lookup("b")]
        found = [await f for f in futures]
        answer = interrupt("more?")
        return {"results": [*found, answer]}

    graph = compile_graph(one_node(node))
    await graph.ainvoke({"items": [], "results": []}, {**thread, "run_id": "r"})

    out = await graph.ainvoke(Command(resume="no"), thread)

    assert out["results"] == ["A", "B", "no"]
    assert calls.snapshot() == {"node": 2, "a": 1, "b": 1}


def test_calling_a_task_outside_a_node_is_an_error():
    @task
    def lonely() -> None:
        return None

    with pytest.raises(RuntimeError, match="lonely"):
        lonely()
