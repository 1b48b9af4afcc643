"""The runtime store (run queue, events, signals, workers, API keys): the conformance suite
on every backend, and what only Postgres has (signals between store objects through
``LISTEN/NOTIFY``, many claimers with stores of their own). The signals part runs again on
every backend with a Redis bus installed (``--redis``), which also carries signals between
store objects (processes) on SQLite, and replaces ``LISTEN/NOTIFY`` on Postgres."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from threadloom.checkpoint.memory import MemoryStore
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.errors import ThreadBusyError
from threadloom.testing.queue_conformance import (
    Collector,
    QueueConformance,
    SignalsConformance,
    claim_concurrently,
    put,
)

from .conftest import admin

try:
    from threadloom.checkpoint.postgres import PostgresStore
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
        raise
    PostgresStore = None  # type: ignore[assignment,misc]

NS = "default"
MakeStore = Callable[..., Any]


class TestMemoryQueue(QueueConformance):
    @pytest.fixture
    def store(self) -> Iterator[MemoryStore]:
        s = MemoryStore()
        s.setup()
        yield s
        s.close()


class TestSqliteFileQueue(QueueConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        s = SqliteStore(tmp_path / "queue.db")
        s.setup()
        yield s
        s.close()


class TestSqliteMemoryQueue(QueueConformance):
    @pytest.fixture
    def store(self) -> Iterator[SqliteStore]:
        s = SqliteStore(":memory:")
        s.setup()
        yield s
        s.close()


def test_sqlite_claimers_with_stores_of_their_own(tmp_path: Path) -> None:
    """Store objects on one file (as processes would be) claim through BEGIN IMMEDIATE."""
    made: list[SqliteStore] = []
    lock = threading.Lock()

    def make() -> SqliteStore:
        store = SqliteStore(tmp_path / "shared.db")
        store.setup()
        with lock:
            made.append(store)
        return store

    try:
        claim_concurrently(make, workers=4, runs=60, threads=12)
    finally:
        for store in made:
            store.close()


@pytest.fixture
def make_pg(postgres_url: str, postgres_schema: str) -> Iterator[MakeStore]:
    """``make_pg(**options)``: a set-up store on this test's schema, closed after the test."""
    if PostgresStore is None:
        pytest.skip("the postgres extra is not installed")
    made: list[Any] = []
    lock = threading.Lock()

    def make(**options: Any) -> Any:
        options.setdefault("schema", postgres_schema)
        options.setdefault("max_size", 4)
        store = PostgresStore(options.pop("dsn", postgres_url), **options)
        with lock:
            made.append(store)
        store.setup()
        return store

    yield make
    for store in made:
        store.close()


class TestPostgresQueue(QueueConformance):
    @pytest.fixture
    def store(self, make_pg: MakeStore) -> Any:
        return make_pg()


class TestPostgresQueueUnprepared(QueueConformance):
    """Without server-side prepared statements, as behind a transaction pooler."""

    @pytest.fixture
    def store(self, make_pg: MakeStore) -> Any:
        return make_pg(prepare_threshold=None)


