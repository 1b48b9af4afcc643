"""The app a test server process serves: ``python -m uvicorn --factory _app:create``.

It reads its store URL from ``THREADLOOM_TEST_DB`` and registers ``THREADLOOM_API_KEY`` as
an admin key of ``default`` (with ``THREADLOOM_REDIS_URL``, its signals travel over Redis),
then serves the test graphs of :mod:`graphs` over that store.
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


def open_runtime_store() -> RuntimeStore:
    """The store of ``THREADLOOM_TEST_DB``; its signals travel over Redis if
    ``THREADLOOM_REDIS_URL`` is set (as ``--redis`` does), on the channel prefix
    ``THREADLOOM_TEST_REDIS_PREFIX``."""
    store = open_store(os.environ["THREADLOOM_TEST_DB"])
    assert isinstance(store, RuntimeStore)
    redis_url = os.environ.get("THREADLOOM_REDIS_URL")
    if redis_url:
        from threadloom.checkpoint.redis_signals import RedisSignals

        prefix = os.environ.get("THREADLOOM_TEST_REDIS_PREFIX", "threadloom:")
        store.use_signals(RedisSignals(redis_url, prefix=prefix))
    return store


def create() -> FastAPI:
    """The app of a test server process (see the module docstring)."""
    return build(open_runtime_store(), os.environ["THREADLOOM_API_KEY"])
