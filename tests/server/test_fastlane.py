"""The fast lane of the create-and-wait routes (:mod:`threadloom.server._fastlane`).

- In process: a request the lane can answer never reaches FastAPI's routing, and every other
  request reaches it with its body intact (the lane queued nothing).
- Against real server processes: a server with the lane and one without it (the same
  database) answer the same requests, successes and errors, with the same status, headers
  and body.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _app import build
from graphs import compiled
from harness import API_KEY, Server, start_server, stop_server
from starlette.types import Message, Receive, Scope, Send

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server import Settings
from threadloom.server._fastlane import FastLane
from threadloom.server.auth import create_key
from threadloom.worker import Worker

LOOP_INPUT = {"step": 0, "done": False}


# -- in process: what the lane serves, and what it hands to the app -------------------------


class Recorder:
    """The app behind the lane: records the requests that reach it (and their bodies)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.seen.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(app: Any, path: str, body: bytes, headers: dict[str, str],
               chunks: int = 1) -> tuple[int, bytes]:
    """POST ``body`` (in ``chunks`` parts) to ``app`` at ``path``; its status and body."""
    size = -(-len(body) // chunks) or 1
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    incoming: list[Message] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent
                            if m["type"] == "http.response.body")


@pytest.fixture
def lane(store: RuntimeStore) -> Iterator[tuple[FastLane, Recorder]]:
    build(store, API_KEY)  # registers the key
    graphs = compiled(store)
    worker = Worker(store, graphs, concurrency=2, heartbeat=0.5, run_lease=3.0)
    worker.start()
    inner = Recorder()
    try:
        yield FastLane(inner, store, graphs, Settings(max_body_bytes=4096)), inner
    finally:
        worker.stop()


JSON = {"X-API-Key": API_KEY, "Content-Type": "application/json"}


async def test_the_lane_answers_a_run_and_wait_without_the_app(
        lane: tuple[FastLane, Recorder]) -> None:
    app, inner = lane
    body = json.dumps({"assistant_id": "seed_loop", "input": LOOP_INPUT,
                       "if_not_exists": "create"}).encode()
    status, answer = await call(app, f"/threads/{uuid.uuid4()}/runs/wait", body, JSON,
                                chunks=3)
    assert (status, json.loads(answer)) == (200, {"step": 3, "done": True})
    status, answer = await call(app, "/runs/wait", body, {"X-API-Key": API_KEY})
    assert (status, json.loads(answer)) == (200, {"step": 3, "done": True})
    assert inner.seen == []


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/runs/wait", b'{"assistant_id": "nope"}', JSON),  # unknown assistant
    ("/runs/wait", b'{"input": {}}', JSON),  # no assistant_id
    ("/runs/wait", b'{"assistant_id": ', JSON),  # not JSON
    ("/runs/wait", b'{"assistant_id": "seed_loop"}', {"Content-Type": "application/json"}),
    ("/runs/wait", b'{"assistant_id": "seed_loop"}', {**JSON, "X-API-Key": "tl_unknown" * 3}),
    ("/runs/wait", b'{"assistant_id": "seed_loop"}', {**JSON, "Content-Type": "text/plain"}),
    ("/runs/wait", b'{"assistant_id": "seed_loop", "input": "' + b"x" * 5000 + b'"}', JSON),
    ("/threads/t-1/runs/wait", b'{"assistant_id": "seed_loop"}', JSON),  # no such thread
    ("/threads/t-1/runs", b'{"assistant_id": "seed_loop"}', JSON),  # another route
], ids=["assistant", "invalid", "malformed", "no-key", "bad-key", "not-json", "too-big",
        "no-thread", "other-route"])
async def test_the_app_gets_what_the_lane_cannot_answer_with_its_body(
        lane: tuple[FastLane, Recorder], path: str, body: bytes,
        headers: dict[str, str]) -> None:
    app, inner = lane
    status, _ = await call(app, path, body, headers, chunks=2)
    assert status == 599
    assert inner.seen == [(path, body)]
    assert app.store.list_runs(namespace=None) == []  # nothing was queued


