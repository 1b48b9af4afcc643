"""Run logs: the log records kept with each run (issue 14), on every backend.

One table, ``run_logs``, keyed by ``(namespace, run_id, seq)``: a run's records are read in
``seq`` order by keyset pages, and deleted with the run (its thread, retention, a rollback or
deletion of the run: the thread id is a column so that deleting a thread does not have to
look its runs up). ``seq`` is assigned by the store at append time, after the run's last
stored record, so records appended by successive processes that ran the run (a resume, a
worker that took the run over) follow each other; the per-run bound is enforced there too.

The mixins are mixed into the stores (:class:`MemoryRunLogs` into ``MemoryStore`` and so on);
each uses its store's own way of running a transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from threadloom.checkpoint.base import DEFAULT_NAMESPACE, RunLog

if TYPE_CHECKING:
    import sqlite3
    import threading

    from psycopg import Connection

__all__ = [
    "LOG_COLS",
    "MemoryRunLogs",
    "POSTGRES_RUN_LOGS_MIGRATION",
    "PostgresRunLogs",
    "SQLITE_RUN_LOGS_MIGRATION",
    "SqliteRunLogs",
    "check_log_page",
    "sqlite_drop_run_logs",
]

SQLITE_RUN_LOGS_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE run_logs (
        namespace TEXT NOT NULL, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
        thread_id TEXT NOT NULL, at REAL NOT NULL, level TEXT NOT NULL,
        logger TEXT NOT NULL, message TEXT NOT NULL, node TEXT, attempt INTEGER,
        step INTEGER, exc TEXT,
        PRIMARY KEY (namespace, run_id, seq)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_logs_thread ON run_logs (namespace, thread_id)",
)
"""SQLite migration 11."""

POSTGRES_RUN_LOGS_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE {s}.run_logs (
        namespace TEXT COLLATE "C" NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL, thread_id TEXT COLLATE "C" NOT NULL,
        at DOUBLE PRECISION NOT NULL, level TEXT NOT NULL, logger TEXT NOT NULL,
        message TEXT NOT NULL, node TEXT, attempt BIGINT, step BIGINT, exc TEXT,
        PRIMARY KEY (namespace, run_id, seq)
    )""",
    "CREATE INDEX run_logs_thread ON {s}.run_logs (namespace, thread_id)",
)
"""Postgres migration 10."""

LOG_COLS = "namespace, run_id, seq, thread_id, at, level, logger, message, node, attempt, step, exc"
_PAGE_COLS = "seq, thread_id, at, level, logger, message, node, attempt, step, exc"


