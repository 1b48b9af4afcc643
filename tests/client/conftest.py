"""Fixtures of the client tests: a real server process (API and a worker, as ``threadloom
dev``) shared by a module's tests, and a :class:`~proxy.FaultProxy` in front of it.

The server is the server tests' (``tests/server/harness.py``, ``_worker_app``: the test graphs
``seed_loop``, ``seed_chat``, ``review`` and ``ticker``), on SQLite; the Postgres variant is
marked ``slow``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from harness import API_KEY, Server, postgres_url, start_server, stop_server  # noqa: E402
from proxy import FaultProxy  # noqa: E402


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A real server process with a worker, for the module's tests."""
    workdir = Path(tempfile.mkdtemp(prefix="tl-client-"))
    schema = None
    if request.param == "sqlite":
        db_url = f"sqlite:///{workdir / 'app.db'}"
    else:
        base = postgres_url()
        schema = f"tl_client_{uuid.uuid4().hex[:12]}"
        db_url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    running = start_server(db_url, API_KEY, workdir, factory="_worker_app:create")
    try:
        yield running
    finally:
        stop_server(running)
        if schema is not None:
            import psycopg

            with psycopg.connect(postgres_url(), autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(workdir, ignore_errors=True)


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

