"""OpenTelemetry spans of runs, node executions and ``@task`` calls.

The library instruments with the OpenTelemetry *API* only (``trace.get_tracer("threadloom")``);
the application, or the runtime from ``OTEL_*`` variables (:mod:`threadloom.cli._otel`),
installs the SDK and an exporter. Until one has installed a tracer provider, a run pays one
dictionary lookup (``opentelemetry.trace`` not imported at all) or one ``isinstance`` test (the
API's default proxy provider) and creates nothing: the engine's hooks test ``ctx.trace is
None``. The test runs at the start of each run, so a provider installed after ``import
threadloom`` is picked up by the next run.

Spans (names and attributes are part of the API, see the guide's "Tracing" section):

- ``invoke_workflow {graph}``: one per invocation of a top-level graph (a run resumed three
  times has four), all in the run's trace;
- ``node {node}``: one per node execution, the current span while the node's code runs (so
  spans the node starts nest under it, on threads and in asyncio alike); failed attempts
  that are retried are ``retry`` events, an ``interrupt()`` an ``interrupt`` event;
- ``task {name}``: one per ``@task`` call that runs (a result replayed from the store runs
  nothing and has no span).

**The run's trace.** A run's spans descend from one parent chosen when the run is created
and stored with its record (``RunRecord.traceparent``): the ``traceparent`` header of the
HTTP request that created it, or the span current in the caller when a library run starts.
Without either (``None`` stored), the parent is derived from the run id: trace id and parent
span id are hashes of it, so any process that continues the run, at any later time, lands in
the same trace. That derived parent span is never exported (the run spans of such a trace
name a parent no backend holds, the usual shape of a trace continued from elsewhere).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from threadloom.errors import GraphInterrupt, RunCancelled

__all__ = ["NodeSpan", "RunTrace", "current_traceparent", "derived_traceparent",
           "run_trace", "trace_id", "valid_traceparent"]

TRACER_NAME = "threadloom"

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_cache: tuple[Any, Any] | None = None  # (provider, its threadloom tracer)

# The three API functions every node span calls, bound once a run is traced (module
# globals: an ``import`` statement per span costs more than the rest of our share of it).
_bound = False
_attach: Callable[[Any], Any]
_detach: Callable[[Any], None]
_in_context: Callable[[Any, Any], Any]


def _bind() -> None:
    global _bound, _attach, _detach, _in_context
    from opentelemetry import context, trace

    _attach, _detach = context.attach, context.detach
    _in_context = trace.set_span_in_context
    _bound = True


def _tracer() -> Any:
    """The ``threadloom`` tracer of the installed provider, or ``None`` when no application
    installed one (OpenTelemetry not imported, or only the API's default provider)."""
    global _cache
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    provider = api.get_tracer_provider()
    if isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider)):
        return None
    cached = _cache
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer(TRACER_NAME)
    _cache = (provider, tracer)
    return tracer


def valid_traceparent(value: str | None) -> str | None:
    """``value`` if it is a W3C ``traceparent`` (version 00, non-zero ids), else ``None``."""
    if not value:
        return None
    value = value.strip().lower()
    match = _TRACEPARENT.match(value)
    if match is None or int(match[1], 16) == 0 or int(match[2], 16) == 0:
        return None
    return value


def derived_traceparent(run_id: str) -> str:
    """The parent of a run's spans when none was given: ids hashed from the run id, so every
    process that runs a part of the run agrees on the trace."""
    digest = hashlib.sha256(b"threadloom-run\x00" + run_id.encode()).digest()
    trace_id = digest[:16].hex()
    span_id = digest[16:24].hex()
    if int(trace_id, 16) == 0:  # pragma: no cover - a 2**-128 chance
        trace_id = "1".rjust(32, "0")
    if int(span_id, 16) == 0:  # pragma: no cover
        span_id = "1".rjust(16, "0")
    return f"00-{trace_id}-{span_id}-01"


