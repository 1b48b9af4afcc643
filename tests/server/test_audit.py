"""The audit log against a real server process (runtime.md "Auth, namespaces, roles"): a
scripted session's every change appears once, with its action, ids and outcome, and the log
holds no key; only an admin of the namespace reads it; and no key is stored in plain text
anywhere in the database (the file's bytes on SQLite, every column of every table on
Postgres)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _app import build
from graphs import compiled
from harness import API_KEY, Server
from starlette.types import Message, Receive, Scope, Send

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server import Settings
from threadloom.server._fastlane import FastLane
from threadloom.server.auth import create_key, key_id_of
from threadloom.worker import Worker


def _namespace(server: Server) -> tuple[str, str, str]:
    """A fresh namespace for one test, with an admin key: ``(namespace, key, key_id)``."""
    namespace = f"audit-{uuid.uuid4().hex[:8]}"
    record, key = create_key(server.open_store(), namespace, "admin")
    return namespace, key, record.key_id


def _all_events(http: httpx.Client, namespace: str, limit: int = 3) -> list[dict[str, Any]]:
    """The namespace's whole log, newest first, read page by page."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = http.get(f"/v0/namespace/{namespace}/audit", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["namespace"] == namespace and body["count"] == len(body["events"])
        assert body["count"] <= limit
        events += body["events"]
        cursor = body["next_cursor"]
        if cursor is None:
            return events


def test_the_log_of_a_scripted_session_is_complete(server: Server) -> None:
    namespace, admin_key, admin_id = _namespace(server)
    tid = f"t-{uuid.uuid4().hex[:8]}"
    with server.http(api_key=admin_key) as admin:
        made = admin.post(f"/v0/namespace/{namespace}/keys", json={"role": "operator"}).json()
        op_key, op_id = made["key"], made["key_id"]
        made = admin.post(f"/v0/namespace/{namespace}/keys", json={"role": "viewer"}).json()
        viewer_key, viewer_id = made["key"], made["key_id"]
    with server.http(api_key=op_key) as op, server.http(api_key=viewer_key) as viewer:
        def ok(response: httpx.Response) -> Any:
            assert response.status_code < 300, response.text
            return response.json() if response.content else None

        ok(op.post("/threads", json={"thread_id": tid, "metadata": {"graph_id": "seed_chat"}}))
        ok(op.patch(f"/threads/{tid}", json={"metadata": {"step": 2}}))
        ok(op.post(f"/threads/{tid}/state", json={"values": {"messages": ["hi"]}}))
        run_id = ok(op.post(f"/threads/{tid}/runs", json={
            "assistant_id": "seed_chat", "input": {"messages": ["x"]}}))["run_id"]
        ok(op.get(f"/threads/{tid}/runs/{run_id}"))  # reads are not logged
        ok(op.post(f"/threads/{tid}/runs/{run_id}/cancel"))
        ok(op.delete(f"/threads/{tid}/runs/{run_id}"))
        copy = ok(op.post(f"/threads/{tid}/copy"))["thread_id"]
        refused = viewer.delete(f"/threads/{tid}")
        assert refused.status_code == 403
        taken = op.post("/threads", json={"thread_id": tid})
        assert taken.status_code == 409
        ok(op.delete(f"/threads/{tid}"))
    with server.http(api_key=admin_key) as admin:
        assert admin.delete(f"/v0/namespace/{namespace}/keys/{op_id}").status_code == 204
        events = _all_events(admin, namespace)
    seen = [(e["action"], e["target"], e["key_id"], e["role"], e["run_id"], e["thread_id"],
             e["outcome"]) for e in reversed(events)]
    assert seen == [
        ("key.create", op_id, admin_id, "admin", None, None, "ok"),
        ("key.create", viewer_id, admin_id, "admin", None, None, "ok"),
        ("thread.create", tid, op_id, "operator", None, tid, "ok"),
        ("thread.update", tid, op_id, "operator", None, tid, "ok"),
        ("state.update", tid, op_id, "operator", None, tid, "ok"),
        ("run.create", run_id, op_id, "operator", run_id, tid, "ok"),
        ("run.cancel", run_id, op_id, "operator", run_id, tid, "cancelled"),
        ("run.delete", run_id, op_id, "operator", run_id, tid, "ok"),
        ("thread.copy", copy, op_id, "operator", None, copy, "ok"),
        ("thread.delete", tid, viewer_id, "viewer", None, tid, "forbidden"),
        ("thread.create", "/threads", op_id, "operator", None, None, "conflict"),
        ("thread.delete", tid, op_id, "operator", None, tid, "ok"),
        ("key.revoke", op_id, admin_id, "admin", None, None, "ok"),
    ]
    assert all(e["namespace"] == namespace for e in events)
    assert all(datetime.fromisoformat(e["at"]).tzinfo is not None for e in events)
    assert len({e["id"] for e in events}) == len(events)
    dumped = json.dumps(events)
    for key in (admin_key, op_key, viewer_key, API_KEY):
        assert key not in dumped


