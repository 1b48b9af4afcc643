"""A store of the schema before run logs (SQLite 10, Postgres 9) upgrades to one that keeps
them (SQLite 11, Postgres 10): its runs are still there, their logs can be appended and
paged, and they go with the thread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from threadloom.checkpoint import _postgres_schema, _postgres_sql, _sqlite_sql
from threadloom.checkpoint._run_logs import (
    POSTGRES_RUN_LOGS_MIGRATION,
    SQLITE_RUN_LOGS_MIGRATION,
)
from threadloom.checkpoint.base import RunLog, Store
from threadloom.checkpoint.sqlite import SqliteStore

from .conftest import admin

SQLITE_BEFORE, POSTGRES_BEFORE = 10, 9

# a finished run as the schema before run logs holds it
_OLD_RUN = (
    "INSERT INTO {s}runs (run_id, thread_id, graph, status, namespace, durability, created_at,"
    " updated_at, steps, executions, metadata) VALUES ('run-old', 't1', 'g', 'succeeded',"
    " 'default', 'sync', 1.0, 2.0, 1, 1, '{{}}')"
)


def _check_upgraded(store: Store) -> None:
    assert store.get_run("run-old") is not None  # made by the old schema
    assert store.page_run_logs("run-old") == []
    assert store.append_run_logs([
        RunLog(run_id="run-old", thread_id="t1", at=1.0, level="INFO", logger="app",
               message=f"m{i}") for i in range(3)]) == 3
    assert [(r.seq, r.message) for r in store.page_run_logs("run-old", after=1)] == [
        (2, "m1"), (3, "m2")]
    store.delete_thread("t1")
    assert store.page_run_logs("run-old") == []


def test_sqlite_gains_run_logs(tmp_path: Path) -> None:
    assert _sqlite_sql.MIGRATIONS[SQLITE_BEFORE] is SQLITE_RUN_LOGS_MIGRATION
    assert _sqlite_sql.SCHEMA_VERSION >= SQLITE_BEFORE + 1
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for n in range(1, SQLITE_BEFORE + 1):
        for statement in _sqlite_sql.MIGRATIONS[n - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (n,))
    conn.execute(_OLD_RUN.format(s=""))
    conn.commit()
    assert "run_logs" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    store = SqliteStore(path)
    try:
        store.setup()
        _check_upgraded(store)
    finally:
        store.close()
    with sqlite3.connect(path) as check:
        version = check.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert version == (_sqlite_sql.SCHEMA_VERSION,)


@pytest.mark.postgres
def test_postgres_gains_run_logs(postgres_url: str, postgres_schema: str) -> None:
    from threadloom.checkpoint.postgres import PostgresStore

    assert _postgres_schema.MIGRATIONS[POSTGRES_BEFORE] is POSTGRES_RUN_LOGS_MIGRATION
    assert _postgres_schema.SCHEMA_VERSION >= POSTGRES_BEFORE + 1
    sql = _postgres_sql.Statements(postgres_schema)
    admin(postgres_url, sql.create_schema)
    admin(postgres_url, sql.create_migrations)
    for n in range(1, POSTGRES_BEFORE + 1):
        for statement in sql.migrations[n - 1]:
            admin(postgres_url, statement)
        admin(postgres_url, f"INSERT INTO {sql.schema}.schema_migrations VALUES ({n}, 0)")
    admin(postgres_url, _OLD_RUN.format(s=f"{sql.schema}."))
    store = PostgresStore(postgres_url, schema=postgres_schema)
    try:
        store.setup()
        _check_upgraded(store)
    finally:
        store.close()
