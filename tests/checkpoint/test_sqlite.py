"""The SQLite store: the conformance suite on a file, on ``:memory:`` and on a caller's
connection, plus what only SQLite has (migrations, WAL, URLs, several processes, errors)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadloom.checkpoint import open_store
from threadloom.checkpoint._sqlite_sql import SCHEMA_VERSION
from threadloom.checkpoint.base import Commit
from threadloom.checkpoint.memory import MemoryStore
from threadloom.checkpoint.sqlite import AsyncSqliteSaver, SqliteSaver, SqliteStore
from threadloom.errors import (
    InvalidConfigError,
    LeaseLostError,
    MigrationError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
)
from threadloom.testing import StoreConformance
from threadloom.testing.conformance import run, step

from .differential import apply, operations, state


class TestSqliteFileStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        s = SqliteStore(tmp_path / "store.db")
        s.setup()
        yield s
        s.close()


class TestSqliteMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[SqliteStore]:
        s = SqliteStore(":memory:")
        s.setup()
        yield s
        s.close()


class TestSqliteCallerConnection(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteSaver]:
        conn = sqlite3.connect(tmp_path / "conn.db", check_same_thread=False)
        s = SqliteSaver(conn)
        s.setup()
        yield s
        s.close()
        conn.execute("SELECT 1")  # the caller's connection is left open
        conn.close()


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    conn.close()
    return [r[0] for r in rows]


# -- schema and migrations --------------------------------------------------------------------


def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    for seq in range(2):
        store = SqliteStore(path)
        store.setup()
        store.setup()
        store.commit([step("t1", seq)])
        store.close()
    assert _versions(path) == list(range(1, SCHEMA_VERSION + 1))
    reopened = SqliteStore(path)
    latest = reopened.get_checkpoint("t1")  # first use sets up by itself
    assert latest is not None and latest.seq == 1
    reopened.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    store = SqliteStore(path)
    store.setup()
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    conn.close()
    newer = SqliteStore(path)
    with pytest.raises(MigrationError, match="newer"):
        newer.setup()
    with pytest.raises(MigrationError):
        newer.get_thread("t1")
    newer.close()


def test_wal_and_synchronous_are_set(tmp_path: Path) -> None:
    full = SqliteStore(tmp_path / "w.db")
    normal = SqliteStore(tmp_path / "w.db", synchronous="normal")
    full.setup()
    normal.setup()
    with sqlite3.connect(tmp_path / "w.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # a FULL store's connections sit at NORMAL between writes: each write that must reach
    # the disk raises the level for itself (see the next test)
    assert full._thread_conn().execute("PRAGMA synchronous").fetchone()[0] == 1
    assert normal._thread_conn().execute("PRAGMA synchronous").fetchone()[0] == 1
    assert _traced_commit(full, full._thread_conn(), flush=True)[0] == "PRAGMA synchronous = FULL"
    assert _traced_commit(normal, normal._thread_conn(), flush=True)[0] == "BEGIN IMMEDIATE"
    full.close()
    normal.close()


def _traced_commit(store: SqliteStore, conn: sqlite3.Connection, flush: bool) -> list[str]:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        store.commit([Commit("t1", flush=flush)])
    finally:
        conn.set_trace_callback(None)
    return [s for s in statements if s.startswith(("PRAGMA", "BEGIN", "COMMIT"))]


@pytest.mark.parametrize("synchronous", ["FULL", "EXTRA"])
def test_only_a_flushed_commit_syncs_and_the_level_is_restored(
    tmp_path: Path, synchronous: str
) -> None:
    store = SqliteStore(tmp_path / "f.db", synchronous=synchronous)
    store.setup()
    conn = store._thread_conn()
    assert _traced_commit(store, conn, flush=False) == ["BEGIN IMMEDIATE", "COMMIT"]
    assert _traced_commit(store, conn, flush=True) == [
        f"PRAGMA synchronous = {synchronous}",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "PRAGMA synchronous = NORMAL",
    ]
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    store.close()


def test_unflushed_commits_change_nothing_at_normal_or_below(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "n.db", synchronous="NORMAL")
    store.setup()
    assert _traced_commit(store, store._thread_conn(), flush=False) == ["BEGIN IMMEDIATE", "COMMIT"]
    store.close()


def test_a_failed_flushed_commit_restores_the_sync_level(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "r.db")
    lease = store.acquire_lease("t1", "w", 30.0)
    with pytest.raises(LeaseLostError):
        store.commit([Commit("t1", lease_token=lease.token + 1, flush=True)])
    assert store._thread_conn().execute("PRAGMA synchronous").fetchone()[0] == 1
    store.close()


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidConfigError):
        SqliteStore(":memory:", synchronous="FULL; DROP TABLE runs")
    with pytest.raises(InvalidConfigError):
        SqliteStore(":memory:", busy_timeout=-1)


# -- URLs and LangGraph-shaped entry points -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///rel/app.db", "rel/app.db"),
        ("sqlite:////abs/app.db", "/abs/app.db"),
        ("SQLITE:///app.db", "app.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://", ":memory:"),
    ],
)
def test_from_url_paths(url: str, path: str) -> None:
    store = SqliteStore.from_url(url)
    assert store.path == path
    store.close()


def test_from_url_options() -> None:
    store = SqliteStore.from_url("sqlite://:memory:?synchronous=NORMAL&busy_timeout=2.5")
    assert (store._synchronous, store._busy_timeout) == ("NORMAL", 2.5)
    store.close()
    store = SqliteStore.from_url("sqlite://:memory:?synchronous=NORMAL", synchronous="OFF")
    assert store._synchronous == "OFF"
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://x/y",
        "sqlite:app.db",
        "sqlite://host/app.db",
        "sqlite:///",
        "sqlite:///app.db?journal=delete",
        "sqlite:///app.db?busy_timeout=soon",
    ],
)
def test_from_url_refuses_bad_urls(url: str) -> None:
    with pytest.raises(InvalidConfigError):
        SqliteStore.from_url(url)


def test_open_store_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    store = open_store("sqlite:///data/app.db")
    assert isinstance(store, SqliteStore)
    assert _versions(tmp_path / "data" / "app.db") == list(range(1, SCHEMA_VERSION + 1))
    store.commit([step("t1", 0)])
    store.close()
    absolute = open_store(f"sqlite:///{tmp_path / 'data' / 'app.db'}", synchronous="NORMAL")
    assert isinstance(absolute, SqliteStore)
    assert absolute.get_checkpoint("t1") is not None
    absolute.close()
    memory = open_store("sqlite://:memory:")
    assert memory.list_threads() == []
    memory.close()


def test_sqlite_saver_from_conn_string(tmp_path: Path) -> None:
    path = str(tmp_path / "checkpoints.db")
    with SqliteSaver.from_conn_string(path) as saver:
        assert isinstance(saver, SqliteSaver)
        saver.commit([step("t1", 0)])
    with pytest.raises(StoreError):
        saver.get_thread("t1")
    assert _versions(Path(path)) == list(range(1, SCHEMA_VERSION + 1))
    with SqliteSaver.from_conn_string(f"sqlite:///{path}") as again:
        assert again.get_checkpoint("t1") is not None
    with SqliteSaver.from_conn_string(":memory:") as memory:
        assert memory.get_checkpoint("t1") is None


async def test_async_sqlite_saver_from_conn_string(tmp_path: Path) -> None:
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "a.db")) as saver:
        assert isinstance(saver, AsyncSqliteSaver)
        saver.commit([step("t1", 0)])
        assert saver.get_checkpoint("t1") is not None
    with pytest.raises(StoreError):
        saver.get_checkpoint("t1")


# -- errors -------------------------------------------------------------------------------------


def test_missing_directory_is_a_clear_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "app.db"
    store = SqliteStore(missing)
    with pytest.raises(StoreUnavailableError, match="cannot open SQLite database") as info:
        store.setup()
    assert str(missing) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{missing}")
    store.close()


@pytest.mark.parametrize(
    "content", [os.urandom(8192), b"this is not a database\n" * 500], ids=["random", "text"]
)
def test_a_file_that_is_not_a_database_is_store_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(content)
    store = SqliteStore(path)
    with pytest.raises(StoreCorruptError, match="not a SQLite database") as info:
        store.setup()
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert not isinstance(info.value, StoreUnavailableError)  # not an outage
    store.close()
    with pytest.raises(StoreCorruptError):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == content  # left as it was


def test_a_damaged_database_is_store_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    store = SqliteStore(path)
    store.commit([Commit("t", runs=[run("r", "t")])])
    store.close()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = os.urandom(len(data) - page)  # every page but the schema's
    path.write_bytes(bytes(data))
    store = SqliteStore(path)
    with pytest.raises(StoreCorruptError, match="damaged") as info:
        store.setup()
        store.get_run("r")
    assert str(path) in str(info.value)
    store.close()


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ("CREATE TABLE threads (id INTEGER PRIMARY KEY, title TEXT)", "table 'threads'"),
        ("CREATE TABLE runs (x); CREATE TABLE blobs (y)", "table 'blobs', 'runs'"),
        ("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY)", "schema_migrations"),
    ],
    ids=["threads", "runs-and-blobs", "rails-migrations"],
)
def test_another_applications_database_is_store_corrupt(
    tmp_path: Path, schema: str, why: str
) -> None:
    path = tmp_path / "foreign.db"
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    before = conn.execute("SELECT name, sql FROM sqlite_master").fetchall()
    conn.close()
    store = SqliteStore(path)
    with pytest.raises(StoreCorruptError, match="not a threadloom database") as info:
        store.setup()
    assert str(path) in str(info.value) and why in str(info.value)
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name, sql FROM sqlite_master").fetchall() == before  # untouched
    conn.close()


def test_a_database_with_other_tables_only_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'ada')")
    conn.close()
    store = SqliteStore(path)
    store.commit([Commit("t", runs=[run("r", "t")])])
    assert store.get_run("r") is not None
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]
    conn.close()


def test_a_lock_held_too_long_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SqliteStore(path, busy_timeout=0.2)
    store.setup()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailableError, match="locked"):
        store.commit([step("t1", 0)])
    blocker.execute("ROLLBACK")
    blocker.close()
    store.commit([step("t1", 0)])
    assert store.get_checkpoint("t1") is not None
    store.close()


def test_a_writer_waits_for_a_lock_released_in_time(tmp_path: Path) -> None:
    path = tmp_path / "wait.db"
    store = SqliteStore(path)
    store.setup()
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.1, lambda: blocker.execute("ROLLBACK"))
    release.start()
    store.commit([step("t1", 0)])  # blocks until the timer releases the lock
    release.join()
    blocker.close()
    assert store.get_checkpoint("t1") is not None
    store.close()


def test_unserializable_run_metadata_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    with pytest.raises(StoreError):
        store.commit([Commit("t1", runs=[run("r1", "t1", metadata={"x": object()})])])
    assert store.get_run("r1") is None and store.get_thread("t1") is None
    store.close()


def test_close_closes_the_connections_of_every_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "threads.db")
    store.setup()
    opened: list[sqlite3.Connection] = []

    def use() -> None:
        name = threading.current_thread().name
        store.commit([step(name, 0, run_id=f"run-{name}")])
        opened.append(store._thread_conn())

    workers = [threading.Thread(target=use, name=f"t{i}") for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(store.list_threads()) == 3
    opened.append(store._thread_conn())  # this thread's, still open
    opened[-1].execute("SELECT 1")
    store.close()
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def _commit_in_child(store: SqliteStore) -> None:
    inherited = getattr(store._local, "conn", None)
    store.commit([step("child", 0, run_id="run-child")])
    store.close()
    sys.exit(0 if inherited is None else 3)  # 3: the child reused the parent's connection


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fork.db")
    store.commit([step("parent", 0)])
    child = multiprocessing.get_context("fork").Process(target=_commit_in_child, args=(store,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    store.commit([step("parent", 1)])  # the parent's connection is intact
    assert store.get_checkpoint("child") is not None
    latest = store.get_checkpoint("parent")
    assert latest is not None and latest.seq == 1
    store.close()


# -- several processes --------------------------------------------------------------------------

_WORKER = """
import sys
import time
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.errors import ThreadBusyError
from threadloom.checkpoint.base import ANY_HEAD, BlobRecord, Commit, Lease, Store, WriteRecord
from threadloom.checkpoint.memory import MemoryStore
from threadloom.testing.conformance import step

