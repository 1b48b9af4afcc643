"""The Postgres store's low-level statement runner: when it prepares statements, that it
fails like a psycopg cursor would, and when it waits for an answer by polling. (The store's
own tests run every commit through it.)"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

try:
    import psycopg

    from threadloom.checkpoint import _postgres_wire
    from threadloom.checkpoint._postgres_wire import Runner
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip(f"the postgres extra is not installed: {exc}", allow_module_level=True)

INSERT = b"INSERT INTO {table} (k, v) VALUES ($1, $2)"


@pytest.fixture
def conn(postgres_url: str, postgres_schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection whose search path is a fresh schema holding table ``kv``."""
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{postgres_schema}"')
        c.execute(f'SET search_path TO "{postgres_schema}"')
        c.execute("CREATE TABLE kv (k BIGINT PRIMARY KEY, v TEXT)")
        yield c


def insert(table: str = "kv") -> bytes:
    return INSERT.replace(b"{table}", table.encode())


def prepared(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE name LIKE '\\_threadloom\\_%'"
            " ORDER BY prepare_time"
        )
    ]


def rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT k, v FROM kv ORDER BY k").fetchall()


def test_a_statement_is_prepared_after_the_threshold(conn: psycopg.Connection[Any]) -> None:
    runner = Runner(prepare_threshold=2)
    for k in (1, 2):
        runner.execute(conn, insert(), (k, "a"))
        assert prepared(conn) == []
    runner.execute(conn, insert(), (3, "a"))
    assert len(prepared(conn)) == 1
    runner.execute(conn, insert(), (4, "a"))  # runs the prepared one
    assert len(prepared(conn)) == 1
    assert rows(conn) == [(k, "a") for k in (1, 2, 3, 4)]


def test_no_threshold_never_prepares(conn: psycopg.Connection[Any]) -> None:
    runner = Runner(prepare_threshold=None)
    for k in range(10):
        runner.execute(conn, insert(), (k, None))
    assert prepared(conn) == []
    assert len(rows(conn)) == 10


def test_parameters_of_other_types_get_statements_of_their_own(
    conn: psycopg.Connection[Any],
) -> None:
    """psycopg types an integer by its size: a statement prepared for a small one must not
    be sent a big one."""
    runner = Runner(prepare_threshold=0)
    runner.execute(conn, insert(), (1, "small"))
    runner.execute(conn, insert(), (2**40, "big"))
    runner.execute(conn, insert(), (2, None))
    assert len(prepared(conn)) >= 2
    assert rows(conn) == [(1, "small"), (2, None), (2**40, "big")]


def test_a_statement_the_server_forgot_is_run_again(conn: psycopg.Connection[Any]) -> None:
    runner = Runner(prepare_threshold=0)
    runner.execute(conn, insert(), (1, "a"))
    conn.execute("DEALLOCATE ALL")  # what a pooler's reset does
    runner.execute(conn, insert(), (2, "b"))  # unprepared, after the miss
    runner.execute(conn, insert(), (3, "c"))  # prepared again, under a new name
    assert rows(conn) == [(1, "a"), (2, "b"), (3, "c")]
    assert len(prepared(conn)) == 1


def test_prepared_statements_per_connection_are_capped(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_postgres_wire, "PREPARED_MAX", 2)
    runner = Runner(prepare_threshold=0)
    for i in range(4):
        conn.execute(f"CREATE TABLE kv{i} (k BIGINT PRIMARY KEY, v TEXT)")
        runner.execute(conn, insert(f"kv{i}"), (i, "x"))
        runner.execute(conn, insert(f"kv{i}"), (i + 10, "y"))
    assert len(prepared(conn)) == 2
    for i in range(4):
        assert conn.execute(f"SELECT count(*) FROM kv{i}").fetchone() == (2,)


@pytest.mark.parametrize("threshold", [None, 0])
def test_errors_are_the_ones_a_cursor_raises(
    conn: psycopg.Connection[Any], threshold: int | None
) -> None:
    runner = Runner(prepare_threshold=threshold)
    runner.execute(conn, insert(), (1, "a"))
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        runner.execute(conn, insert(), (1, "b"))
    assert caught.value.sqlstate == "23505"
    assert caught.value.diag.constraint_name == "kv_pkey"
    with pytest.raises(psycopg.errors.UndefinedTable):
        runner.execute(conn, insert("missing"), (2, "c"))
    runner.execute(conn, insert(), (2, "c"))  # the connection is still good
    assert rows(conn) == [(1, "a"), (2, "c")]


# -- batches in one pipeline ------------------------------------------------------------------


