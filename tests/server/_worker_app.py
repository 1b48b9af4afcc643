"""The app of a test server process that also runs a worker, as ``threadloom dev`` does:
``python -m uvicorn --factory _worker_app:create``.

Like :mod:`_app` (``THREADLOOM_TEST_DB``, ``THREADLOOM_API_KEY``, ``THREADLOOM_REDIS_URL``), plus a
:class:`~threadloom.worker.Worker` over the same store while the app runs, unless
``THREADLOOM_TEST_WORKER=0`` (an API-only process, as ``threadloom serve``);
``THREADLOOM_TEST_FAST_LANE=0`` turns the server's fast lane off (and with it the runs of wait
requests on the process's worker, which the lane starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any

from _app import SETTINGS, open_runtime_store
from fastapi import FastAPI
from graphs import compiled
from run_graphs import run_graphs

from threadloom.server import create_app
from threadloom.server.auth import ensure_key
from threadloom.worker import Worker


def create() -> FastAPI:
    """The app, with a worker started and stopped with it."""
    store = open_runtime_store()
    ensure_key(store, os.environ["THREADLOOM_API_KEY"])
    graphs = {**compiled(store), **run_graphs(store)}
    settings = SETTINGS
    if os.environ.get("THREADLOOM_TEST_FAST_LANE") == "0":
        settings = dataclasses.replace(settings, fast_lane=False)
    if os.environ.get("THREADLOOM_TEST_WORKER", "1") == "0":
        return create_app(store, graphs, settings)
    worker = Worker(store, graphs, concurrency=8, heartbeat=0.5, run_lease=3.0)
    # as in `threadloom dev`: the wait requests the worker can take run on it directly
    app = create_app(store, graphs, settings, worker=worker)
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
