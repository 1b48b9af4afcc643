"""``threadloom worker --metrics-port`` and the API's ``/metrics`` as real processes: a
scripted load through ``serve`` executed by a worker, both scraped and parsed with the
Prometheus text parser; and the one-line error when prometheus-client is missing."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from threadloom.testing.process import (  # noqa: E402
    process_env,
    start_dev,
    start_serve,
    start_worker,
)

KEY = "tl_test_key_0123456789abcdef"
GRAPHS = textwrap.dedent("""
    import itertools
    from typing import TypedDict
    from threadloom.graph import StateGraph, START, END
    from threadloom.types import RetryPolicy

    CALLS = itertools.count(1)

    class S(TypedDict):
        n: int

    def wobbly(state):
        if next(CALLS) % 2:  # every run's first attempt fails, its second succeeds
            raise ConnectionError("refused")
        return {"n": state["n"] * 2}

    def make():
        b = StateGraph(S)
        b.add_node("wobbly", wobbly,
                   retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001,
                                            jitter=False))
        b.add_edge(START, "wobbly")
        b.add_edge("wobbly", END)
        return b
""")
_METRICS_URL = re.compile(r"^metrics: (http://\S+)$", re.M)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def metrics_url(worker) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = _METRICS_URL.search(worker.stdout())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(worker.output())


def test_a_worker_and_the_api_serve_metrics_of_a_scripted_load(tmp_path: Path) -> None:
    (tmp_path / "my_graphs.py").write_text(GRAPHS)
    config = tmp_path / "threadloom.toml"
    config.write_text('db = "sqlite:///./app.db"\n[graphs]\ndoubler = "my_graphs:make"\n')
    env = {"THREADLOOM_API_KEY": KEY}
    with start_worker("sqlite:///./app.db", config=config, env=env, cwd=tmp_path,
                      extra=["--metrics-port", "0"]) as worker, \
            start_serve("sqlite:///./app.db", config=config, env=env, cwd=tmp_path) as api:
        url = metrics_url(worker)
        assert url.startswith("http://127.0.0.1:")
        for n in (1, 2):
            status, out = api.request("POST", f"/threads/w-{n}/runs/wait", {
                "assistant_id": "doubler", "input": {"n": n}, "if_not_exists": "create"})
            assert (status, out) == (200, {"n": 2 * n}), api.output() + worker.output()
        done = scrape(url)
        served = scrape(f"{api.url}/metrics")  # no key
        assert api.stop() == 0 and worker.stop() == 0, api.output() + worker.output()

    def at(samples, name, **labels):  # type: ignore[no-untyped-def]
        return samples.get((name, frozenset(labels.items())), 0.0)

    # a fresh worker process: its counters are exactly this load
    assert at(done, "threadloom_runs_total", graph="doubler", status="succeeded") == 2
    assert at(done, "threadloom_retries_total", graph="doubler", node="wobbly") == 2
    assert at(done, "threadloom_node_duration_seconds_count", graph="doubler",
              node="wobbly") == 2
    assert at(done, "threadloom_run_duration_seconds_count", graph="doubler") == 2
    assert at(done, "threadloom_queue_wait_seconds_count") == 2
    assert at(done, "threadloom_checkpoint_commits_total") >= 4
    assert at(done, "threadloom_checkpoint_bytes_total") > 0
    assert at(done, "threadloom_lease_takeovers_total") == 0
    # the API's process runs nothing; it counts requests and reads the queue
    assert at(served, "threadloom_runs_total", graph="doubler", status="succeeded") == 0
    assert at(served, "threadloom_http_request_duration_seconds_count",
              route="/threads/{thread_id}/runs/wait", method="POST", status="200") == 2
    assert at(served, "threadloom_queue_depth") == 0
    assert at(served, "threadloom_workers_alive") == 1


def test_metrics_port_without_prometheus_client_is_one_line_and_exit_1(tmp_path: Path
                                                                        ) -> None:
    shim = tmp_path / "shim" / "prometheus_client"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    env = process_env({"PYTHONPATH": str(tmp_path / "shim")})
    done = subprocess.run(
        [sys.executable, "-m", "threadloom", "worker", "--db", f"sqlite:///{tmp_path}/a.db",
         "--metrics-port", "0"], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "threadloom: error: --metrics-port needs prometheus-client: pip install "
        "'threadloom[metrics]' (and $THREADLOOM_METRICS not set to 0)")


def test_dev_serves_the_worker_and_api_metrics_on_the_api(tmp_path: Path) -> None:
    with start_dev(f"sqlite:///{tmp_path}/dev.db", cwd=tmp_path,
                   env={"THREADLOOM_API_KEY": KEY}) as dev:
        status, out = dev.request("POST", "/threads/t-1/runs/wait", {
            "assistant_id": "seed_loop", "input": {"step": 0}, "if_not_exists": "create"})
        assert (status, out) == (200, {"step": 3, "done": True}), dev.output()
        samples = scrape(f"{dev.url}/metrics")
        assert dev.stop() == 0, dev.output()
    runs = ("threadloom_runs_total", frozenset({"graph": "seed_loop", "status": "succeeded"}
                                              .items()))
    assert samples[runs] == 1
    assert samples[("threadloom_queue_wait_seconds_count", frozenset())] == 1
    assert samples[("threadloom_workers_alive", frozenset())] == 1
    assert samples[("threadloom_queue_depth", frozenset())] == 0