def test_a_batch_is_applied_whole(conn: psycopg.Connection[Any]) -> None:
    runner = Runner(prepare_threshold=1)
    for round_ in range(3):  # 1st use unprepared, 2nd prepared in the pipeline, then prepared
        runner.execute_batch(
            conn, [(insert(), (2 * round_, "a")), (insert(), (2 * round_ + 1, "b"))]
        )
    assert rows(conn) == [(k, "ab"[k % 2]) for k in range(6)]
    assert len(prepared(conn)) == 1  # one statement, with the same parameter types
    assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


@pytest.mark.parametrize("threshold", [None, 0])
def test_a_failed_batch_applies_nothing(
    conn: psycopg.Connection[Any], threshold: int | None
) -> None:
    runner = Runner(prepare_threshold=threshold)
    runner.execute(conn, insert(), (1, "a"))
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        runner.execute_batch(
            conn, [(insert(), (2, "b")), (insert(), (1, "dup")), (insert(), (3, "c"))]
        )
    assert caught.value.diag.constraint_name == "kv_pkey"
    assert rows(conn) == [(1, "a")]  # the first statement was rolled back with the rest
    assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    runner.execute_batch(conn, [(insert(), (2, "b")), (insert(), (3, "c"))])  # still good
    assert rows(conn) == [(1, "a"), (2, "b"), (3, "c")]


