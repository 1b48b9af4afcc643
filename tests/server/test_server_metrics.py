"""``GET /metrics`` (issue 14): after a scripted load through the in-process app and a worker,
the exposition parses with Prometheus' text parser and counts what was run: runs by graph and
status, node durations, retries, commits, queue wait, queue depth, workers alive and HTTP
latency by route template (the fast lane's answers included). The library's metrics live in
the process-wide default registry, so their checks are deltas."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402
from graphs import LoopState, seed_loop  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from threadloom.checkpoint.queue import RuntimeStore  # noqa: E402
from threadloom.graph import END, StateGraph  # noqa: E402
from threadloom.server import Settings, create_app  # noqa: E402
from threadloom.server.auth import ensure_key  # noqa: E402
from threadloom.types import RetryPolicy  # noqa: E402
from threadloom.worker import Worker  # noqa: E402

CALLS = itertools.count(1)


def wobbly(state: LoopState) -> dict[str, Any]:
    """Fails every odd call: with two attempts, each run fails once, then succeeds."""
    if next(CALLS) % 2:
        raise ConnectionError("refused")
    return {"done": True}


def retrying() -> StateGraph:
    builder = StateGraph(LoopState)
    builder.add_node("wobbly", wobbly,
                     retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001,
                                              jitter=False))
    builder.set_entry_point("wobbly")
    builder.add_edge("wobbly", END)
    return builder


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> tuple[dict[str, Any], Samples]:
    """``GET /metrics`` without a key: the families by name and every sample's value."""
    response = client.get("/metrics", headers={"X-API-Key": ""})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in families.values() for s in f.samples}
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def loaded(store: RuntimeStore, api_key: str) -> Iterator[TestClient]:
    ensure_key(store, api_key)
    graphs = {"m_loop": seed_loop().compile(checkpointer=store, name="m_loop"),
              "m_retry": retrying().compile(checkpointer=store, name="m_retry")}
    app = create_app(store, graphs, Settings(worker_stale_after=None))
    worker = Worker(store, graphs, concurrency=2, heartbeat=0.5, run_lease=3.0, poll=0.05)
    worker.start()
    try:
        with TestClient(app, headers={"X-API-Key": api_key}) as client:
            yield client
    finally:
        worker.stop()


def test_metrics_count_a_scripted_load(loaded: TestClient) -> None:
    client = loaded
    _, before = scrape(client)
    thread_ids = []
    for _ in range(3):  # the fast lane answers these
        thread = client.post("/threads", json={}).json()["thread_id"]
        thread_ids.append(thread)
        done = client.post(f"/threads/{thread}/runs/wait",
                           json={"assistant_id": "m_loop", "input": {"step": 0, "done": False}})
        assert done.status_code == 200, done.text
        assert done.json()["step"] == 3
    for _ in range(2):
        done = client.post("/runs/wait", json={"assistant_id": "m_retry",
                                               "input": {"step": 0, "done": False}})
        assert done.status_code == 200, done.text
        assert done.json()["done"] is True
    for thread in thread_ids:
        assert client.get(f"/threads/{thread}").status_code == 200
    assert client.get("/threads/no-such-thread").status_code == 404

    families, after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("threadloom_runs_total", graph="m_loop", status="succeeded") == 3
    assert delta("threadloom_runs_total", graph="m_retry", status="succeeded") == 2
    assert delta("threadloom_run_duration_seconds_count", graph="m_loop") == 3
    # seed loop: increment and check three times each per run
    assert delta("threadloom_node_duration_seconds_count", graph="m_loop",
                 node="increment") == 9
    assert delta("threadloom_node_duration_seconds_count", graph="m_loop", node="check") == 9
    assert delta("threadloom_node_duration_seconds_count", graph="m_retry",
                 node="wobbly") == 2
    assert delta("threadloom_retries_total", graph="m_retry", node="wobbly") == 2
    assert delta("threadloom_retries_total", graph="m_loop", node="check") == 0
    assert delta("threadloom_checkpoint_commits_total") >= 5
    assert delta("threadloom_checkpoint_bytes_total") > 0
    assert delta("threadloom_queue_wait_seconds_count") == 5

    assert families["threadloom_queue_depth"].type == "gauge"
    assert value(after, "threadloom_queue_depth") == 0
    assert families["threadloom_workers_alive"].type == "gauge"
    assert value(after, "threadloom_workers_alive") == 1
    assert families["threadloom_lease_takeovers"].type == "counter"

    http = "threadloom_http_request_duration_seconds_count"
    assert families["threadloom_http_request_duration_seconds"].type == "histogram"
    assert value(after, http, route="/threads/{thread_id}/runs/wait", method="POST",
                 status="200") == 3
    assert value(after, http, route="/runs/wait", method="POST", status="200") == 2
    assert value(after, http, route="/threads", method="POST", status="200") == 3
    assert value(after, http, route="/threads/{thread_id}", method="GET", status="200") == 3
    assert value(after, http, route="/threads/{thread_id}", method="GET", status="404") == 1
    assert value(after, http, route="/metrics", method="GET", status="200") == 1
    routes = {dict(labels)["route"] for name, labels in after if name == http}
    assert not any(thread in route for thread in thread_ids for route in routes)


