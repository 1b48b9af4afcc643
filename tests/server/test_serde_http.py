"""No value an HTTP client sends is ever unpickled or turned into a class: state updates, run
input and thread copies store what the client sent as data (JSON in, JSON out)."""

from __future__ import annotations

import base64
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from graphs import compiled

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.worker import Worker


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def _hostile(marker: Path) -> list[Any]:
    """What a client might send hoping the store decodes it into code or objects."""
    raw = b"p" + pickle.dumps(Evil(marker), protocol=5)
    return [
        base64.b64encode(raw).decode(),
        raw.decode("latin-1"),
        {"$t": "dataclass", "c": "os:system", "v": {}},
        {"$t": "enum", "c": "os:system", "v": f"touch {marker}"},
        {"$t": "bytes", "v": base64.b64encode(raw).decode()},
        {"__reduce__": ["os.system", [f"touch {marker}"]]},
    ]


def _stored_values(tmp_path: Path) -> list[bytes]:
    with sqlite3.connect(tmp_path / "app.db") as conn:
        rows = conn.execute("SELECT data FROM blobs UNION ALL SELECT data FROM writes"
                            " UNION ALL SELECT input FROM runs WHERE input IS NOT NULL"
                            " UNION ALL SELECT output FROM runs WHERE output IS NOT NULL")
        return [bytes(r[0]) for r in rows]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def test_state_updates_and_copies_store_client_values_as_plain_data(
    app_client: TestClient, tmp_path: Path, marker: Path
) -> None:
    sent = ["hello", *_hostile(marker)]
    thread = app_client.post("/threads", json={"metadata": {"graph_id": "seed_chat"}}).json()
    thread_id = thread["thread_id"]
    got = app_client.post(f"/threads/{thread_id}/state",
                          json={"values": {"messages": sent}, "as_node": "chat"})
    assert got.status_code == 200, got.text
    assert app_client.get(f"/threads/{thread_id}/state").json()["values"] == {"messages": sent}

    copy = app_client.post(f"/threads/{thread_id}/copy")
    assert copy.status_code == 200, copy.text
    copied = app_client.get(f"/threads/{copy.json()['thread_id']}/state").json()
    assert copied["values"] == {"messages": sent}

    stored = _stored_values(tmp_path)
    assert stored and all(v[:1] in (b"j", b"t") for v in stored)
    assert not marker.exists()


def test_run_input_is_stored_as_plain_data(app_client: TestClient, store: RuntimeStore,
                                           tmp_path: Path, marker: Path) -> None:
    sent = ["hi", *_hostile(marker)]
    thread_id = app_client.post("/threads", json={}).json()["thread_id"]
    worker = Worker(store, compiled(store), concurrency=1, heartbeat=0.2).start()
    try:
        done = app_client.post(f"/threads/{thread_id}/runs/wait",
                               json={"assistant_id": "seed_chat",
                                     "input": {"messages": sent}})
    finally:
        worker.stop()
    assert done.status_code == 200, done.text
    messages = done.json()["messages"]
    assert messages[:-1] == sent and messages[-1].startswith("Bot: I received")
    stored = _stored_values(tmp_path)
    assert stored and all(v[:1] in (b"j", b"t") for v in stored)
    assert not marker.exists()
