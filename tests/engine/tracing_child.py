"""The graph ``test_tracing.py`` traces, and the other process that resumes its runs.

The graph (``fetch -> review -> finish``): ``fetch`` fails its first attempt in a process
(and is retried) and calls the ``@task`` ``lookup``; ``review`` pauses on ``interrupt()``;
``finish`` ends the run.

Usage (the resuming process)::

    python tracing_child.py DB THREAD_ID RUN_ID RESUME_VALUE

resumes run ``RUN_ID`` on the SQLite file ``DB`` with ``Command(resume=RESUME_VALUE)``,
with an OpenTelemetry SDK tracer provider of its own that keeps spans in memory, and
prints them as JSON: one object per span (name, trace and span id, parent span id,
attributes, event names, status).
"""

from __future__ import annotations

import json
import operator
import sys
from typing import Annotated, Any, TypedDict

from threadloom import END, START, RetryPolicy, StateGraph, interrupt
from threadloom.func import task
from threadloom.graph import CompiledGraph
from threadloom.types import Command


class State(TypedDict):
    trail: Annotated[list[str], operator.add]


ATTEMPTS = {"fetch": 0}


@task
def lookup(key: str) -> str:
    return f"found {key}"


def fetch(state: State) -> dict[str, Any]:
    ATTEMPTS["fetch"] += 1
    if ATTEMPTS["fetch"] == 1:
        raise ConnectionError("flaky upstream")
    return {"trail": [lookup("k").result()]}


def review(state: State) -> dict[str, Any]:
    answer = interrupt("approve?")
    return {"trail": [f"review {answer}"]}


def finish(state: State) -> dict[str, Any]:
    return {"trail": ["finish"]}


def build(store: Any, durability: str = "sync") -> CompiledGraph:
    """The traced graph, on ``store``."""
    builder = StateGraph(State)
    builder.add_node("fetch", fetch, retry_policy=RetryPolicy(
        initial_interval=0.001, jitter=False, retry_on=ConnectionError))
    builder.add_node("review", review)
    builder.add_node("finish", finish)
    builder.add_edge(START, "fetch")
    builder.add_edge("fetch", "review")
    builder.add_edge("review", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=store, durability=durability, name="traced")  # type: ignore[arg-type]


def span_json(span: Any) -> dict[str, Any]:
    """What the tests compare of a finished SDK span."""
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "status": span.status.status_code.name,
    }


def main(db: str, thread_id: str, run_id: str, value: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from threadloom.checkpoint.sqlite import SqliteStore

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    store = SqliteStore(db)
    try:
        out = build(store).invoke(Command(resume=value),
                                  {"thread_id": thread_id, "run_id": run_id})
    finally:
        store.close()
    print(json.dumps({"output": out,
                      "spans": [span_json(s) for s in exporter.get_finished_spans()]}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
