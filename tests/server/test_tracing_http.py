"""A run's trace crosses the HTTP API and the queue (issue 14 item 2): the ``traceparent``
of the request that creates a run is stored with its queued record, and the worker that
runs it, in another process, parents the run's spans on it. The run's statistics are served
by the seed 001 metrics route.

The API is a served process (:func:`harness.served`); the worker runs in the test process,
on the same database, with an in-memory span exporter handed to the library.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from harness import Server, served  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from threadloom import _tracing  # noqa: E402
from threadloom.checkpoint.queue import RuntimeStore  # noqa: E402
from threadloom.worker import Worker  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
NS = "/v0/namespace/default"


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """An API process on SQLite, or on Postgres with the slow tests."""
    with served(request.param, "tl-trace") as running:
        yield running


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    library = provider.get_tracer(_tracing.TRACER_NAME)
    monkeypatch.setattr(_tracing, "_tracer", lambda: library)
    yield spans
    provider.shutdown()


def _finished(store: RuntimeStore, run_id: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        record = store.get_run(run_id)
        if record is not None and record.status not in ("pending", "running"):
            return record
        assert time.monotonic() < deadline, f"run {run_id} is still {record and record.status}"
        time.sleep(0.05)


def _run_spans(spans: InMemorySpanExporter, run_id: str) -> list[Any]:
    return [s for s in spans.get_finished_spans()
            if (s.attributes or {}).get("threadloom.run_id") == run_id]


def _check_trace(spans: InMemorySpanExporter, run_id: str) -> None:
    found = _run_spans(spans, run_id)
    runs = [s for s in found if s.name == "invoke_workflow seed_loop"]
    assert len(runs) == 1
    run = runs[0]
    assert f"{run.context.trace_id:032x}" == TRACE_ID
    assert run.parent is not None and f"{run.parent.span_id:016x}" == PARENT_ID
    nodes = [s for s in found if s.name.startswith("node ")]
    assert len(nodes) == 6  # increment, check, three times
    assert all(n.parent is not None and n.parent.span_id == run.context.span_id for n in nodes)


def test_the_request_traceparent_parents_the_run_the_worker_executes(
        server: Server, exporter: InMemorySpanExporter) -> None:
    store = server.open_store()
    with server.http(traceparent=TRACEPARENT) as http:
        created = http.post("/threads/t-traced/runs", json={
            "assistant_id": "seed_loop", "input": {"step": 0, "done": False},
            "if_not_exists": "create"})
        assert created.status_code == 200, created.text
        run_id = created.json()["run_id"]
        assert store.get_run(run_id).traceparent == TRACEPARENT  # stored with the queued run
        with Worker(store, server.graphs(), concurrency=1, heartbeat=0.5, poll=0.05):
            record = _finished(store, run_id)
        assert record.status == "succeeded"
        _check_trace(exporter, run_id)
        metrics = http.get(f"{NS}/runs/{run_id}/metrics").json()
    assert metrics["trace_id"] == TRACE_ID
    got = server.sdk().runs.get("t-traced", run_id)  # the official client reads it as is
    assert got["status"] == "success"
    assert got["stats"]["executions"] == 6 and got["stats"]["retries"] == 0
    assert got["stats"]["bytes_written"] == metrics["bytes_written"] > 0
    assert got["stats"]["queue_wait_ms"] == metrics["queue_wait_ms"]
    assert metrics["bytes_written"] > 0
    assert metrics["queue_wait_ms"] >= 0


def test_seed_001_create_takes_the_traceparent_too(
        server: Server, exporter: InMemorySpanExporter) -> None:
    store = server.open_store()
    with server.http(traceparent=TRACEPARENT) as http:
        created = http.post(f"{NS}/graph/seed_loop/states/create", json={
            "run_id": "traced-states",
            "states": [{"identifier": "increment", "inputs": {"step": 0, "done": False}}]})
        assert created.status_code == 200, created.text
    with Worker(store, server.graphs(), concurrency=1, heartbeat=0.5, poll=0.05):
        assert _finished(store, "traced-states").status == "succeeded"
    _check_trace(exporter, "traced-states")


def test_a_run_created_without_traceparent_is_traced_from_its_run_id(
        server: Server, exporter: InMemorySpanExporter) -> None:
    store = server.open_store()
    with server.http(traceparent="not-a-traceparent") as http:
        created = http.post("/runs", json={"assistant_id": "seed_loop",
                                           "input": {"step": 0, "done": False}})
        assert created.status_code == 200, created.text
        run_id = created.json()["run_id"]
    assert store.get_run(run_id).traceparent is None  # an invalid header is ignored
    with Worker(store, server.graphs(), concurrency=1, heartbeat=0.5, poll=0.05):
        assert _finished(store, run_id).status == "succeeded"
    (run,) = [s for s in _run_spans(exporter, run_id) if s.name.startswith("invoke_workflow")]
    assert f"{run.context.trace_id:032x}" == _tracing.trace_id(run_id, None)


def test_run_and_wait_takes_the_traceparent(server: Server,
                                            exporter: InMemorySpanExporter) -> None:
    store = server.open_store()
    with Worker(store, server.graphs(), concurrency=1, heartbeat=0.5, poll=0.05), \
            server.http(traceparent=TRACEPARENT) as http:
        waited = http.post("/threads/t-waited/runs/wait", json={
            "assistant_id": "seed_loop", "input": {"step": 0, "done": False},
            "if_not_exists": "create"})
        assert waited.status_code == 200, waited.text
    (record,) = store.list_runs(thread_id="t-waited")
    assert record.traceparent == TRACEPARENT
    _check_trace(exporter, record.run_id)
