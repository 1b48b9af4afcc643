# ruff: noqa: E501  (seed 001's curl examples are quoted verbatim)
"""Seed 001's state-manager routes (issue 13 item 2): create states, states of a namespace
and of a run, runs, cancel, retry, metrics and checkpoints; the seed's status names, keyset
cursors and every filter; namespaces and roles.

In-process on SQLite (with a worker in the test process), and against real server
processes on SQLite and Postgres (``slow``), where the seed's own curl examples run."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _app import SETTINGS
from fastapi.testclient import TestClient
from graphs import FLAKY, compiled, seed001_graphs
from harness import (
    API_KEY,
    Server,
    database,
    served,
    unavailable,
)

from threadloom._ids import execution_id
from threadloom.checkpoint import open_store
from threadloom.checkpoint.base import Attempt, Commit
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server import create_app
from threadloom.server.auth import ALL_NAMESPACES, create_key, ensure_key
from threadloom.testing.conformance import execution, run
from threadloom.worker import Worker

NS = "/v0/namespace/default"
LOOP = {"identifier": "increment", "inputs": {"step": 0, "done": False}}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest) -> Iterator[RuntimeStore]:
    """A fresh store: SQLite in a folder of its own, or a fresh Postgres schema (``slow``)."""
    with database(request.param, "tl-sm") as (url, _):
        opened = open_store(url)
        assert isinstance(opened, RuntimeStore)
        try:
            yield opened
        finally:
            opened.close()


def _app(store: RuntimeStore) -> Any:
    ensure_key(store, API_KEY)
    graphs = {**compiled(store), **seed001_graphs(store)}
    return create_app(store, graphs, SETTINGS), graphs


@pytest.fixture
def idle(store: RuntimeStore) -> Iterator[TestClient]:
    """The app over ``store`` with no worker: created runs stay queued."""
    app, _ = _app(store)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client


@pytest.fixture
def api(store: RuntimeStore) -> Iterator[TestClient]:
    """The app over ``store`` with a worker in this process."""
    app, graphs = _app(store)
    worker = Worker(store, graphs, concurrency=2, heartbeat=0.5, run_lease=3.0, poll=0.05)
    worker.start()
    try:
        with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
            yield client
    finally:
        worker.stop(5.0)


def _finished(store: RuntimeStore, run_id: str, namespace: str = "default",
              timeout: float = 30.0) -> str:
    """The engine status of the run once it is no longer queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        record = store.get_run(run_id, namespace=namespace)
        if record is not None and record.status not in ("pending", "running"):
            return record.status
        assert time.monotonic() < deadline, f"run {run_id} still {record and record.status}"
        time.sleep(0.05)


def _create(client: TestClient, run_id: str, *states: dict[str, Any], graph: str = "seed_loop",
            ns: str = NS, **extra: Any) -> Any:
    return client.post(f"{ns}/graph/{graph}/states/create",
                       json={"run_id": run_id, "states": list(states), **extra})


# -- create and read --------------------------------------------------------------------------


def test_created_states_run_and_are_listed(api: TestClient, store: RuntimeStore) -> None:
    created = _create(api, "run-loop-1", LOOP)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["status"] == "CREATED"
    (state,) = body["states"]
    assert state == {
        "state_id": execution_id("run-loop-1", -1, "increment", 0),
        "node_name": "increment", "identifier": "increment", "graph_name": "seed_loop",
        "run_id": "run-loop-1", "inputs": {"step": 0, "done": False},
        "created_at": state["created_at"],
    }  # fmt: skip
    assert _finished(store, "run-loop-1") == "succeeded"
    listed = api.get(f"{NS}/states/run/run-loop-1").json()
    assert (listed["namespace"], listed["run_id"], listed["count"]) == ("default", "run-loop-1", 6)
    states = listed["states"]
    assert [s["identifier"] for s in states] == ["increment", "check"] * 3
    assert {s["status"] for s in states} == {"SUCCESS"}
    first, check = states[0], states[1]
    assert first["id"] == state["state_id"]  # the created state is the one listed
    assert first["inputs"] == {"step": 0, "done": False}
    assert first["outputs"] == {"step": 1}
    assert first["parents"] == {}
    assert check["inputs"] == {"step": 1}  # the state its step started from
    assert check["outputs"] == {"done": False}
    assert check["parents"] == {"increment": first["id"]}
    last = states[-1]
    assert last["parents"] == {"increment": states[4]["id"], "check": states[3]["id"]}
    for s in states:
        assert s["namespace_name"] == "default" and s["graph_name"] == "seed_loop"
        assert s["attempt"] == 1 and s["error"] is None
        assert s["started_at"] and s["ended_at"] and s["created_at"] <= s["updated_at"]
    current = api.get(f"{NS}/states/").json()
    assert current["count"] == 6 and current["run_ids"] == ["run-loop-1"]
    assert [s["id"] for s in current["states"]] == [s["id"] for s in reversed(states)]
    assert current["next_cursor"] is None


