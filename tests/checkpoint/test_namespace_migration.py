"""A store made before namespaces keyed every record (SQLite schema 7, Postgres schema 6):
the namespace migration (SQLite 8, Postgres 7) moves every record into ``"default"`` with
nothing lost, a user who never names a namespace sees the same store, and the upgraded store
then holds the same ids in another namespace apart."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from threadloom.checkpoint import _postgres_schema, _postgres_sql, _sqlite_sql
from threadloom.checkpoint.base import Commit, Store
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.testing.conformance import checkpoint, run, step

from .conftest import admin

SQLITE_BEFORE, POSTGRES_BEFORE = 7, 6

# Rows of the schema before namespaces, as the old code wrote them: thread t1 (leased, token
# 7; named "tenant-x" by its first commit) with two checkpoints, their blobs, a pending
# write, a finished run and its executions; thread t2, created by a lease only.
_THREADS = (
    "INSERT INTO {s}threads (thread_id, namespace, namespace_set, created_at, updated_at,"
    " metadata, lease_owner, lease_token, lease_expires_at) VALUES"
    " ('t1', 'tenant-x', {true}, 1, 2, '{{\"k\": 1}}', 'zombie', 7, 1e12),"
    " ('t2', 'default', {false}, 1, 1, '{{}}', NULL, 3, NULL)"
)
_ROWS = (
    "INSERT INTO {s}checkpoints VALUES"
    " ('t1', '', 0, NULL, 'r1', -1, 'input', 10.0, '{{\"value\":[0,0]}}', '[\"a\"]',"
    " <6d30>, <6630>),"
    " ('t1', '', 1, 0, 'r1', 0, 'loop', 11.0, '{{\"value\":[1,0]}}', '[]',"
    " <6d31>, <6631>)",
    "INSERT INTO {s}blobs VALUES ('t1', '', 'value', 0, NULL, <7630>),"
    " ('t1', '', 'value', 1, 0, <7631>)",
    "INSERT INTO {s}writes VALUES ('t1', '', 1, 'task-1', 'value', 0, <7731>)",
    "INSERT INTO {s}runs VALUES ('r1', 't1', 'g', 'succeeded', 'tenant-x', <696e>,"
    " <6f7574>, NULL, 'sync', 10.0, 12.0, 10.0, 12.0, 1, 1, NULL, '{{\"m\": 2}}')",
    "INSERT INTO {s}executions VALUES ('e1', 'r1', 't1', 'g', 'a', 0, 'SUCCEEDED',"
    " 'tenant-x', 1, NULL, <7b7d>, NULL, '[]', '[]', 0, 10.0, 10.0, 11.0)",
)


def _check_upgraded(store: Store) -> None:
    """Everything the old store held reads back in "default", and the store keeps working."""
    t1 = store.get_thread("t1")
    assert t1 is not None
    assert (t1.namespace, t1.created_at, t1.updated_at, t1.metadata) == ("default", 1, 2, {"k": 1})
    assert t1.lease is not None and (t1.lease.owner, t1.lease.token) == ("zombie", 7)
    assert t1.lease.namespace == "default"
    t2 = store.get_thread("t2")
    assert t2 is not None and t2.lease is None
    assert [t.thread_id for t in store.list_threads()] == ["t1", "t2"]
    cps = store.list_checkpoints("t1")
    assert [(c.seq, c.parent_seq, c.source, bytes(c.metadata)) for c in cps] == [
        (1, 0, "loop", b"m1"), (0, None, "input", b"m0"),
    ]  # fmt: skip
    assert cps[0].channels == {"value": (1, 0)}
    blobs = store.get_blobs("t1", "", {"value": (0, 1)})
    assert sorted((b.version, b.prev, bytes(b.data)) for b in blobs) == [
        (0, None, b"v0"), (1, 0, b"v1"),
    ]  # fmt: skip
    assert [bytes(w.data) for w in store.get_writes("t1", "", 1)] == [b"w1"]
    got = store.get_run("r1")
    assert got is not None
    assert (got.namespace, got.thread_id, got.status, got.metadata) == (
        "default", "t1", "succeeded", {"m": 2},
    )  # fmt: skip
    assert (bytes(got.input or b""), bytes(got.output or b"")) == (b"in", b"out")
    assert [r.run_id for r in store.list_runs(thread_id="t1")] == ["r1"]
    (ex,) = store.list_executions(run_id="r1")
    assert (ex.id, ex.namespace, ex.thread_id, bytes(ex.outputs or b"")) == (
        "e1", "default", "t1", b"{}",
    )  # fmt: skip
    assert store.list_runs(namespace="tenant-x") == []  # nothing stayed anywhere else
    # the holder from before still commits; its thread keeps its head
    store.commit([step("t1", 2, token=7, expected=1)])
    assert [c.seq for c in store.list_checkpoints("t1")] == [2, 1, 0]
    # the same ids in another namespace are other records
    store.commit([Commit("t1", "tenant-x", checkpoint=checkpoint("t1", 0), expected_head=None,
                         runs=[run("r1", "t1", graph="other")])])
    other = store.get_run("r1", namespace="tenant-x")
    assert other is not None and other.graph == "other"
    assert store.get_run("r1").graph == "g"  # type: ignore[union-attr]
    store.delete_thread("t1")
    fresh = store.acquire_lease("t1", "new", 60.0)
    assert fresh.token > 7  # fencing tokens survive the migration
    assert store.get_checkpoint("t1", namespace="tenant-x") is not None


def _blobs(sql: str, literal: str) -> str:
    """``sql`` with each ``<hex>`` written as the backend's bytes literal."""
    return re.sub(r"<([0-9a-f]+)>", lambda m: literal.format(m.group(1)), sql)


