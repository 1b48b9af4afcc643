"""Fixtures for the engine's durable-execution behaviour tests.

Most tests take ``compile_graph`` (or ``store`` and ``durability``) and so run once per
**backend** x **durability mode**:

* ``store``: ``memory`` (``InMemorySaver()``), ``sqlite`` (``SqliteSaver`` on a file in
  ``tmp_path``) and ``postgres`` (a fresh schema per test through
  ``open_store(url, schema=...)``). Postgres is used when ``THREADLOOM_TEST_POSTGRES_URL`` is
  set or ``postgresql://postgres@127.0.0.1:5432/test`` answers, and
  ``threadloom.checkpoint.postgres`` imports; otherwise its tests skip with the reason, or fail
  when ``THREADLOOM_REQUIRE_SERVICES=1``.
* ``durability``: ``"sync"``, ``"async"``, ``"exit"``.

``compile_graph(builder, **options)`` compiles with both; ``reopen_store()`` opens another
store object on the same database (what a restarted process sees). ``calls`` counts node and
task executions (thread-safe), which is how the tests tell "ran again" from "replayed";
``thread`` is a config naming a new thread; ``wait_until`` polls for what ``async``
durability writes in the background. Postgres variants carry the ``postgres`` marker
(``-m "not postgres"`` leaves them out).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from threadloom.checkpoint.memory import InMemorySaver
from threadloom.checkpoint.sqlite import SqliteSaver
from threadloom.graph import CompiledGraph, StateGraph

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DURABILITIES = ("sync", "async", "exit")


def _services_required() -> bool:
    return os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1"


def _unavailable(reason: str) -> None:
    """Skip the test, or fail it when services are required (CI)."""
    if _services_required():
        pytest.fail(f"THREADLOOM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


_postgres_probe: dict[str, str | None] = {}


def _postgres_url() -> tuple[str | None, str]:
    """The Postgres URL to test against, or ``None`` and why not (probed once)."""
    if "url" not in _postgres_probe:
        url = os.environ.get("THREADLOOM_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
        why = None
        try:
            import psycopg
        except ImportError:
            why = "psycopg is not installed (pip install threadloom[postgres])"
        else:
            try:
                psycopg.connect(url, connect_timeout=3).close()
            except Exception as exc:
                why = f"no Postgres reachable at {url} ({type(exc).__name__}: {exc})"
        _postgres_probe["url"] = None if why else url
        _postgres_probe["why"] = why
    return _postgres_probe["url"], _postgres_probe["why"] or ""


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@pytest.fixture
def postgres_database() -> Iterator[Callable[[], Any]]:
    """Opens stores on a Postgres schema of this test's own (dropped afterwards)."""
    url, why = _postgres_url()
    if url is None:
        _unavailable(why)
    try:
        from threadloom.checkpoint import open_store
        from threadloom.checkpoint.postgres import PostgresStore  # noqa: F401
    except ImportError as exc:
        _unavailable(f"threadloom.checkpoint.postgres does not import: {exc}")
    schema = f"tl_engine_{uuid.uuid4().hex[:16]}"
    opened: list[Any] = []

    def open_() -> Any:
        try:
            store = open_store(url, schema=schema)
        except TypeError as exc:
            _unavailable(f"open_store(postgresql://..., schema=...) is not accepted: {exc}")
        opened.append(store)
        return store

    try:
        yield open_
    finally:
        for store in opened:
            store.close()
        _admin(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=[
    "memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the store backend under test."""
    return str(request.param)


@pytest.fixture
def reopen_store(backend: str, tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """``reopen_store()``: a new store object on this test's database, as a restarted
    process would open it (``memory``: the same object, which is all there is)."""
    if backend == "memory":
        memory = InMemorySaver()
        yield lambda: memory
    elif backend == "sqlite":
        opened: list[SqliteSaver] = []

        def open_sqlite() -> SqliteSaver:
            saver = SqliteSaver(tmp_path / "t.db")
            saver.setup()
            opened.append(saver)
            return saver

        yield open_sqlite
        for saver in opened:
            saver.close()
    else:
        yield request.getfixturevalue("postgres_database")


@pytest.fixture
def store(reopen_store: Callable[[], Any]) -> Any:
    """A fresh, set-up store of the backend under test."""
    return reopen_store()


@pytest.fixture(params=DURABILITIES)
def durability(request: pytest.FixtureRequest) -> str:
    """The durability mode under test."""
    return str(request.param)


@pytest.fixture
def compile_graph(store: Any, durability: str) -> Callable[..., CompiledGraph]:
    """``compile_graph(builder, **options)``: the builder compiled with this test's store and
    durability mode (options such as ``interrupt_before`` or ``lease_ttl`` pass through)."""

    def compile_(builder: StateGraph, **options: Any) -> CompiledGraph:
        options.setdefault("durability", durability)
        return builder.compile(checkpointer=store, **options)

    return compile_


class Calls:
    """Thread-safe counts of executions by name: ``calls.hit("a")``, then ``calls["a"]``."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def hit(self, name: str) -> int:
        """Count one call of ``name``; return how many there have been, this one included."""
        with self._lock:
            self._counts[name] += 1
            return self._counts[name]

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@pytest.fixture
def calls() -> Calls:
    """A fresh execution counter."""
    return Calls()


@pytest.fixture
def thread() -> dict[str, Any]:
    """A config naming a thread no other test uses: ``{"thread_id": "t-<random>"}``."""
    return {"thread_id": f"t-{uuid.uuid4().hex[:12]}"}


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """``wait_until(predicate, timeout=10)``: poll until ``predicate()`` is true; return
    whether it became true. For what ``async`` durability writes in the background: the
    tests assert that it happens, never how fast."""

    def wait(predicate: Callable[[], Any], timeout: float = 10.0) -> bool:
        stop = threading.Event()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            stop.wait(0.005)
        return bool(predicate())

    return wait
