"""The client's pure parts, without a server: the SSE parser, what a stream remembers to
rejoin, the retry policy, the errors by status, the import cost and the public names."""

from __future__ import annotations

import email.utils
import subprocess
import sys
import time

import httpx
import pytest

import threadloom.client
from threadloom.client import (
    APIError,
    ConflictError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
    StreamPart,
    UnauthorizedError,
)
from threadloom.client._errors import api_error
from threadloom.client._sse import EventParser, StreamResume
from threadloom.errors import ThreadloomError


def parse(text: str) -> list[StreamPart]:
    parser = EventParser()
    found = [parser.feed(line) for line in text.split("\n")]
    return [p for p in found if p is not None]


def test_the_parser_reads_events_and_skips_comments() -> None:
    text = ("event: metadata\ndata: {\"run_id\": \"r\"}\nid: 1\n\n"
            ": keepalive\n\n"
            "event: custom\ndata: {\"a\":\ndata: 1}\nid: 2\n\n"
            "data: plain text\n\n")
    assert parse(text) == [StreamPart("metadata", {"run_id": "r"}, "1"),
                           StreamPart("custom", {"a": 1}, "2"),
                           StreamPart("message", "plain text", None)]


def test_an_event_without_its_blank_line_is_never_given() -> None:
    assert parse("event: values\ndata: {\"x\": 1}\nid: 7\n\nevent: values\ndata: {\"x\"") == [
        StreamPart("values", {"x": 1}, "7")]


def test_a_resumed_stream_drops_what_it_had_and_what_was_not_asked_for() -> None:
    resume = StreamResume(stream_mode=["updates"])
    assert resume.rejoin() is None  # no route known yet
    resume.opened({"location": "/threads/t/runs/r/stream"})
    assert resume.accept(StreamPart("metadata", {}, "1"))
    assert not resume.accept(StreamPart("values", {}, "2"))
    assert resume.accept(StreamPart("updates", {}, "3"))
    assert not resume.accept(StreamPart("updates", {}, "3"))
    assert not resume.accept(StreamPart("updates", {}, "2"))
    assert resume.rejoin() == ("/threads/t/runs/r/stream", {"stream_mode": '["updates"]'},
                               {"Last-Event-ID": "3"})


def test_a_wait_location_is_not_a_stream_route() -> None:
    resume = StreamResume()
    resume.opened({"location": "/threads/t/runs/r/join"})
    assert resume.rejoin() is None


def test_backoff_grows_to_its_cap_and_stops_after_the_attempts() -> None:
    policy = RetryPolicy(attempts=6, backoff=1.0, max_backoff=4.0)
    waits = [policy.delay(n) for n in range(5)]
    assert [w is not None for w in waits] == [True] * 5
    assert all(0.5 * min(4.0, 2.0 ** n) <= (w or 0) <= min(4.0, 2.0 ** n)
               for n, w in enumerate(waits))
    assert policy.delay(5) is None
    assert RetryPolicy(attempts=1).delay(0) is None


def test_retry_after_in_seconds_or_as_a_date() -> None:
    policy = RetryPolicy(backoff=0.01, max_retry_after=30)
    assert policy.delay(0, "7") == 7.0
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 <= (policy.delay(0, when) or 0) <= 20
    assert policy.delay(0, "31") is None
    assert (policy.delay(0, "soon") or 0) <= 0.01


def test_errors_map_the_status_and_keep_the_server_code() -> None:
    conflict = api_error(409, b'{"code": "thread_busy", "message": "busy"}')
    assert isinstance(conflict, ConflictError)
    assert (conflict.status, conflict.server_code, conflict.message) == (409, "thread_busy",
                                                                         "busy")
    assert conflict.code == "conflict"
    assert isinstance(conflict, ThreadloomError)
    assert isinstance(api_error(401, b"{}"), UnauthorizedError)
    assert isinstance(api_error(404, b'{"code":"run_not_found","message":""}'), NotFoundError)
    proxy = api_error(502, b"<html>Bad Gateway</html>")
    assert isinstance(proxy, ServiceUnavailableError)
    assert proxy.server_code == "http_502" and "Bad Gateway" in proxy.message
    assert type(api_error(500, b"")) is ServerError
    assert type(api_error(418, b"")) is APIError


def test_importing_threadloom_does_not_import_the_client_or_httpx() -> None:
    script = ("import sys, threadloom, threadloom.graph, threadloom.checkpoint\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'httpx'"
              " or m.startswith('threadloom.client')))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_pinned() -> None:
    assert sorted(threadloom.client.__all__) == sorted([
        "APIError", "Assistant", "AsyncClient", "BadRequestError", "Checkpoint", "Client",
        "ClientError", "ConflictError", "ForbiddenError", "GraphDrawing", "GraphSchemas",
        "InterruptItem", "InvalidRequestError", "NotFoundError", "PayloadTooLargeError",
        "RateLimitedError", "RemoteGraph", "RemoteRunError", "RetryPolicy", "Run",
        "RunOptions", "RunStatus", "ServerError", "ServiceUnavailableError", "StreamMode",
        "StreamPart", "Thread", "ThreadState", "ThreadStatus", "ThreadTask", "TransportError",
        "UnauthorizedError", "UpdateStateResult",
        # the /v0 routes: seed 001's state manager, keys, audit
        "ApiKeyItem", "AuditEvent", "AuditPage", "CreatedState", "CreatedStates", "KeyList", "Me",
        "NamespaceRunsPage", "NewApiKey", "NodeTimes", "RunCheckpoint", "RunCheckpointsPage",
        "RunItem", "RunMetrics", "RunStatesPage", "RunStats", "State", "StateStatus", "StatesPage",
        # the logs kept with a run
        "RunLogItem", "RunLogsPage",
    ])
    for name in threadloom.client.__all__:
        assert getattr(threadloom.client, name) is not None


@pytest.mark.parametrize("method", ["get", "search", "create", "get_state"])
def test_api_methods_keep_their_names_and_docs(method: str) -> None:
    with threadloom.client.Client("http://127.0.0.1:9", api_key="k") as client:
        bound = getattr(client.threads, method)
        assert bound.__name__ == method
        assert bound.__doc__


def test_namespace_routes_quote_ids_and_default_to_the_client_namespace() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    with threadloom.client.Client("http://127.0.0.1:9", api_key="k", namespace="acme") as client:
        client._sync.http._transport = httpx.MockTransport(answer)
        client.states.of_run("a/b?c")
        client.states.list(status="SUCCESS", since="2026-01-01T00:00:00Z", limit=5)
        client.keys.create("viewer", namespace="other")
        client.audit()
    paths = [r.url.raw_path.decode() for r in sent]
    assert paths[0] == "/v0/namespace/acme/states/run/a%2Fb%3Fc"
    assert paths[1].startswith("/v0/namespace/acme/states/?")
    assert dict(sent[1].url.params) == {"status": "SUCCESS", "since": "2026-01-01T00:00:00Z",
                                        "limit": "5"}
    assert paths[2] == "/v0/namespace/other/keys" and sent[2].method == "POST"
    assert paths[3] == "/v0/namespace/acme/audit"