def test_create_states_with_several_nodes_and_a_thread(api: TestClient,
                                                       store: RuntimeStore) -> None:
    states = [LOOP, {"identifier": "check", "inputs": {"step": 5}}]
    body = _create(api, "two", *states, thread_id="t-two").json()
    assert [s["state_id"] for s in body["states"]] == [
        execution_id("t-two", -1, "increment", 0), execution_id("t-two", -1, "check", 1)]
    assert [s["inputs"] for s in body["states"]] == [LOOP["inputs"], {"step": 5}]
    assert _finished(store, "two") == "succeeded"
    listed = api.get(f"{NS}/states/run/two").json()["states"]
    ids = {s["id"] for s in listed}
    assert {s["state_id"] for s in body["states"]} <= ids
    assert store.get_run("two", namespace="default").thread_id == "t-two"  # type: ignore[union-attr]
    assert api.get(f"{NS}/runs").json()["runs"][0]["thread_id"] == "t-two"


def test_create_states_is_idempotent_and_conflicts(idle: TestClient,
                                                   store: RuntimeStore) -> None:
    first = _create(idle, "same", LOOP)
    again = _create(idle, "same", LOOP)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert idle.get(f"{NS}/runs").json()["count"] == 1
    other_input = _create(idle, "same", {"identifier": "increment", "inputs": {"step": 2}})
    other_graph = _create(idle, "same", {"identifier": "node1", "inputs": {}},
                          graph="test-graph")
    for answer in (other_input, other_graph):
        assert answer.status_code == 409, answer.text
        assert answer.json()["code"] == "conflict"
    unknown_graph = _create(idle, "new", LOOP, graph="no-such-graph")
    unknown_node = _create(idle, "new", {"identifier": "nope", "inputs": {}})
    for answer in (unknown_graph, unknown_node):
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    assert store.get_run("new", namespace="default") is None
    for bad in ({"run_id": "x", "states": []}, {"run_id": "", "states": [LOOP]},
                {"run_id": "a/b", "states": [LOOP]}, {"states": [LOOP]},
                {"run_id": "x\x00y", "states": [LOOP]}, {"run_id": "x" * 300, "states": [LOOP]}):
        answer = idle.post(f"{NS}/graph/seed_loop/states/create", json=bad)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["code"] == "invalid_request"
    assert idle.get(f"{NS}/runs").json()["count"] == 1


@pytest.mark.parametrize("odd", ["..%2F..%2Fetc", "nul%00here", "x" * 300, "%E2%80%8B%01"])
def test_odd_ids_are_4xx(idle: TestClient, odd: str) -> None:
    paths = [f"{NS}/states/run/{odd}", f"{NS}/runs/{odd}/metrics",
             f"{NS}/runs/{odd}/checkpoints", f"/v0/namespace/{odd}/runs",
             f"{NS}/runs?graph={odd}", f"{NS}/states/?run_id_prefix={odd}"]
    for path in paths:
        answer = idle.get(path)
        assert 400 <= answer.status_code < 500 or (
            answer.status_code == 200 and answer.json()["count"] == 0), (path, answer.text)
        assert "code" in answer.json() or "count" in answer.json()
    for route in ("cancel", "retry"):
        answer = idle.post(f"{NS}/runs/{odd}/{route}")
        assert 400 <= answer.status_code < 500, answer.text
    answer = idle.post(f"/v0/namespace/{odd}/graph/seed_loop/states/create",
                       json={"run_id": "r", "states": [LOOP]})
    assert 400 <= answer.status_code < 500, answer.text


