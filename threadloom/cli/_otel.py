"""The runtime's OpenTelemetry set-up: a tracer provider and exporter from the standard
``OTEL_*`` environment variables, when the ``otel`` extra is installed and they ask for one.

Exporting is switched on by ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``; ``none``
switches it off) or, without it, by ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (then ``otlp``). The OTLP exporter speaks HTTP/protobuf
and reads its own variables (endpoint, headers, timeout, compression); the provider reads
``OTEL_SERVICE_NAME`` (default ``threadloom``), ``OTEL_RESOURCE_ATTRIBUTES`` and
``OTEL_TRACES_SAMPLER``; the batch processor ``OTEL_BSP_*``. ``OTEL_SDK_DISABLED=true``
switches everything off, and a provider some other tool installed first (e.g.
``opentelemetry-instrument``) is left as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

__all__ = ["setup_tracing"]

log = logging.getLogger("threadloom.runtime")

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _exporter_name() -> str | None:
    """The exporter the environment asks for, or ``None``."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    asked = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if asked:
        return None if asked == "none" else asked
    if any(os.environ.get(name, "").strip() for name in _ENDPOINTS):
        return "otlp"
    return None


def setup_tracing() -> Callable[[], None]:
    """Install a tracer provider exporting as the ``OTEL_*`` variables say; returns the
    function that flushes and shuts it down at exit (a no-op when nothing was installed)."""
    name = _exporter_name()
    if name is None:
        return _nothing
    if name not in ("otlp", "console"):
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console or none): "
                    "no traces are exported", name)
        return _nothing
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        log.warning("OTEL_* variables ask for traces but the OpenTelemetry SDK is not "
                    "installed: pip install 'threadloom[otel]'")
        return _nothing
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return _nothing  # the application (or opentelemetry-instrument) installed one
    exporter: SpanExporter
    if name == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: "
                        "pip install 'threadloom[otel]'")
            return _nothing
        exporter = OTLPSpanExporter()
    named = os.environ.get("OTEL_SERVICE_NAME") or \
        "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {SERVICE_NAME: "threadloom"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("exporting traces (%s)", name)
    return provider.shutdown


def _nothing() -> None:
    return None