def test_unknown_paths_and_methods_are_one_series_each(loaded: TestClient) -> None:
    for path in ("/nowhere/1", "/nowhere/2"):
        assert loaded.get(path).status_code == 404
    for method in ("BREW", "WHEN"):
        loaded.request(method, "/ok")
    _, samples = scrape(loaded)
    assert value(samples, "threadloom_http_request_duration_seconds_count",
                 route="unmatched", method="GET", status="404") == 2
    other = [labels for name, labels in samples
             if name == "threadloom_http_request_duration_seconds_count"
             and dict(labels)["method"] not in ("GET", "POST")]
    assert other and all(dict(labels)["method"] == "other" for labels in other)
    assert sum(samples[("threadloom_http_request_duration_seconds_count", labels)]
               for labels in other) == 2


def test_two_apps_in_one_process_keep_their_own_http_metrics(store: RuntimeStore,
                                                            api_key: str) -> None:
    ensure_key(store, api_key)
    graphs = {"m_loop": seed_loop().compile(checkpointer=store, name="m_loop")}
    first = create_app(store, graphs)
    second = create_app(store, graphs)  # no "Duplicated timeseries"
    with TestClient(first) as one, TestClient(second) as two:
        one.get("/ok")
        one.get("/ok")
        two.get("/ok")
        _, mine = scrape(one)
        _, theirs = scrape(two)
    ok = {"route": "/ok", "method": "GET", "status": "200"}
    assert value(mine, "threadloom_http_request_duration_seconds_count", **ok) == 2
    assert value(theirs, "threadloom_http_request_duration_seconds_count", **ok) == 1
    assert value(mine, "threadloom_queue_depth") == 0


def test_a_server_process_serves_queue_gauges_and_http_latency(server: Any) -> None:
    """A real server (SQLite; Postgres under ``slow``) with no worker: a queued run shows in
    the queue depth, nobody is alive, and the request is counted under its template."""

    def scraped() -> Samples:
        with server.http(api_key="") as anonymous:
            response = anonymous.get("/metrics")
        assert response.status_code == 200, response.text
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(response.text) for s in f.samples}

    before = scraped()
    with server.http() as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        created = http.post(f"/threads/{thread_id}/runs",
                            json={"assistant_id": "seed_loop", "input": {"step": 0}})
        assert created.status_code == 200, created.text
    after = scraped()
    assert value(after, "threadloom_queue_depth") == value(before, "threadloom_queue_depth") + 1
    assert value(after, "threadloom_workers_alive") == 0
    assert value(after, "threadloom_http_request_duration_seconds_count",
                 route="/threads/{thread_id}/runs", method="POST", status="200") == 1
    assert value(after, "threadloom_http_request_duration_seconds_count",
                 route="/metrics", method="GET", status="200") >= 1


def test_metrics_switched_off_answer_why(store: RuntimeStore, api_key: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import threadloom._metrics

    monkeypatch.setattr(threadloom._metrics, "available", lambda: False)
    app = create_app(store, {}, Settings(worker_stale_after=None))
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found" and "threadloom[metrics]" in body["message"]
