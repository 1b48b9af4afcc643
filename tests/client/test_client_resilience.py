"""What the client does when the network or the server fails, through a proxy that breaks
things on purpose (:mod:`proxy`): streams cut in the middle of a run are joined again after
their last event (no event lost, none repeated), transient answers are retried when that is
safe, and never when it could create something twice."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from harness import API_KEY, Server
from proxy import FaultProxy, Rule, Seen

from threadloom.client import (
    AsyncClient,
    Client,
    RateLimitedError,
    RetryPolicy,
    ServiceUnavailableError,
    StreamPart,
    TransportError,
)

FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)
TICKS = {"ticks": [], "n": 6, "delay": 0.05}


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def streams(seen: Seen) -> bool:
    return seen.path.split("?")[0].endswith("/stream")


def is_(method: str, suffix: str) -> Any:
    return lambda seen: seen.method == method and seen.path.split("?")[0].endswith(suffix)


def as_tuples(parts: list[StreamPart]) -> list[tuple[str, Any, str | None]]:
    return [(p.event, p.data, p.id) for p in parts]


def check_complete(server: Server, thread_id: str, parts: list[StreamPart]) -> None:
    """``parts`` are exactly the run's events, each once, in order."""
    run_id = parts[0].data["run_id"]
    with Client(server.url, api_key=API_KEY) as direct:
        everything = list(direct.runs.join_stream(thread_id, run_id))
    assert as_tuples(parts) == as_tuples(everything)
    assert [int(p.id or 0) for p in parts] == list(range(1, len(parts) + 1))
    assert [p.data for p in parts if p.event == "custom"] == [{"tick": i} for i in range(6)]


def test_a_stream_cut_twice_mid_run_is_joined_again_after_its_last_event(
        server: Server, faults: FaultProxy) -> None:
    faults.add(Rule(streams, times=2, cut_after=3))
    thread_id = new_id()
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        parts = list(client.runs.stream(thread_id, "ticker", input=TICKS,
                                        stream_mode=["custom", "values"],
                                        if_not_exists="create"))
    check_complete(server, thread_id, parts)
    joins = faults.seen("GET", "/stream")
    assert len(joins) == 2
    assert [j.headers["last-event-id"] for j in joins] == ["3", "6"]
    assert all(j.headers["x-api-key"] == API_KEY for j in joins)
    assert "custom" in joins[0].path and "values" in joins[0].path  # the modes asked for


async def test_an_async_stream_cut_mid_run_is_joined_again(server: Server,
                                                           faults: FaultProxy) -> None:
    faults.add(Rule(streams, times=2, cut_after=2))
    thread_id = new_id()
    async with AsyncClient(faults.url, api_key=API_KEY, retry=FAST) as client:
        parts = [p async for p in client.runs.stream(thread_id, "ticker", input=TICKS,
                                                     stream_mode=["custom", "values"],
                                                     if_not_exists="create")]
    check_complete(server, thread_id, parts)
    assert [j.headers["last-event-id"] for j in faults.seen("GET", "/stream")] == ["2", "4"]


def test_a_cut_join_stream_continues_from_where_it_was(server: Server,
                                                       faults: FaultProxy) -> None:
    thread_id = new_id()
    with Client(server.url, api_key=API_KEY) as direct:
        run = direct.runs.create(thread_id, "ticker", input=TICKS,
                                 stream_mode=["custom", "values"], if_not_exists="create")
    faults.add(Rule(streams, times=1, cut_after=4))
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        parts = list(client.runs.join_stream(thread_id, run["run_id"]))
    check_complete(server, thread_id, parts)
    assert [j.headers.get("last-event-id") for j in faults.seen("GET", "/stream")] == [
        None, "4"]


