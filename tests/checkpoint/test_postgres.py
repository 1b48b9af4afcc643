"""The Postgres store: the conformance suite (with and without server-side prepared
statements) and what only Postgres has: migrations in a schema of their own, URLs and options,
error translation, transaction-pooler mode (lost connections and a server restart:
``test_postgres_lost.py``).

Every test gets a fresh schema, dropped afterwards (see ``conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    import psycopg

    from threadloom.checkpoint.postgres import AsyncPostgresSaver, PostgresSaver, PostgresStore
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip(f"the postgres extra is not installed: {exc}", allow_module_level=True)

from threadloom.checkpoint import open_store
from threadloom.checkpoint._postgres_schema import SCHEMA_VERSION
from threadloom.checkpoint.base import BlobRecord, Commit, Lease, WriteRecord
from threadloom.checkpoint.memory import MemoryStore
from threadloom.errors import (
    CheckpointConflictError,
    InvalidConfigError,
    MigrationError,
    StoreError,
    StoreUnavailableError,
)
from threadloom.testing import StoreConformance
from threadloom.testing.conformance import checkpoint, execution, run, step

from ._postgres_support import MakeStore, _query, _with_query, admin
from .differential import apply, operations, state

TABLES = {
    "threads",
    "heads",
    "checkpoints",
    "blobs",
    "writes",
    "runs",
    "executions",
    "schema_migrations",
    "run_queue",  # the runtime's (_queue_schema)
    "run_events",
    "workers",
    "api_keys",
    "audit_log",
    "run_logs",  # the logs kept with each run (_run_logs)
}


def _versions(url: str, schema: str) -> list[int]:
    rows = _query(url, f'SELECT version FROM "{schema}".schema_migrations ORDER BY version')
    return [r[0] for r in rows]


def _tables(url: str, schema: str) -> set[str]:
    sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
    return {r[0] for r in _query(url, sql, (schema,))}


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def store(self, make_store: MakeStore) -> PostgresStore:
        s = make_store()
        s.setup()
        return s


class TestPostgresStoreWithoutPreparedStatements(StoreConformance):
    """The whole contract again as behind a transaction pooler (PgBouncer), and with commits
    that never poll for their answer (the default store polls for flushed ones)."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> PostgresStore:
        s = make_store(prepare_threshold=None, spin_wait=0)
        s.setup()
        return s


class TestPostgresStoreBehindPgBouncer(StoreConformance):
    """The whole contract through a real transaction pooler (PgBouncer, transaction mode,
    two server connections), without server-side prepared statements."""

    @pytest.fixture
    def store(self, make_store: MakeStore, pgbouncer_url: str) -> PostgresStore:
        s = make_store(pgbouncer_url, prepare_threshold=None, max_size=4)
        s.setup()
        return s


# -- transaction-pooler mode ------------------------------------------------------------------


def _exercise(store: PostgresStore, rounds: int = 8) -> None:
    """Every method, several times, so that a prepare threshold would be reached."""
    lease = store.acquire_lease("t1", "w", 60)
    for seq in range(rounds):
        store.commit([step("t1", seq, token=lease.token, expected=seq - 1 if seq else None)])
        store.get_checkpoint("t1")
        store.get_checkpoint("t1", seq=seq)
        store.get_blobs("t1", "", {"value": (0, seq)})
        store.get_writes("t1", "", seq)
        store.get_run("run-1")
        store.list_runs(thread_id="t1")
        store.list_executions(run_id="run-1")
        store.list_checkpoints("t1", limit=2)
        store.get_thread("t1")
        store.list_threads()
        lease = store.renew_lease(lease, 60)
    store.release_lease(lease)
    store.prune_checkpoints("t1", keep=2)
    store.delete_runs(created_before=0.0)
    store.delete_thread("t1")


@pytest.mark.parametrize(("threshold", "prepared"), [(None, False), (0, True)])
def test_prepared_statements_follow_the_threshold(
    make_store: MakeStore, threshold: int | None, prepared: bool
) -> None:
    store = make_store(prepare_threshold=threshold, min_size=1, max_size=1)
    store.setup()
    _exercise(store)
    with store._connections.pool().connection() as conn:  # the one connection every call used
        names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements")]
    assert bool(names) is prepared, names


# -- schema and migrations --------------------------------------------------------------------


