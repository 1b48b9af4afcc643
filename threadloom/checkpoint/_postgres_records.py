"""The runs, executions and threads of the Postgres store: their reads, the seed 001 pages,
and the deletions (a mixin of :class:`~threadloom.checkpoint.postgres.PostgresStore`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import psycopg

from threadloom.checkpoint._postgres_sql import (
    FINISHED,
    Statements,
    run_record,
    thread_record,
)
from threadloom.checkpoint._queue_common import audit_row, stamp_audit
from threadloom.checkpoint._queue_postgres_sql import QueueStatements
from threadloom.checkpoint._rows import (
    FEW_PREFIXED,
    checkpoint_record,
    dumps,
    escape_nul,
    execution_record,
    prefix_bound,
)
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    ExecutionRecord,
    RunRecord,
    ThreadRecord,
)
from threadloom.checkpoint.delta import blob_floors
from threadloom.checkpoint.queue import AuditEvent
from threadloom.checkpoint.retention import check_keep
from threadloom.errors import StoreError

_T = TypeVar("_T")
Connection: TypeAlias = "psycopg.Connection[Any]"


class PostgresRecords:
    """The part of :class:`~threadloom.checkpoint.postgres.PostgresStore` that reads, pages
    and deletes runs, executions and threads."""

    if TYPE_CHECKING:  # the store's own, used here
        _sql: Statements
        _q: QueueStatements

        def _run(self, fn: Callable[[Connection], _T], what: str, *,
                 ready: bool = True) -> _T: ...

        def _select(self, what: str, sql: str | bytes, params: Sequence[Any],
                    convert: Callable[[Sequence[Any]], _T], *, raw: bool = False
                    ) -> list[_T]: ...

    def get_run(self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> RunRecord | None:
        """The run recorded under ``run_id`` in the namespace, if any."""
        found = self._select("get_run", self._sql.run, (namespace, run_id), run_record)
        return found[0] if found else None

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
        sql, params = self._sql.select_runs(
            thread_id, status, graph, namespace, created_after, created_before, limit, offset
        )
        return self._select("list_runs", sql, params, run_record)

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
        sql, params = self._sql.select_executions(
            run_id, thread_id, namespace, status, limit, offset
        )
        return self._select("list_executions", sql, params, execution_record)

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
        sql, params = self._sql.page_runs(
            namespace, limit, self._few(namespace, "runs", run_id_prefix),
            status=status, timed_out=timed_out, graph=graph,
            run_id_prefix=run_id_prefix, created_after=created_after,
            created_before=created_before, after=after,
        )  # fmt: skip
        return self._select("page_runs", sql, params, run_record)

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
        few = run_id is None and self._few(namespace, "executions", run_id_prefix)
        sql, params = self._sql.page_executions(
            namespace, limit, few, run_id=run_id, run_id_prefix=run_id_prefix, status=status,
            timed_out=timed_out, created_after=created_after, created_before=created_before,
            after=after, descending=descending,
        )  # fmt: skip
        return self._select("page_executions", sql, params, execution_record)

    def _few(self, namespace: str, table: str, prefix: str | None) -> bool:
        """Whether ``prefix`` is given and fewer than ``FEW_PREFIXED`` rows of ``table`` in
        ``namespace`` have a run id starting with it."""
        bound = prefix_bound(prefix) if prefix else None
        if bound is None:
            return False
        (count,) = self._select("count_prefixed", self._sql.count_prefixed(table),
                                (namespace, prefix, bound, FEW_PREFIXED), lambda row: row[0])
        return bool(count < FEW_PREFIXED)

    def get_thread(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ThreadRecord | None:
        """The thread row (created by the first lease or commit on the thread); its ``lease``
        is the current one, also when expired but not taken over, ``None`` once released."""
        found = self._select(
            "get_thread", self._sql.thread, (namespace, thread_id), thread_record
        )
        return found[0] if found else None

    def list_threads(
        self,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ThreadRecord]:
        """Threads, most recently updated first (then by ``thread_id``, descending).
        ``namespace=None``: every namespace."""
        sql, params = self._sql.select_threads(namespace, limit, offset)
        return self._select("list_threads", sql, params, thread_record)

    def create_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Create the thread with ``metadata`` unless it exists, with ``audit``, in one
        transaction (see the runtime protocol; NUL in its strings is stored escaped)."""
        try:
            text = dumps(escape_nul(metadata))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc
        now = time.time()
        params = (thread_id, namespace, now, now, text)
        event = stamp_audit(audit, now) if audit is not None else None

        def create(conn: Connection) -> ThreadRecord | None:
            with conn.transaction():
                row = conn.cursor().execute(self._sql.create_thread, params,
                                            binary=True).fetchone()
                if row is None:
                    return None
                if event is not None:
                    conn.execute(self._q.put_audit, audit_row(event))
                return thread_record(row)

        return self._run(create, "create_thread")

    def update_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Replace the thread's metadata (see the protocol; NUL in its strings is stored
        escaped, as in run metadata; ``audit`` is appended in the same transaction if there
        is such a thread)."""
        try:
            text = dumps(escape_nul(metadata))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"thread metadata is not JSON-serializable: {exc}") from exc
        params = (text, time.time(), thread_id, namespace)
        if audit is None:
            found = self._select("update_thread", self._sql.update_thread, params,
                                 thread_record)
            return found[0] if found else None
        event = stamp_audit(audit, time.time())

        def update(conn: Connection) -> ThreadRecord | None:
            with conn.transaction():
                row = conn.cursor().execute(self._sql.update_thread, params,
                                            binary=True).fetchone()
                if row is None:
                    return None
                conn.execute(self._q.put_audit, audit_row(event))
                return thread_record(row)

        return self._run(update, "update_thread")

    # -- deletion and retention -----------------------------------------------------------

    def delete_thread(self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE,
                      audit: AuditEvent | None = None) -> None:
        """Delete the thread and everything recorded for it (checkpoints, blobs, writes,
        runs, executions, lease) in the namespace, in one statement (and ``audit`` in its
        transaction)."""
        params = {"namespace": namespace, "thread_id": thread_id}
        if audit is None:
            self._run(
                lambda conn: conn.execute(self._sql.delete_thread, params), "delete_thread"
            )
            return
        event = stamp_audit(audit, time.time())

        def delete(conn: Connection) -> None:
            with conn.transaction():
                conn.execute(self._sql.delete_thread, params)
                conn.execute(self._q.put_audit, audit_row(event))

        self._run(delete, "delete_thread")

    def prune_checkpoints(
        self, thread_id: str, keep: int, *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> int:
        """Keep the thread's latest ``keep`` (>= 1) checkpoints of the root namespace; delete
        the older ones, their pending writes, and the blobs no kept checkpoint needs. One
        transaction, with the thread row locked against concurrent commits (and ``audit``).

        Returns:
            How many checkpoints were deleted.
        """
        check_keep(keep)
        sql = self._sql
        event = stamp_audit(audit, time.time()) if audit is not None else None

        def prune(conn: Connection) -> int:
            with conn.transaction():
                conn.execute(sql.lock_thread, (namespace, thread_id))
                if event is not None:
                    conn.execute(self._q.put_audit, audit_row(event))
                cursor = conn.cursor(binary=True)
                rows = cursor.execute(
                    sql.kept_checkpoints, (namespace, thread_id, keep + 1)
                ).fetchall()
                if len(rows) <= keep:
                    return 0
                kept = [checkpoint_record(thread_id, "", row) for row in rows[:keep]]
                floors = blob_floors(kept)
                params = {"namespace": namespace, "thread_id": thread_id, "cutoff": kept[-1].seq}
                row = conn.execute(sql.prune_checkpoints, params).fetchone()
                conn.execute(
                    sql.prune_blobs,
                    (namespace, thread_id, list(floors), list(floors.values())),
                )
                return int(row[0]) if row is not None else 0

        return self._run(prune, "prune_checkpoints")

    def delete_runs(
        self, *, created_before: float, namespace: str | None = DEFAULT_NAMESPACE
    ) -> int:
        """Delete finished runs (succeeded, failed, cancelled) created before the cutoff,
        with their execution records, in one statement (``namespace=None``: in every
        namespace).

        Returns:
            How many runs were deleted.
        """
        params = (created_before, list(FINISHED), namespace, namespace)

        def delete(conn: Connection) -> int:
            row = conn.execute(self._sql.delete_runs, params).fetchone()
            return int(row[0]) if row is not None else 0

        return self._run(delete, "delete_runs")
