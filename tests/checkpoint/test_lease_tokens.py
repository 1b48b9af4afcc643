"""Fencing tokens in a store made before they survived deleting a thread: the migration that
adds the store-wide part (SQLite's retired-token mark, Postgres's token sequence) starts it
above every token the store already handed out, and the store keeps working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from threadloom.checkpoint import _postgres_schema, _postgres_sql, _sqlite_sql
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.errors import LeaseLostError
from threadloom.testing.conformance import step

from .conftest import admin


def _old_sqlite(path: Path, version: int) -> None:
    """A SQLite database at schema ``version``, whose thread ``t1`` has handed out token 7
    (held by ``zombie``) and thread ``t2`` token 3 (released)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for n in range(1, version + 1):
        for statement in _sqlite_sql.MIGRATIONS[n - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (n,))
    conn.execute(
        "INSERT INTO threads (thread_id, namespace, namespace_set, created_at, updated_at,"
        " lease_owner, lease_token, lease_expires_at) VALUES"
        " ('t1', 'default', 1, 0, 0, 'zombie', 7, 1e12),"
        " ('t2', 'default', 1, 0, 0, NULL, 3, NULL)"
    )
    conn.commit()
    conn.close()


def test_sqlite_migration_starts_above_the_tokens_handed_out(tmp_path: Path) -> None:
    assert _sqlite_sql.SCHEMA_VERSION >= 5
    path = tmp_path / "old.db"
    _old_sqlite(path, 4)
    store = SqliteStore(path)
    try:
        store.setup()
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease is not None
        zombie = thread.lease
        assert zombie.token == 7
        store.commit([step("t1", 0, token=7)])  # the holder from before keeps working
        store.delete_thread("t1")
        fresh = store.acquire_lease("t1", "new", 60.0)
        assert fresh.token > 7
        with pytest.raises(LeaseLostError):
            store.commit([step("t1", 0, token=zombie.token)])
        assert store.acquire_lease("t2", "new", 60.0).token > 7
        assert store.acquire_lease("t3", "new", 60.0).token > 7
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_migration_starts_above_the_tokens_handed_out(
    postgres_url: str, postgres_schema: str
) -> None:
    from threadloom.checkpoint.postgres import PostgresStore

    assert _postgres_schema.SCHEMA_VERSION >= 4
    sql = _postgres_sql.Statements(postgres_schema)
    admin(postgres_url, sql.create_schema)
    admin(postgres_url, sql.create_migrations)
    for n in range(1, 4):
        for statement in sql.migrations[n - 1]:
            admin(postgres_url, statement)
        admin(postgres_url, f"INSERT INTO {sql.schema}.schema_migrations VALUES ({n}, 0)")
    admin(
        postgres_url,
        f"INSERT INTO {sql.schema}.threads (thread_id, namespace, namespace_set, created_at,"
        " updated_at, lease_owner, lease_token, lease_expires_at) VALUES"
        " ('t1', 'default', true, 0, 0, 'zombie', 7, 1e12),"
        " ('t2', 'default', true, 0, 0, NULL, 3, NULL)",
    )
    store = PostgresStore(postgres_url, schema=postgres_schema)
    try:
        store.setup()
        store.commit([step("t1", 0, token=7)])
        store.delete_thread("t1")
        fresh = store.acquire_lease("t1", "new", 60.0)
        assert fresh.token > 7
        with pytest.raises(LeaseLostError):
            store.commit([step("t1", 0, token=7)])
        assert store.acquire_lease("t2", "new", 60.0).token > 7
    finally:
        store.close()


def test_sqlite_without_its_mark_row_still_fences(tmp_path: Path) -> None:
    # Someone emptied lease_tokens (a hand-made cleanup): the next deletion writes the mark
    # again, and acquisitions read a missing mark as 0.
    store = SqliteStore(tmp_path / "t.db")
    try:
        store.setup()
        zombie = store.acquire_lease("t1", "zombie", 60.0)
        conn = sqlite3.connect(tmp_path / "t.db")
        conn.execute("DELETE FROM lease_tokens")
        conn.commit()
        conn.close()
        assert store.acquire_lease("t2", "other", 60.0).token >= 1
        store.delete_thread("t1")
        assert store.acquire_lease("t1", "new", 60.0).token > zombie.token
    finally:
        store.close()