def test_unknown_run_has_no_states(idle: TestClient) -> None:
    answer = idle.get(f"{NS}/states/run/nothing-here")
    assert answer.status_code == 200
    assert answer.json() == {"namespace": "default", "run_id": "nothing-here", "count": 0,
                             "states": [], "next_cursor": None}


# -- runs: cancel, retry, metrics, checkpoints ----------------------------------------------


def test_retry_reruns_a_failed_run_from_its_last_checkpoint(api: TestClient,
                                                            store: RuntimeStore) -> None:
    FLAKY["fail"] = True
    try:
        _create(api, "flaky-1", {"identifier": "prepare", "inputs": {"result": "x"}},
                graph="flaky")
        assert _finished(store, "flaky-1") == "failed"
        (item,) = api.get(f"{NS}/runs", params={"status": "ERRORED"}).json()["runs"]
        assert (item["run_id"], item["status"], item["graph_name"]) == (
            "flaky-1", "ERRORED", "flaky")
        assert item["error"].startswith("ValueError")
        failed = api.get(f"{NS}/states/run/flaky-1", params={"status": "ERRORED"}).json()
        assert [s["identifier"] for s in failed["states"]] == ["shaky"]
        FLAKY["fail"] = False
        retried = api.post(f"{NS}/runs/flaky-1/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] in ("CREATED", "RUNNING", "SUCCESS")
        assert _finished(store, "flaky-1") == "succeeded"
    finally:
        FLAKY["fail"] = True
    states = api.get(f"{NS}/states/run/flaky-1").json()["states"]
    prepared = [s for s in states if s["identifier"] == "prepare"]
    assert len(prepared) == 1  # the step that succeeded did not run again
    again = api.post(f"{NS}/runs/flaky-1/retry")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    metrics = api.get(f"{NS}/runs/flaky-1/metrics").json()
    assert metrics["status"] == "SUCCESS"
    assert metrics["states_by_status"]["SUCCESS"] >= 2
    assert metrics["executions"] == len(states)


def test_cancel_a_queued_run(idle: TestClient, store: RuntimeStore) -> None:
    _create(idle, "to-cancel", LOOP)
    answer = idle.post(f"{NS}/runs/to-cancel/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "CANCELLED"
    assert store.get_run("to-cancel", namespace="default").status == "cancelled"  # type: ignore[union-attr]
    listed = idle.get(f"{NS}/runs", params={"status": "CANCELLED"}).json()
    assert [r["run_id"] for r in listed["runs"]] == ["to-cancel"]
    assert idle.post(f"{NS}/runs/to-cancel/cancel").json()["status"] == "CANCELLED"
    for route in ("cancel", "retry"):
        missing = idle.post(f"{NS}/runs/nope/{route}")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_cancel_a_run_that_waits_for_a_human(api: TestClient, store: RuntimeStore) -> None:
    _create(api, "paused", {"identifier": "write", "inputs": {"draft": "memo"}},
            graph="review")
    assert _finished(store, "paused") == "interrupted"
    waiting = api.get(f"{NS}/states/run/paused", params={"status": "INTERRUPTED"}).json()
    assert [s["identifier"] for s in waiting["states"]] == ["review"]
    answer = api.post(f"{NS}/runs/paused/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "CANCELLED" and answer.json()["ended_at"]
    states = {s["identifier"]: s["status"]
              for s in api.get(f"{NS}/states/run/paused").json()["states"]}
    assert states == {"write": "SUCCESS", "review": "CANCELLED"}
    assert api.post(f"{NS}/runs/paused/retry").status_code == 200  # cancelled: retryable
    assert _finished(store, "paused") == "interrupted"  # it asks the human again


def test_metrics_and_checkpoints_of_a_run(api: TestClient, store: RuntimeStore) -> None:
    _create(api, "measured", LOOP)
    assert _finished(store, "measured") == "succeeded"
    metrics = api.get(f"{NS}/runs/measured/metrics").json()
    assert (metrics["run_id"], metrics["status"], metrics["executions"]) == (
        "measured", "SUCCESS", 6)
    assert metrics["states_by_status"] == {"SUCCESS": 6}
    assert (metrics["attempts"], metrics["retries"]) == (6, 0)
    assert metrics["steps"] == 6 and metrics["duration_ms"] > 0
    assert {n: v["count"] for n, v in metrics["nodes"].items()} == {"check": 3, "increment": 3}
    body = api.get(f"{NS}/runs/measured/checkpoints").json()
    cps = body["checkpoints"]
    assert body["count"] == len(cps) >= 6 and body["next_cursor"] is None
    assert [c["checkpoint_id"] for c in cps] == sorted(c["checkpoint_id"] for c in cps)
    assert cps[-1]["values"] == {"step": 3, "done": True} and cps[-1]["next"] == []
    steps = [c["step"] for c in cps]
    assert steps == sorted(steps)
    assert any(c["writes"] == {"increment": {"step": 1}} for c in cps)
    walked: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"{NS}/runs/measured/checkpoints", params=params).json()
        walked += [c["checkpoint_id"] for c in page["checkpoints"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == [c["checkpoint_id"] for c in cps]
    for route in ("metrics", "checkpoints"):
        assert api.get(f"{NS}/runs/nope/{route}").status_code == 404


# -- lists: statuses, filters, cursors ------------------------------------------------------


def _fill(store: RuntimeStore) -> None:
    """Executions and runs of every status, written directly."""
    timeout = "NodeTimeoutError: node 'a' timed out after 1.0s"
    retry = (Attempt(1, 9.0, 9.5, "ValueError: once"),)
    exs = {
        "t-a": [
            execution("ea1", "job-a", "t-a", node="a", created_at=10.0, status="SUCCEEDED"),
            execution("ea2", "job-a", "t-a", node="b", created_at=11.0, status="FAILED",
                      error=timeout),
            execution("ea3", "job-a", "t-a", node="c", created_at=12.0, status="RUNNING",
                      attempts=retry),
        ],
        "t-b": [
            execution("eb1", "job-b", "t-b", node="a", created_at=13.0, status="RUNNING"),
            execution("eb2", "job-b", "t-b", node="b", created_at=14.0, status="FAILED",
                      error="KeyError: 'x'"),
            execution("eb3", "job-b", "t-b", node="c", created_at=15.0, status="PENDING"),
            execution("eb4", "job-b", "t-b", node="d", created_at=16.0, status="INTERRUPTED"),
            execution("eb5", "job-b", "t-b", node="e", created_at=17.0, status="CANCELLED"),
        ],
    }  # fmt: skip
    runs = {
        "t-a": run("job-a", "t-a", graph="g1", status="failed", created_at=10.0,
                   error="RunTimeoutError: run timed out after 5s"),
        "t-b": run("job-b", "t-b", graph="g2", status="running", created_at=13.0),
        "t-c": run("other-c", "t-c", graph="g1", status="succeeded", created_at=20.0),
    }  # fmt: skip
    store.commit([Commit(t, executions=exs.get(t, []), runs=[r]) for t, r in runs.items()])


def _ids(client: TestClient, path: str, **params: Any) -> list[str]:
    answer = client.get(f"{NS}{path}", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == len(body.get("states", body.get("runs", [])))
    return [item.get("id") or item["run_id"] for item in body.get("states", body.get("runs"))]


def test_status_names_and_filters(idle: TestClient, store: RuntimeStore) -> None:
    _fill(store)
    expected = {
        "SUCCESS": ["ea1"], "TIMEDOUT": ["ea2"], "RETRY_CREATED": ["ea3"], "QUEUED": ["eb1"],
        "ERRORED": ["eb2"], "CREATED": ["eb3"], "INTERRUPTED": ["eb4"], "CANCELLED": ["eb5"],
    }  # fmt: skip
    for status, ids in expected.items():
        assert _ids(idle, "/states/", status=status) == ids, status
    shown = {s["id"]: s["status"] for s in idle.get(f"{NS}/states/").json()["states"]}
    assert shown == {ids[0]: status for status, ids in expected.items()}
    assert _ids(idle, "/states/", run_id_prefix="job-") == [
        "eb5", "eb4", "eb3", "eb2", "eb1", "ea3", "ea2", "ea1"]  # fmt: skip
    assert _ids(idle, "/states/", run_id_prefix="job-a") == ["ea3", "ea2", "ea1"]
    assert _ids(idle, "/states/run/job-b", status="ERRORED") == ["eb2"]
    assert _ids(idle, "/states/run/job-b", run_id_prefix="job-a") == []
    since, until = "1970-01-01T00:00:12Z", "1970-01-01T00:00:15+00:00"
    assert _ids(idle, "/states/", since=since, until=until) == ["eb2", "eb1", "ea3"]
    assert _ids(idle, "/states/run/job-b", since="1970-01-01T00:00:14") == [
        "eb2", "eb3", "eb4", "eb5"]  # fmt: skip
    current = idle.get(f"{NS}/states/", params={"status": "ERRORED"}).json()
    assert current["run_ids"] == ["job-b"]
    assert _ids(idle, "/runs") == ["other-c", "job-b", "job-a"]
    assert _ids(idle, "/runs", status="TIMEDOUT") == ["job-a"]
    assert _ids(idle, "/runs", status="ERRORED") == []
    assert _ids(idle, "/runs", status="RUNNING") == ["job-b"]
    assert _ids(idle, "/runs", status="SUCCESS") == ["other-c"]
    assert _ids(idle, "/runs", graph="g1") == ["other-c", "job-a"]
    assert _ids(idle, "/runs", run_id_prefix="job") == ["job-b", "job-a"]
    assert _ids(idle, "/runs", since="1970-01-01T00:00:13Z") == ["other-c", "job-b"]
    assert _ids(idle, "/runs", until="1970-01-01T00:00:13Z") == ["job-a"]
    item = idle.get(f"{NS}/runs", params={"status": "TIMEDOUT"}).json()["runs"][0]
    assert set(item) == {"run_id", "thread_id", "graph_name", "status", "created_at",
                         "updated_at", "started_at", "ended_at", "duration_ms", "steps",
                         "state_count", "error"}


def test_cursors_walk_every_item_once(idle: TestClient, store: RuntimeStore) -> None:
    _fill(store)

    def walk(path: str, key: str, **params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            body = idle.get(f"{NS}{path}", params=query).json()
            seen += [item[key] for item in body["states" if "states" in body else "runs"]]
            cursor = body["next_cursor"]
            if cursor is None:
                return seen

    assert walk("/states/", "id") == _ids(idle, "/states/")
    assert walk("/states/run/job-b", "id") == ["eb1", "eb2", "eb3", "eb4", "eb5"]
    assert walk("/states/", "id", status="QUEUED") == ["eb1"]
    assert walk("/runs", "run_id") == ["other-c", "job-b", "job-a"]
    assert len(idle.get(f"{NS}/states/", params={"limit": 1000}).json()["states"]) == 8


@pytest.mark.parametrize("params", [
    {"cursor": "not a cursor"}, {"cursor": "W10"}, {"cursor": "WzEsMiwzXQ"},
    {"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"since": "yesterday"},
    {"until": "2024-13-01"}, {"status": "DONE"}, {"status": "success"},
])
def test_bad_list_parameters_are_422(idle: TestClient, params: dict[str, Any]) -> None:
    for path in ("/states/", "/states/run/r", "/runs"):
        answer = idle.get(f"{NS}{path}", params=params)
        assert answer.status_code == 422, (path, params, answer.text)
        assert answer.json()["code"] == "invalid_request"
        assert set(answer.json()) == {"code", "message"}


# -- namespaces and roles -------------------------------------------------------------------


def test_the_same_run_id_in_two_namespaces_is_two_runs(api: TestClient,
                                                       store: RuntimeStore) -> None:
    _, key_a = create_key(store, "tenant-a", "operator")
    _create(api, "shared-id", LOOP)
    in_a = api.post("/v0/namespace/tenant-a/graph/test-graph/states/create",
                    json={"run_id": "shared-id", "states": [{"identifier": "node1",
                                                             "inputs": {}}]},
                    headers={"X-API-Key": key_a})
    assert in_a.status_code == 200, in_a.text
    assert _finished(store, "shared-id") == "succeeded"
    assert _finished(store, "shared-id", namespace="tenant-a") == "succeeded"
    default_states = api.get(f"{NS}/states/run/shared-id").json()["states"]
    a_states = api.get("/v0/namespace/tenant-a/states/run/shared-id",
                       headers={"X-API-Key": key_a}).json()["states"]
    assert {s["graph_name"] for s in default_states} == {"seed_loop"}
    assert {s["graph_name"] for s in a_states} == {"test-graph"}
    assert {s["namespace_name"] for s in a_states} == {"tenant-a"}


def test_a_key_reaches_only_its_namespaces(idle: TestClient, store: RuntimeStore) -> None:
    _fill(store)
    _, key_a = create_key(store, "tenant-a", "admin")
    _, key_all = create_key(store, ALL_NAMESPACES, "viewer")
    as_a = {"X-API-Key": key_a}
    routes = [("get", "/states/"), ("get", "/states/run/job-a"), ("get", "/runs"),
              ("get", "/runs/job-a/metrics"), ("get", "/runs/job-a/checkpoints"),
              ("post", "/runs/job-a/cancel"), ("post", "/runs/job-a/retry"),
              ("post", "/graph/seed_loop/states/create")]
    for method, path in routes:
        kwargs: dict[str, Any] = {"headers": as_a}
        if path.endswith("create"):
            kwargs["json"] = {"run_id": "sneak", "states": [LOOP]}
        there = getattr(idle, method)(f"/v0/namespace/default{path}", **kwargs)
        nowhere = getattr(idle, method)(f"/v0/namespace/nobody{path}", **kwargs)
        assert there.status_code == nowhere.status_code == 404, (path, there.text)
        # nothing tells an existing namespace apart (the message names what was asked)
        assert there.json()["message"].replace("default", "nobody") == nowhere.json()["message"]
        assert there.json()["code"] == "not_found"
    assert store.get_run("sneak", namespace="default") is None
    # a run of a namespace the key does not cover is answered as one of a namespace that
    # does not exist: 404 before the role or the run is looked at
    hidden_run = idle.get("/v0/namespace/default/runs/job-a/metrics", headers=as_a)
    no_run = idle.get("/v0/namespace/default/runs/nope/metrics", headers=as_a)
    assert hidden_run.status_code == no_run.status_code == 404
    assert hidden_run.json() == no_run.json()
    everywhere = {"X-API-Key": key_all}
    assert idle.get(f"{NS}/runs", headers=everywhere).json()["count"] == 3
    assert idle.get("/v0/namespace/tenant-a/runs", headers=everywhere).json()["count"] == 0
    assert idle.get(f"{NS}/runs", headers={"X-API-Key": "tl_wrong"}).status_code == 401
    assert idle.get(f"{NS}/runs", headers={"X-API-Key": ""}).status_code == 401


def test_roles(idle: TestClient, store: RuntimeStore) -> None:
    _fill(store)
    _, viewer = create_key(store, "default", "viewer")
    _, operator = create_key(store, "default", "operator")
    as_viewer = {"X-API-Key": viewer}
    for path in ("/states/", "/states/run/job-a", "/runs", "/runs/job-a/metrics",
                 "/runs/job-a/checkpoints"):
        assert idle.get(f"{NS}{path}", headers=as_viewer).status_code == 200, path
    writes = [("/graph/seed_loop/states/create", {"run_id": "v1", "states": [LOOP]}),
              ("/runs/job-b/cancel", None), ("/runs/job-a/retry", None)]
    for path, body in writes:
        refused = idle.post(f"{NS}{path}", json=body, headers=as_viewer)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden", path
    assert store.get_run("v1", namespace="default") is None
    as_operator = {"X-API-Key": operator}
    assert idle.post(f"{NS}/graph/seed_loop/states/create", json=writes[0][1],
                     headers=as_operator).status_code == 200
    assert idle.post(f"{NS}/runs/v1/cancel", headers=as_operator).status_code == 200
    assert idle.post(f"{NS}/runs/v1/retry", headers=as_operator).status_code == 200


# -- a real server: the seed's curl examples ------------------------------------------------

SEED_CURLS = [
    """curl -X POST "http://localhost:8000/v0/namespace/test-namespace/graph/test-graph/states/create" \\
  -H "X-API-Key: niki" \\
  -H "Content-Type: application/json" \\
  -d '{
    "run_id": "run_1703123456789_abc123def",
    "states": [
      {
        "identifier": "node1",
        "inputs": {"input1": "test_value", "input2": 42}
      }
    ]
  }'""",
    """curl -X GET "http://localhost:8000/v0/namespace/test-namespace/states/" \\
  -H "X-API-Key: niki\"""",
    """curl -X GET "http://localhost:8000/v0/namespace/test-namespace/states/run/run_1703123456789_abc123def" \\
  -H "X-API-Key: niki\"""",
]
"""Seed 001's examples 1-3, verbatim (the key and the host are replaced when run)."""


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def seed_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server process with a worker, serving seed 001's ``test-graph``."""
    with served(request.param, "tl-seed001", factory="_seed_app:create") as running:
        yield running


def _curl(command: str, url: str, key: str) -> Any:
    if shutil.which("bash") is None or shutil.which("curl") is None:
        unavailable("the seed's examples need bash and curl")
    command = command.replace("http://localhost:8000", url).replace("niki", key)
    done = subprocess.run(["bash", "-c", command + " -sS --fail-with-body"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return json.loads(done.stdout)


def test_the_seeds_curl_examples(seed_server: Server) -> None:
    _, key = create_key(seed_server.open_store(), "test-namespace", "operator")
    created = _curl(SEED_CURLS[0], seed_server.url, key)
    (state,) = created["states"]
    assert (created["status"], state["identifier"], state["run_id"], state["inputs"]) == (
        "CREATED", "node1", "run_1703123456789_abc123def", {"input1": "test_value", "input2": 42})
    store = seed_server.open_store()
    assert _finished(store, "run_1703123456789_abc123def", "test-namespace") == "succeeded"
    current = _curl(SEED_CURLS[1], seed_server.url, key)
    assert (current["namespace"], current["count"], current["run_ids"]) == (
        "test-namespace", 2, ["run_1703123456789_abc123def"])
    by_run = _curl(SEED_CURLS[2], seed_server.url, key)
    assert (by_run["run_id"], by_run["count"]) == ("run_1703123456789_abc123def", 2)
    first, second = by_run["states"]
    assert first["id"] == state["state_id"]
    assert (first["node_name"], first["status"], first["inputs"], first["outputs"]) == (
        "process_input", "SUCCESS", {"input1": "test_value", "input2": 42},
        {"result": "test_value:42"})
    assert second["parents"] == {"node1": first["id"]}
    again = _curl(SEED_CURLS[0], seed_server.url, key)
    assert again == created  # the same body: the same states, nothing new
    with seed_server.http() as admin_of_default:  # its key does not cover test-namespace
        hidden = admin_of_default.get(
            "/v0/namespace/test-namespace/states/run/run_1703123456789_abc123def")
    assert hidden.status_code == 404
