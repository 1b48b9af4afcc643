"""OpenTelemetry spans of runs, node executions and ``@task`` calls (issue 14 item 2).

The spans go to an in-memory exporter of an SDK tracer provider. In this process the
provider is handed to the library through ``threadloom._tracing._tracer`` (patched per test)
so that no global provider outlives a test; the process that resumes a run
(``tracing_child.py``) installs a global provider, as an application does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from tracing_child import build, span_json  # noqa: E402

from threadloom import _tracing  # noqa: E402
from threadloom.checkpoint.memory import InMemorySaver  # noqa: E402
from threadloom.checkpoint.sqlite import SqliteStore  # noqa: E402
from threadloom.graph import StateGraph  # noqa: E402
from threadloom.types import Command  # noqa: E402

CHILD = Path(__file__).with_name("tracing_child.py")
ROOT = Path(__file__).resolve().parents[2]


class Traced:
    """The spans the library exported, and the provider's tracer for user spans."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("user-code")

    def spans(self) -> list[dict[str, Any]]:
        return [span_json(s) for s in self.exporter.get_finished_spans()]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans() if s["name"] == name]

    def one(self, name: str) -> dict[str, Any]:
        found = self.named(name)
        assert len(found) == 1, (name, [s["name"] for s in self.spans()])
        return found[0]


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    spans = Traced()
    library = spans.provider.get_tracer(_tracing.TRACER_NAME)
    monkeypatch.setattr(_tracing, "_tracer", lambda: library)
    yield spans
    spans.provider.shutdown()


def _resume_elsewhere(db: Path, thread_id: str, run_id: str, value: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CHILD), str(db), thread_id, run_id, value],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{CHILD.parent}", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_span_tree_of_a_run_retried_tasked_interrupted_and_resumed_in_another_process(
        traced: Traced, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SqliteStore(db)
    thread_id, run_id = "t-trace", f"run-{uuid.uuid4()}"
    try:
        graph = build(store)
        graph.invoke({"trail": []}, {"thread_id": thread_id, "run_id": run_id})
        record = store.get_run(run_id)
    finally:
        store.close()
    assert record is not None and record.status == "interrupted"
    assert record.traceparent is None  # nothing given: derived from the run id

    derived = _tracing.derived_traceparent(run_id).split("-")
    run = traced.one("invoke_workflow traced")
    assert (run["trace_id"], run["parent_id"]) == (derived[1], derived[2])
    assert run["attributes"] == {
        "threadloom.run_id": run_id, "threadloom.thread_id": thread_id,
        "threadloom.graph": "traced", "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.conversation.id": thread_id, "threadloom.status": "interrupted",
    }
    assert run["events"] == ["interrupt"] and run["status"] == "UNSET"
    fetch, review = traced.one("node fetch"), traced.one("node review")
    for node, step in ((fetch, 1), (review, 2)):
        assert node["parent_id"] == run["span_id"]
        assert node["trace_id"] == run["trace_id"]
        assert {k: node["attributes"][k] for k in (
            "threadloom.run_id", "threadloom.thread_id", "threadloom.graph", "threadloom.node",
            "threadloom.step")} == {
            "threadloom.run_id": run_id, "threadloom.thread_id": thread_id,
            "threadloom.graph": "traced", "threadloom.node": node["name"][5:],
            "threadloom.step": step}
    assert fetch["events"] == ["retry"] and fetch["attributes"]["threadloom.attempt"] == 2
    assert fetch["status"] == "UNSET"
    assert review["events"] == ["interrupt"] and review["attributes"]["threadloom.attempt"] == 1
    lookup = traced.one("task lookup")
    assert lookup["parent_id"] == fetch["span_id"]
    assert lookup["attributes"]["threadloom.node"] == "fetch"
    assert lookup["attributes"]["threadloom.run_id"] == run_id

    resumed = _resume_elsewhere(db, thread_id, run_id, "yes")
    assert resumed["output"]["trail"] == ["found k", "review yes", "finish"]
    spans = {s["name"]: s for s in resumed["spans"]}
    assert set(spans) == {"invoke_workflow traced", "node review", "node finish"}
    again = spans["invoke_workflow traced"]
    assert (again["trace_id"], again["parent_id"]) == (run["trace_id"], run["parent_id"])
    assert again["attributes"]["threadloom.status"] == "succeeded"
    assert spans["node finish"]["parent_id"] == again["span_id"]
    assert spans["node review"]["trace_id"] == run["trace_id"]


