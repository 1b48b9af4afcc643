"""Fixtures of the server tests: an app in the test process, and real server processes.

In-process (fast, one per test):

- ``api_key``: the admin key of namespace ``default`` every test app registers.
- ``store``: a fresh SQLite store in ``tmp_path``.
- ``app_client``: a ``fastapi.testclient.TestClient`` of the test app (the graphs of
  :mod:`graphs`) over ``store``, sending ``api_key``.

Real servers (a process each, shared by the tests of one module):

- ``server``: a :class:`harness.Server` on a free port of 127.0.0.1, parametrized over SQLite
  and Postgres (the Postgres variant is marked ``slow``). ``server.sdk()`` is the official
  ``langgraph-sdk`` sync client, ``server.http()`` a plain ``httpx`` client, and
  ``server.open_store()`` / ``server.graphs()`` reach the same database from the test
  process, to create keys or thread state directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _app import build
from fastapi.testclient import TestClient
from harness import API_KEY, Server, served

from threadloom.checkpoint import open_store
from threadloom.checkpoint.queue import RuntimeStore

# -- in-process --------------------------------------------------------------------------------


@pytest.fixture
def api_key() -> str:
    """The admin key (namespace ``default``) of every test app and server."""
    return API_KEY


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RuntimeStore]:
    """A fresh SQLite store in ``tmp_path``."""
    opened = open_store(f"sqlite:///{tmp_path / 'app.db'}")
    assert isinstance(opened, RuntimeStore)
    yield opened
    opened.close()


@pytest.fixture
def app_client(store: RuntimeStore, api_key: str) -> Iterator[TestClient]:
    """The test app over ``store`` in this process, sending ``api_key``."""
    with TestClient(build(store, api_key), headers={"X-API-Key": api_key}) as client:
        yield client


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A real server process for the module's tests, on SQLite or Postgres."""
    with served(request.param, "tl-api") as running:
        yield running