def test_without_retries_a_cut_stream_raises(faults: FaultProxy) -> None:
    faults.add(Rule(streams, times=1, cut_after=3))
    received: list[StreamPart] = []
    with Client(faults.url, api_key=API_KEY, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(TransportError):
            for part in client.runs.stream(new_id(), "ticker", input=TICKS,
                                           if_not_exists="create"):
                received.append(part)
    assert [p.id for p in received] == ["1", "2", "3"]  # the torn fourth event is not given


def test_reads_are_retried_after_503_and_dropped_connections(faults: FaultProxy) -> None:
    faults.add(Rule(is_("GET", "/ok"), times=1, reply=(503, {"Retry-After": "0"})))
    faults.add(Rule(is_("GET", "/ok"), times=1, drop=True))
    faults.add(Rule(is_("GET", "/ok"), times=1, reply=(504, {})))
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        assert client.ok() == {"ok": True}
    assert len(faults.seen("GET", "/ok")) == 4


def test_retries_stop_after_the_attempts(faults: FaultProxy) -> None:
    faults.add(Rule(is_("GET", "/ok"), times=100, reply=(503, {})))
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            client.ok()
    assert caught.value.status == 503 and caught.value.server_code == "proxy"
    assert len(faults.seen("GET", "/ok")) == FAST.attempts


def test_a_retry_after_over_the_limit_is_not_waited_for(faults: FaultProxy) -> None:
    faults.add(Rule(is_("GET", "/ok"), times=100, reply=(429, {"Retry-After": "3600"})))
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        with pytest.raises(RateLimitedError):
            client.ok()
    assert len(faults.seen("GET", "/ok")) == 1


def test_creating_a_run_is_not_repeated_after_it_may_have_reached_the_server(
        server: Server, faults: FaultProxy) -> None:
    with Client(server.url, api_key=API_KEY) as direct:
        thread_id = direct.threads.create()["thread_id"]
    faults.add(Rule(is_("POST", "/runs"), times=1, reply=(503, {})))
    faults.add(Rule(is_("POST", "/runs"), times=1, drop=True))
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        with pytest.raises(ServiceUnavailableError):
            client.runs.create(thread_id, "seed_loop", input={"step": 0, "done": False})
        with pytest.raises(TransportError):
            client.runs.create(thread_id, "seed_loop", input={"step": 0, "done": False})
        assert len(faults.seen("POST", "/runs")) == 2
        assert client.runs.list(thread_id) == []


def test_a_429_is_retried_even_for_a_run_the_server_refused(server: Server,
                                                            faults: FaultProxy) -> None:
    with Client(server.url, api_key=API_KEY) as direct:
        thread_id = direct.threads.create()["thread_id"]
    faults.add(Rule(is_("POST", "/runs/wait"), times=2, reply=(429, {"Retry-After": "0"})))
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        out = client.runs.wait(thread_id, "seed_loop", input={"step": 0, "done": False})
        assert out == {"step": 3, "done": True}
        assert len(client.runs.list(thread_id)) == 1
    assert len(faults.seen("POST", "/runs/wait")) == 3


async def test_the_async_client_retries_reads_too(faults: FaultProxy) -> None:
    faults.add(Rule(is_("GET", "/ok"), times=2, reply=(502, {})))
    async with AsyncClient(faults.url, api_key=API_KEY, retry=FAST) as client:
        assert await client.ok() == {"ok": True}
    assert len(faults.seen("GET", "/ok")) == 3


def test_an_unreachable_server_is_a_transport_error() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", api_key=API_KEY, retry=FAST) as client:
        with pytest.raises(TransportError) as caught:
            client.runs.create(None, "seed_loop", input={})
    assert "ConnectError" in str(caught.value)


def test_creating_a_thread_is_repeated_only_when_the_server_deduplicates_it(
        faults: FaultProxy) -> None:
    thread_id = new_id()
    faults.add(Rule(is_("POST", "/threads"), times=2, drop=True))
    with Client(faults.url, api_key=API_KEY, retry=FAST) as client:
        with pytest.raises(TransportError):
            client.threads.create(thread_id=thread_id)
        made = client.threads.create(thread_id=thread_id, if_exists="do_nothing")
        assert made["thread_id"] == thread_id
    assert len(faults.seen("POST", "/threads")) == 3
