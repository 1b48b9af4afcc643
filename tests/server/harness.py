"""Real server processes for the server tests: start one, reach it, stop it.

:func:`start_server` is the one place that knows how a server process is started (today
``python -m uvicorn --factory _app:create``), so that it can switch to ``threadloom dev``
without the tests changing. The fixtures that use it are in ``conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from graphs import compiled

from threadloom.checkpoint import open_store
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.graph.compiled import CompiledGraph

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
API_KEY = "tl_test_admin_key_0123456789abcdef"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT = 60.0


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it when services are required (CI)."""
    if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
        pytest.fail(f"THREADLOOM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


# -- real server processes ---------------------------------------------------------------------


@dataclass
class Server:
    """A server process and how to reach it."""

    url: str
    db_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log: Path
    _stores: list[RuntimeStore] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)

    def sdk(self, api_key: str | None = None) -> Any:
        """The official ``langgraph-sdk`` sync client, with ``api_key`` (default: admin)."""
        from langgraph_sdk import get_sync_client

        client = get_sync_client(url=self.url, api_key=api_key or self.api_key, timeout=30.0)
        self._clients.append(client)  # closed at teardown
        return client

    def async_sdk(self, api_key: str | None = None) -> Any:
        """The official ``langgraph-sdk`` async client (``get_client``); the test closes it
        (``await client.aclose()``) in the event loop that used it."""
        from langgraph_sdk import get_client

        return get_client(url=self.url, api_key=api_key or self.api_key, timeout=30.0)

    def http(self, api_key: str | None = None, **headers: str) -> httpx.Client:
        """A plain HTTP client; sends ``api_key`` unless it is ``""``."""
        sent = dict(headers)
        key = self.api_key if api_key is None else api_key
        if key:
            sent["X-API-Key"] = key
        return httpx.Client(base_url=self.url, headers=sent, timeout=30.0)

    def open_store(self) -> RuntimeStore:
        """The server's database, opened in this process (closed at teardown)."""
        opened = open_store(self.db_url)
        assert isinstance(opened, RuntimeStore)
        self._stores.append(opened)
        return opened

    def graphs(self) -> dict[str, CompiledGraph]:
        """The server's graphs, bound to the server's database from this process: invoking
        one writes threads and runs the server then serves."""
        return compiled(self.open_store())

    def log_tail(self) -> str:
        """The end of the server's output."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(db_url: str, api_key: str, workdir: Path, *, factory: str = "_app:create",
                 env: dict[str, str] | None = None) -> Server:
    """Start a server process over ``db_url`` and wait until ``GET /ok`` answers.
    ``factory``: the app factory in this folder; ``env``: more environment variables.

    Raises:
        RuntimeError: it exited or did not answer within ``START_TIMEOUT`` seconds (with
            its output).
    """
    port = free_port()
    log = workdir / f"server-{port}.log"
    env = {
        **os.environ,
        "THREADLOOM_TEST_DB": db_url,
        "THREADLOOM_API_KEY": api_key,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                      if p),
        **(env or {}),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--app-dir",
               str(HERE), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=workdir)
    server = Server(f"http://127.0.0.1:{port}", db_url, api_key, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/ok", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"the server did not answer /ok:\n{server.log_tail()}")
        time.sleep(0.05)


def stop_server(server: Server) -> None:
    """Stop the process (SIGTERM, then SIGKILL after 10 s); close the test's clients and
    stores."""
    for client in server._clients:
        client.close()
    for opened in server._stores:
        opened.close()
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)


@contextmanager
def database(backend: str, prefix: str) -> Iterator[tuple[str, Path]]:
    """A fresh store URL and a work folder: SQLite in the folder, or (``backend ==
    "postgres"``) a schema of its own; both are removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    schema = None
    if backend == "sqlite":
        db_url = f"sqlite:///{workdir / 'app.db'}"
    else:
        base = postgres_url()
        schema = f"{prefix.replace('-', '_')}_{uuid.uuid4().hex[:12]}"
        db_url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    try:
        yield db_url, workdir
    finally:
        if schema is not None:
            import psycopg

            with psycopg.connect(postgres_url(), autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def served(backend: str, prefix: str, *, factory: str = "_app:create",
           env: dict[str, str] | None = None) -> Iterator[Server]:
    """A server process (:func:`start_server`) over a fresh :func:`database`, stopped and
    its database removed afterwards."""
    with database(backend, prefix) as (db_url, workdir):
        running = start_server(db_url, API_KEY, workdir, factory=factory, env=env)
        try:
            yield running
        finally:
            stop_server(running)


def postgres_url() -> str:
    """The test Postgres server's URL (``THREADLOOM_TEST_POSTGRES_URL``), if it answers."""
    url = os.environ.get("THREADLOOM_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install 'threadloom[postgres]')")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        unavailable(f"no Postgres reachable at {url} ({type(exc).__name__}: {exc})")
    return url


def redis_env() -> dict[str, str]:
    """The environment that makes a test server process carry its signals over the test
    Redis (``THREADLOOM_TEST_REDIS_URL``), on a channel prefix of its own, if Redis answers:
    give it to every process of one deployment."""
    url = os.environ.get("THREADLOOM_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    try:
        import redis
    except ImportError:
        unavailable("redis is not installed (pip install 'threadloom[redis]')")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        unavailable(f"no Redis reachable at {url} ({type(exc).__name__}: {exc})")
    return {"THREADLOOM_REDIS_URL": url,
            "THREADLOOM_TEST_REDIS_PREFIX": f"tl-test-{uuid.uuid4().hex[:8]}:"}
