"""API keys against a real server process (runtime.md "Auth, namespaces, roles"): the header,
the open routes, keys created and revoked while the server runs, roles, and namespaces."""

from __future__ import annotations

import uuid

import pytest
from harness import Server
from langgraph_sdk import errors as sdk_errors

from threadloom.server.auth import create_key


def test_missing_or_wrong_key_is_401(server: Server) -> None:
    for key in ("", "wrong-key-0123456789", server.api_key + "x", "x" * 600):
        with server.http(api_key=key) as http:
            for method, path in [("POST", "/threads/search"), ("GET", "/assistants/seed_loop"),
                                 ("POST", "/threads"), ("GET", "/threads/t-1/state")]:
                response = http.request(method, path, json={})
                assert response.status_code == 401, (key, path)
                assert response.json()["code"] == "unauthorized"
    with pytest.raises(sdk_errors.AuthenticationError):
        server.sdk(api_key="not-a-key-0123456789").assistants.search()


def test_the_header_name_is_case_insensitive(server: Server) -> None:
    with server.http(api_key="") as http:
        for name in ("X-API-Key", "x-api-key", "X-API-KEY", "x-Api-kEy"):
            response = http.post("/assistants/search", json={},
                                 headers={name: server.api_key})
            assert response.status_code == 200, name


@pytest.mark.parametrize("path", ["/ok", "/ready", "/docs", "/openapi.json"])
def test_open_routes_need_no_key(server: Server, path: str) -> None:
    with server.http(api_key="") as http:
        response = http.get(path)
        assert response.status_code == 200, response.text


def test_openapi_documents_the_routes(server: Server) -> None:
    with server.http(api_key="") as http:
        paths = http.get("/openapi.json").json()["paths"]
    for path in ("/assistants/search", "/assistants/{assistant_id}/graph", "/threads",
                 "/threads/search", "/threads/{thread_id}/state", "/threads/{thread_id}/history",
                 "/threads/{thread_id}/copy", "/threads/{thread_id}/export"):
        assert path in paths


def test_keys_created_and_revoked_while_the_server_runs(server: Server) -> None:
    store = server.open_store()
    record, key = create_key(store, "default", "operator")
    client = server.sdk(api_key=key)
    thread = client.threads.create()  # works at once
    assert client.threads.get(thread["thread_id"])["thread_id"] == thread["thread_id"]
    assert store.revoke_key(record.key_id)
    with pytest.raises(sdk_errors.AuthenticationError):  # refused at once
        client.threads.get(thread["thread_id"])


def test_a_viewer_reads_but_does_not_change(server: Server) -> None:
    _, key = create_key(server.open_store(), "default", "viewer")
    admin = server.sdk()
    thread = admin.threads.create(metadata={"graph_id": "seed_chat"})
    tid = thread["thread_id"]
    viewer = server.sdk(api_key=key)
    assert viewer.threads.get(tid)["thread_id"] == tid
    assert viewer.threads.get_state(tid)["values"] == {}
    assert viewer.assistants.search()
    assert tid in [t["thread_id"] for t in viewer.threads.search(limit=1000)]
    for change in (lambda: viewer.threads.create(),
                   lambda: viewer.threads.update(tid, metadata={"x": 1}),
                   lambda: viewer.threads.delete(tid),
                   lambda: viewer.threads.copy(tid),
                   lambda: viewer.threads.update_state(tid, {"messages": ["hi"]})):
        with pytest.raises(sdk_errors.PermissionDeniedError) as refused:
            change()
        assert refused.value.response.json()["code"] == "forbidden"
    assert admin.threads.get(tid)["metadata"] == {"graph_id": "seed_chat"}


def test_another_namespace_sees_nothing(server: Server) -> None:
    _, key = create_key(server.open_store(), f"tenant-{uuid.uuid4().hex[:8]}", "admin")
    admin = server.sdk()
    thread = admin.threads.create(metadata={"secret": True})
    other = server.sdk(api_key=key)
    assert other.threads.search(metadata={"secret": True}) == []
    assert other.threads.count() == 0
    for call in (lambda: other.threads.get(thread["thread_id"]),
                 lambda: other.threads.get_state(thread["thread_id"]),
                 lambda: other.threads.update(thread["thread_id"], metadata={"x": 1}),
                 lambda: other.threads.delete(thread["thread_id"])):
        with pytest.raises(sdk_errors.NotFoundError):
            call()
    assert admin.threads.get(thread["thread_id"])["metadata"] == {"secret": True}