def check_log_page(after: int, limit: int) -> None:
    """Validate the arguments of ``page_run_logs``.

    Raises:
        ValueError: ``after`` is negative or ``limit`` is not positive.
    """
    if after < 0:
        raise ValueError(f"after must be >= 0, got {after}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


def _check_bound(max_per_run: int) -> None:
    if max_per_run < 1:
        raise ValueError(f"max_per_run must be >= 1, got {max_per_run}")


def _by_run(logs: Sequence[RunLog]) -> dict[tuple[str, str], list[RunLog]]:
    groups: dict[tuple[str, str], list[RunLog]] = {}
    for item in logs:
        groups.setdefault((item.namespace, item.run_id), []).append(item)
    return groups


def _row(item: RunLog, seq: int) -> tuple[Any, ...]:
    return (item.namespace, item.run_id, seq, item.thread_id, item.at, item.level,
            item.logger, item.message, item.node, item.attempt, item.step, item.exc)


def _record(namespace: str, run_id: str, row: Sequence[Any]) -> RunLog:
    seq, thread_id, at, level, logger, message, node, attempt, step, exc = row
    return RunLog(run_id=run_id, thread_id=thread_id, at=float(at), level=level,
                  logger=logger, message=message, namespace=namespace, seq=int(seq),
                  node=node, attempt=None if attempt is None else int(attempt),
                  step=None if step is None else int(step), exc=exc)


# -- memory ---------------------------------------------------------------------------------


class MemoryRunLogs:
    """The run logs of ``MemoryStore`` (under its lock)."""

    if TYPE_CHECKING:  # the store's own state, used here
        _lock: threading.RLock
        _run_logs: dict[tuple[str, str], list[RunLog]]

        def _check_open(self) -> None: ...

    def append_run_logs(self, logs: Sequence[RunLog], *, max_per_run: int = 1000) -> int:
        """Append log records to their runs (see the protocol)."""
        _check_bound(max_per_run)
        stored = 0
        with self._lock:
            self._check_open()
            for key, items in _by_run(logs).items():
                kept = self._run_logs.setdefault(key, [])
                room = max(0, max_per_run - len(kept))
                for item in items[:room]:
                    kept.append(dataclasses.replace(item, seq=len(kept) + 1))
                    stored += 1
                if not kept:
                    del self._run_logs[key]
        return stored

    def page_run_logs(
        self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE, after: int = 0,
        limit: int = 100,
    ) -> list[RunLog]:
        """A keyset page of the run's log records (see the protocol)."""
        check_log_page(after, limit)
        with self._lock:
            self._check_open()
            kept = self._run_logs.get((namespace, run_id), [])
            return [dataclasses.replace(item) for item in kept[after : after + limit]]

    def _drop_run_logs(self, namespace: str, run_ids: Sequence[str] = (),
                       thread_id: str | None = None) -> None:
        """Delete the logs of the runs ``run_ids``, or of every run of ``thread_id``."""
        for run_id in run_ids:
            self._run_logs.pop((namespace, run_id), None)
        if thread_id is not None:
            for key in [k for k, items in self._run_logs.items()
                        if k[0] == namespace and items and items[0].thread_id == thread_id]:
                del self._run_logs[key]


# -- SQLite ---------------------------------------------------------------------------------

_SQLITE_LAST = "SELECT coalesce(max(seq), 0) FROM run_logs WHERE namespace = ? AND run_id = ?"
_SQLITE_PUT = f"INSERT INTO run_logs ({LOG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SQLITE_PAGE = (
    f"SELECT {_PAGE_COLS} FROM run_logs WHERE namespace = ? AND run_id = ? AND seq > ?"
    " ORDER BY seq LIMIT ?"
)


def sqlite_drop_run_logs(conn: sqlite3.Connection, namespace: str, run_id: str) -> None:
    """Delete a run's logs (inside the caller's transaction)."""
    conn.execute("DELETE FROM run_logs WHERE namespace = ? AND run_id = ?", (namespace, run_id))


class SqliteRunLogs:
    """The run logs of ``SqliteStore`` (one ``BEGIN IMMEDIATE`` transaction per append)."""

    if TYPE_CHECKING:  # the store's
        _run: Callable[..., Any]

    def append_run_logs(self, logs: Sequence[RunLog], *, max_per_run: int = 1000) -> int:
        """Append log records to their runs, in one transaction (see the protocol)."""
        _check_bound(max_per_run)
        groups = _by_run(logs)
        if not groups:
            return 0

        def append(conn: sqlite3.Connection) -> int:
            stored = 0
            for key, items in groups.items():
                (last,) = conn.execute(_SQLITE_LAST, key).fetchone()
                rows = [_row(item, last + i)
                        for i, item in enumerate(items[: max(0, max_per_run - last)], 1)]
                conn.executemany(_SQLITE_PUT, rows)
                stored += len(rows)
            return stored

        # logs are not worth a wait for the disk: a power loss may take the last ones back
        return int(self._run(append, True, True))

    def page_run_logs(
        self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE, after: int = 0,
        limit: int = 100,
    ) -> list[RunLog]:
        """A keyset page of the run's log records (see the protocol)."""
        check_log_page(after, limit)

        def page(conn: sqlite3.Connection) -> list[RunLog]:
            rows = conn.execute(_SQLITE_PAGE, (namespace, run_id, after, limit)).fetchall()
            return [_record(namespace, run_id, row) for row in rows]

        result: list[RunLog] = self._run(page, False)
        return result


