"""What the Postgres store tests share: the type of the ``make_store`` fixture (a store on the
test's fresh schema; in ``conftest.py``) and direct SQL on the test server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from threadloom.checkpoint.postgres import PostgresStore

MakeStore = Callable[..., PostgresStore]


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def admin(url: str, sql: str) -> None:
    _query(url, sql)
