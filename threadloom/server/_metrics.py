"""``GET /metrics``: the Prometheus exposition of the library's metrics (the default registry)
and of this app's own registry.

The app's registry holds ``threadloom_http_request_duration_seconds{route,method,status}``,
measured by :class:`HttpMetrics`, an ASGI middleware outside every other (so the fast lane's
answers count too), labelled by the route template (``/threads/{thread_id}``, never the raw
path: ids would make a series each), and the queue gauges ``threadloom_queue_depth`` and
``threadloom_workers_alive``, read from the store when scraped (:class:`QueueCollector`).
Each app has a registry of its own, so a process may build any number of apps.

Nothing here runs without ``prometheus_client``: :func:`install` then adds no route.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadloom import _metrics
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server.errors import NotFoundError
from threadloom.server.settings import Settings

__all__ = ["ROUTE_KEY", "HttpMetrics", "QueueCollector", "install"]

ROUTE_KEY = "threadloom.route"
"""A scope key a middleware that answers a request itself (the fast lane) sets to the route
template it served."""

UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404)
# the method label: any other method a client sends is "other" (one series, not one each)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install(app: FastAPI, store: RuntimeStore, settings: Settings) -> bool:
    """Add ``/metrics`` and the HTTP middleware to ``app`` (call it after every other
    middleware, so this one is outermost). Returns ``False``, adding nothing, when the
    library's metrics are off (``prometheus_client`` missing or ``THREADLOOM_METRICS=0``)
    but a ``/metrics`` that says why (404)."""
    if not _metrics.available():

        @app.get("/metrics", tags=["health"], include_in_schema=False)
        def no_metrics() -> Response:
            raise NotFoundError("metrics are off: install prometheus-client (pip install "
                                "'threadloom[metrics]') and leave THREADLOOM_METRICS unset")

        return False
    from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = CollectorRegistry()
    duration = Histogram("threadloom_http_request_duration_seconds",
                         "Time to answer an HTTP request (to its last byte), by route template.",
                         ["route", "method", "status"], registry=registry)
    registry.register(QueueCollector(store, settings))
    app.state.metrics_registry = registry
    app.add_middleware(HttpMetrics, histogram=duration)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def metrics() -> Response:
        # a sync route: the queue gauges read the store, off the event loop
        body = generate_latest(REGISTRY) + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return True


class QueueCollector:
    """``threadloom_queue_depth`` (runs queued, not claimed) and ``threadloom_workers_alive``
    (workers whose heartbeat is more recent than ``worker_stale_after``, 15 s by default),
    read from the store at each scrape."""

    def __init__(self, store: RuntimeStore, settings: Settings) -> None:
        self.store = store
        self.stale_after = settings.worker_stale_after or 15.0

    def describe(self) -> list[Any]:
        return []  # no store reads at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("threadloom_queue_depth",
                                  "Runs queued and not claimed, in every namespace.")
        depth.add_metric([], float(self.store.queue_depth()))
        yield depth
        alive = GaugeMetricFamily("threadloom_workers_alive",
                                  "Workers with a recent heartbeat.")
        seen_after = time.time() - self.stale_after
        alive.add_metric([], float(len(self.store.list_workers(seen_after=seen_after))))
        yield alive


class HttpMetrics:
    """ASGI middleware: observe each HTTP request's duration under its route template."""

    def __init__(self, app: ASGIApp, histogram: Any) -> None:
        self.app = app
        self.histogram = histogram
        self.children: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # the app raised before it answered

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            method = scope["method"]
            key = (route_of(scope), method if method in _METHODS else "other", str(status))
            child = self.children.get(key)
            if child is None:
                child = self.children[key] = self.histogram.labels(*key)
            child.observe(time.perf_counter() - started)


def route_of(scope: Scope) -> str:
    """The route template that served the request (:data:`UNMATCHED` if none did)."""
    served = scope.get(ROUTE_KEY)
    if served is not None:
        return str(served)
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