def test_sqlite_moves_an_old_store_into_default(tmp_path: Path) -> None:
    assert _sqlite_sql.MIGRATIONS[SQLITE_BEFORE] is _sqlite_sql.NAMESPACE_MIGRATION
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for n in range(1, SQLITE_BEFORE + 1):
        for statement in _sqlite_sql.MIGRATIONS[n - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (n,))
    conn.execute(_THREADS.format(s="", true=1, false=0))
    for sql in _ROWS:
        conn.execute(_blobs(sql.format(s=""), "X'{}'"))
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    try:
        store.setup()
        _check_upgraded(store)
        indexes = {
            name: sql
            for name, sql in store._thread_conn().execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
        assert set(indexes) == {
            "threads_namespace_updated", "runs_thread", "runs_status", "runs_namespace_created",
            "runs_graph", "executions_run", "executions_namespace_status",
            "executions_namespace_created",  # keyset pages (migration 10)
            "run_logs_thread",  # the logs kept with each run (migration 11)
            # the runtime's tables (migration 7) are keyed by namespace from the start
            "run_queue_open", "run_queue_thread", "run_queue_finished", "api_keys_namespace",
        }  # fmt: skip
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_moves_an_old_store_into_default(postgres_url: str, postgres_schema: str) -> None:
    from threadloom.checkpoint.postgres import PostgresStore

    assert _postgres_schema.MIGRATIONS[POSTGRES_BEFORE] is _postgres_schema._NAMESPACE_MIGRATION
    sql = _postgres_sql.Statements(postgres_schema)
    admin(postgres_url, sql.create_schema)
    admin(postgres_url, sql.create_migrations)
    for n in range(1, POSTGRES_BEFORE + 1):
        for statement in sql.migrations[n - 1]:
            admin(postgres_url, statement)
        admin(postgres_url, f"INSERT INTO {sql.schema}.schema_migrations VALUES ({n}, 0)")
    prefix = f"{sql.schema}."
    admin(postgres_url, _THREADS.format(s=prefix, true="true", false="false"))
    for statement in _ROWS:
        admin(postgres_url, _blobs(statement.format(s=prefix), "'\\x{}'::bytea"))
    admin(postgres_url, f"INSERT INTO {sql.schema}.heads VALUES ('t1', '', 1)")
    # the old store drew token 7 (and 3) from its sequence
    admin(postgres_url, f"SELECT setval('{sql.schema}.lease_tokens', 8, false)")
    store = PostgresStore(postgres_url, schema=postgres_schema)
    try:
        store.setup()
        _check_upgraded(store)
    finally:
        store.close()