def test_a_run_started_inside_a_span_joins_its_trace_and_keeps_it(traced: Traced) -> None:
    store = InMemorySaver()
    graph = build(store)
    config = {"thread_id": "t-joined", "run_id": "r-joined"}
    with traced.tracer.start_as_current_span("request") as request:
        graph.invoke({"trail": []}, config)
    parent = request.get_span_context()
    record = store.get_run("r-joined")
    assert record is not None
    assert record.traceparent == \
        f"00-{parent.trace_id:032x}-{parent.span_id:016x}-{int(parent.trace_flags):02x}"
    graph.invoke(Command(resume="ok"), config)  # later, outside any span
    runs = traced.named("invoke_workflow traced")
    assert len(runs) == 2
    for run in runs:
        assert run["trace_id"] == f"{parent.trace_id:032x}"
        assert run["parent_id"] == f"{parent.span_id:016x}"


class Counter(TypedDict, total=False):
    n: int
    left: int
    right: int


def test_node_span_is_current_in_user_code_on_threads_and_in_asyncio(traced: Traced) -> None:
    def side(name: str) -> Any:
        def node(state: Counter) -> dict[str, int]:
            with traced.tracer.start_as_current_span(f"user {name}"):
                return {name: 1}
        return node

    async def anode(state: Counter) -> dict[str, int]:
        await asyncio.sleep(0)
        with traced.tracer.start_as_current_span("user async"):
            await asyncio.sleep(0)
            return {"n": 1}

    builder = StateGraph(Counter)
    builder.add_node("left", side("left"))
    builder.add_node("right", side("right"))
    builder.add_node("anode", anode)
    builder.add_edge("__start__", "left")
    builder.add_edge("__start__", "right")
    builder.add_edge(["left", "right"], "anode")
    graph = builder.compile()
    graph.invoke({"n": 0})  # no checkpointer: left and right run on the pool's threads
    asyncio.run(graph.ainvoke({"n": 0}))
    by_id = {s["span_id"]: s for s in traced.spans()}
    users = [s for s in traced.spans() if s["name"].startswith("user ")]
    assert len(users) == 6
    for user in users:
        parent = by_id[user["parent_id"]]
        assert parent["name"] == f"node {user['name'].split()[1].replace('async', 'anode')}"
        assert by_id[parent["parent_id"]]["name"] == "invoke_workflow graph"
        assert "threadloom.thread_id" not in parent["attributes"]  # a run without a thread


def test_a_failed_node_and_run_record_the_error(traced: Traced) -> None:
    def broken(state: Counter) -> dict[str, int]:
        raise KeyError("missing")

    builder = StateGraph(Counter)
    builder.add_node("broken", broken)
    builder.add_edge("__start__", "broken")
    with pytest.raises(KeyError):
        builder.compile(checkpointer=InMemorySaver()).invoke({"n": 1}, {"thread_id": "t-err"})
    node, run = traced.one("node broken"), traced.one("invoke_workflow graph")
    assert node["status"] == run["status"] == "ERROR"
    assert node["events"] == ["exception"] and run["events"] == ["exception"]
    assert run["attributes"]["threadloom.status"] == "failed"


def test_no_span_is_created_without_a_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert _tracing.run_trace() is None

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a span was started without a tracer provider")

    monkeypatch.setattr(_tracing.RunTrace, "__init__", refuse)
    monkeypatch.setattr(_tracing.NodeSpan, "__init__", refuse)
    out = build(InMemorySaver()).invoke({"trail": []}, {"thread_id": "t-off"})
    assert out["trail"] == ["found k"]


def test_running_a_graph_imports_no_opentelemetry() -> None:
    code = (
        "import sys\n"
        "from tracing_child import build\n"
        "from threadloom.checkpoint.memory import InMemorySaver\n"
        "build(InMemorySaver()).invoke({'trail': []}, {'thread_id': 't'})\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=CHILD.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
