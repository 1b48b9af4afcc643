"""The app of the seed 001 test server: the test graphs plus seed 001's ``test-graph``
(node ``node1``) and a ``flaky`` graph, with a worker, as ``threadloom dev`` serves them:
``python -m uvicorn --factory _seed_app:create`` (environment as for :mod:`_app`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from _app import SETTINGS, open_runtime_store
from fastapi import FastAPI
from graphs import compiled, seed001_graphs

from threadloom.server import create_app
from threadloom.server.auth import ensure_key
from threadloom.worker import Worker


def create() -> FastAPI:
    """The app, with a worker started and stopped with it."""
    store = open_runtime_store()
    ensure_key(store, os.environ["THREADLOOM_API_KEY"])
    graphs = {**compiled(store), **seed001_graphs(store)}
    app = create_app(store, graphs, SETTINGS)
    worker = Worker(store, graphs, concurrency=4, heartbeat=0.5, run_lease=3.0)
    serve = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        worker.start()
        try:
            async with serve(app) as state:
                yield state
        finally:
            await asyncio.to_thread(worker.stop, 5.0)

    app.router.lifespan_context = lifespan
    return app
