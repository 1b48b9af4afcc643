"""The Postgres side of the durable workloads (:mod:`workloads`): a fresh database per trial,
its size, and each engine's Postgres saver, alone or shared by concurrent callers."""

from __future__ import annotations

import itertools
import os
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness import REFERENCE, Engine

__all__ = ["PG_DSN", "THROUGHPUT_CALLERS", "fresh_pg_database", "pg_size", "postgres_saver",
           "postgres_saver_for_threads"]

PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
THROUGHPUT_CALLERS = 8  # caller threads of the throughput workloads (a pool of as many)


_pg_databases = itertools.count()


def fresh_pg_database(engine: Engine, resources: ExitStack) -> str:
    """Create an empty Postgres database for one trial; return its URL. It is dropped (with
    ``FORCE``, so leftover connections do not block it) when ``resources`` closes.

    A database rather than a schema: it works the same whatever DSN options each engine's
    saver understands, and both engines create their tables in ``public`` as usual.
    """
    import psycopg
    from psycopg import sql

    name = f"bench_{engine.name}_{os.getpid()}_{next(_pg_databases)}"
    ident = sql.Identifier(name)

    def drop() -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))

    drop()
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    resources.callback(drop)
    return urlunsplit(urlsplit(PG_DSN)._replace(path="/" + name))


def pg_size(dsn: str) -> int:
    """Bytes of a Postgres database (``pg_database_size``)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def postgres_saver(engine: Engine, dsn: str, resources: ExitStack) -> Any:
    """The engine's Postgres saver on ``dsn``, set up; closed when ``resources`` closes.

    Both engines: ``PostgresSaver.from_conn_string(dsn)`` (a context manager) + ``setup()``.
    """
    saver_cls = engine.module("checkpoint.postgres").PostgresSaver
    saver = resources.enter_context(saver_cls.from_conn_string(dsn))
    saver.setup()
    return saver


def postgres_saver_for_threads(engine: Engine, dsn: str, resources: ExitStack) -> Any:
    """The engine's Postgres saver as it is meant to be shared by concurrent callers.

    LangGraph's ``from_conn_string`` gives one connection behind a lock; for concurrent
    callers its documented form is ``PostgresSaver(ConnectionPool(...))`` with
    ``autocommit``, ``prepare_threshold=0`` and ``dict_row``, one connection per caller.
    threadloom's ``from_conn_string`` is used as it is.
    """
    if engine.name != REFERENCE:
        return postgres_saver(engine, dsn, resources)
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    pool = resources.enter_context(
        ConnectionPool(
            dsn,
            min_size=THROUGHPUT_CALLERS,
            max_size=THROUGHPUT_CALLERS,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=True,
        )
    )
    saver = engine.module("checkpoint.postgres").PostgresSaver(pool)
    saver.setup()
    return saver
