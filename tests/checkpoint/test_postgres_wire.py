"""The Postgres store's low-level statement runner: when it prepares statements, and that it
fails like a psycopg cursor would. (The store's own tests run every commit through it.)"""

from __future__ import annotations

import os
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