@pytest.mark.parametrize("backend", [
    "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_event_appends_of_several_runs_go_in_one_call(backend: str, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    """``append_events_many`` (the worker's event pump): each run's events numbered after its
    own last one, in order, and an ``"event"`` signal for each run that got some."""
    if backend == "sqlite":
        store: Any = SqliteStore(tmp_path / "ev.db")
    else:
        store = request.getfixturevalue("make_pg")()
    try:
        store.append_events(NS, "r1", [("metadata", b"{}")])
        got = Collector()
        unsubscribe = store.signals().subscribe("event", got)
        seqs = store.append_events_many([
            (NS, "r1", [("values", b"1"), ("values", b"2")]),
            (NS, "r2", [("values", b"3")]),
            ("other", "r1", []),
            ("other", "r2", [("custom", b"4")]),
        ])
        assert seqs == [3, 1, 0, 1]
        assert [(e.seq, e.event, e.data) for e in store.read_events(NS, "r1")] == [
            (1, "metadata", b"{}"), (2, "values", b"1"), (3, "values", b"2")]
        assert [(e.seq, e.data) for e in store.read_events(NS, "r2")] == [(1, b"3")]
        assert store.read_events("other", "r1") == []
        assert [(e.seq, e.data) for e in store.read_events("other", "r2")] == [(1, b"4")]
        assert got.wait_for(lambda messages: len(messages) >= 3)
        assert sorted(got.messages) == ["default/r1/3", "default/r2/1", "other/r2/1"]
        unsubscribe()
    finally:
        store.close()


def test_postgres_claimers_with_stores_of_their_own(make_pg: MakeStore) -> None:
    """Several "processes" (store objects, each with its own pool) claim from one queue:
    every run is claimed exactly once, never two runs of a thread at once."""
    claim_concurrently(lambda: make_pg(max_size=2), workers=6, runs=120, threads=30)


def test_postgres_batches_claimed_concurrently_never_overlap(make_pg: MakeStore) -> None:
    setup = make_pg()
    for i in range(60):
        put(setup, f"r{i}", f"t{i}")
    barrier = threading.Barrier(5)
    got: list[list[str]] = []

    def claim() -> None:
        store = make_pg(max_size=1)
        barrier.wait()
        got.append([c.run_id for c in store.claim_runs("w", limit=20, ttl=60.0)])

    threads = [threading.Thread(target=claim) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    claimed = [run_id for batch in got for run_id in batch]
    assert len(claimed) == len(set(claimed)) == 60


def test_postgres_concurrent_rejects_from_stores_of_their_own(make_pg: MakeStore) -> None:
    """The thread's advisory lock serializes enqueues from different pools: one wins."""
    stores = [make_pg(max_size=1) for _ in range(5)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def contend(i: int) -> None:
        barrier.wait()
        try:
            put(stores[i], f"r{i}", "t1", strategy="reject")
            outcomes.append("ok")
        except ThreadBusyError:
            outcomes.append("busy")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcomes) == ["busy"] * (len(stores) - 1) + ["ok"]
    assert stores[0].queue_depth() == 1


def test_signals_travel_between_store_objects(make_pg: MakeStore) -> None:
    """Two store objects on one schema stand for two processes: what one does, the other
    hears through LISTEN/NOTIFY."""
    api, worker = make_pg(), make_pg()
    got = {topic: Collector() for topic in ("work", "cancel", "event", "done")}
    stops = [worker.signals().subscribe(topic, c) for topic, c in got.items()]
    try:
        put(api, "r1", "t1")
        assert got["work"].wait_for(bool)
        [claim] = worker.claim_runs("w1", limit=1, ttl=60.0)
        api.request_cancel(NS, "r1")
        assert got["cancel"].wait_for(lambda m: f"{NS}/r1" in m)
        api.append_events(NS, "r1", [("values", b"1")])
        assert got["event"].wait_for(lambda m: f"{NS}/r1/1" in m)
        api.signals().publish("done", "custom")
        assert got["done"].wait_for(lambda m: "custom" in m)
        worker.finish_claim(claim)
        assert got["done"].wait_for(lambda m: f"{NS}/r1" in m)
    finally:
        for stop in stops:
            stop()


def test_a_rolled_back_enqueue_sends_nothing(make_pg: MakeStore) -> None:
    api, worker = make_pg(), make_pg()
    heard = Collector()
    stop = worker.signals().subscribe("work", heard)
    try:
        put(api, "r1", "t1", strategy="reject")
        assert heard.wait_for(lambda m: len(m) == 1)
        with pytest.raises(Exception, match="busy"):
            put(api, "r2", "t1", strategy="reject")
        api.signals().publish("work", "marker")  # after the refused one, in order
        assert heard.wait_for(lambda m: "marker" in m)
        assert heard.messages == ["", "marker"]
    finally:
        stop()


def test_the_listener_reconnects_after_its_connection_is_killed(
    make_pg: MakeStore, postgres_url: str
) -> None:
    store = make_pg()
    heard = Collector()
    stop = store.signals().subscribe("event", heard)
    woken = Collector()
    stop_work = store.signals().subscribe("work", woken)
    try:
        admin(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE application_name = 'threadloom-listen'"
                            f" AND query LIKE '%{store.schema}%'")
        assert woken.wait_for(lambda m: "" in m)  # reconnected: a wake-up for what was missed
        store.append_events(NS, "r1", [("values", b"1")])
        assert heard.wait_for(lambda m: f"{NS}/r1/1" in m)
    finally:
        stop()
        stop_work()


def test_listen_url_and_close(make_pg: MakeStore, postgres_url: str) -> None:
    """``listen_url`` (threadloom's own options in it are dropped) carries the LISTEN; the
    listener stops with the store."""
    sep = "&" if "?" in postgres_url else "?"
    store = make_pg(listen_url=f"{postgres_url}{sep}pool_max=3&prepare_threshold=none")
    heard = Collector()
    store.signals().subscribe("work", heard)
    store.signals().publish("work", "x")
    assert heard.wait_for(lambda m: "x" in m)
    store.close()
    names = [t.name for t in threading.enumerate()]
    assert not any(name.startswith("threadloom-listen:") and store.schema in name
                   for name in names)


def test_the_queue_behind_a_transaction_pooler(
    make_pg: MakeStore, pgbouncer_url: str, postgres_url: str
) -> None:
    """Everything but LISTEN works through PgBouncer in transaction mode; the signals
    listen on the direct ``listen_url``."""
    store = make_pg(dsn=pgbouncer_url, prepare_threshold=None, listen_url=postgres_url)
    heard = Collector()
    stop = store.signals().subscribe("done", heard)
    try:
        put(store, "r1", "t1")
        put(store, "r2", "t1", strategy="interrupt")
        assert store.request_cancel(NS, "r2", "rollback") == "cancelled"
        assert heard.wait_for(lambda m: f"{NS}/r1" in m and f"{NS}/r2" in m)
        store.append_events(NS, "r3", [("values", b"1")] * 3)
        assert [e.seq for e in store.read_events(NS, "r3")] == [1, 2, 3]
    finally:
        stop()


# -- signals over Redis (--redis) ---------------------------------------------------------------


class TestMemorySignalsOverRedis(SignalsConformance):
    @pytest.fixture
    def store(self, redis_bus: Callable[[], Any]) -> Iterator[MemoryStore]:
        s = MemoryStore()
        s.setup()
        s.use_signals(redis_bus())
        yield s
        s.close()


class TestSqliteSignalsOverRedis(SignalsConformance):
    @pytest.fixture
    def store(self, tmp_path: Path, redis_bus: Callable[[], Any]) -> Iterator[SqliteStore]:
        s = SqliteStore(tmp_path / "queue.db")
        s.setup()
        s.use_signals(redis_bus())
        yield s
        s.close()


class TestPostgresSignalsOverRedis(SignalsConformance):
    @pytest.fixture
    def store(self, make_pg: MakeStore, redis_bus: Callable[[], Any]) -> Any:
        s = make_pg()
        s.use_signals(redis_bus())
        return s


def _hear_a_run_through(sender: Any, receiver: Any) -> None:
    """What ``sender`` commits wakes the subscribers of ``receiver`` (another store object,
    as another process would have)."""
    got = {topic: Collector() for topic in ("work", "cancel", "event", "done")}
    stops = [receiver.signals().subscribe(topic, c) for topic, c in got.items()]
    try:
        put(sender, "r1", "t1")
        assert got["work"].wait_for(bool)
        [claim] = sender.claim_runs("w1", limit=8, ttl=60.0)
        assert sender.request_cancel(NS, "r1") == "signalled"
        assert got["cancel"].wait_for(lambda m: f"{NS}/r1" in m)
        sender.append_events(NS, "r1", [("values", b"1")])
        assert got["event"].wait_for(lambda m: f"{NS}/r1/1" in m)
        assert sender.finish_claim(claim)
        assert got["done"].wait_for(lambda m: f"{NS}/r1" in m)
    finally:
        for stop in stops:
            stop()


def test_redis_carries_signals_between_sqlite_store_objects(
    tmp_path: Path, redis_bus: Callable[[], Any]
) -> None:
    stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
    try:
        for store in stores:
            store.setup()
            store.use_signals(redis_bus())
        _hear_a_run_through(stores[0], stores[1])
    finally:
        for store in stores:
            store.close()


def test_redis_replaces_listen_notify_between_postgres_stores(
    make_pg: MakeStore, redis_bus: Callable[[], Any]
) -> None:
    sender, receiver = make_pg(), make_pg()
    for store in (sender, receiver):
        store.use_signals(redis_bus())
    _hear_a_run_through(sender, receiver)
    assert not receiver._bus.listening  # nobody holds a LISTEN connection
