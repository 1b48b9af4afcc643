"""``threadloom.client.Client`` against a real server with a worker: every route of the API
(health, assistants, threads, runs), typed errors by status, and the settings taken from
the environment."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from harness import API_KEY, Server

from threadloom.client import (
    BadRequestError,
    Client,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from threadloom.server.auth import create_key

LOOP_IN = {"step": 0, "done": False}
LOOP_OUT = {"step": 3, "done": True}


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, api_key=API_KEY) as opened:
        yield opened


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_health(client: Client) -> None:
    assert client.ok() == {"ok": True}
    assert client.ready()["ok"] is True
    assert client.url.startswith("http://127.0.0.1:")


def test_assistants(client: Client) -> None:
    found = client.assistants.search(limit=100)
    names = {a["graph_id"] for a in found}
    assert {"seed_loop", "seed_chat", "review", "ticker"} <= names
    assert client.assistants.count() == len(found)
    assert client.assistants.count(graph_id="review") == 1
    loop = client.assistants.get("seed_loop")
    assert client.assistants.get(loop["assistant_id"]) == loop
    assert [a["graph_id"] for a in client.assistants.search(graph_id="seed_loop")] == [
        "seed_loop"]
    drawing = client.assistants.get_graph("seed_loop")
    assert {n["id"] for n in drawing["nodes"]} >= {"increment", "check"}
    assert {"source": "increment", "target": "check"} in drawing["edges"]
    schemas = client.assistants.get_schemas("seed_loop")
    assert schemas["graph_id"] == "seed_loop"
    assert set(schemas["state_schema"]["properties"]) == {"step", "done"}  # type: ignore[index]
    assert client.assistants.get_subgraphs("seed_loop") == {}
    assert client.assistants.get_subgraphs("seed_loop", "nothing", recurse=True) == {}
    assert client.assistants.get_versions("seed_loop") == [loop]
    assert client.assistants.set_latest("seed_loop", 1) == loop
    with pytest.raises(NotFoundError) as caught:
        client.assistants.get("no_such_graph")
    assert caught.value.status == 404 and caught.value.server_code == "not_found"


def test_thread_lifecycle(client: Client) -> None:
    thread_id = new_id()
    thread = client.threads.create(thread_id=thread_id, metadata={"owner": "ann"},
                                   graph_id="seed_loop")
    assert thread["thread_id"] == thread_id and thread["status"] == "idle"
    assert thread["metadata"] == {"owner": "ann", "graph_id": "seed_loop"}
    with pytest.raises(ConflictError) as caught:
        client.threads.create(thread_id=thread_id)
    assert caught.value.status == 409
    assert client.threads.create(thread_id=thread_id, if_exists="do_nothing") == thread
    updated = client.threads.update(thread_id, metadata={"team": "a"})
    assert updated["metadata"] == {"owner": "ann", "graph_id": "seed_loop", "team": "a"}
    assert client.threads.get(thread_id)["metadata"]["team"] == "a"
    found = client.threads.search(metadata={"owner": "ann", "team": "a"}, limit=100)
    assert [t["thread_id"] for t in found] == [thread_id]
    assert client.threads.count(metadata={"owner": "ann", "team": "a"}) == 1

    written = client.threads.update_state(thread_id, {"step": 2, "done": False},
                                          as_node="check")
    checkpoint_id = written["checkpoint"]["checkpoint_id"]
    assert written["checkpoint_id"] == checkpoint_id
    state = client.threads.get_state(thread_id)
    assert state["values"] == {"step": 2, "done": False}
    assert state["next"] == ["increment"]
    assert client.threads.get_state(thread_id, checkpoint_id)["values"] == state["values"]
    assert client.runs.wait(thread_id, "seed_loop") == LOOP_OUT
    history = client.threads.get_history(thread_id, limit=100)
    assert history[0]["values"] == LOOP_OUT
    assert history[-1]["checkpoint_id"] == checkpoint_id
    assert [h["checkpoint_id"] for h in client.threads.get_history(
        thread_id, checkpoint_id=checkpoint_id)] == [checkpoint_id]
    older = client.threads.get_history(thread_id, before=history[0]["checkpoint_id"], limit=1)
    assert older[0]["checkpoint_id"] == history[1]["checkpoint_id"]
    assert client.threads.get_history(thread_id, metadata={"source": "update"},
                                      limit=100)[0]["checkpoint_id"] == checkpoint_id

    exported = client.threads.export(thread_id)
    assert exported["format"] == "threadloom.thread/1"
    copy = client.threads.copy(thread_id)
    assert copy["thread_id"] != thread_id
    assert client.threads.get_state(copy["thread_id"])["values"] == LOOP_OUT
    assert client.threads.prune([copy["thread_id"]], strategy="keep_latest") == {
        "pruned_count": 1}
    assert client.threads.prune([copy["thread_id"], new_id()]) == {"pruned_count": 1}
    assert client.threads.delete(thread_id) is None
    with pytest.raises(NotFoundError):
        client.threads.get(thread_id)


def test_update_state_of_a_thread_without_a_graph_is_a_bad_request(client: Client) -> None:
    thread_id = client.threads.create()["thread_id"]
    with pytest.raises(BadRequestError) as caught:
        client.threads.update_state(thread_id, {"step": 1})
    assert caught.value.server_code == "thread_has_no_graph"


def test_runs_create_join_get_list_delete(client: Client) -> None:
    thread_id = client.threads.create()["thread_id"]
    run_id = new_id("r")
    run = client.runs.create(thread_id, "seed_loop", input=LOOP_IN, run_id=run_id,
                             metadata={"who": "test"})
    assert run["run_id"] == run_id and run["thread_id"] == thread_id
    assert client.runs.join(thread_id, run_id) == LOOP_OUT
    got = client.runs.get(thread_id, run_id)
    assert got["status"] == "success" and got["metadata"] == {"who": "test"}
    assert got["kwargs"]["input"] == LOOP_IN
    assert [r["run_id"] for r in client.runs.list(thread_id)] == [run_id]
    assert client.runs.list(thread_id, status="error") == []
    assert client.runs.delete(thread_id, run_id) is None
    with pytest.raises(NotFoundError):
        client.runs.get(thread_id, run_id)
    again = client.runs.create(thread_id, "seed_loop", input=LOOP_IN)
    with pytest.raises(ConflictError) as caught:
        client.runs.create(thread_id, "seed_loop", input=LOOP_IN, run_id=again["run_id"])
    assert caught.value.server_code == "run_conflict"
    client.runs.join(thread_id, again["run_id"])


def test_stateless_runs_and_batches(client: Client) -> None:
    assert client.runs.wait(None, "seed_loop", input=LOOP_IN) == LOOP_OUT
    batch = client.runs.create_batch([
        {"assistant_id": "seed_chat", "input": {"messages": ["a"]}, "on_completion": "keep"},
        {"assistant_id": "seed_chat", "input": {"messages": ["b"]}, "on_completion": "keep"},
    ])
    assert len(batch) == 2
    answers = [client.runs.join(r["thread_id"], r["run_id"])["messages"][-1] for r in batch]
    assert answers == ["Bot: I received -> a", "Bot: I received -> b"]


def test_stream_and_join_stream(client: Client) -> None:
    thread_id = new_id()
    parts = list(client.runs.stream(thread_id, "seed_loop", input=LOOP_IN,
                                    stream_mode=["values", "updates"], if_not_exists="create"))
    assert parts[0].event == "metadata"
    run_id = parts[0].data["run_id"]
    assert [int(p.id or 0) for p in parts] == list(range(1, len(parts) + 1))
    assert [p.data for p in parts if p.event == "values"][-1] == LOOP_OUT
    assert {"increment": {"step": 1}} in [p.data for p in parts if p.event == "updates"]
    again = list(client.runs.join_stream(thread_id, run_id))
    assert again == parts
    after = list(client.runs.join_stream(thread_id, run_id, last_event_id=parts[4].id))
    assert after == parts[5:]
    updates = list(client.runs.join_stream(thread_id, run_id, stream_mode="updates"))
    assert {p.event for p in updates} == {"metadata", "updates"}


def test_a_failed_run_streams_an_error_event_and_waits_with_error(client: Client) -> None:
    bad = {"ticks": [], "n": "many", "delay": 0}
    parts = list(client.runs.stream(None, "ticker", input=bad))
    assert parts[-1].event == "error"
    assert parts[-1].data["error"] == "TypeError"
    assert client.runs.wait(None, "ticker", input=bad)["__error__"]["error"] == "TypeError"


def test_interrupt_and_command_resume(client: Client) -> None:
    thread_id = new_id()
    paused = client.runs.wait(thread_id, "review", input={"draft": "x", "approved": False},
                              if_not_exists="create")
    assert paused["__interrupt__"][0]["value"] == {"question": "approve?",
                                                   "draft": "draft of x"}
    assert client.threads.get(thread_id)["status"] == "interrupted"
    done = client.runs.wait(thread_id, "review", command={"resume": "yes"})
    assert done == {"draft": "draft of x", "approved": True}


def test_cancel_and_cancel_many(client: Client) -> None:
    thread_id = client.threads.create()["thread_id"]
    slow = {"ticks": [], "n": 200, "delay": 0.05}
    first = client.runs.create(thread_id, "ticker", input=slow)
    client.runs.cancel(thread_id, first["run_id"], wait=True)
    assert client.runs.get(thread_id, first["run_id"])["status"] == "interrupted"
    again = client.runs.create(thread_id, "ticker", input=slow)
    assert client.runs.cancel(thread_id, again["run_id"]) is None  # 202, no body
    client.runs.join(thread_id, again["run_id"])
    assert client.runs.get(thread_id, again["run_id"])["status"] == "interrupted"
    second = client.runs.create(thread_id, "ticker", input=slow)
    assert client.runs.cancel_many(thread_id=thread_id, run_ids=[second["run_id"]]) is None
    client.runs.join(thread_id, second["run_id"])
    assert client.runs.get(thread_id, second["run_id"])["status"] == "interrupted"


def test_errors_by_status(server: Server, client: Client) -> None:
    with Client(server.url, api_key="tl_not_a_key_0123456789") as stranger:
        with pytest.raises(UnauthorizedError) as caught:
            stranger.threads.search()
        assert caught.value.status == 401 and caught.value.server_code == "unauthorized"
        assert stranger.ok() == {"ok": True}  # no key needed
    _, key = create_key(server.open_store(), "default", "viewer")
    with Client(server.url, api_key=key) as viewer:
        assert viewer.assistants.count() >= 4
        with pytest.raises(ForbiddenError):
            viewer.threads.create()
    with pytest.raises(InvalidRequestError) as invalid:
        client.runs.create(None, "seed_loop", input=LOOP_IN,
                           stream_mode="sideways")  # type: ignore[typeddict-item]
    assert invalid.value.status == 422 and "sideways" in invalid.value.message


def test_settings_come_from_the_environment(server: Server,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLOOM_URL", server.url)
    monkeypatch.setenv("THREADLOOM_API_KEY", API_KEY)
    with Client() as client:
        assert client.url == server.url
        assert client.assistants.count(graph_id="seed_loop") == 1
    monkeypatch.delenv("THREADLOOM_URL")
    with Client() as client:
        assert client.url == "http://127.0.0.1:8000"


def test_an_all_namespace_key_acts_where_the_client_says(server: Server) -> None:
    _, key = create_key(server.open_store(), "*", "operator")
    thread_id = new_id()
    with Client(server.url, api_key=key, namespace="team-a") as team_a, \
            Client(server.url, api_key=key) as default:
        team_a.threads.create(thread_id=thread_id)
        assert team_a.threads.get(thread_id)["thread_id"] == thread_id
        with pytest.raises(NotFoundError):
            default.threads.get(thread_id)


async def test_the_async_client_has_the_same_routes(server: Server) -> None:
    from threadloom.client import AsyncClient

    async with AsyncClient(server.url, api_key=API_KEY) as client:
        assert await client.ok() == {"ok": True}
        assert (await client.assistants.get("seed_loop"))["graph_id"] == "seed_loop"
        thread_id = (await client.threads.create(graph_id="seed_loop"))["thread_id"]
        await client.threads.update_state(thread_id, {"step": 1, "done": False},
                                          as_node="check")
        parts = [p async for p in client.runs.stream(thread_id, "seed_loop",
                                                     stream_mode="updates")]
        assert [p.event for p in parts] == ["metadata"] + ["updates"] * 4
        run_id = parts[0].data["run_id"]
        assert (await client.runs.get(thread_id, run_id))["status"] == "success"
        assert await client.runs.join(thread_id, run_id) == LOOP_OUT
        assert [p async for p in client.runs.join_stream(thread_id, run_id,
                                                         stream_mode="updates")] == parts
        assert (await client.threads.get_state(thread_id))["values"] == LOOP_OUT
        with pytest.raises(NotFoundError):
            await client.runs.get(thread_id, "no-such-run")
        await client.threads.delete(thread_id)
        assert await client.threads.search(ids=[thread_id]) == []


def test_me_keys_and_audit(server: Server, client: Client) -> None:
    me = client.me()
    assert me["namespace"] == "default" and me["role"] == "admin" and me["key_id"]
    made = client.keys.create("viewer", name="reader")
    assert made["role"] == "viewer" and made["key"] and made["namespace"] == "default"
    listed = client.keys.list()
    [item] = [k for k in listed["keys"] if k["key_id"] == made["key_id"]]
    assert item["name"] == "reader" and item["revoked_at"] is None and "key" not in item
    with Client(server.url, api_key=made["key"]) as reader:
        assert reader.me()["role"] == "viewer"
        with pytest.raises(ForbiddenError):
            reader.keys.create("admin")
    client.keys.revoke(made["key_id"])
    with Client(server.url, api_key=made["key"]) as revoked, pytest.raises(UnauthorizedError):
        revoked.me()
    page = client.audit(limit=50)
    actions = [(e["action"], e["target"]) for e in page["events"]]
    assert ("key.create", made["key_id"]) in actions and ("key.revoke", made["key_id"]) in actions
    assert made["key"] not in str(page)


def test_the_seed_state_manager(client: Client) -> None:
    run_id = f"sm-{uuid.uuid4().hex[:8]}"
    first = {"identifier": "increment", "inputs": {"step": 0, "done": False}}
    created = client.states.create("seed_loop", run_id, [first])
    [state] = created["states"]
    assert state["identifier"] == "increment" and state["run_id"] == run_id
    assert client.states.create("seed_loop", run_id, [first]) == created  # safe to repeat
    with pytest.raises(ConflictError):
        client.states.create("seed_loop", run_id, [{**first, "inputs": {"step": 1}}])
    deadline = time.monotonic() + 30
    while (runs := client.states.runs(run_id_prefix=run_id))["runs"][0]["status"] != "SUCCESS":
        assert time.monotonic() < deadline, runs
        time.sleep(0.05)
    [run] = runs["runs"]
    assert run["graph_name"] == "seed_loop" and run["state_count"] == 6
    states = client.states.of_run(run_id, limit=4)
    assert states["count"] == 4 and states["next_cursor"]
    rest = client.states.of_run(run_id, cursor=states["next_cursor"])
    ids = [s["id"] for s in states["states"] + rest["states"]]
    assert len(set(ids)) == 6 and state["state_id"] in ids
    listed = client.states.list(run_id_prefix=run_id, status="SUCCESS")
    assert listed["run_ids"] == [run_id] and listed["count"] == 6
    metrics = client.states.run_metrics(run_id)
    assert metrics["executions"] == 6 and metrics["states_by_status"] == {"SUCCESS": 6}
    checkpoints = client.states.run_checkpoints(run_id)
    assert [c["step"] for c in checkpoints["checkpoints"]] == sorted(
        c["step"] for c in checkpoints["checkpoints"])
    assert checkpoints["checkpoints"][-1]["values"]["done"] is True
    with pytest.raises(NotFoundError):
        client.states.run_metrics("no-such-run")
    # cancelling a finished run changes nothing; only a failed or cancelled one is retried
    assert client.states.cancel_run(run_id)["status"] == "SUCCESS"
    with pytest.raises(ConflictError):
        client.states.retry_run(run_id)