def test_migrations_are_recorded_once_in_the_schema(
    make_store: MakeStore, postgres_url: str, postgres_schema: str
) -> None:
    first = make_store()
    first.setup()
    first.setup()
    first.commit([step("t1", 0)])
    second = make_store()
    second.setup()
    assert _versions(postgres_url, postgres_schema) == list(range(1, SCHEMA_VERSION + 1))
    assert _tables(postgres_url, postgres_schema) == TABLES
    latest = second.get_checkpoint("t1")
    assert latest is not None and latest.seq == 0


def test_setup_from_several_threads_at_once(
    make_store: MakeStore, postgres_url: str, postgres_schema: str
) -> None:
    stores = [make_store() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def setup(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store.setup()
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=setup, args=(s,)) for s in stores]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert _versions(postgres_url, postgres_schema) == list(range(1, SCHEMA_VERSION + 1))
    for i, store in enumerate(stores):
        store.commit([step(f"t{i}", 0, run_id=f"r{i}")])
    assert len(stores[0].list_threads()) == len(stores)


def test_a_newer_schema_is_refused(
    make_store: MakeStore, postgres_url: str, postgres_schema: str
) -> None:
    make_store().setup()
    admin(
        postgres_url,
        f'INSERT INTO "{postgres_schema}".schema_migrations VALUES ({SCHEMA_VERSION + 1}, 0)',
    )
    newer = make_store()
    with pytest.raises(MigrationError, match="newer"):
        newer.setup()
    with pytest.raises(MigrationError, match="newer"):
        newer.get_thread("t1")


def test_calls_before_setup_are_refused(make_store: MakeStore, postgres_url: str) -> None:
    store = make_store()
    with pytest.raises(MigrationError, match="setup"):
        store.get_thread("t1")
    with pytest.raises(MigrationError, match="setup"):
        store.commit([step("t1", 0)])
    store.setup()
    assert store.get_thread("t1") is None


# -- URLs and options -------------------------------------------------------------------------


def test_open_store_takes_its_options_from_the_url(postgres_url: str, postgres_schema: str) -> None:
    url = _with_query(
        postgres_url,
        f"schema={postgres_schema}&pool_min=0&pool_max=3&pool_timeout=7&prepare_threshold=none"
        "&max_retries=2&connect_timeout=4&spin_wait=0.0005&application_name=tl-url-test",
    )
    store = open_store(url)
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema == postgres_schema
        pool = store._connections
        assert (pool._min_size, pool._max_size, pool._timeout) == (0, 3, 7.0)
        assert (store._prepare_threshold, store._max_retries) == (None, 2)
        assert pool._kwargs["connect_timeout"] == 4
        assert store._runner._spin_wait == 0.0005
        own_options = ("schema", "pool_", "prepare_threshold", "max_retries", "connect_timeout")
        for own in (*own_options, "spin_wait"):
            assert own not in store._connections._dsn
        assert "application_name=tl-url-test" in store._connections._dsn  # libpq's own options stay
        store.commit([step("t1", 0)])
        assert _tables(postgres_url, postgres_schema) == TABLES  # setup ran, in the schema
        with store._connections.pool().connection() as conn:
            row = conn.execute("SHOW application_name").fetchone()
        assert row is not None and row[0] == "tl-url-test"
    finally:
        store.close()
    again = open_store(
        _with_query(postgres_url.replace("postgresql://", "postgres://", 1), "schema=ignored"),
        schema=postgres_schema,  # keyword options win
        prepare_threshold=3,
    )
    try:
        assert isinstance(again, PostgresStore)
        assert (again.schema, again._prepare_threshold) == (postgres_schema, 3)
        assert again.get_checkpoint("t1") is not None
    finally:
        again.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///app.db",
        "postgresql:/nohost",
        "postgresql://h/db?pool_max=many",
        "postgresql://h/db?prepare_threshold=soon",
        "postgresql://h/db?schema=bad;name",
        "postgresql://h/db?schema=",
        "postgresql://h/db?pool_min=5&pool_max=2",
        "postgresql://h/db?max_retries=-1",
        "postgresql://h/db?spin_wait=-0.001",
        "postgresql://h/db?spin_wait=briefly",
        "postgresql://h/db?nonsense_option=1",
    ],
)
def test_from_url_refuses_bad_urls(url: str) -> None:
    with pytest.raises(InvalidConfigError):
        PostgresStore.from_url(url)


