"""The assistants routes through the official ``langgraph-sdk`` client against a real server:
one assistant per registered graph, addressed by its UUID or by the graph's name."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from graphs import ChatState, compiled, seed_chat
from harness import Server
from langgraph_sdk import errors as sdk_errors

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.graph import StateGraph
from threadloom.server import Settings, create_app
from threadloom.server.auth import ensure_key
from threadloom.server.deps import assistant_id_for

GRAPHS = ["review", "seed_chat", "seed_loop"]

# What LangGraph's server (langgraph-api 0.16, LangGraph 1.2.22) answers to get_graph for
# seed 000's loop built with langgraph itself.
LANGGRAPH_SEED_LOOP = {
    "nodes": [
        {"id": "__start__", "type": "runnable", "data": {"name": "__start__"}},
        {"id": "increment", "type": "runnable", "data": {"name": "increment"}},
        {"id": "check", "type": "runnable", "data": {"name": "check"}},
        {"id": "__end__"},
    ],
    "edges": [
        {"source": "__start__", "target": "increment"},
        {"source": "check", "target": "__end__", "conditional": True},
        {"source": "check", "target": "increment", "conditional": True},
        {"source": "increment", "target": "check"},
    ],
}


def test_search_lists_one_assistant_per_graph(server: Server) -> None:
    client = server.sdk()
    found = client.assistants.search()
    assert sorted(a["graph_id"] for a in found) == GRAPHS
    for assistant in found:
        assert assistant["assistant_id"] == assistant_id_for(assistant["graph_id"])
        uuid.UUID(assistant["assistant_id"])
        assert assistant["name"] == assistant["graph_id"]
        assert assistant["version"] == 1
        assert assistant["config"] == {} and assistant["context"] == {}
        assert assistant["metadata"] == {"created_by": "system"}
        assert assistant["created_at"] and assistant["updated_at"]
    assert [a["graph_id"] for a in client.assistants.search(graph_id="seed_loop")] == [
        "seed_loop"]
    assert [a["graph_id"] for a in client.assistants.search(name="SEED_")] == [
        "seed_chat", "seed_loop"]
    assert len(client.assistants.search(metadata={"created_by": "system"})) == 3
    assert client.assistants.search(metadata={"created_by": "user"}) == []
    page = client.assistants.search(limit=1, offset=1, response_format="object")
    assert [a["graph_id"] for a in page["assistants"]] == ["seed_chat"]
    assert page["next"] == "2"
    assert client.assistants.search(limit=2, offset=2, response_format="object")["next"] is None
    picked = client.assistants.search(graph_id="review", select=["assistant_id", "graph_id"])
    assert picked == [{"assistant_id": assistant_id_for("review"), "graph_id": "review"}]
    with pytest.raises(sdk_errors.NotFoundError):
        client.assistants.search(graph_id="no-such-graph")
    assert client.assistants.count() == 3
    assert client.assistants.count(graph_id="seed_chat") == 1


def test_get_by_id_or_graph_name(server: Server) -> None:
    client = server.sdk()
    by_name = client.assistants.get("seed_loop")
    assert by_name == client.assistants.get(assistant_id_for("seed_loop"))
    assert by_name["graph_id"] == "seed_loop"
    assert by_name in client.assistants.search()
    for missing in ("nope", str(uuid.uuid4())):
        with pytest.raises(sdk_errors.NotFoundError):
            client.assistants.get(missing)


def test_get_graph_is_drawn_as_langgraphs_server_draws_it(server: Server) -> None:
    client = server.sdk()
    assert client.assistants.get_graph("seed_loop") == LANGGRAPH_SEED_LOOP
    assert client.assistants.get_graph(assistant_id_for("seed_loop"), xray=True) == (
        LANGGRAPH_SEED_LOOP)
    chat = client.assistants.get_graph("seed_chat")
    assert [n["id"] for n in chat["nodes"]] == ["__start__", "chat", "__end__"]
    assert chat["edges"] == [{"source": "__start__", "target": "chat"},
                             {"source": "chat", "target": "__end__"}]
    with server.http() as http:
        bad = http.get("/assistants/seed_loop/graph", params={"xray": "deep"})
        assert bad.status_code == 422
    with pytest.raises(sdk_errors.NotFoundError):
        client.assistants.get_graph("nope")


def test_get_schemas(server: Server) -> None:
    schemas = server.sdk().assistants.get_schemas("seed_loop")
    assert schemas["graph_id"] == "seed_loop"
    for key in ("input_schema", "output_schema", "state_schema"):
        assert schemas[key]["type"] == "object"
        assert schemas[key]["properties"]["step"]["type"] == "integer"
        assert schemas[key]["properties"]["done"]["type"] == "boolean"
    review = server.sdk().assistants.get_schemas("review")
    assert set(review["state_schema"]["properties"]) == {"draft", "approved"}


async def test_the_async_client_works_too(server: Server) -> None:
    client = server.async_sdk()
    try:
        found = await client.assistants.search(graph_id="seed_chat")
        assert [a["graph_id"] for a in found] == ["seed_chat"]
        thread = await client.threads.create(metadata={"via": "async"})
        assert (await client.threads.get(thread["thread_id"]))["metadata"] == {"via": "async"}
    finally:
        await client.aclose()


def test_versions(server: Server) -> None:
    client = server.sdk()
    assistant = client.assistants.get("seed_chat")
    assert client.assistants.get_versions(assistant["assistant_id"]) == [assistant]
    assert client.assistants.get_versions("seed_chat", metadata={"created_by": "x"}) == []
    assert client.assistants.get_versions("seed_chat", offset=1) == []
    assert client.assistants.set_latest("seed_chat", 1) == assistant
    with pytest.raises(sdk_errors.NotFoundError):
        client.assistants.set_latest("seed_chat", 2)
    with pytest.raises(sdk_errors.NotFoundError):
        client.assistants.get_versions("nope")


def test_subgraphs(store: RuntimeStore, api_key: str) -> None:
    inner = seed_chat().compile(name="inner")
    outer_builder = StateGraph(ChatState)
    outer_builder.add_node("talk", inner)
    outer_builder.set_entry_point("talk")
    outer = outer_builder.compile(checkpointer=store, name="outer")
    app = create_app(store, {"outer": outer, "seed_chat": compiled(store)["seed_chat"]},
                     Settings(worker_stale_after=None))
    ensure_key(store, api_key)
    with TestClient(app, headers={"X-API-Key": api_key}) as client:
        found = client.get("/assistants/outer/subgraphs").json()
        assert list(found) == ["talk"]
        assert set(found["talk"]["state_schema"]["properties"]) == {"messages"}
        assert client.get("/assistants/outer/subgraphs/talk").json() == found
        assert client.get("/assistants/outer/subgraphs/other").json() == {}
        assert client.get("/assistants/seed_chat/subgraphs",
                          params={"recurse": "true"}).json() == {}
