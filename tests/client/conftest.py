"""Fixtures of the client tests: a real server process (API and a worker, as ``threadloom
dev``) shared by a module's tests, and a :class:`~proxy.FaultProxy` in front of it.

The server is the server tests' (``tests/server/harness.py``, ``_worker_app``: the test graphs
``seed_loop``, ``seed_chat``, ``review`` and ``ticker``), on SQLite; the Postgres variant is
marked ``slow``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from harness import Server, served  # noqa: E402
from proxy import FaultProxy  # noqa: E402


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A real server process with a worker, for the module's tests."""
    with served(request.param, "tl-client", factory="_worker_app:create") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(server: Server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of ``server`` (its rules are cleared per test)."""
    running = FaultProxy(int(server.url.rsplit(":", 1)[1])).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    """``proxy`` with no rules and no recorded requests."""
    proxy.reset()
    yield proxy
    proxy.reset()

