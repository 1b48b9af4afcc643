"""Fixtures for store tests that need a Postgres server.

``postgres_url`` is ``THREADLOOM_TEST_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``, probed once per session. When no server answers
(or psycopg is not installed) the tests that use it skip with the reason, or fail when
``THREADLOOM_REQUIRE_SERVICES=1`` (CI). ``postgres_schema`` is a fresh schema name for one
test; the schema is dropped afterwards whether or not the test created it, and
``make_store(**options)`` makes Postgres stores on it.
``redis_url`` / ``redis_bus`` are the same for Redis (``THREADLOOM_TEST_REDIS_URL``).
``pgbouncer_url`` is the same database behind a PgBouncer in transaction mode, started for
the session when the ``pgbouncer`` program is installed; without it (or when it does not
start) the tests that use it skip, or fail under ``THREADLOOM_REQUIRE_SERVICES=1``, like
every other missing service: call :func:`unavailable`, never ``pytest.skip``, for one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

_probe: dict[str, str | None] = {}


def services_required() -> bool:
    return os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it when services are required (CI)."""
    if services_required():
        pytest.fail(f"THREADLOOM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def admin(url: str, sql: str) -> None:
    """Run one statement on a connection of its own (autocommit)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a reachable Postgres server (see the module docstring)."""
    if "url" not in _probe:
        url = os.environ.get("THREADLOOM_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
        why: str | None = None
        try:
            import psycopg
        except ImportError:
            why = "psycopg is not installed (pip install 'threadloom[postgres]')"
        else:
            try:
                psycopg.connect(url, connect_timeout=3).close()
            except Exception as exc:
                why = f"no Postgres reachable at {url} ({type(exc).__name__}: {exc})"
        _probe["url"] = None if why else url
        _probe["why"] = why
    url = _probe["url"]
    if url is None:
        unavailable(_probe["why"] or "no Postgres")
    return url


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema name (not created); ``DROP SCHEMA ... CASCADE`` afterwards."""
    schema = f"tl_test_{uuid.uuid4().hex[:16]}"
    yield schema
    admin(postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def make_store(postgres_url: str, postgres_schema: str) -> Iterator[Callable[..., Any]]:
    """``make_store(**options)``: a store on this test's schema (not set up), closed after."""
    from threadloom.checkpoint.postgres import PostgresStore

    made: list[PostgresStore] = []

    def make(dsn: str | None = None, **options: Any) -> PostgresStore:
        options.setdefault("schema", postgres_schema)
        store = PostgresStore(dsn or postgres_url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(scope="session")
def pgbouncer_url(postgres_url: str) -> Iterator[str]:
    """``postgres_url`` through a PgBouncer in transaction pooling mode, with fewer server
    connections than clients, so that consecutive transactions of one client land on
    different server sessions."""
    program = shutil.which("pgbouncer")
    if program is None:
        unavailable("pgbouncer is not installed (apt-get install pgbouncer)")
    target = urlsplit(postgres_url)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="tl-pgbouncer-"))
    workdir.chmod(0o777)
    user = target.username or "postgres"
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.hostname or '127.0.0.1'} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
        f"logfile = {workdir / 'pgbouncer.log'}\npidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    for path in workdir.iterdir():
        path.chmod(0o666)
    command = [program, str(workdir / "pgbouncer.ini")]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]  # it refuses to run as root
    command.insert(1, "-q")  # log to the logfile only: an unread pipe would fill and block it
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = urlunsplit(target._replace(netloc=f"{user}@127.0.0.1:{port}"))
    try:
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = workdir / "pgbouncer.log"
                    out = log.read_text()[-2000:] if log.exists() else ""
                    unavailable(f"pgbouncer did not start: {out.strip()}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``THREADLOOM_TEST_REDIS_URL`` or ``redis://127.0.0.1:6379/0`` if a Redis answers there
    (else skip, or fail under ``THREADLOOM_REQUIRE_SERVICES=1``)."""
    url = os.environ.get("THREADLOOM_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    if "redis" not in _probe:
        try:
            import redis
        except ImportError:
            _probe["redis"] = "redis is not installed (pip install 'threadloom[redis]')"
        else:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=2).ping()
                _probe["redis"] = None
            except Exception as exc:  # noqa: BLE001 - any failure means no usable server
                _probe["redis"] = f"Redis is unreachable at {url}: {exc}"
    why = _probe["redis"]
    if why is not None:
        unavailable(why)
    return url


@pytest.fixture
def redis_bus(redis_url: str) -> Iterator[Callable[[], Any]]:
    """``redis_bus()``: a new :class:`RedisSignals` on a prefix of this test's own (buses of
    one test reach each other, as processes of one deployment do); closed afterwards."""
    from threadloom.checkpoint.redis_signals import RedisSignals

    prefix = f"tl-test-{uuid.uuid4().hex[:8]}:"
    made: list[RedisSignals] = []

    def make() -> RedisSignals:
        bus = RedisSignals(redis_url, prefix=prefix)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()