# -- Postgres -------------------------------------------------------------------------------


class PostgresRunLogs:
    """The run logs of ``PostgresStore``."""

    if TYPE_CHECKING:  # the store's
        _run: Callable[..., Any]
        _sql: Any  # its prebuilt SQL (``schema``: the quoted schema)

    def append_run_logs(self, logs: Sequence[RunLog], *, max_per_run: int = 1000) -> int:
        """Append log records to their runs, in one transaction (see the protocol). Two
        processes appending to one run at once (a worker that took a run over while the
        previous one still flushed) collide on a ``seq``; the loser tries again."""
        import psycopg

        _check_bound(max_per_run)
        groups = _by_run(logs)
        if not groups:
            return 0
        s = self._sql.schema
        # One statement for the whole batch: each record's seq is its run's last one plus
        # its place among the batch's records of that run (a statement per record and a
        # read per run made the capture's writer cost the worker a fifth of its runs/s).
        sql = (
            "WITH new AS (SELECT * FROM unnest(%(ns)s::text[], %(run)s::text[],"
            " %(thread)s::text[], %(at)s::float8[], %(level)s::text[], %(logger)s::text[],"
            " %(message)s::text[], %(node)s::text[], %(attempt)s::int8[], %(step)s::int8[],"
            " %(exc)s::text[]) WITH ORDINALITY AS n(namespace, run_id, thread_id, at, level,"
            " logger, message, node, attempt, step, exc, ord)),"
            " numbered AS (SELECT n.*, coalesce((SELECT max(r.seq) FROM"
            f" {s}.run_logs r WHERE r.namespace = n.namespace AND r.run_id = n.run_id), 0)"
            " + row_number() OVER (PARTITION BY n.namespace, n.run_id ORDER BY n.ord) AS seq"
            " FROM new n),"
            f" ins AS (INSERT INTO {s}.run_logs ({LOG_COLS}) SELECT namespace, run_id, seq,"
            " thread_id, at, level, logger, message, node, attempt, step, exc FROM numbered"
            " WHERE seq <= %(max)s RETURNING 1)"
            " SELECT count(*) FROM ins"
        )
        items = [item for batch in groups.values() for item in batch]
        params = {
            "ns": [i.namespace for i in items], "run": [i.run_id for i in items],
            "thread": [i.thread_id for i in items], "at": [i.at for i in items],
            "level": [i.level for i in items], "logger": [i.logger for i in items],
            "message": [i.message for i in items], "node": [i.node for i in items],
            "attempt": [i.attempt for i in items], "step": [i.step for i in items],
            "exc": [i.exc for i in items], "max": max_per_run,
        }

        def append(conn: Connection) -> int:
            for tries in range(5):
                try:
                    row = conn.execute(sql, params).fetchone()
                    return int(row[0]) if row is not None else 0
                except psycopg.errors.UniqueViolation:
                    if tries == 4:
                        raise
            return 0  # not reached

        return int(self._run(append, "append_run_logs"))

    def page_run_logs(
        self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE, after: int = 0,
        limit: int = 100,
    ) -> list[RunLog]:
        """A keyset page of the run's log records (see the protocol)."""
        check_log_page(after, limit)
        sql = (f"SELECT {_PAGE_COLS} FROM {self._sql.schema}.run_logs WHERE namespace = %s"
               " AND run_id = %s AND seq > %s ORDER BY seq LIMIT %s")

        def page(conn: Connection) -> list[RunLog]:
            rows = conn.execute(sql, (namespace, run_id, after, limit)).fetchall()
            return [_record(namespace, run_id, row) for row in rows]

        result: list[RunLog] = self._run(page, "page_run_logs")
        return result