def test_a_statement_prepared_in_a_failed_batch_is_not_taken_as_prepared(
    conn: psycopg.Connection[Any],
) -> None:
    """Its prepare came after the failure, so the server skipped it."""
    conn.execute("CREATE TABLE kv2 (k BIGINT PRIMARY KEY, v TEXT)")
    runner = Runner(prepare_threshold=0)
    runner.execute(conn, insert(), (1, "a"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        runner.execute_batch(conn, [(insert(), (1, "dup")), (insert("kv2"), (1, "x"))])
    assert len(prepared(conn)) == 1
    runner.execute_batch(conn, [(insert("kv2"), (2, "y")), (insert(), (2, "b"))])
    assert len(prepared(conn)) == 2
    assert conn.execute("SELECT k, v FROM kv2").fetchall() == [(2, "y")]


def test_a_statement_twice_in_a_batch_is_prepared_once(conn: psycopg.Connection[Any]) -> None:
    runner = Runner(prepare_threshold=0)
    runner.execute_batch(conn, [(insert(), (k, "a")) for k in range(3)])
    assert len(prepared(conn)) == 1
    assert len(rows(conn)) == 3


def test_a_batch_the_server_forgot_is_run_again(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE kv2 (k BIGINT PRIMARY KEY, v TEXT)")
    runner = Runner(prepare_threshold=0)
    runner.execute_batch(conn, [(insert(), (1, "a")), (insert(), (2, "b"))])
    assert len(prepared(conn)) == 1
    conn.execute("DEALLOCATE ALL")  # what a pooler's reset does
    # kv2's statement is prepared in the batch before kv's old name fails: it is kept
    runner.execute_batch(conn, [(insert("kv2"), (1, "x")), (insert(), (3, "c"))])
    assert rows(conn) == [(1, "a"), (2, "b"), (3, "c")]  # applied once
    assert conn.execute("SELECT k, v FROM kv2").fetchall() == [(1, "x")]
    assert len(prepared(conn)) == 1  # the retry prepared nothing more
    runner.execute_batch(conn, [(insert("kv2"), (2, "y")), (insert(), (4, "d"))])
    assert len(prepared(conn)) == 2  # kv2's was reused, kv's prepared again


def test_a_batch_interrupted_while_collecting_closes_the_connection(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results left uncollected keep the connection in pipeline mode: it must not go back
    to a pool like that."""
    fetch_many = psycopg.generators.fetch_many
    calls = 0

    def interrupted(pgconn: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("interrupted")
        return fetch_many(pgconn)

    monkeypatch.setattr(psycopg.generators, "fetch_many", interrupted)
    runner = Runner(prepare_threshold=None)
    with pytest.raises(RuntimeError):
        runner.execute_batch(conn, [(insert(), (1, "a")), (insert(), (2, "b"))])
    assert conn.closed and calls == 2


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_with_no_statement_in_flight() -> None:
    import multiprocessing

    runner = Runner(prepare_threshold=None, spin_wait=1.0)
    with runner._lock:  # as if another thread were counting a statement at the fork
        runner._in_flight = 1
        child = multiprocessing.get_context("fork").Process(target=_check_runner, args=(runner,))
        child.start()
    child.join(60)
    assert child.exitcode == 0


def _check_runner(runner: Runner) -> None:
    free = runner._lock.acquire(timeout=5)
    os._exit(0 if free and runner._in_flight == 0 else 3)


# -- waiting by polling -------------------------------------------------------------------------


class PollCounter:
    """Counts the runner's non-blocking polls, and remembers what the last one found."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.last: bool | None = None
        readable = _postgres_wire._Session.readable

        def counted(session: Any, fd: int) -> bool:
            self.calls += 1
            self.last = readable(session, fd)
            return self.last

        monkeypatch.setattr(_postgres_wire._Session, "readable", counted)


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> PollCounter:
    return PollCounter(monkeypatch)


@pytest.mark.parametrize(("spin_wait", "spin"), [(0.0, True), (5.0, False)])
def test_a_statement_polls_only_if_asked_and_allowed(
    conn: psycopg.Connection[Any], polls: PollCounter, spin_wait: float, spin: bool
) -> None:
    runner = Runner(prepare_threshold=0, spin_wait=spin_wait)
    runner.execute(conn, insert(), (1, "a"), spin=spin)
    assert polls.calls == 0
    assert rows(conn) == [(1, "a")]


@pytest.mark.parametrize("threshold", [None, 0])
def test_a_polled_statement_gets_its_answer(
    conn: psycopg.Connection[Any], polls: PollCounter, threshold: int | None
) -> None:
    runner = Runner(prepare_threshold=threshold, spin_wait=5.0)
    for k in range(3):
        runner.execute(conn, insert(), (k, "a"), spin=True)
    assert polls.calls >= 3 and polls.last is True  # the answer ended the polling
    with pytest.raises(psycopg.errors.UniqueViolation):
        runner.execute(conn, insert(), (1, "b"), spin=True)
    runner.execute(conn, insert(), (3, "c"), spin=True)  # the connection is still good
    assert rows(conn) == [(0, "a"), (1, "a"), (2, "a"), (3, "c")]
    assert runner._in_flight == 0


def test_polling_gives_up_after_spin_wait(
    conn: psycopg.Connection[Any], polls: PollCounter
) -> None:
    """A slow answer is waited for by blocking once ``spin_wait`` has passed."""
    runner = Runner(prepare_threshold=None, spin_wait=0.01)
    runner.execute(conn, b"SELECT pg_sleep(1)", (), spin=True)
    assert polls.calls >= 1 and polls.last is False


def test_polling_gives_way_to_another_statement_in_flight(
    postgres_url: str, conn: psycopg.Connection[Any], polls: PollCounter
) -> None:
    """While a second statement is in flight, the first stops polling and blocks."""
    runner = Runner(prepare_threshold=None, spin_wait=60.0)
    done = threading.Event()

    def slow() -> None:
        runner.execute(conn, b"SELECT pg_sleep(1)", (), spin=True)
        done.set()

    first = threading.Thread(target=slow)
    first.start()
    with psycopg.connect(postgres_url, autocommit=True) as other:
        while not polls.calls:  # the first one is polling
            time.sleep(0.001)
        runner.execute(other, b"SELECT pg_sleep(0.2)", (), spin=True)
    first.join(30)
    assert done.is_set() and polls.last is False  # it stopped polling before its answer
    assert runner._in_flight == 0


def test_a_connection_lost_while_polling_raises(
    postgres_url: str, conn: psycopg.Connection[Any], polls: PollCounter
) -> None:
    runner = Runner(prepare_threshold=None, spin_wait=60.0)
    pid = conn.info.backend_pid

    def kill() -> None:
        while not polls.calls:  # the statement was sent and is being polled for
            time.sleep(0.001)
        with psycopg.connect(postgres_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        with pytest.raises(psycopg.OperationalError):
            runner.execute(conn, b"SELECT pg_sleep(30)", (), spin=True)
    finally:
        killer.join()
    assert conn.broken
    assert runner._in_flight == 0


def test_a_polled_batch_gets_its_answer(conn: psycopg.Connection[Any], polls: PollCounter) -> None:
    runner = Runner(prepare_threshold=0, spin_wait=5.0)
    runner.execute_batch(conn, [(insert(), (1, "a")), (insert(), (2, "b"))], spin=True)
    assert polls.calls >= 1 and polls.last is True
    assert rows(conn) == [(1, "a"), (2, "b")]


def test_a_connection_lost_in_a_batch_raises_and_is_closed(
    postgres_url: str, conn: psycopg.Connection[Any]
) -> None:
    runner = Runner(prepare_threshold=None)
    pid = conn.info.backend_pid

    def kill() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))

    killer = threading.Timer(0.2, kill)
    killer.start()
    try:
        with pytest.raises(psycopg.OperationalError):
            runner.execute_batch(conn, [(insert(), (1, "a")), (b"SELECT pg_sleep(30)", ())])
    finally:
        killer.join()
    assert conn.closed
