"""The cost of one node span: the SDK's own, ours on top of it, and in the engine's seed loop.

    .venv/bin/python bench/node_span.py [--rounds 9] [--nodes 2000] [--processor batch|simple]
                                        [--before-rev REV]

Each round runs one child process per package (this worktree's, and with ``--before-rev`` the
package at ``REV``, extracted with ``git archive``), in turn, so load on the shared machine
hits both alike; inside a child the five figures below are timed in turn, five passes (after
one to warm up), each figure the best pass. A child installs the OpenTelemetry SDK as an
application does (a
``BatchSpanProcessor``, what a deployment uses: the runtime's ``OTEL_*`` set-up installs one;
or ``--processor simple``, which exports on the calling thread) with an exporter that drops
what it is given, then times, in µs of the process's CPU time per node (all its threads, the
batch processor's included; the time the OS gives other processes on a shared machine is not
counted), ``--nodes`` spans a pass:

* ``sdk_bare``: ``tracer.start_span("node n").end()``, a span without attributes or parent:
  the SDK's floor;
* ``sdk_floor``: the span a node execution needs, made directly on the SDK: the run span as
  parent, the seven attributes of a node span passed at once, attached as the current context
  and detached, ended: the least any instrumentation with these attributes can pay;
* ``node_span``: the same through ``threadloom._tracing`` (``RunTrace.node(...).end(1)``);
* ``loop_off`` / ``loop_on``: the engine's seed loop without a checkpointer (1000 rounds,
  2000 node executions) with tracing off and on (the run span included), so
  ``loop_on - loop_off`` is a node span's cost inside the engine. Both in one process: the
  library is handed the tracer (or none) through ``threadloom._tracing._tracer``, as the
  tests do.

The report (JSON), per package: each figure's best and median over the rounds, and
``ours_us`` (``node_span - sdk_floor``: the library's share of a span), ``attrs_us``
(``sdk_floor - sdk_bare``: what the attributes, the parent and the context cost in the SDK and
the API) and ``span_in_loop_us`` (``loop_on - loop_off``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
from typing import TypedDict

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult)

from threadloom import _tracing
from threadloom.graph import END, StateGraph

nodes, processor = int(sys.argv[1]), sys.argv[2]

class Dropped(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(
    (BatchSpanProcessor if processor == "batch" else SimpleSpanProcessor)(Dropped()))
trace.set_tracer_provider(provider)
tracer = provider.get_tracer(_tracing.TRACER_NAME)

run = _tracing.run_trace()
run.start("0b6c3f2e-run", "thread-1", "bench")
parent = run.context
attrs = {**run.attrs, "threadloom.node": "n", "threadloom.step": 3, "threadloom.attempt": 1,
         "threadloom.execution_id": "0b6c3f2e-execution"}

def sdk_bare():
    for _ in range(nodes):
        tracer.start_span("node n").end()

def sdk_floor():
    for _ in range(nodes):
        span = tracer.start_span("node n", context=parent, attributes=dict(attrs))
        token = context.attach(trace.set_span_in_context(span, parent))
        context.detach(token)
        span.end()

def node_span():
    for _ in range(nodes):
        run.node("n", 3, "0b6c3f2e-execution").end(1)

class S(TypedDict):
    step: int
    done: bool

b = StateGraph(S)
b.add_node("increment", lambda s: {"step": s["step"] + 1})
b.add_node("check", lambda s: {"done": s["step"] >= 1000})
b.set_entry_point("increment")
b.add_edge("increment", "check")
b.add_conditional_edges("check", lambda s: END if s["done"] else "increment",
                        {"increment": "increment", END: END})
graph = b.compile()

def loop(traced):
    def go():
        _tracing._tracer = (lambda: tracer) if traced else (lambda: None)
        graph.invoke({"step": 0, "done": False}, {"recursion_limit": 10_000})
    return go

modes = [("sdk_bare", sdk_bare, nodes), ("sdk_floor", sdk_floor, nodes),
         ("node_span", node_span, nodes), ("loop_off", loop(False), 2000),
         ("loop_on", loop(True), 2000)]
out = {}
for number in range(6):  # the modes in turn, each pass: load hits them alike
    for name, fn, per in modes:
        t = time.process_time(); fn(); us = (time.process_time() - t) / per * 1e6
        if number:  # the first pass warms up
            out[name] = min(out.get(name, us), us)
run.end("succeeded")
provider.shutdown()
print(json.dumps(out))
"""


def _package_at(rev: str) -> str:
    """A copy of the package at ``rev`` (its parent directory)."""
    repo = Path(__file__).resolve().parent.parent
    target = tempfile.mkdtemp(prefix="node-span-")
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "threadloom"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--processor", choices=("batch", "simple"), default="batch")
    parser.add_argument("--before-rev", help="also time the package at this git revision")
    args = parser.parse_args()
    packages = {"after": str(Path(__file__).resolve().parent.parent)}
    if args.before_rev:
        packages["before"] = _package_at(args.before_rev)
    rounds: dict[str, list[dict[str, float]]] = {p: [] for p in packages}
    for r in range(args.rounds):
        for name, path in packages.items():
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.nodes), args.processor],
                env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
                check=True, cwd="/")
            rounds[name].append(json.loads(done.stdout))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    report: dict[str, object] = {"rounds": args.rounds, "nodes": args.nodes,
                                 "processor": args.processor}
    for name, results in rounds.items():
        figures: dict[str, dict[str, float]] = {}
        for key in results[0]:
            values = [x[key] for x in results]
            figures[key] = {"best": min(values), "median": statistics.median(values)}
        for derived, (a, b) in {"ours_us": ("node_span", "sdk_floor"),
                                "attrs_us": ("sdk_floor", "sdk_bare"),
                                "span_in_loop_us": ("loop_on", "loop_off")}.items():
            figures[derived] = {k: figures[a][k] - figures[b][k] for k in ("best", "median")}
        report[name] = {k: {s: round(v, 2) for s, v in f.items()} for k, f in figures.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