def test_bad_options_are_refused() -> None:
    dsn = "postgresql://postgres@127.0.0.1/test"
    for options in (
        {"schema": 'x"; DROP TABLE runs; --'},
        {"schema": "1abc"},
        {"min_size": -1},
        {"max_size": 0},
        {"timeout": 0},
        {"prepare_threshold": -1},
        {"max_retries": 1.5},
        {"connect_timeout": "soon"},
        {"spin_wait": -1},
        {"spin_wait": None},
        {"spin_wait": 1.5},
        {"spin_wait": float("nan")},
        {"spin_wait": float("inf")},
    ):
        with pytest.raises(InvalidConfigError):
            PostgresStore(dsn, **options)
    with pytest.raises(InvalidConfigError):
        PostgresStore("host=h port=5432 = broken")


def test_postgres_saver_from_conn_string(postgres_url: str, postgres_schema: str) -> None:
    with PostgresSaver.from_conn_string(postgres_url, schema=postgres_schema) as saver:
        assert isinstance(saver, PostgresSaver)
        saver.commit([step("t1", 0)])
    with pytest.raises(StoreError):
        saver.get_thread("t1")
    with PostgresSaver.from_conn_string(
        _with_query(postgres_url, f"schema={postgres_schema}")
    ) as again:
        assert again.get_checkpoint("t1") is not None


async def test_async_postgres_saver_from_conn_string(
    postgres_url: str, postgres_schema: str
) -> None:
    async with AsyncPostgresSaver.from_conn_string(postgres_url, schema=postgres_schema) as saver:
        assert isinstance(saver, AsyncPostgresSaver)
        saver.commit([step("t1", 0)])
        assert saver.get_checkpoint("t1") is not None


# -- errors -----------------------------------------------------------------------------------


def test_an_unreachable_server_is_store_unavailable() -> None:
    store = PostgresStore(
        "postgresql://postgres@127.0.0.1:1/test", timeout=0.3, max_retries=1, min_size=0
    )
    with pytest.raises(StoreUnavailableError, match="127.0.0.1") as info:
        store.setup()
    assert isinstance(info.value.__cause__, psycopg.Error)
    with pytest.raises(StoreUnavailableError):
        store.get_thread("t1")
    store.close()


def test_database_errors_are_store_errors(
    make_store: MakeStore, postgres_url: str, postgres_schema: str
) -> None:
    store = make_store()
    store.setup()
    cases: list[Callable[[], Any]] = [
        lambda: store.get_thread("nul\x00byte"),  # Postgres text cannot hold NUL
        lambda: store.commit([step("t1", 2**63)]),  # out of BIGINT range: refused by the server
        lambda: store.commit([Commit("t1", runs=[run("r1", "t1", metadata={"x": object()})])]),
    ]
    for case in cases:
        with pytest.raises(StoreError) as info:
            case()
        assert not isinstance(info.value, StoreUnavailableError)
        cause = info.value.__cause__
        assert isinstance(cause, psycopg.Error | TypeError), cause
    assert store.get_thread("t1") is None and store.get_run("r1") is None  # nothing written
    admin(postgres_url, f'DROP TABLE "{postgres_schema}".runs')
    with pytest.raises(StoreError) as dropped:
        store.get_run("r1")
    assert isinstance(dropped.value.__cause__, psycopg.errors.UndefinedTable)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_thread("t1")


def test_no_psycopg_error_escapes_any_method(make_store: MakeStore) -> None:
    store = make_store()
    store.setup()
    bad = "bad\x00id"
    calls: list[Callable[[], Any]] = [
        lambda: store.acquire_lease(bad, "w", 60),
        lambda: store.renew_lease(Lease(bad, "w", 1, 0.0), 60),
        lambda: store.release_lease(Lease(bad, "w", 1, 0.0)),
        lambda: store.commit([step(bad, 0)]),
        lambda: store.get_checkpoint(bad),
        lambda: store.list_checkpoints(bad),
        lambda: store.get_blobs(bad, "", {"value": (0, 1)}),
        lambda: store.get_writes(bad, "", 0),
        lambda: store.list_runs(thread_id=bad),
        lambda: store.list_executions(thread_id=bad),
        lambda: store.list_threads(namespace=bad),
        lambda: store.delete_thread(bad),
        lambda: store.prune_checkpoints(bad, 1),
        lambda: store.delete_runs(created_before=0.0, namespace=bad),
    ]
    for call in calls:
        with pytest.raises(StoreError):
            call()
    store.commit([step("t1", 0)])  # the pool is still healthy
    assert store.get_checkpoint("t1") is not None


def test_importing_without_psycopg_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import threadloom.checkpoint\n"
        "assert 'threadloom.checkpoint.postgres' not in sys.modules\n"
        "try:\n"
        "    import threadloom.checkpoint.postgres\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'threadloom[postgres]'" in out.stdout, out


# -- concurrency ------------------------------------------------------------------------------


