"""The threads routes, driven by the official ``langgraph-sdk`` client against a real server
process (SQLite; Postgres under ``-m slow``).

Runs are not created over the API here: a test invokes a registered graph in this process on
the server's database (the thread's state is then exactly what a run would leave), or writes
state with ``update_state``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from harness import Server
from langgraph_sdk import errors as sdk_errors

from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.queue import QueuedRun


def run_loop(server: Server, thread_id: str | None = None) -> str:
    """Seed 000's loop, run to its end on a new thread of the server's database."""
    thread_id = thread_id or f"loop-{uuid.uuid4()}"
    out = server.graphs()["seed_loop"].invoke({"step": 0, "done": False},
                                              {"configurable": {"thread_id": thread_id}})
    assert out == {"step": 3, "done": True}
    return thread_id


def run_review(server: Server) -> str:
    """The review graph, run until its ``interrupt()``, on a new thread."""
    thread_id = f"review-{uuid.uuid4()}"
    out = server.graphs()["review"].invoke({"draft": "memo", "approved": False},
                                           {"configurable": {"thread_id": thread_id}})
    assert "__interrupt__" in out
    return thread_id


def test_create_get_update_delete(server: Server) -> None:
    client = server.sdk()
    thread = client.threads.create(metadata={"user": "ada", "tier": 1})
    uuid.UUID(thread["thread_id"])  # an id is chosen: a UUID
    assert thread["metadata"] == {"user": "ada", "tier": 1}
    assert thread["status"] == "idle"
    assert thread["values"] is None
    assert thread["interrupts"] == {}
    assert client.threads.get(thread["thread_id"]) == thread

    updated = client.threads.update(thread["thread_id"], metadata={"tier": 2, "plan": "pro"})
    assert updated["metadata"] == {"user": "ada", "tier": 2, "plan": "pro"}
    assert updated["updated_at"] >= thread["updated_at"]
    assert updated["created_at"] == thread["created_at"]
    assert client.threads.get(thread["thread_id"])["metadata"] == updated["metadata"]
    assert client.threads.update(thread["thread_id"], metadata={"x": 1},
                                 return_minimal=True) is None

    client.threads.delete(thread["thread_id"])
    with pytest.raises(sdk_errors.NotFoundError):
        client.threads.get(thread["thread_id"])
    with pytest.raises(sdk_errors.NotFoundError):
        client.threads.delete(thread["thread_id"])
    with pytest.raises(sdk_errors.NotFoundError):
        client.threads.update(thread["thread_id"], metadata={"x": 1})


def test_create_with_an_id_that_exists(server: Server) -> None:
    client = server.sdk()
    thread_id = f"named-{uuid.uuid4()}"
    first = client.threads.create(thread_id=thread_id, metadata={"n": 1})
    assert first["thread_id"] == thread_id
    with pytest.raises(sdk_errors.ConflictError):
        client.threads.create(thread_id=thread_id)
    with pytest.raises(sdk_errors.ConflictError):
        client.threads.create(thread_id=thread_id, if_exists="raise")
    again = client.threads.create(thread_id=thread_id, metadata={"n": 2},
                                  if_exists="do_nothing")
    assert again == first  # returned as it is: the metadata is not replaced


def test_a_thread_with_a_finished_run(server: Server) -> None:
    thread_id = run_loop(server)
    client = server.sdk()
    thread = client.threads.get(thread_id)
    assert thread["status"] == "idle"
    assert thread["values"] == {"step": 3, "done": True}
    assert thread["interrupts"] == {}

    state = client.threads.get_state(thread_id)
    assert state["values"] == {"step": 3, "done": True}
    assert state["next"] == []
    assert state["tasks"] == []
    assert state["interrupts"] == []
    assert state["checkpoint"]["thread_id"] == thread_id
    assert state["checkpoint"]["checkpoint_ns"] == ""
    assert state["parent_checkpoint"]["checkpoint_id"] < state["checkpoint"]["checkpoint_id"]
    assert state["metadata"]["source"] == "loop"
    assert state["created_at"]
    assert client.threads.get_state(thread_id, subgraphs=True)["values"] == state["values"]


def test_an_interrupted_thread_shows_its_interrupt(server: Server) -> None:
    thread_id = run_review(server)
    client = server.sdk()
    thread = client.threads.get(thread_id)
    assert thread["status"] == "interrupted"
    assert thread["values"] == {"draft": "draft of memo", "approved": False}
    [(task_id, interrupts)] = thread["interrupts"].items()
    assert interrupts == [{"value": {"question": "approve?", "draft": "draft of memo"},
                           "id": interrupts[0]["id"]}]

    state = client.threads.get_state(thread_id)
    assert state["next"] == ["review"]
    [task] = state["tasks"]
    assert task["id"] == task_id
    assert task["name"] == "review"
    assert task["interrupts"] == interrupts
    assert state["interrupts"] == interrupts


def test_state_at_a_checkpoint_and_history(server: Server) -> None:
    thread_id = run_loop(server)
    client = server.sdk()
    history = client.threads.get_history(thread_id, limit=100)
    steps = [s["metadata"]["step"] for s in history]
    assert steps == sorted(steps, reverse=True) and len(history) == 7  # input + 6 steps
    ids = [s["checkpoint"]["checkpoint_id"] for s in history]
    assert ids == sorted(ids, reverse=True)
    assert history[0] == client.threads.get_state(thread_id)

    older = history[3]
    cid = older["checkpoint"]["checkpoint_id"]
    assert client.threads.get_state(thread_id, checkpoint_id=cid) == older
    assert client.threads.get_state(thread_id, checkpoint=older["checkpoint"]) == older

    assert client.threads.get_history(thread_id, limit=2) == history[:2]
    before = client.threads.get_history(thread_id, limit=2, before=cid)
    assert before == history[4:6]
    assert client.threads.get_history(thread_id, before=older["checkpoint"],
                                      limit=100) == history[4:]
    writes_check = client.threads.get_history(thread_id, limit=100,
                                              metadata={"step": 4})
    assert [s["metadata"]["step"] for s in writes_check] == [4]
    assert client.threads.get_history(thread_id, checkpoint=older["checkpoint"]) == [older]
    with server.http() as http:
        got = http.get(f"/threads/{thread_id}/history", params={"limit": 3})
        assert got.status_code == 200 and got.json() == history[:3]


def test_update_state_as_a_node(server: Server) -> None:
    thread_id = run_loop(server)
    client = server.sdk()
    before = client.threads.get_state(thread_id)
    written = client.threads.update_state(thread_id, {"step": 1}, as_node="increment")
    checkpoint = written["checkpoint"]
    assert checkpoint["thread_id"] == thread_id
    assert checkpoint["checkpoint_ns"] == ""
    assert checkpoint["checkpoint_id"] > before["checkpoint"]["checkpoint_id"]

    state = client.threads.get_state(thread_id)
    assert state["checkpoint"] == checkpoint
    assert state["values"] == {"step": 1, "done": True}
    assert state["next"] == ["check"]  # increment leads to check
    assert state["metadata"]["source"] == "update"
    thread = client.threads.get(thread_id)
    assert thread["status"] == "interrupted"  # nodes are due, as LangGraph's server says
    assert thread["values"] == {"step": 1, "done": True}

    # forking from an older checkpoint
    first = client.threads.get_history(thread_id, limit=100)[-1]["checkpoint"]
    fork = client.threads.update_state(thread_id, {"step": 7}, as_node="check",
                                       checkpoint=first)["checkpoint"]
    forked = client.threads.get_state(thread_id, checkpoint_id=fork["checkpoint_id"])
    assert forked["parent_checkpoint"] == first
    with pytest.raises(sdk_errors.BadRequestError):
        client.threads.update_state(thread_id, {"step": 2}, as_node="no-such-node")


def test_update_state_needs_the_threads_graph(server: Server) -> None:
    client = server.sdk()
    bare = client.threads.create()
    with pytest.raises(sdk_errors.BadRequestError) as raised:
        client.threads.update_state(bare["thread_id"], {"messages": ["hi"]})
    assert raised.value.response.json()["code"] == "thread_has_no_graph"

    chat = client.threads.create(graph_id="seed_chat")
    assert chat["metadata"] == {"graph_id": "seed_chat"}
    client.threads.update_state(chat["thread_id"], {"messages": ["hi"]}, as_node="chat")
    state = client.threads.get_state(chat["thread_id"])
    assert state["values"] == {"messages": ["hi"]}
    assert state["next"] == []
    assert client.threads.get(chat["thread_id"])["status"] == "idle"


def test_create_with_supersteps(server: Server) -> None:
    client = server.sdk()
    thread = client.threads.create(
        graph_id="seed_loop",
        supersteps=[{"updates": [{"values": {"step": 0, "done": False}, "as_node": "__start__"}]},
                    {"updates": [{"values": {"step": 1}, "as_node": "increment"}]}],
    )
    state = client.threads.get_state(thread["thread_id"])
    assert state["values"] == {"step": 1, "done": False}
    assert state["next"] == ["check"]


def test_search_and_count(server: Server) -> None:
    client = server.sdk()
    tag = uuid.uuid4().hex
    made = [client.threads.create(metadata={"tag": tag, "n": n, "even": n % 2 == 0})
            for n in range(5)]
    found = client.threads.search(metadata={"tag": tag}, limit=10)
    assert [t["thread_id"] for t in found] == [t["thread_id"] for t in reversed(made)]
    assert client.threads.count(metadata={"tag": tag}) == 5
    evens = client.threads.search(metadata={"tag": tag, "even": True})
    assert sorted(t["metadata"]["n"] for t in evens) == [0, 2, 4]
    page = client.threads.search(metadata={"tag": tag}, limit=2, offset=2)
    assert [t["thread_id"] for t in page] == [t["thread_id"] for t in reversed(made)][2:4]
    by_id = client.threads.search(metadata={"tag": tag}, sort_by="thread_id",
                                  sort_order="asc")
    assert [t["thread_id"] for t in by_id] == sorted(t["thread_id"] for t in made)
    oldest_first = client.threads.search(metadata={"tag": tag}, sort_by="created_at",
                                         sort_order="asc")
    assert [t["thread_id"] for t in oldest_first] == [t["thread_id"] for t in made]
    by_status = client.threads.search(metadata={"tag": tag}, sort_by="status")
    assert sorted(t["thread_id"] for t in by_status) == sorted(t["thread_id"] for t in made)
    with server.http() as http:
        first = http.post("/threads/search", json={"metadata": {"tag": tag}, "limit": 2})
        assert first.headers["X-Pagination-Total"] == "5"
        assert first.headers["X-Pagination-Next"] == "2"
        last = http.post("/threads/search", json={"metadata": {"tag": tag}, "offset": 4})
        assert "X-Pagination-Next" not in last.headers and len(last.json()) == 1
    picked = client.threads.search(ids=[made[1]["thread_id"], "not/an/id", made[1]["thread_id"]],
                                   select=["thread_id", "status"])
    assert picked == [{"thread_id": made[1]["thread_id"], "status": "idle"}]
    assert client.threads.search(metadata={"tag": "nothing-" + tag}) == []


def test_search_by_status_and_values(server: Server) -> None:
    client = server.sdk()
    tag = uuid.uuid4().hex
    waiting = run_review(server)
    done = run_loop(server)
    for thread_id in (waiting, done):
        client.threads.update(thread_id, metadata={"tag": tag})
    interrupted = client.threads.search(metadata={"tag": tag}, status="interrupted")
    assert [t["thread_id"] for t in interrupted] == [waiting]
    assert client.threads.count(metadata={"tag": tag}, status="idle") == 1
    assert [t["thread_id"] for t in client.threads.search(
        metadata={"tag": tag}, values={"step": 3})] == [done]
    assert client.threads.count(metadata={"tag": tag}, values={"step": 4}) == 0


def test_copy(server: Server) -> None:
    source = run_review(server)
    client = server.sdk()
    client.threads.update(source, metadata={"owner": "ada"})
    copy: dict[str, Any] = client.threads.copy(source)
    assert copy["thread_id"] != source
    assert copy["metadata"] == {"owner": "ada", "graph_id": "review"}
    assert copy["values"] == client.threads.get(source)["values"]
    assert copy["status"] == "interrupted"
    original = client.threads.get_state(source)
    copied = client.threads.get_state(copy["thread_id"])
    assert copied["values"] == original["values"]
    assert copied["next"] == original["next"]
    assert copied["checkpoint"]["thread_id"] == copy["thread_id"]
    assert len(client.threads.get_history(copy["thread_id"], limit=100)) == len(
        client.threads.get_history(source, limit=100))
    # the copy is a thread of its own
    client.threads.update_state(copy["thread_id"], {"draft": "changed"}, as_node="write")
    assert client.threads.get_state(source)["values"]["draft"] == "draft of memo"
    with pytest.raises(sdk_errors.NotFoundError):
        client.threads.copy(f"missing-{uuid.uuid4()}")


def test_export(server: Server) -> None:
    thread_id = run_loop(server)
    with server.http() as http:
        got = http.get(f"/threads/{thread_id}/export")
        assert got.status_code == 200
        data = got.json()
        assert data["format"] == "threadloom.thread/1"
        assert data["thread"]["thread_id"] == thread_id
        assert len(data["checkpoints"]) == 7
        assert [r["status"] for r in data["runs"]] == ["succeeded"]
        assert http.get(f"/threads/missing-{uuid.uuid4()}/export").status_code == 404


def test_delete_removes_the_state(server: Server) -> None:
    thread_id = run_loop(server)
    client = server.sdk()
    client.threads.delete(thread_id)
    for call in (lambda: client.threads.get_state(thread_id),
                 lambda: client.threads.get_history(thread_id),
                 lambda: client.threads.update_state(thread_id, {"step": 1})):
        with pytest.raises(sdk_errors.NotFoundError):
            call()
    assert client.threads.search(ids=[thread_id]) == []


def queue_run(server: Server, thread_id: str, graph: str = "seed_loop") -> str:
    """A background run of ``graph`` queued on the thread (no worker runs in these tests, so
    it stays pending)."""
    run_id = f"run-{uuid.uuid4()}"
    now = time.time()
    store = server.open_store()
    store.enqueue(RunRecord(run_id, thread_id, graph, "pending", created_at=now,
                            updated_at=now),
                  QueuedRun("default", run_id, thread_id, graph, b"{}", created_at=now))
    return run_id


def test_a_thread_with_a_queued_run_is_busy(server: Server) -> None:
    client = server.sdk()
    thread_id = run_loop(server)
    run_id = queue_run(server, thread_id)
    assert client.threads.get(thread_id)["status"] == "busy"
    assert thread_id in [t["thread_id"] for t in client.threads.search(status="busy",
                                                                         limit=1000)]
    with pytest.raises(sdk_errors.ConflictError) as refused:
        client.threads.update_state(thread_id, {"step": 1}, as_node="increment")
    assert refused.value.response.json()["code"] == "thread_busy"

    client.threads.delete(thread_id)  # cancels the queued run first
    store = server.open_store()
    queued = store.get_queued("default", run_id)
    assert queued is None or queued.status == "done"
    assert store.claim_runs("test-worker", limit=10, ttl=5.0) == []


def test_prune(server: Server) -> None:
    client = server.sdk()
    kept, dropped = run_loop(server), run_loop(server)
    missing = f"missing-{uuid.uuid4()}"
    assert client.threads.prune([kept, missing], strategy="keep_latest") == {"pruned_count": 1}
    history = client.threads.get_history(kept, limit=100)
    assert len(history) == 1 and history[0]["values"] == {"step": 3, "done": True}
    assert client.threads.get(kept)["values"] == {"step": 3, "done": True}
    assert client.threads.prune([dropped, dropped]) == {"pruned_count": 1}
    with pytest.raises(sdk_errors.NotFoundError):
        client.threads.get(dropped)
    assert client.threads.prune([]) == {"pruned_count": 0}
