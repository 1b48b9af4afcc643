"""``GET /threads/{tid}/runs/{rid}/logs`` on a real server, ``client.runs.logs`` (sync and
async) and ``threadloom runs logs``: the records a run's capture kept, in the documented
shape, paged by cursor, in the key's namespace only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from graphs import compiled
from harness import Server

import threadloom.logging as tlog
from threadloom.checkpoint.base import RunLog
from threadloom.cli import main
from threadloom.client import AsyncClient, Client, NotFoundError
from threadloom.server.auth import create_key

ITEM_KEYS = {"seq", "at", "level", "logger", "message", "node", "attempt", "exc"}


@pytest.fixture(scope="module")
def logged_run(server: Server) -> Iterator[tuple[str, str]]:
    """A seed-loop run made in this process on the server's database with its logs
    captured, plus 250 records appended to it: ``(thread_id, run_id)``."""
    store = server.open_store()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    capture = tlog.capture_run_logs(store)
    try:
        compiled(store)["seed_loop"].invoke(
            {"step": 0, "done": False}, {"thread_id": "logs-t1", "run_id": "logs-r1"})
    finally:
        capture.close()
        root.setLevel(level)
    store.append_run_logs([
        RunLog(run_id="logs-r1", thread_id="logs-t1", at=1_700_000_000.0 + i, level="WARNING",
               logger="myapp", message=f"line {i}", node="check", attempt=1, step=i,
               exc="ValueError: x" if i == 0 else None)
        for i in range(250)
    ])
    yield "logs-t1", "logs-r1"


def test_the_route_answers_the_documented_shape(server: Server,
                                                logged_run: tuple[str, str]) -> None:
    thread_id, run_id = logged_run
    with server.http() as http:
        answer = http.get(f"/threads/{thread_id}/runs/{run_id}/logs")
    assert answer.status_code == 200
    page = answer.json()
    assert set(page) == {"run_id", "thread_id", "count", "logs", "next_cursor"}
    assert (page["run_id"], page["thread_id"], page["count"]) == (run_id, thread_id, 100)
    assert all(set(item) == ITEM_KEYS for item in page["logs"])
    first = page["logs"][0]
    assert (first["seq"], first["level"], first["logger"], first["node"], first["attempt"],
            first["exc"]) == (1, "INFO", "threadloom.engine._loop", None, None, None)
    assert first["message"] == "run started (graph seed_loop)"
    datetime.fromisoformat(first["at"])
    assert [item["seq"] for item in page["logs"]] == list(range(1, 101))
    ended = page["logs"][1]
    assert ended["message"].startswith("run succeeded")
    mine = page["logs"][2]
    assert (mine["message"], mine["level"], mine["node"], mine["attempt"], mine["exc"]) == (
        "line 0", "WARNING", "check", 1, "ValueError: x")
    assert isinstance(page["next_cursor"], str)


def test_pages_follow_the_cursor_to_the_end(server: Server,
                                            logged_run: tuple[str, str]) -> None:
    thread_id, run_id = logged_run
    seqs: list[int] = []
    cursor = None
    pages = 0
    with server.http() as http:
        while True:
            params: dict[str, Any] = {"limit": 120}
            if cursor is not None:
                params["cursor"] = cursor
            page = http.get(f"/threads/{thread_id}/runs/{run_id}/logs", params=params).json()
            pages += 1
            seqs += [item["seq"] for item in page["logs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == 3 and seqs == list(range(1, 253))


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "cursor=abc",
                                   "cursor=-1", "cursor=1.5"])
def test_a_bad_limit_or_cursor_is_422(server: Server, logged_run: tuple[str, str],
                                      query: str) -> None:
    thread_id, run_id = logged_run
    with server.http() as http:
        answer = http.get(f"/threads/{thread_id}/runs/{run_id}/logs?{query}")
    assert answer.status_code == 422
    assert answer.json()["code"] == "invalid_request"


def test_unknown_runs_and_other_namespaces_are_404(server: Server,
                                                    logged_run: tuple[str, str]) -> None:
    thread_id, run_id = logged_run
    outsider = create_key(server.open_store(), "logs-other", "viewer")[1]
    with server.http() as http:
        for path in (f"/threads/{thread_id}/runs/nope/logs",
                     f"/threads/other-thread/runs/{run_id}/logs"):
            answer = http.get(path)
            assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    with server.http(api_key=outsider) as http:
        answer = http.get(f"/threads/{thread_id}/runs/{run_id}/logs")
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    with server.http(api_key="") as http:
        assert http.get(f"/threads/{thread_id}/runs/{run_id}/logs").status_code == 401


def test_the_route_is_in_the_openapi_document(server: Server) -> None:
    with server.http() as http:
        spec = http.get("/openapi.json").json()
    route = spec["paths"]["/threads/{thread_id}/runs/{run_id}/logs"]["get"]
    schema = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/RunLogPage")
    page = spec["components"]["schemas"]["RunLogPage"]
    assert set(page["properties"]) == {"run_id", "thread_id", "count", "logs", "next_cursor"}


def test_the_client_reads_the_pages(server: Server, logged_run: tuple[str, str]) -> None:
    thread_id, run_id = logged_run
    with Client(server.url, api_key=server.api_key) as client:
        first = client.runs.logs(thread_id, run_id, limit=250)
        assert first["count"] == 250 and first["next_cursor"] == "250"
        rest = client.runs.logs(thread_id, run_id, cursor=first["next_cursor"])
        assert [item["message"] for item in rest["logs"]] == ["line 248", "line 249"]
        assert rest["next_cursor"] is None
        with pytest.raises(NotFoundError):
            client.runs.logs(thread_id, "missing-run")


async def test_the_async_client_reads_the_pages(server: Server,
                                                logged_run: tuple[str, str]) -> None:
    thread_id, run_id = logged_run
    async with AsyncClient(server.url, api_key=server.api_key) as client:
        page = await client.runs.logs(thread_id, run_id, limit=2)
        assert [item["seq"] for item in page["logs"]] == [1, 2]
        assert page["next_cursor"] == "2"


def test_the_cli_prints_readable_lines(server: Server, logged_run: tuple[str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    thread_id, run_id = logged_run
    assert main(["runs", "logs", run_id, "--thread", thread_id, "--db", server.db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "INFO    threadloom.engine._loop: run started (graph seed_loop)" in lines[0]
    assert lines[2].endswith("WARNING myapp [check #1]: line 0")
    assert lines[3] == "    ValueError: x"  # the traceback, indented under its record
    assert len(lines) == 253
    assert main(["runs", "logs", run_id, "--json", "--db", server.db_url]) == 0
    items = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["seq"] for item in items] == list(range(1, 253))
    assert items[2]["step"] == 0
    assert main(["runs", "logs", run_id, "--thread", "elsewhere", "--db",
                 server.db_url]) == 1
    assert "no run" in capsys.readouterr().err