async def test_a_viewer_key_is_handed_to_the_app(lane: tuple[FastLane, Recorder]) -> None:
    app, inner = lane
    _, viewer = create_key(app.store, "default", "viewer")
    body = json.dumps({"assistant_id": "seed_loop", "input": LOOP_INPUT}).encode()
    status, _ = await call(app, "/runs/wait", body, {**JSON, "X-API-Key": viewer})
    assert status == 599
    assert inner.seen == [("/runs/wait", body)]


# -- real servers: the same answers with and without the lane -------------------------------


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    """Two servers with workers on one SQLite database: with the lane, and without it."""
    workdir = Path(tempfile.mkdtemp(prefix="tl-lane-"))
    db_url = f"sqlite:///{workdir / 'app.db'}"
    lane = start_server(db_url, API_KEY, workdir, factory="_worker_app:create")
    try:
        plain = start_server(db_url, API_KEY, workdir, factory="_worker_app:create",
                             env={"THREADLOOM_TEST_FAST_LANE": "0"})
    except BaseException:
        stop_server(lane)
        raise
    try:
        yield lane, plain
    finally:
        stop_server(plain)
        stop_server(lane)
        shutil.rmtree(workdir, ignore_errors=True)


def _answer(server: Server, path: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The parts of an answer that do not depend on ids made by the server."""
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = http.post(path, content=content, headers=headers)
    data = response.json()
    if path.startswith("/threads/") and isinstance(data, dict) and "message" in data:
        data["message"] = data["message"].replace(path.split("/")[2], "<thread>")
    if isinstance(data, dict) and "__interrupt__" in data:
        data["__interrupt__"] = [{**i, "id": "<id>"} for i in data["__interrupt__"]]
    location = response.headers.get("location", "")
    return {
        "status": response.status_code,
        "type": response.headers.get("content-type"),
        "location": location.rsplit("/", 1)[-1] if location else None,
        "content_location": "content-location" in response.headers,
        "body": data,
    }


@pytest.mark.parametrize(("path", "body"), [
    ("/threads/{new}/runs/wait", {"assistant_id": "seed_loop", "input": LOOP_INPUT,
                                  "if_not_exists": "create"}),
    ("/runs/wait", {"assistant_id": "seed_loop", "input": LOOP_INPUT}),
    ("/runs/wait", {"assistant_id": "review", "input": {"draft": "d", "approved": False}}),
    ("/runs/wait", {"assistant_id": "no-such-graph"}),
    ("/runs/wait", {"input": LOOP_INPUT}),
    ("/runs/wait", {"assistant_id": "seed_loop", "stream_mode": "nope"}),
    ("/runs/wait", b"{not json"),
    ("/threads/{new}/runs/wait", {"assistant_id": "seed_loop"}),
    ("/threads/{new}/runs/wait", {"assistant_id": "seed_loop", "interrupt_before": ["x"],
                                  "if_not_exists": "create"}),
], ids=["thread", "stateless", "interrupt", "unknown-assistant", "no-assistant", "bad-mode",
        "malformed", "no-thread", "bad-breakpoint"])
def test_with_and_without_the_lane_the_answers_are_the_same(
        servers: tuple[Server, Server], path: str, body: Any) -> None:
    answers = []
    for server in servers:
        where = path.replace("{new}", str(uuid.uuid4()))
        answers.append(_answer(server, where, body, {"X-API-Key": API_KEY,
                                                     "Content-Type": "application/json"}))
    assert answers[0] == answers[1]
    assert answers[0]["status"] in (200, 404, 422)


def test_refused_keys_get_the_same_answers(servers: tuple[Server, Server]) -> None:
    store = servers[0].open_store()
    try:
        _, viewer = create_key(store, "default", "viewer")
    finally:
        store.close()
    body = {"assistant_id": "seed_loop", "input": LOOP_INPUT}
    for headers in ({}, {"X-API-Key": "tl_" + "z" * 40}, {"X-API-Key": viewer}):
        lane, plain = (_answer(s, "/runs/wait", body, headers) for s in servers)
        assert lane == plain
        assert lane["status"] in (401, 403)
