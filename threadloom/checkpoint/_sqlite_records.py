"""The runs, executions and threads of the SQLite store: their reads, the seed 001 pages,
and the deletions (a mixin of :class:`~threadloom.checkpoint.sqlite.SqliteStore`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from threadloom.checkpoint import _sqlite_sql as _sql
from threadloom.checkpoint._rows import (
    FEW_PREFIXED,
    STEP_STATUSES,
    execution_record,
    keyset_where,
    prefix_bound,
    run_record,
    thread_record,
    where_clause,
)
from threadloom.checkpoint._sqlite_sql import (
    EXEC_COLS,
    RUN_COLS,
    THREAD_COLS,
    write_audit,
)
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    ExecutionRecord,
    RunRecord,
    ThreadRecord,
)
from threadloom.checkpoint.queue import AuditEvent
from threadloom.checkpoint.retention import check_keep
from threadloom.errors import StoreError

_T = TypeVar("_T")


class SqliteRecords:
    """The part of :class:`~threadloom.checkpoint.sqlite.SqliteStore` that reads, pages and
    deletes runs, executions and threads."""

    if TYPE_CHECKING:  # the store's own, used here

        def _run(
            self, fn: Callable[[sqlite3.Connection], _T], write: bool, relaxed: bool = False
        ) -> _T: ...

    # -- runs and executions --------------------------------------------------------------

    def get_run(self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> RunRecord | None:
        """The run recorded under ``run_id`` in the namespace, if any."""

        def get(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(
                f"SELECT {RUN_COLS} FROM runs WHERE namespace = ? AND run_id = ?",
                (namespace, run_id),
            ).fetchone()
            return run_record(row) if row is not None else None

        return self._run(get, False)

    def list_runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        graph: str | None = None,
        namespace: str | None = DEFAULT_NAMESPACE,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs matching every given filter, newest first (by ``created_at``, then ``run_id``),
        paginated. The time range is half-open: ``created_after <= created_at <
        created_before``. ``namespace=None``: every namespace."""
        clause, params = where_clause(
            ("namespace = ?", namespace),
            ("thread_id = ?", thread_id),
            ("status = ?", status),
            ("graph = ?", graph),
            ("created_at >= ?", created_after),
            ("created_at < ?", created_before),
        )
        sql = (
            f"SELECT {RUN_COLS} FROM runs{clause}"
            " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?"
        )
        params += (limit, offset)

        def query(conn: sqlite3.Connection) -> list[RunRecord]:
            return [run_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def list_executions(
        self,
        *,
        run_id: str | None = None,
        thread_id: str | None = None,
        namespace: str | None = DEFAULT_NAMESPACE,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ExecutionRecord]:
        """Executions matching every given filter, in execution order (by ``created_at``,
        ``step``, ``node``, then ``id``), paginated. ``namespace=None``: every namespace."""
        clause, params = where_clause(
            ("namespace = ?", namespace),
            ("run_id = ?", run_id),
            ("thread_id = ?", thread_id),
            ("status = ?", status),
            status=status,
        )
        table = "executions"
        if namespace is not None and status is not None and status not in STEP_STATUSES:
            if run_id is None and thread_id is None:
                # without statistics, SQLite prefers scanning the key's namespace prefix
                # (the table itself) to the partial index the operator's query is made for
                table += " INDEXED BY executions_namespace_status"
        sql = (
            f"SELECT {EXEC_COLS} FROM {table}{clause}"
            " ORDER BY created_at, step, node, id LIMIT ? OFFSET ?"
        )
        params += (-1 if limit is None else limit, offset)

        def query(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            return [execution_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def page_runs(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        status: str | None = None,
        timed_out: bool | None = None,
        graph: str | None = None,
        run_id_prefix: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """A keyset page of the namespace's runs, newest first (see the protocol)."""
        where, order, params = keyset_where(
            "?", "run_id", namespace=namespace, status=status, timed_out=timed_out,
            graph=graph, run_id_prefix=run_id_prefix, created_after=created_after,
            created_before=created_before, after=after, descending=True,
            execution_status=False,
        )  # fmt: skip
        params.append(limit)

        def query(conn: sqlite3.Connection) -> list[RunRecord]:
            if status is not None:
                index = "runs_status"
            elif graph is not None:
                index = "runs_graph"
            elif run_id_prefix and _few(conn, "runs NOT INDEXED", namespace, run_id_prefix):
                index = None  # the key's (namespace, run_id) range
            else:
                index = "runs_namespace_created"
            table = "runs NOT INDEXED" if index is None else f"runs INDEXED BY {index}"
            sql = f"SELECT {RUN_COLS} FROM {table}{where}{order} LIMIT ?"
            return [run_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def page_executions(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        run_id: str | None = None,
        run_id_prefix: str | None = None,
        status: str | None = None,
        timed_out: bool | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        after: tuple[float, str] | None = None,
        descending: bool = False,
        limit: int = 100,
    ) -> list[ExecutionRecord]:
        """A keyset page of the namespace's executions by ``(created_at, id)`` (see the
        protocol)."""
        where, order, params = keyset_where(
            "?", "id", namespace=namespace, run_id=run_id, run_id_prefix=run_id_prefix,
            status=status, timed_out=timed_out, created_after=created_after,
            created_before=created_before, after=after, descending=descending,
        )  # fmt: skip
        params.append(limit)

        def query(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            # SQLite has no statistics: each filter names the index that serves it
            if run_id is not None:
                index = "executions_run"
            elif status is not None and status not in STEP_STATUSES:
                index = "executions_namespace_status"
            elif run_id_prefix and _few(conn, "executions INDEXED BY executions_run",
                                         namespace, run_id_prefix):
                index = "executions_run"
            else:
                index = "executions_namespace_created"
            sql = f"SELECT {EXEC_COLS} FROM executions INDEXED BY {index}{where}{order} LIMIT ?"
            return [execution_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    # -- threads --------------------------------------------------------------------------

    def get_thread(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ThreadRecord | None:
        """The thread row (created by the first lease or commit on the thread); its ``lease``
        is the current one, also when expired but not taken over, ``None`` once released."""

        def get(conn: sqlite3.Connection) -> ThreadRecord | None:
            row = conn.execute(
                f"SELECT {THREAD_COLS} FROM threads WHERE namespace = ? AND thread_id = ?",
                (namespace, thread_id),
            ).fetchone()
            return thread_record(row) if row is not None else None

        return self._run(get, False)

    def list_threads(
        self,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ThreadRecord]:
        """Threads, most recently updated first (then by ``thread_id``, descending).
        ``namespace=None``: every namespace."""
        sql = f"SELECT {THREAD_COLS} FROM threads"
        params: tuple[Any, ...] = ()
        if namespace is not None:
            sql += " WHERE namespace = ?"
            params = (namespace,)
        sql += " ORDER BY updated_at DESC, thread_id DESC LIMIT ? OFFSET ?"
        params += (limit, offset)

        def query(conn: sqlite3.Connection) -> list[ThreadRecord]:
            return [thread_record(row) for row in conn.execute(sql, params).fetchall()]

        return self._run(query, False)

    def delete_thread(self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE,
                      audit: AuditEvent | None = None) -> None:
        """Delete the thread and everything recorded for it (checkpoints, blobs, writes,
        runs, executions, lease) in the namespace, in one transaction (with ``audit``)."""

        def delete(conn: sqlite3.Connection) -> None:
            _sql.delete_thread(conn, namespace, thread_id)
            write_audit(conn, audit, time.time())

        self._run(delete, True)

    def create_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Create the thread with ``metadata`` unless it exists, with ``audit``, in one
        transaction (see the runtime protocol)."""
        try:
            text = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc

        def create(conn: sqlite3.Connection) -> ThreadRecord | None:
            now = time.time()
            inserted = conn.execute(
                "INSERT INTO threads (namespace, thread_id, created_at, updated_at, metadata)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, thread_id) DO NOTHING",
                (namespace, thread_id, now, now, text),
            ).rowcount
            if inserted != 1:
                return None
            row = conn.execute(
                f"SELECT {THREAD_COLS} FROM threads WHERE thread_id = ? AND namespace = ?",
                (thread_id, namespace),
            ).fetchone()
            write_audit(conn, audit, now)
            return thread_record(row)

        return self._run(create, True)

    def update_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Replace the thread's metadata (see the protocol; ``audit`` is appended in the same
        transaction if there is such a thread)."""
        try:
            text = json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc

        def update(conn: sqlite3.Connection) -> ThreadRecord | None:
            key = (thread_id, namespace)
            conn.execute(
                "UPDATE threads SET metadata = ?, updated_at = max(updated_at, ?)"
                " WHERE thread_id = ? AND namespace = ?",
                (text, time.time(), *key),
            )
            row = conn.execute(
                f"SELECT {THREAD_COLS} FROM threads WHERE thread_id = ? AND namespace = ?", key
            ).fetchone()
            if row is None:
                return None
            write_audit(conn, audit, time.time())
            return thread_record(row)

        return self._run(update, True)

    def prune_checkpoints(
        self, thread_id: str, keep: int, *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> int:
        """Keep the latest ``keep`` checkpoints of the thread (see the protocol)."""
        check_keep(keep)

        def prune(conn: sqlite3.Connection) -> int:
            write_audit(conn, audit, time.time())
            return _sql.prune_checkpoints(conn, namespace, thread_id, keep)

        return self._run(prune, True)

    def delete_runs(
        self, *, created_before: float, namespace: str | None = DEFAULT_NAMESPACE
    ) -> int:
        """Delete finished runs created before the cutoff (see the protocol)."""
        return self._run(lambda conn: _sql.delete_runs(conn, created_before, namespace), True)


def _few(conn: sqlite3.Connection, source: str, namespace: str, prefix: str) -> bool:
    """Whether fewer than :data:`FEW_PREFIXED` rows of ``source`` (a table and the index
    to count on, which leads with the run id) in ``namespace`` have a run id starting with
    ``prefix``."""
    bound = prefix_bound(prefix)
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM {source}"
        " WHERE run_id >= ? AND namespace = ?"
        + (" AND run_id < ?" if bound is not None else "")
        + " LIMIT ?)"
    )
    params: tuple[Any, ...] = (prefix, namespace, *(() if bound is None else (bound,)))
    count: int = conn.execute(sql, (*params, FEW_PREFIXED)).fetchone()[0]
    return count < FEW_PREFIXED