def test_racing_writers_never_fork_a_thread(make_store: MakeStore) -> None:
    """Writers that saw the same head try different next checkpoints: exactly one wins each
    round, so the successful commits form one chain (the compare-and-set does not race)."""
    store = make_store(max_size=8)
    store.setup()
    wins: list[tuple[int | None, int]] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            while True:
                latest = store.get_checkpoint("race")
                head = latest.seq if latest is not None else None
                if head is not None and head >= 150:
                    return
                seq = (head + 1 if head is not None else 0) + index
                commit = step("race", seq, expected=head, run_id=f"run-{index}")
                assert commit.checkpoint is not None
                commit.checkpoint.parent_seq = head
                try:
                    store.commit([commit])
                except CheckpointConflictError:
                    continue
                with guard:
                    wins.append((head, seq))
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    chain = sorted(wins, key=lambda win: win[1])
    assert chain[0][0] is None and len(chain) > 10
    for (_, before), (expected, seq) in zip(chain, chain[1:], strict=False):
        assert expected == before, (expected, seq, before)  # one winner per head
    stored = [c.seq for c in reversed(store.list_checkpoints("race"))]
    assert stored == [seq for _, seq in chain]


# -- retention --------------------------------------------------------------------------------


def test_retention_matches_the_reference_store(make_store: MakeStore) -> None:
    store = make_store()
    store.setup()
    reference = MemoryStore()
    chain = [BlobRecord("msgs", 0, None, b"[1]")]
    chain += [BlobRecord("msgs", v, v - 1, b"[%d]" % v) for v in range(1, 6)]
    commits = [
        Commit(
            "t1",
            checkpoint=checkpoint(
                "t1", b.version, channels={"msgs": (b.version, 0), "x": (0, 0)}, blobs=[b]
            ),
            writes=[WriteRecord("t1", "", b.version, "task", "msgs", 0, b"w")],
        )
        for b in chain
    ]
    commits[0].checkpoint.blobs.append(BlobRecord("x", 0, None, b"x"))  # type: ignore[union-attr]
    commits.append(Commit("t1", checkpoint=checkpoint("t1", 9, ns="sub")))
    commits.append(Commit("t2", runs=[run("old", "t2", status="succeeded", created_at=1.0)]))
    commits.append(Commit("t2", runs=[run("live", "t2", status="running", created_at=1.0)]))
    commits.append(Commit("t2", executions=[execution("e-old", "old", "t2")]))
    for s in (store, reference):
        s.commit(commits)
        assert s.prune_checkpoints("t1", keep=2) == 4
        assert s.prune_checkpoints("t1", keep=2) == 0
        assert s.delete_runs(created_before=2.0) == 1
    wants = {"msgs": (0, 9), "x": (0, 9), "value": (0, 9)}
    for tid in ("t1", "t2"):
        assert store.list_checkpoints(tid) == reference.list_checkpoints(tid)
        assert sorted(store.get_blobs(tid, "", wants), key=repr) == sorted(
            reference.get_blobs(tid, "", wants), key=repr
        )
        assert [store.get_writes(tid, "", s) for s in range(6)] == [
            reference.get_writes(tid, "", s) for s in range(6)
        ]
    assert store.get_checkpoint("t1", "sub") is not None  # only the root namespace is pruned
    assert store.list_runs() == reference.list_runs()
    assert store.list_executions() == reference.list_executions() == []
    with pytest.raises(ValueError):
        store.prune_checkpoints("t1", keep=0)


# -- the same answers as the reference store --------------------------------------------------

@pytest.fixture
def prepared_store(make_store: MakeStore) -> PostgresStore:
    """One store for all the examples of a property test (each example truncates it)."""
    store = make_store(prepare_threshold=0)
    store.setup()
    return store


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(operations(max_commits=3, prune=True), max_size=10))
def test_postgres_answers_like_the_reference_store(
    prepared_store: PostgresStore,
    postgres_url: str,
    postgres_schema: str,
    ops: list[tuple[Any, ...]],
) -> None:
    store = prepared_store
    tables = ", ".join(f'"{postgres_schema}".{t}' for t in sorted(TABLES - {"schema_migrations"}))
    admin(postgres_url, f"TRUNCATE {tables}")
    reference = MemoryStore()
    for op in ops:
        assert apply(store, op) == apply(reference, op), op
    got, expected = state(store), state(reference)
    assert got[:3] == expected[:3]
    # the order of threads follows each store's own clock: compare the sets
    assert sorted(t.thread_id for t in got[4]) == sorted(t.thread_id for t in expected[4])
