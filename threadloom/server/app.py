"""The ASGI application: ``create_app(store, graphs, settings)``.

Nothing here is global: the factory builds a FastAPI app around the store and the graphs it is
given (tests build as many as they like), installs the error handlers that make every error a
JSON ``{code, message}``, the body-size limit, the health routes, and one router per resource.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.graph.compiled import CompiledGraph
from threadloom.server._audit import AuditTrail
from threadloom.server._fastlane import FastLane
from threadloom.server._strictjson import body_problem
from threadloom.server.errors import document_errors, error_response, install_error_handlers
from threadloom.server.settings import Settings

if TYPE_CHECKING:
    from threadloom.worker import Worker

__all__ = ["create_app"]


def create_app(store: RuntimeStore, graphs: Mapping[str, CompiledGraph],
               settings: Settings | None = None, *, worker: Worker | None = None) -> FastAPI:
    """Build the HTTP API over ``store`` for the registered ``graphs`` (name -> a graph
    compiled with ``store`` as its checkpointer). ``worker``: a worker of this process over
    the same store and graphs (as ``threadloom dev`` runs one); a run that a ``wait`` request
    queues and that can start at once executes on it directly, rather than through the queue.

    Example:
        >>> app = create_app(open_store("sqlite:///app.db"), {"seed_loop": graph})
        >>> uvicorn.run(app, port=8000)
    """
    settings = settings or Settings()
    app = FastAPI(
        title="threadloom",
        summary="Durable, stateful graph workflows: threads, runs, streams and state.",
        version=_version(),
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        # "/threads/" (e.g. an id of "%2F") is a 404 error body, not a 307 to another route
        redirect_slashes=False,
    )
    app.state.store = store
    app.state.graphs = dict(graphs)
    app.state.settings = settings
    app.state.started_at = time.time()  # the registered graphs' assistants date from here
    install_error_handlers(app)
    app.add_middleware(AuditTrail, store=store)  # innermost: it sees the routes' answers
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.fast_lane:  # outermost of the app's own (inside the unexpected-error handler)
        app.add_middleware(FastLane, store=store, graphs=app.state.graphs, settings=settings,
                           worker=worker)
    _health_routes(app)
    from threadloom.server._metrics import install as install_metrics

    install_metrics(app, store, settings)  # /metrics; its middleware is the outermost
    from threadloom.server import (
        _dashboard,
        _logs,
        admin,
        assistants,
        runs,
        state_manager,
        threads,
    )

    for module in (assistants, threads, runs, _logs, state_manager, admin, _dashboard):
        app.include_router(module.router)
    document_errors(app)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("threadloom")
    except PackageNotFoundError:
        return "0"


def _health_routes(app: FastAPI) -> None:
    @app.get("/ok", tags=["health"], summary="Readiness: the API serves and the store is set up")
    def ok() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/ready", tags=["health"],
             summary="Deep check: the store answers now and a worker heartbeat is recent")
    def ready(request: Request) -> JSONResponse:
        store: RuntimeStore = request.app.state.store
        cfg: Settings = request.app.state.settings
        checks: dict[str, Any] = {}
        try:
            workers = store.list_workers(seen_after=time.time() - (cfg.worker_stale_after or 0))
            checks["store"] = "ok"
        except Exception:
            return error_response(503, "store_unavailable", "the store does not answer")
        if cfg.worker_stale_after is not None:
            checks["workers"] = len(workers)
            if not workers:
                return error_response(503, "no_workers",
                                      "no worker has sent a heartbeat recently")
        return JSONResponse({"ok": True, **checks})


class BodyLimit:
    """Answer 413 ``payload_too_large`` to a request whose body is over ``limit`` bytes: by
    its ``Content-Length`` (the server holds a body to its declared length), or, without one
    (chunked), by reading the body first, at most ``limit`` bytes of it, before the app runs.
    (An exception raised while the app reads the body would reach the route as a malformed
    body: FastAPI turns every failure of the read into a 400/422.)

    A body read here is also refused (422 ``invalid_request``) when it is JSON only to
    Python's parser (see :func:`body_problem`): a lone surrogate cannot be encoded, so a
    stored one made every later read of its thread a 500; Postgres refuses ``NaN``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
                break
        messages: list[Message] = []
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees it too
            chunk = message.get("body", b"")
            chunks.append(chunk)
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        problem = body_problem(b"".join(chunks))
        if problem is not None:
            response = error_response(422, "invalid_request", f"the body is not JSON: {problem}")
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large",
                                  f"the request body is over the limit of {self.limit} bytes")
        await response(scope, receive, send)
