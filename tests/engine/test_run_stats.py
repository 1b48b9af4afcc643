"""Per-run statistics stored with the run record (issue 14 item 4): retries, node durations,
bytes written, queue wait; added up over the invocations of one run."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadloom import RetryPolicy, StateGraph, interrupt
from threadloom.checkpoint.base import Commit, RunRecord
from threadloom.func import task
from threadloom.types import Command


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str:
    """Memory and SQLite by default; Postgres with the slow tests."""
    return str(request.param)


class State(TypedDict):
    trail: Annotated[list[str], operator.add]


def _graph(compile_graph: Any) -> Any:
    failures = {"fetch": 1, "lookup": 1}

    @task(retry_policy=RetryPolicy(initial_interval=0.001, jitter=False,
                                   retry_on=ConnectionError))
    def lookup(key: str) -> str:
        if failures["lookup"]:
            failures["lookup"] -= 1
            raise ConnectionError("lookup flaked")
        return f"found {key}"

    def fetch(state: State) -> dict[str, Any]:
        if failures["fetch"]:
            failures["fetch"] -= 1
            raise ConnectionError("fetch flaked")
        return {"trail": [lookup("k").result()]}

    def review(state: State) -> dict[str, Any]:
        return {"trail": [f"review {interrupt('ok?')}"]}

    builder = StateGraph(State)
    builder.add_node("fetch", fetch, retry_policy=RetryPolicy(
        initial_interval=0.001, jitter=False, retry_on=ConnectionError))
    builder.add_node("review", review)
    builder.add_node("finish", lambda state: {"trail": ["finish"]})
    builder.add_edge("__start__", "fetch")
    builder.add_edge("fetch", "review")
    builder.add_edge("review", "finish")
    return compile_graph(builder)


def _counts(stats: dict[str, Any]) -> dict[str, int]:
    return {name: node["count"] for name, node in stats["nodes"].items()}


def test_stats_are_recorded_with_the_run_and_add_up_over_its_resumes(
        compile_graph: Any, store: Any) -> None:
    graph = _graph(compile_graph)
    config = {"thread_id": "t-stats", "run_id": "r-stats"}
    graph.invoke({"trail": []}, config)
    paused = store.get_run("r-stats")
    assert paused.status == "interrupted"
    stats = paused.stats
    assert stats["retries"] == 2  # fetch's first attempt and lookup's
    assert _counts(stats) == {"fetch": 1}  # review paused: it did not finish
    fetch = stats["nodes"]["fetch"]
    assert fetch["total_ms"] == fetch["max_ms"] > 0
    assert stats["bytes_written"] > 0
    assert "queue_wait_ms" not in stats  # the run was not queued

    graph.invoke(Command(resume="yes"), config)
    done = store.get_run("r-stats")
    assert done.status == "succeeded"
    assert done.stats["retries"] == 2
    assert _counts(done.stats) == {"fetch": 1, "review": 1, "finish": 1}
    assert done.stats["nodes"]["fetch"] == fetch
    assert done.stats["bytes_written"] > stats["bytes_written"]
    assert done.executions == 3 and done.steps >= 3


def test_a_queued_run_records_how_long_it_waited(compile_graph: Any, store: Any) -> None:
    queued = RunRecord("r-queued", "t-queued", "graph", "pending", created_at=1000.0,
                       updated_at=1000.0, traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    store.commit([Commit("t-queued", runs=[queued])])
    graph = _graph(compile_graph)
    graph.invoke({"trail": []}, {"thread_id": "t-queued", "run_id": "r-queued"})
    record = store.get_run("r-queued")
    assert record.stats["queue_wait_ms"] > 0
    assert record.started_at is not None
    assert record.stats["queue_wait_ms"] == pytest.approx(
        (record.started_at - 1000.0) * 1000.0, abs=0.01)
    assert record.traceparent == queued.traceparent  # kept from the queued record
