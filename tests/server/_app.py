"""The app a test server process serves: ``python -m uvicorn --factory _app:create``.

It reads its store URL from ``THREADLOOM_TEST_DB`` and registers ``THREADLOOM_API_KEY`` as
an admin key of ``default``, then serves the test graphs of :mod:`graphs` over that store.
In-process tests build the same app with :func:`build`.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from graphs import compiled

from threadloom.checkpoint import open_store
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server import Settings, create_app
from threadloom.server.auth import ensure_key

# no worker runs beside the test servers: /ready does not wait for one
SETTINGS = Settings(worker_stale_after=None)


def build(store: RuntimeStore, api_key: str) -> FastAPI:
    """The test app over ``store``, with ``api_key`` registered as an admin key."""
    ensure_key(store, api_key)
    return create_app(store, compiled(store), SETTINGS)


def create() -> FastAPI:
    """The app of a test server process (see the module docstring)."""
    store = open_store(os.environ["THREADLOOM_TEST_DB"])
    assert isinstance(store, RuntimeStore)
    return build(store, os.environ["THREADLOOM_API_KEY"])
