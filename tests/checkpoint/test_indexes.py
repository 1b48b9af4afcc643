"""The SQL stores' executions indexes: the one by status holds only executions that did not
succeed (a step commit records a succeeded one, and must not pay an index write for it), and
a query for another status still uses it; executions are keyed by (thread, id), which serves
thread listings, and a database from before that key is upgraded with its rows kept."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from threadloom.checkpoint import _sqlite_sql
from threadloom.checkpoint.base import Commit
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.testing.conformance import execution

STATUSES = ["SUCCEEDED", "FAILED", "SUCCEEDED", "INTERRUPTED", "RUNNING", "PENDING"]


def _fill(store: Any) -> None:
    store.commit(
        [
            Commit(
                "t1",
                executions=[
                    execution(f"e{i}", "r1", "t1", created_at=float(i), status=status)
                    for i, status in enumerate(STATUSES)
                ],
            )
        ]
    )


def test_sqlite_indexes_only_unfinished_executions(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.setup()
    _fill(store)
    conn = store._thread_conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        failed = store.list_executions(namespace="default", status="FAILED")
    finally:
        conn.set_trace_callback(None)
    assert [e.id for e in failed] == ["e1"]
    assert [e.id for e in store.list_executions(status="SUCCEEDED")] == ["e0", "e2"]
    (query,) = [s for s in statements if s.startswith("SELECT")]
    plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "executions_namespace_status" in plan, plan
    (definition,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'executions_namespace_status'"
    ).fetchone()
    assert definition.endswith("WHERE status NOT IN ('SUCCEEDED', 'RUNNING')"), definition
    _check_step_statuses(store)
    (count,) = conn.execute(
        "SELECT count(*) FROM executions INDEXED BY executions_namespace_status"
        " WHERE namespace = 'default' AND status NOT IN ('SUCCEEDED', 'RUNNING')"
    ).fetchone()
    assert count == 3  # FAILED, INTERRUPTED, PENDING: what an operator looks for
    store.close()


def _check_step_statuses(store: Any) -> None:
    """The statuses every step writes are not indexed by status, and are still found."""
    assert [e.id for e in store.list_executions(namespace="default", status="RUNNING")] == [
        "e4"
    ]
    assert [e.id for e in store.list_executions(status="PENDING")] == ["e5"]
    assert [e.id for e in store.list_executions(run_id="r1", status="SUCCEEDED")] == ["e0", "e2"]


def test_postgres_indexes_only_unfinished_executions(
    postgres_url: str, postgres_schema: str
) -> None:
    psycopg = pytest.importorskip("psycopg")
    from threadloom.checkpoint.postgres import PostgresStore

    store = PostgresStore(postgres_url, schema=postgres_schema)
    try:
        store.setup()
        _fill(store)
        assert [e.id for e in store.list_executions(status="INTERRUPTED")] == ["e3"]
        assert [e.id for e in store.list_executions(status="SUCCEEDED")] == ["e0", "e2"]
        sql, params = store._sql.select_executions(None, None, "default", "FAILED", None, 0)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET plan_cache_mode = force_generic_plan")
            plan = " ".join(r[0] for r in conn.execute(f"EXPLAIN {sql}", params))
            (definition,) = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s"
                " AND indexname = 'executions_namespace_status'",
                (postgres_schema,),
            ).fetchone()
        assert "executions_namespace_status" in plan, plan
        assert "status <> ALL (ARRAY['SUCCEEDED'::text, 'RUNNING'::text])" in definition, (
            definition
        )
        _check_step_statuses(store)
    finally:
        store.close()


def _plan(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> str:
    return " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_sqlite_lists_a_threads_executions_by_key_and_a_runs_by_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.setup()
    _fill(store)
    conn = store._thread_conn()
    key = "SELECT * FROM executions WHERE namespace = ? AND"
    by_thread = _plan(conn, f"{key} thread_id = ?", ("default", "t1"))
    by_run = _plan(conn, f"{key} run_id = ?", ("default", "r1"))
    assert "USING PRIMARY KEY (namespace=? AND thread_id=?)" in by_thread, by_thread
    assert "executions_run" in by_run, by_run
    indexes = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'executions'"
        )
    }
    # executions_namespace_created: keyset pages by time (SQLite migration 10)
    assert indexes == {
        "executions_run", "executions_namespace_status", "executions_namespace_created"}
    store.close()


def test_sqlite_upgrade_keys_executions_by_thread_and_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # a database at schema version 3, with an execution
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
        )
        for version, statements in enumerate(_sqlite_sql.MIGRATIONS[:3], start=1):
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
        conn.execute(
            f"INSERT INTO executions ({_sqlite_sql.EXEC_COLS}) VALUES"
            " ('e1', 'r1', 't1', 'g', 'a', 0, 'FAILED', 'default', 1, NULL, x'7b7d', 'boom',"
            " '[]', '[]', 3, 1.0, 1.0, 2.0)"
        )
    conn.close()
    store = SqliteStore(path)
    store.setup()
    (kept,) = store.list_executions(thread_id="t1")
    assert (kept.id, kept.run_id, kept.status, kept.outputs, kept.error, kept.checkpoint_seq) == (
        "e1", "r1", "FAILED", b"{}", "boom", 3,
    )  # fmt: skip
    assert store.list_executions(run_id="r1") == [kept]
    assert store.list_executions(namespace="default", status="FAILED") == [kept]
    kept.status, kept.error = "SUCCEEDED", None
    store.commit([Commit("t1", executions=[kept])])  # the same execution, not a second one
    assert store.list_executions() == [kept]
    store.close()


def test_postgres_upgrade_keys_executions_by_thread_and_keeps_them(
    postgres_url: str, postgres_schema: str
) -> None:
    psycopg = pytest.importorskip("psycopg")
    from threadloom.checkpoint.postgres import PostgresStore

    store = PostgresStore(postgres_url, schema=postgres_schema)
    sql = store._sql
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # schema version 2
            conn.execute(sql.create_schema)
            conn.execute(sql.create_migrations)
            for version, statements in enumerate(sql.migrations[:2], start=1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(sql.record_migration, (version, time.time()))
            conn.execute(
                f"INSERT INTO {postgres_schema}.executions VALUES ('e1', 'r1', 't1', 'g', 'a',"
                " 0, 'FAILED', 'default', 1, NULL, '\\x7b7d', 'boom', '[]', '[]', 3, 1.0, 1.0,"
                " 2.0)"
            )
        store.setup()
        (kept,) = store.list_executions(thread_id="t1")
        assert (kept.id, kept.run_id, kept.status, kept.outputs, kept.checkpoint_seq) == (
            "e1", "r1", "FAILED", b"{}", 3,
        )  # fmt: skip
        assert store.list_executions(run_id="r1") == [kept]
        kept.status, kept.error = "SUCCEEDED", None
        store.commit([Commit("t1", executions=[kept])])
        assert store.list_executions() == [kept]
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            indexes = {
                r[0]
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = %s"
                    " AND tablename = 'executions'",
                    (postgres_schema,),
                )
            }
        assert indexes == {"executions_pkey", "executions_run", "executions_namespace_status",
                           "executions_namespace_created"}
    finally:
        store.close()
