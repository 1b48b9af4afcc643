"""Opening a Postgres store: a server that refuses for good fails at once with
``StoreAccessError``, one that cannot be reached is retried, and neither prints anything (the
pool's complaints go to the ``threadloom.checkpoint.postgres`` logger); a schema holding
another application's tables is ``StoreCorruptError``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

try:
    import psycopg

    from threadloom.checkpoint._postgres_pool import refusal
    from threadloom.checkpoint.postgres import PostgresStore
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip(f"the postgres extra is not installed: {exc}", allow_module_level=True)

from threadloom.checkpoint import open_store
from threadloom.errors import StoreAccessError, StoreCorruptError, StoreUnavailableError

pytestmark = pytest.mark.postgres

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def _replace(url: str, *, user: str | None = None, password: str | None = None,
             dbname: str | None = None) -> str:  # fmt: skip
    parts = urlsplit(url)
    user = user or parts.username or "postgres"
    auth = f"{user}:{password}" if password else user
    host = parts.hostname or "127.0.0.1"
    netloc = f"{auth}@{host}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{dbname}" if dbname else parts.path))


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every connection attempt psycopg makes (the pool's too), as the thread making it."""
    made: list[str] = []
    original = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]

    def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(threading.current_thread().name)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(connect))
    yield made


def _pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("threadloom:")]


def test_an_unknown_database_is_refused_at_once(postgres_url: str, connects: list[str]) -> None:
    name = f"tl_missing_{uuid.uuid4().hex[:8]}"
    before = _pool_threads()
    store = PostgresStore(_replace(postgres_url, dbname=name), timeout=30)
    try:
        with pytest.raises(StoreAccessError, match=f'database "{name}" does not exist') as info:
            store.setup()
        assert not isinstance(info.value, StoreUnavailableError)
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert len(connects) == 1  # one answer was enough: no retries, no pool
        assert _pool_threads() == before
        with pytest.raises(StoreAccessError):  # and so is every later call
            store.get_thread("t1")
        assert len(connects) == 2
    finally:
        store.close()


def test_an_unknown_database_is_refused_through_pgbouncer(pgbouncer_url: str) -> None:
    with pytest.raises(StoreAccessError, match="does not exist|no such database"):
        open_store(_replace(pgbouncer_url, dbname=f"tl_missing_{uuid.uuid4().hex[:8]}"),
                   prepare_threshold=None)  # fmt: skip


def test_an_unknown_role_is_refused_without_showing_the_password(
    postgres_url: str, connects: list[str]
) -> None:
    role = f"tl_nobody_{uuid.uuid4().hex[:8]}"
    url = _replace(postgres_url, user=role, password="s3cret-Pa55")
    with pytest.raises(StoreAccessError, match=f'role "{role}" does not exist') as info:
        open_store(url)
    assert "s3cret-Pa55" not in str(info.value)
    assert role in str(info.value)
    assert len(connects) == 1


def test_an_unreachable_server_is_still_retried(connects: list[str]) -> None:
    store = PostgresStore(UNREACHABLE, timeout=2.5)
    try:
        with pytest.raises(StoreUnavailableError, match="Connection refused") as info:
            store.setup()
        assert not isinstance(info.value, StoreAccessError)
        assert len(connects) >= 2  # the first attempt, then the pool's retries
        assert any(name.startswith("threadloom:") for name in connects)
    finally:
        store.close()


def test_connection_failures_are_logged_on_threadloom_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    store = PostgresStore(UNREACHABLE, timeout=1.5)
    try:
        with pytest.raises(StoreUnavailableError):
            store.setup()
    finally:
        store.close()
    ours = [r for r in caplog.records if r.name == "threadloom.checkpoint.postgres"]
    assert any(r.levelno == logging.WARNING and "refused" in r.getMessage() for r in ours)
    assert any("error connecting in 'threadloom:public'" in r.getMessage() for r in ours)
    assert not [r for r in caplog.records if r.name.startswith(("psycopg.pool", "psycopg_pool"))]


@pytest.mark.parametrize(
    ("message", "said"),
    [
        ('FATAL:  database "x" does not exist', 'database "x" does not exist'),
        ('FATAL:  role "x" does not exist', 'role "x" does not exist'),
        ('FATAL:  password authentication failed for user "x"',
         'password authentication failed for user "x"'),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "x", database "y"',
         'no pg_hba.conf entry for host "10.0.0.1", user "x", database "y"'),
        ('FATAL:  permission denied for database "y"', 'permission denied for database "y"'),
        ("fe_sendauth: no password supplied", "fe_sendauth: no password supplied"),
        ("FATAL:  no such database: x", "no such database: x"),  # PgBouncer
        ('FATAL:  "trust" authentication failed', '"trust" authentication failed'),
        ("FATAL:  the database system is starting up", None),
        ("FATAL:  the database system is shutting down", None),
        ("FATAL:  sorry, too many clients already", None),
        ("Connection refused\n\tIs the server running on that host?", None),
        ("timeout expired", None),
    ],
)  # fmt: skip
def test_which_answers_are_refusals(message: str, said: str | None) -> None:
    exc = psycopg.OperationalError(
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: {message}'
    )
    found = refusal(exc)
    if said is None:
        assert found is None
    else:
        assert found is not None and found.endswith(said)


CHILD = textwrap.dedent(
    """
    import sys
    from threadloom.checkpoint import open_store
    from threadloom.errors import StoreError
    for url in sys.argv[1:]:
        try:
            open_store(url)
        except StoreError as exc:
            print(exc.code)
    """
)


def test_the_library_prints_nothing_when_logging_is_not_configured(postgres_url: str) -> None:
    missing = _replace(postgres_url, dbname=f"tl_missing_{uuid.uuid4().hex[:8]}")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, missing, UNREACHABLE + "?pool_timeout=2.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["store_access_denied", "store_unavailable"]
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ("CREATE TABLE {s}.threads (id serial PRIMARY KEY, title text)", "table 'threads'"),
        ("CREATE TABLE {s}.runs (x int); CREATE TABLE {s}.blobs (y int)", "'blobs', 'runs'"),
        ("CREATE TABLE {s}.schema_migrations (version bigint PRIMARY KEY, dirty boolean)",
         "schema_migrations"),
        ("CREATE TABLE {s}.schema_migrations (version varchar PRIMARY KEY, applied_at float);"
         " INSERT INTO {s}.schema_migrations VALUES ('20240101', 0)", "schema_migrations"),
    ],
    ids=["threads", "runs-and-blobs", "golang-migrate", "text-versions"],
)  # fmt: skip
def test_another_applications_schema_is_store_corrupt(
    postgres_url: str, postgres_schema: str, schema: str, why: str
) -> None:
    def tables() -> list[tuple[Any, ...]]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                " ORDER BY 1", (postgres_schema,)
            ).fetchall()  # fmt: skip

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
        for statement in schema.format(s=f'"{postgres_schema}"').split(";"):
            conn.execute(statement)
    before = tables()
    store = PostgresStore(postgres_url, schema=postgres_schema)
    try:
        with pytest.raises(StoreCorruptError, match="not a threadloom schema") as info:
            store.setup()
        assert why in str(info.value) and postgres_schema in str(info.value)
    finally:
        store.close()
    assert tables() == before  # nothing was created in it