path, name = sys.argv[1], sys.argv[2]
store = SqliteStore(path)
store.setup()
lease = store.acquire_lease(name, name, 600)
for seq in range(60):
    expected = seq - 1 if seq else None
    store.commit([step(name, seq, token=lease.token, expected=expected, run_id="run-" + name)])
    store.get_checkpoint(name)
wins = 0
while wins < 5:
    try:
        shared = store.acquire_lease("shared", name, 600)
    except ThreadBusyError:
        time.sleep(0.001)
        continue
    store.commit([Commit("shared", lease_token=shared.token)])
    store.release_lease(shared)
    wins += 1
store.close()
print("ok", name)
"""


def test_several_processes_write_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    env = dict(os.environ, PYTHONWARNINGS="error")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, path, f"proc{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(3)
    ]
    results = [p.communicate(timeout=100) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.startswith("ok"), (out, err)
    store = SqliteStore(path)
    for i in range(3):
        latest = store.get_checkpoint(f"proc{i}")
        assert latest is not None and latest.seq == 59
        assert len(store.list_checkpoints(f"proc{i}")) == 60
    shared = store.get_thread("shared")
    assert shared is not None and shared.lease is None
    assert _versions(Path(path)) == list(range(1, SCHEMA_VERSION + 1))
    store.close()


# -- the same answers as the reference store ------------------------------------------------------

@settings(max_examples=150, deadline=None, database=None)
@given(ops=st.lists(operations(max_commits=2), max_size=12))
def test_sqlite_answers_like_the_reference_store(ops: list[tuple[Any, ...]]) -> None:
    reference, sqlite = MemoryStore(), SqliteStore(":memory:")
    try:
        for op in ops:
            assert apply(sqlite, op) == apply(reference, op), op
        assert state(sqlite)[:4] == state(reference)[:4]
    finally:
        sqlite.close()
        reference.close()


def test_connections_outlive_their_threads_in_the_pool(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pool.db")
    store.setup()

    def use() -> None:
        store.get_thread("t1")

    for _ in range(5):  # one after the other: each thread takes the one a dead one gave back
        thread = threading.Thread(target=use)
        thread.start()
        thread.join()
    deadline = time.monotonic() + 10
    while len(store._free) < len(store._handles) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # a dead thread's locals are dropped as it finishes
    assert len(store._handles) <= 3  # this thread's, and at most one more in flight
    store.close()
