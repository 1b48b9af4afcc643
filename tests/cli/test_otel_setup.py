"""The runtime's tracer provider from ``OTEL_*`` variables (``threadloom.cli._otel``), each
case in a fresh interpreter: a tracer provider is a process-wide setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

CHILD = """
from typing import TypedDict
from opentelemetry import trace
from threadloom.cli._otel import setup_tracing
from threadloom.graph import END, START, StateGraph

stop = setup_tracing()
provider = trace.get_tracer_provider()
processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
exporters = [type(p.span_exporter).__name__ for p in processors]

class S(TypedDict):
    n: int

builder = StateGraph(S)
builder.add_node("bump", lambda s: {"n": s["n"] + 1})
builder.add_edge(START, "bump")
builder.add_edge("bump", END)
builder.compile(name="setup").invoke({"n": 0})
stop()
print("RESULT " + __import__("json").dumps({"provider": type(provider).__name__,
                                            "exporters": exporters}))
"""


def _run(**env: str) -> tuple[dict[str, object], str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", CHILD], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), done.stdout


def test_nothing_is_set_up_without_otel_variables() -> None:
    result, _ = _run()
    assert result == {"provider": "ProxyTracerProvider", "exporters": []}


def test_the_console_exporter_prints_the_run_spans() -> None:
    result, out = _run(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="svc-under-test")
    assert result == {"provider": "TracerProvider", "exporters": ["ConsoleSpanExporter"]}
    assert '"name": "invoke_workflow setup"' in out and '"name": "node bump"' in out
    assert '"service.name": "svc-under-test"' in out


def test_an_otlp_endpoint_selects_the_otlp_exporter() -> None:
    # nothing listens there: the batch processor's export fails quietly at shutdown
    result, _ = _run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
                     OTEL_EXPORTER_OTLP_TIMEOUT="1")
    assert result == {"provider": "TracerProvider", "exporters": ["OTLPSpanExporter"]}


def test_none_and_sdk_disabled_switch_it_off() -> None:
    assert _run(OTEL_TRACES_EXPORTER="none",
                OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")[0]["exporters"] == []
    assert _run(OTEL_SDK_DISABLED="true", OTEL_TRACES_EXPORTER="console")[0]["exporters"] == []
