"""The SQL stores' executions-by-status index holds only executions that did not succeed (a
step commit records a succeeded one, and must not pay an index write for it), and a query
for another status still uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from threadloom.checkpoint.base import Commit
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.testing.conformance import execution

STATUSES = ["SUCCEEDED", "FAILED", "SUCCEEDED", "INTERRUPTED"]


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
    assert definition.endswith("WHERE status <> 'SUCCEEDED'"), definition
    store.close()


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
        assert "WHERE (status <> 'SUCCEEDED'" in definition, definition
    finally:
        store.close()
