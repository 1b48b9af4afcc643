"""The app of the seed 001 test server: the test graphs plus seed 001's ``test-graph``
(node ``node1``) and a ``flaky`` graph, with a worker, as ``threadloom dev`` serves them:
``python -m uvicorn --factory _seed_app:create`` (environment as for :mod:`_app`).

As ``threadloom dev`` does without a ``threadloom.toml``: ``seed_loop`` is the seed graph of
:mod:`threadloom.examples.loop` (whose nodes log), and each run's log records are kept with
it (``[logs]`` defaults: capture at ``INFO``), so ``GET /threads/{tid}/runs/{rid}/logs``
answers real records. The process itself prints only warnings and above.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from _app import SETTINGS, open_runtime_store
from fastapi import FastAPI
from graphs import compiled, seed001_graphs

import threadloom.examples.loop
import threadloom.logging
from threadloom.server import create_app
from threadloom.server.auth import ensure_key
from threadloom.worker import Worker
from threadloom.worker.registry import LogSettings, bind_graph


def create() -> FastAPI:
    """The app, with a worker and the capture of run logs started and stopped with it."""
    store = open_runtime_store()
    ensure_key(store, os.environ["THREADLOOM_API_KEY"])
    graphs = {**compiled(store), **seed001_graphs(store),
              "seed_loop": bind_graph(threadloom.examples.loop.graph, store, "seed_loop")}
    app = create_app(store, graphs, SETTINGS)
    worker = Worker(store, graphs, concurrency=4, heartbeat=0.5, run_lease=3.0)
    serve = app.router.lifespan_context
    logs = LogSettings(level="WARNING")  # `threadloom dev` with [logs] level = "WARNING"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        threadloom.logging.configure(level=logs.level, stream=sys.stderr)
        capture = threadloom.logging.capture_run_logs(
            store, level=logs.capture_level, max_records=logs.max_records,
            max_message=logs.max_message)
        worker.start()
        try:
            async with serve(app) as state:
                yield state
        finally:
            await asyncio.to_thread(worker.stop, 5.0)
            capture.close()

    app.router.lifespan_context = lifespan
    return app
