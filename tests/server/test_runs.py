"""Runs over HTTP, driven by the official ``langgraph-sdk`` client against real server
processes that run a worker (issue 12 items 2, 3 and 6): create, wait, stream (values, updates,
custom, debug), join, get, list, cancel, delete, ``command`` resume, per-run breakpoints,
``if_not_exists``, every multitask strategy, SSE resumption after ``Last-Event-ID``, and a
stream served by a second API process that runs no worker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import API_KEY, Server, database, redis_env, start_server, stop_server
from langgraph_sdk.errors import ConflictError, NotFoundError


@pytest.fixture(scope="module", params=[
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.slow),
    pytest.param("sqlite+redis", marks=pytest.mark.slow),
    pytest.param("postgres+redis", marks=pytest.mark.slow),
])
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[Server, Server]]:
    """Two API processes on one database: the first runs a worker, the second does not.
    ``+redis``: both carry their signals over Redis (``--redis``), which is what fans a run's
    events out to the second process."""
    db, _, redis = request.param.partition("+")
    env = redis_env() if redis else {}
    with database(db, "tl-runs") as (db_url, workdir):
        main = start_server(db_url, API_KEY, workdir, factory="_worker_app:create", env=env)
        try:
            api_only = start_server(db_url, API_KEY, workdir, factory="_worker_app:create",
                                    env={**env, "THREADLOOM_TEST_WORKER": "0"})
        except BaseException:
            stop_server(main)
            raise
        try:
            yield main, api_only
        finally:
            stop_server(api_only)
            stop_server(main)


@pytest.fixture
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture
def client(server: Server) -> Any:
    return server.sdk()


def new_thread(client: Any) -> str:
    return str(client.threads.create()["thread_id"])


def wait_status(client: Any, thread_id: str, run_id: str, *statuses: str,
                timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.runs.get(thread_id, run_id)
        if run["status"] in statuses:
            return dict(run)
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} stayed {run['status']}")
        time.sleep(0.02)


def test_wait_runs_the_seed_loop_on_a_thread_it_creates(client):
    thread_id = f"t-{uuid.uuid4().hex[:8]}"
    out = client.runs.wait(thread_id, "seed_loop", input={"step": 0, "done": False},
                           if_not_exists="create")
    assert out == {"step": 3, "done": True}
    thread = client.threads.get(thread_id)
    assert thread["metadata"]["graph_id"] == "seed_loop"
    assert thread["status"] == "idle"


def test_a_run_on_an_unknown_thread_is_404_unless_created(client):
    with pytest.raises(NotFoundError):
        client.runs.create(f"t-{uuid.uuid4().hex[:8]}", "seed_loop", input={"step": 0})
    with pytest.raises(NotFoundError):
        client.runs.create(new_thread(client), "no_such_graph", input={})


def test_a_background_run_can_be_joined_got_and_listed(client):
    thread_id = new_thread(client)
    created: list[Any] = []
    run = client.runs.create(thread_id, "seed_loop", input={"step": 0, "done": False},
                             metadata={"owner": "test"}, on_run_created=created.append)
    assert run["status"] in ("pending", "running", "success")
    assert created and created[0]["run_id"] == run["run_id"]
    assert client.runs.join(thread_id, run["run_id"]) == {"step": 3, "done": True}
    got = client.runs.get(thread_id, run["run_id"])
    assert got["status"] == "success"
    assert got["metadata"] == {"owner": "test"}
    assert got["kwargs"]["input"] == {"step": 0, "done": False}
    assert got["multitask_strategy"] == "enqueue"
    listed = client.runs.list(thread_id)
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    assert client.runs.list(thread_id, status="success")[0]["run_id"] == run["run_id"]
    assert client.runs.list(thread_id, status="error") == []


def test_stream_sends_every_requested_mode_with_event_ids(client):
    thread_id = new_thread(client)
    parts = list(client.runs.stream(
        thread_id, "ticker", input={"ticks": [], "n": 2, "delay": 0},
        stream_mode=["values", "updates", "custom", "debug"]))
    events = [p.event for p in parts]
    assert events[0] == "metadata"
    assert parts[0].data["attempt"] == 1
    assert {"values", "updates", "custom", "debug"} <= set(events)
    assert "end" not in events
    assert [p.data for p in parts if p.event == "custom"] == [{"tick": 0}, {"tick": 1}]
    assert [p.data for p in parts if p.event == "updates"] == [
        {"tick": {"ticks": [0]}}, {"tick": {"ticks": [1]}}]
    assert [p.data for p in parts if p.event == "values"][-1]["ticks"] == [0, 1]
    ids = [int(p.id) for p in parts]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_stream_sends_only_the_requested_modes(client):
    parts = list(client.runs.stream(None, "ticker", input={"ticks": [], "n": 2, "delay": 0},
                                    stream_mode=["updates"]))
    assert {p.event for p in parts} == {"metadata", "updates"}


def test_stream_defaults_to_values(client):
    parts = list(client.runs.stream(None, "seed_loop", input={"step": 0, "done": False}))
    assert {p.event for p in parts} == {"metadata", "values"}
    assert parts[-1].data == {"step": 3, "done": True}


def test_a_failed_run_answers_its_error(client):
    thread_id = new_thread(client)
    out = client.runs.wait(thread_id, "seed_chat", input={"messages": []}, raise_error=False)
    assert out["__error__"]["error"] == "IndexError"
    [run] = client.runs.list(thread_id)
    assert run["status"] == "error"


def test_an_interrupt_is_answered_then_resumed_with_a_command(client):
    thread_id = new_thread(client)
    first = client.runs.wait(thread_id, "review", input={"draft": "essay", "approved": False})
    [pending] = first["__interrupt__"]
    assert pending["value"] == {"question": "approve?", "draft": "draft of essay"}
    assert client.threads.get(thread_id)["status"] == "interrupted"
    out = client.runs.wait(thread_id, "review", command={"resume": "yes"})
    assert out == {"draft": "draft of essay", "approved": True}


def test_interrupt_before_per_run_pauses_before_the_node(client):
    thread_id = new_thread(client)
    client.runs.wait(thread_id, "review", input={"draft": "x", "approved": False},
                     interrupt_before=["review"])
    state = client.threads.get_state(thread_id)
    assert state["next"] == ["review"]
    [run] = client.runs.list(thread_id)
    assert run["status"] == "interrupted"


def test_cancel_stops_a_long_run(client):
    thread_id = new_thread(client)
    run = client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 1000, "delay": 0.05})
    wait_status(client, thread_id, run["run_id"], "running")
    client.runs.cancel(thread_id, run["run_id"], wait=True)
    stopped = client.runs.get(thread_id, run["run_id"])
    assert stopped["status"] == "interrupted"
    ticks = client.threads.get_state(thread_id)["values"]["ticks"]
    assert 0 < len(ticks) < 1000


def test_delete_removes_a_finished_run_keeps_the_thread_and_refuses_an_active_one(client):
    thread_id = new_thread(client)
    active = client.runs.create(thread_id, "ticker",
                                input={"ticks": [], "n": 1000, "delay": 0.05})
    wait_status(client, thread_id, active["run_id"], "running")
    with pytest.raises(ConflictError):
        client.runs.delete(thread_id, active["run_id"])
    client.runs.cancel(thread_id, active["run_id"], wait=True)
    done = client.runs.create(thread_id, "ticker", input={"n": 2, "delay": 0})
    client.runs.join(thread_id, done["run_id"])
    state = client.threads.get_state(thread_id)["values"]
    client.runs.delete(thread_id, done["run_id"])
    with pytest.raises(NotFoundError):
        client.runs.get(thread_id, done["run_id"])
    with pytest.raises(NotFoundError):
        client.runs.delete(thread_id, done["run_id"])
    with pytest.raises(NotFoundError):
        client.runs.delete(new_thread(client), active["run_id"])  # another thread's run
    assert [r["run_id"] for r in client.runs.list(thread_id)] == [active["run_id"]]
    assert client.threads.get_state(thread_id)["values"] == state  # checkpoints stay


def test_multitask_reject_answers_409(client):
    thread_id = new_thread(client)
    run = client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 1000, "delay": 0.05})
    with pytest.raises(ConflictError):
        client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 1},
                           multitask_strategy="reject")
    client.runs.cancel(thread_id, run["run_id"], wait=True)


def test_multitask_enqueue_runs_after_the_active_run(client):
    thread_id = new_thread(client)
    first = client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 3, "delay": 0.05})
    second = client.runs.create(thread_id, "ticker", input={"n": 5},
                                multitask_strategy="enqueue")
    out = client.runs.join(thread_id, second["run_id"])
    assert out["ticks"] == [0, 1, 2, 3, 4]
    assert client.runs.get(thread_id, first["run_id"])["status"] == "success"


def test_multitask_interrupt_cancels_the_active_run(client):
    thread_id = new_thread(client)
    first = client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 1000,
                                                           "delay": 0.05})
    wait_status(client, thread_id, first["run_id"], "running")
    second = client.runs.create(thread_id, "ticker", input={"n": 0, "delay": 0},
                                multitask_strategy="interrupt")
    client.runs.join(thread_id, second["run_id"])
    assert client.runs.get(thread_id, first["run_id"])["status"] == "interrupted"
    assert client.runs.get(thread_id, second["run_id"])["status"] == "success"


def test_multitask_rollback_deletes_the_active_run(client):
    thread_id = new_thread(client)
    first = client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 1000,
                                                           "delay": 0.05})
    wait_status(client, thread_id, first["run_id"], "running")
    second = client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 2, "delay": 0},
                                multitask_strategy="rollback")
    out = client.runs.join(thread_id, second["run_id"])
    assert out["ticks"] == [0, 1]  # nothing the rolled-back run did is left
    with pytest.raises(NotFoundError):
        client.runs.get(thread_id, first["run_id"])


def test_join_stream_resumes_after_last_event_id(client):
    thread_id = new_thread(client)
    run = client.runs.create(thread_id, "ticker", input={"ticks": [], "n": 3, "delay": 0},
                             stream_mode=["values", "custom"], stream_resumable=True)
    client.runs.join(thread_id, run["run_id"])
    everything = list(client.runs.join_stream(thread_id, run["run_id"]))
    assert everything[0].event == "metadata"
    middle = everything[len(everything) // 2]
    rest = list(client.runs.join_stream(thread_id, run["run_id"], last_event_id=middle.id))
    assert [(p.event, p.data, p.id) for p in rest] == [
        (p.event, p.data, p.id) for p in everything[len(everything) // 2 + 1:]]
    customs = list(client.runs.join_stream(thread_id, run["run_id"], stream_mode="custom"))
    assert {p.event for p in customs} == {"metadata", "custom"}


def test_a_second_api_process_serves_the_stream_of_a_run_executing_elsewhere(servers):
    main, api_only = servers
    thread_id = new_thread(main.sdk())
    run = main.sdk().runs.create(thread_id, "ticker",
                                 input={"ticks": [], "n": 3, "delay": 0.1},
                                 stream_mode=["custom"])
    parts = list(api_only.sdk().runs.join_stream(thread_id, run["run_id"]))
    assert [p.data for p in parts if p.event == "custom"] == [
        {"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert api_only.sdk().runs.join(thread_id, run["run_id"])["ticks"] == [0, 1, 2]


def test_creation_headers_name_the_run(server):
    with server.http() as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        created = http.post(f"/threads/{thread_id}/runs",
                            json={"assistant_id": "seed_loop",
                                  "input": {"step": 0, "done": False}})
        assert created.status_code == 200
        run_id = created.json()["run_id"]
        assert created.headers["content-location"] == f"/threads/{thread_id}/runs/{run_id}"
        waited = http.post(f"/threads/{thread_id}/runs/wait",
                           json={"assistant_id": "seed_loop",
                                 "input": {"step": 0, "done": False}})
        assert waited.headers["location"].endswith("/join")
        assert waited.headers["location"].startswith(f"/threads/{thread_id}/runs/")
        with http.stream("POST", f"/threads/{thread_id}/runs/stream",
                         json={"assistant_id": "seed_loop",
                               "input": {"step": 0, "done": False}}) as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            assert streamed.headers["location"].endswith("/stream")
            body = streamed.read().decode()
        assert body.startswith("event: metadata\n")
        assert "\nid: 1\n" in body
    # only the streamed run asks its worker for its events at once
    store = server.open_store()
    runs = store.list_runs(thread_id=thread_id, limit=10)
    streamed_flags = sorted(
        json.loads(store.get_queued("default", r.run_id).payload)["streamed"]  # type: ignore[union-attr]
        for r in runs)
    assert streamed_flags == [False, False, True]


def test_a_bad_stream_mode_or_breakpoint_is_422(server):
    with server.http() as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        bad_mode = http.post(f"/threads/{thread_id}/runs",
                             json={"assistant_id": "seed_loop", "stream_mode": "messages"})
        assert bad_mode.status_code == 422 and bad_mode.json()["code"] == "invalid_request"
        bad_node = http.post(f"/threads/{thread_id}/runs",
                             json={"assistant_id": "seed_loop", "interrupt_before": ["nope"]})
        assert bad_node.status_code == 422


def test_a_caller_chosen_run_id_is_the_durable_run_id(client):
    thread_id = new_thread(client)
    run_id = f"order-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=client.http.client.base_url,
                      headers={"X-API-Key": API_KEY}) as http:
        made = http.post(f"/threads/{thread_id}/runs",
                         json={"assistant_id": "seed_loop", "run_id": run_id,
                               "input": {"step": 0, "done": False}})
        assert made.json()["run_id"] == run_id
        again = http.post(f"/threads/{thread_id}/runs",
                          json={"assistant_id": "seed_loop", "run_id": run_id,
                                "input": {"step": 0, "done": False}})
        assert again.status_code == 409
    assert client.runs.join(thread_id, run_id) == {"step": 3, "done": True}


def test_a_stream_with_on_disconnect_cancel_cancels_the_run_when_the_client_leaves(
        server, client):
    thread_id = new_thread(client)
    with server.http() as http, http.stream(
            "POST", f"/threads/{thread_id}/runs/stream",
            json={"assistant_id": "ticker", "on_disconnect": "cancel",
                  "input": {"ticks": [], "n": 1000, "delay": 0.05}}) as streamed:
        run_id = streamed.headers["content-location"].rsplit("/", 1)[-1]
        next(streamed.iter_lines())  # the stream is open; then the client goes away
    assert wait_status(client, thread_id, run_id, "interrupted")["status"] == "interrupted"


def test_runs_of_another_namespace_are_404_and_a_viewer_cannot_create(server, client):
    from threadloom.server.auth import create_key

    thread_id = new_thread(client)
    run = client.runs.create(thread_id, "seed_loop", input={"step": 0, "done": False})
    client.runs.join(thread_id, run["run_id"])
    _, other = create_key(server.open_store(), f"tenant-{uuid.uuid4().hex[:8]}", "admin")
    stranger = server.sdk(other)
    with pytest.raises(NotFoundError):
        stranger.runs.get(thread_id, run["run_id"])
    with pytest.raises(NotFoundError):
        stranger.runs.list(thread_id)
    # the same thread id in their namespace is a thread of their own, not this one
    theirs = stranger.runs.wait(thread_id, "seed_loop", input={"step": 1, "done": False},
                                if_not_exists="create")
    assert theirs == {"step": 3, "done": True}
    assert [r["run_id"] for r in stranger.runs.list(thread_id)] != [run["run_id"]]
    assert [r["run_id"] for r in client.runs.list(thread_id)] == [run["run_id"]]
    _, viewer_key = create_key(server.open_store(), "default", "viewer")
    viewer = server.sdk(viewer_key)
    assert viewer.runs.get(thread_id, run["run_id"])["status"] == "success"
    with httpx.Client(base_url=server.url, headers={"X-API-Key": viewer_key}) as http:
        refused = http.post(f"/threads/{thread_id}/runs", json={"assistant_id": "seed_loop"})
        assert refused.status_code == 403