def trace_id(run_id: str, traceparent: str | None) -> str:
    """The id (32 hex digits) of the trace of run ``run_id`` whose record stores
    ``traceparent``."""
    return (valid_traceparent(traceparent) or derived_traceparent(run_id)).split("-")[1]


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current in this context, when an application
    installed a tracer provider and a span is current; else ``None``."""
    if _tracer() is None:
        return None
    from opentelemetry import trace

    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return f"00-{found.trace_id:032x}-{found.span_id:016x}-{int(found.trace_flags):02x}"


def _parent_context(traceparent: str) -> Any:
    from opentelemetry import trace

    match = _TRACEPARENT.match(traceparent)
    assert match is not None
    parent = trace.SpanContext(int(match[1], 16), int(match[2], 16), is_remote=True,
                               trace_flags=trace.TraceFlags(int(match[3], 16)))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _error(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _interrupt_event(span: Any, interrupts: Sequence[Any]) -> None:
    for item in interrupts:
        span.add_event("interrupt", {"threadloom.interrupt_id": str(getattr(item, "id", ""))})


class RunTrace:
    """The spans of one run (or of a subgraph running inside a node, which has no run span
    of its own: its node spans nest under the parent's node span)."""

    __slots__ = ("tracer", "nested", "given", "started_ns", "span", "context", "attrs")

    def __init__(self, tracer: Any, nested: bool) -> None:
        from opentelemetry import context

        if not _bound:
            _bind()
        self.tracer = tracer
        self.nested = nested
        # the span current where the run was started: the parent of a new run's spans
        self.given = None if nested else current_traceparent()
        self.started_ns = time.time_ns()
        self.span: Any = None
        self.context: Any = context.get_current() if nested else None
        self.attrs: dict[str, Any] = {}

    def start(self, run_id: str, thread_id: str | None, graph: str,
              stored: str | None = None) -> None:
        """Open the run span, once the run knows its id and stored parent (``begin``)."""
        attrs: dict[str, Any] = {"threadloom.run_id": run_id, "threadloom.graph": graph}
        if thread_id is not None:
            attrs["threadloom.thread_id"] = thread_id
        self.attrs = attrs
        if self.nested or self.span is not None:
            return
        from opentelemetry import trace

        parent = valid_traceparent(stored) or self.given or derived_traceparent(run_id)
        span_attrs = {**attrs, "gen_ai.operation.name": "invoke_workflow"}
        if thread_id is not None:
            span_attrs["gen_ai.conversation.id"] = thread_id
        self.span = self.tracer.start_span(
            f"invoke_workflow {graph}", context=_parent_context(parent),
            kind=trace.SpanKind.INTERNAL, attributes=span_attrs, start_time=self.started_ns)
        self.context = trace.set_span_in_context(self.span)

    def end(self, status: str, interrupts: Sequence[Any] = (),
            error: BaseException | None = None) -> None:
        """Close the run span with the run's status (``succeeded``, ``interrupted``, ...)."""
        span = self.span
        if span is None:
            return
        span.set_attribute("threadloom.status", status)
        if interrupts:
            _interrupt_event(span, interrupts)
        if error is not None:
            if status == "cancelled":
                span.add_event("cancelled", {"threadloom.reason": str(error)})
            else:
                _error(span, error)
        span.end()

    def node(self, name: str, step: int, execution_id: str) -> NodeSpan:
        """Open a node execution's span and make it current in this context."""
        return NodeSpan(self, f"node {name}", name, step, execution_id)

    def task(self, name: str, node: str, step: int) -> NodeSpan:
        """Open a ``@task`` call's span (under the current span: its node's) and make it
        current in this context."""
        return NodeSpan(self, f"task {name}", node, step, None)


class NodeSpan:
    """A node execution's or task call's span, current in its context until :meth:`end`."""

    __slots__ = ("span", "_token")

    def __init__(self, run: RunTrace, span_name: str, node: str, step: int,
                 execution_id: str | None) -> None:
        # every attribute goes to ``start_span`` at once (one validation pass in the SDK,
        # no lock per ``set_attribute``); the run's own are copied, never shared with a span
        attrs = {**run.attrs, "threadloom.node": node, "threadloom.step": step,
                 "threadloom.attempt": 1}
        if execution_id is not None:
            attrs["threadloom.execution_id"] = execution_id
            parent = run.context
        else:
            parent = None  # a task: under the current span, its node's
        self.span = span = run.tracer.start_span(span_name, context=parent, attributes=attrs)
        self._token = _attach(_in_context(span, parent))

    def retry(self, attempt: int, exc: BaseException, delay: float | None = None) -> None:
        """Attempt ``attempt`` raised ``exc`` and the next one follows (after ``delay``)."""
        attrs: dict[str, Any] = {"threadloom.attempt": attempt,
                                 "exception.type": type(exc).__name__,
                                 "exception.message": str(exc)}
        if delay is not None:
            attrs["threadloom.retry_delay_s"] = delay
        self.span.add_event("retry", attrs)

    def failed(self, exc: BaseException) -> None:
        """The execution ended with ``exc``: an interrupt (an event) or an error."""
        if isinstance(exc, GraphInterrupt):
            _interrupt_event(self.span, exc.interrupts)
        elif isinstance(exc, RunCancelled):
            self.span.add_event("cancelled")
        else:
            _error(self.span, exc)

    def end(self, attempt: int) -> None:
        """Close the span (``attempt``: the attempts it took) and restore the context."""
        _detach(self._token)
        span = self.span
        if attempt > 1:
            span.set_attribute("threadloom.attempt", attempt)
        span.end()


def run_trace(nested: bool = False) -> RunTrace | None:
    """The trace of a run starting now, or ``None`` when no tracer provider is installed."""
    tracer = _tracer()
    if tracer is None:
        return None
    return RunTrace(tracer, nested)
