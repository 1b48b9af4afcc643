"""The library's Prometheus metrics (issue 14): runs by graph and status, run and node
durations, retries, checkpoint commits and bytes, counted in prometheus_client's default
registry without a server. The registry is process-wide, so every check is a delta."""

from __future__ import annotations

import asyncio
import operator
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import REGISTRY  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from threadloom import _metrics  # noqa: E402
from threadloom.checkpoint.sqlite import SqliteSaver  # noqa: E402
from threadloom.errors import RunCancelled  # noqa: E402
from threadloom.graph import END, START, StateGraph  # noqa: E402
from threadloom.types import CancelToken, RetryPolicy  # noqa: E402

FAST = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def build(name: str, fail_first: int = 0, broken: bool = False) -> Any:
    """a -> flaky -> END; ``flaky`` raises its first ``fail_first`` attempts of each run, or
    always when ``broken``."""
    attempts = {"n": 0}

    def a(state: State) -> dict[str, Any]:
        return {"log": ["a"]}

    def flaky(state: State) -> dict[str, Any]:
        attempts["n"] += 1
        if broken or attempts["n"] <= fail_first:
            raise ConnectionError("refused")
        return {"log": ["flaky"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("flaky", flaky, retry_policy=FAST)
    builder.add_edge(START, "a")
    builder.add_edge("a", "flaky")
    builder.add_edge("flaky", END)
    return builder


def test_runs_nodes_and_retries_are_counted_without_a_checkpointer() -> None:
    graph_name = f"g-{uuid.uuid4().hex[:8]}"
    graph = build(graph_name, fail_first=2).compile(name=graph_name)
    assert graph.invoke({"log": []}) == {"log": ["a", "flaky"]}
    assert sample("threadloom_runs_total", graph=graph_name, status="succeeded") == 1
    assert sample("threadloom_run_duration_seconds_count", graph=graph_name) == 1
    for node in ("a", "flaky"):
        assert sample("threadloom_node_duration_seconds_count", graph=graph_name,
                      node=node) == 1
    assert sample("threadloom_retries_total", graph=graph_name, node="flaky") == 2
    assert sample("threadloom_retries_total", graph=graph_name, node="a") == 0

    failing = build(graph_name, broken=True).compile(name=graph_name)
    with pytest.raises(ConnectionError):
        failing.invoke({"log": []})
    assert sample("threadloom_runs_total", graph=graph_name, status="failed") == 1
    # 3 attempts: the first two are retried, the third gives up
    assert sample("threadloom_retries_total", graph=graph_name, node="flaky") == 4
    assert sample("threadloom_run_duration_seconds_count", graph=graph_name) == 2


def test_async_runs_and_cancellations_are_counted() -> None:
    graph_name = f"g-{uuid.uuid4().hex[:8]}"
    graph = build(graph_name).compile(name=graph_name)
    assert asyncio.run(graph.ainvoke({"log": []})) == {"log": ["a", "flaky"]}
    assert sample("threadloom_runs_total", graph=graph_name, status="succeeded") == 1
    assert sample("threadloom_node_duration_seconds_count", graph=graph_name, node="a") == 1
    token = CancelToken()
    token.cancel()
    with pytest.raises(RunCancelled):
        graph.invoke({"log": []}, {"cancel": token})
    assert sample("threadloom_runs_total", graph=graph_name, status="cancelled") == 1


def test_durable_runs_count_commits_and_bytes(tmp_path: Path) -> None:
    graph_name = f"g-{uuid.uuid4().hex[:8]}"
    saver = SqliteSaver(tmp_path / "t.db")
    saver.setup()
    try:
        graph = build(graph_name, fail_first=1).compile(checkpointer=saver, name=graph_name,
                                                        durability="sync")
        commits = sample("threadloom_checkpoint_commits_total")
        size = sample("threadloom_checkpoint_bytes_total")
        config = {"configurable": {"thread_id": "t1"}}
        assert graph.invoke({"log": []}, config) == {"log": ["a", "flaky"]}
        # sync: the input step and the two node steps each commit (the last carries the
        # run's final record)
        assert sample("threadloom_checkpoint_commits_total") - commits >= 3
        assert sample("threadloom_checkpoint_bytes_total") > size
        assert sample("threadloom_runs_total", graph=graph_name, status="succeeded") == 1
        assert sample("threadloom_retries_total", graph=graph_name, node="flaky") == 1
        assert sample("threadloom_node_duration_seconds_count", graph=graph_name,
                      node="flaky") == 1
    finally:
        saver.close()


def test_the_exposition_parses_with_the_documented_names_and_labels() -> None:
    graph_name = f"g-{uuid.uuid4().hex[:8]}"
    build(graph_name).compile(name=graph_name).invoke({"log": []})
    text = prometheus_client.generate_latest(REGISTRY).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "threadloom_runs": ("counter", {"graph", "status"}),
        "threadloom_run_duration_seconds": ("histogram", {"graph"}),
        "threadloom_node_duration_seconds": ("histogram", {"graph", "node"}),
        "threadloom_retries": ("counter", {"graph", "node"}),
        "threadloom_checkpoint_commits": ("counter", set()),
        "threadloom_checkpoint_bytes": ("counter", set()),
        "threadloom_lease_takeovers": ("counter", set()),
        "threadloom_queue_wait_seconds": ("histogram", set()),
    }
    for name, (kind, _labels) in expected.items():
        assert families[name].type == kind, name
    for name in ("threadloom_runs", "threadloom_node_duration_seconds"):
        mine = [s for s in families[name].samples if s.labels.get("graph") == graph_name]
        assert mine, name
        for s in mine:
            assert expected[name][1] <= set(s.labels), (name, s.labels)


def test_the_metrics_are_created_once_however_many_graphs() -> None:
    first = _metrics.for_graph("same")
    build("same").compile(name="same").invoke({"log": []})
    build("same").compile(name="same").invoke({"log": []})
    assert _metrics.for_graph("same") is first


def _run_isolated(code: str, env_extra: dict[str, str]) -> str:
    import os

    env = {**os.environ, **env_extra}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_threadloom_does_not_import_prometheus_client() -> None:
    out = _run_isolated(
        "import sys, threadloom, threadloom.graph\n"
        "print('prometheus_client' in sys.modules)", {})
    assert out == "False"


def test_switched_off_the_engine_records_nothing() -> None:
    code = (
        "import sys\n"
        "from threadloom import _metrics\n"
        "from threadloom.graph import StateGraph, START, END\n"
        "from typing import TypedDict\n"
        "class S(TypedDict):\n    x: int\n"
        "b = StateGraph(S); b.add_node('n', lambda s: {'x': 1}); b.add_edge(START, 'n')\n"
        "b.add_edge('n', END); b.compile().invoke({'x': 0})\n"
        "print(_metrics.available(), 'prometheus_client' in sys.modules)"
    )
    assert _run_isolated(code, {_metrics.DISABLE_ENV: "0"}) == "False False"
    assert _run_isolated(code, {}) == "True True"


def test_a_lease_taken_from_a_dead_holder_is_counted(tmp_path: Path) -> None:
    from threadloom.engine._owner import Owner, acquire, host_id, process_stamp

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stamp = process_stamp(child.pid) or ""
    child.kill()
    child.wait()
    dead = str(Owner(host_id(), child.pid, stamp, "0badc0de", "run-dead"))
    saver = SqliteSaver(tmp_path / "t.db")
    saver.setup()
    try:
        saver.acquire_lease("t1", dead, 3600.0)
        before = sample("threadloom_lease_takeovers_total")
        lease = acquire(saver, "t1", "run-new", 60.0, wait=False)
        assert lease.owner != dead
        assert sample("threadloom_lease_takeovers_total") - before == 1
        saver.release_lease(lease)
        again = acquire(saver, "t1", "run-later", 60.0, wait=False)  # free: no takeover
        assert again.owner != dead
        assert sample("threadloom_lease_takeovers_total") - before == 1
    finally:
        saver.close()