def test_only_an_admin_of_the_namespace_reads_the_log(server: Server) -> None:
    namespace, admin_key, _ = _namespace(server)
    store = server.open_store()
    path = f"/v0/namespace/{namespace}/audit"
    for role in ("viewer", "operator"):
        with server.http(api_key=create_key(store, namespace, role)[1]) as http:
            response = http.get(path)
            assert response.status_code == 403 and response.json()["code"] == "forbidden"
    with server.http(api_key=create_key(store, "elsewhere", "admin")[1]) as http:
        there = http.get(path)
        nowhere = http.get("/v0/namespace/no-such-namespace/audit")
        assert there.status_code == nowhere.status_code == 404
        assert there.json()["code"] == nowhere.json()["code"] == "not_found"
    with server.http(api_key=create_key(store, "*", "admin")[1]) as http:
        assert http.get(path).status_code == 200  # an all-namespace admin reads every log
    with server.http(api_key=admin_key) as http:
        for params in ({"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": 1001},
                       {"cursor": "../../x"}):
            response = http.get(path, params=params)
            assert response.status_code == 422, (params, response.text)
            assert set(response.json()) == {"code", "message"}
        assert http.get(path).json() == {"namespace": namespace, "count": 0, "events": [],
                                         "next_cursor": None}


def test_no_key_is_stored_in_plain_text(server: Server) -> None:
    namespace, admin_key, _ = _namespace(server)
    keys = [admin_key, API_KEY]
    with server.http(api_key=admin_key) as admin:
        for role in ("viewer", "operator", "admin"):
            made = admin.post(f"/v0/namespace/{namespace}/keys", json={"role": role})
            keys.append(made.json()["key"])
        with server.http(api_key=keys[-1]) as used:  # used keys get last_used_at written
            assert used.post("/threads", json={}).status_code == 200
        admin.delete(f"/v0/namespace/{namespace}/keys/{made.json()['key_id']}")
    if server.db_url.startswith("sqlite:"):
        path = Path(server.db_url.removeprefix("sqlite:///"))
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert len(stored) > 0
        for key in keys:
            assert key.encode() not in stored
    else:
        texts = _postgres_text(server.db_url)  # bytea columns show as hex
        assert texts
        for key in keys:
            assert not any(key in text or key.encode().hex() in text for text in texts)


def _postgres_text(db_url: str) -> list[str]:
    """Every value of every column of every table of the server's schema, as text."""
    import psycopg

    base, _, query = db_url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
    found = []
    with psycopg.connect(base, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,))]
        assert "api_keys" in tables and "audit_log" in tables
        for table in tables:
            rows = conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()
            found += [r[0] for r in rows]
    return found


async def test_a_run_the_fast_lane_queues_is_logged(store: RuntimeStore) -> None:
    """``POST /runs/wait`` answered by the fast lane (not FastAPI) logs its run too."""
    build(store, API_KEY)
    graphs = compiled(store)
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])  # the lane answered everything itself if never called

    lane = FastLane(app, store, graphs, Settings())
    sent: list[Message] = []
    body = json.dumps({"assistant_id": "seed_loop", "input": {"step": 0, "done": False},
                       "run_id": "r-lane"}).encode()
    incoming: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    worker = Worker(store, graphs, concurrency=1, heartbeat=0.5, run_lease=3.0)
    worker.start()
    try:
        await lane({"type": "http", "method": "POST", "path": "/runs/wait",
                    "query_string": b"", "headers": [(b"x-api-key", API_KEY.encode())]},
                   receive, send)
    finally:
        worker.stop()
    assert reached == [] and sent[0]["status"] == 200
    [event] = store.list_audit("default")[0]
    assert (event.action, event.target, event.run_id, event.key_id, event.role,
            event.outcome) == ("run.create", "r-lane", "r-lane", key_id_of(API_KEY),
                               "admin", "ok")
    assert event.thread_id is not None
