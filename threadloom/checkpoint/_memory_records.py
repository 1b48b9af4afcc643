"""The runs, executions and threads of the in-memory store: their reads, the seed 001 pages,
and the deletions (a mixin of :class:`~threadloom.checkpoint.memory.MemoryStore`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    FINISHED_RUN_STATUSES,
    Attempt,
    BlobRecord,
    CheckpointRecord,
    ExecutionRecord,
    Lease,
    RunRecord,
    ThreadRecord,
    WriteRecord,
)
from threadloom.checkpoint.delta import blob_floors
from threadloom.checkpoint.queue import AuditEvent
from threadloom.checkpoint.retention import check_keep
from threadloom.errors import StoreError

_K = TypeVar("_K", bound=tuple[Any, ...])
_TIMEOUT_ERRORS = ("NodeTimeoutError:", "RunTimeoutError:")


class ThreadRow:
    """A thread of the in-memory store. ``token`` survives a release; the next holder gets a
    higher one from the store's token counter."""

    __slots__ = (
        "created_at",
        "metadata",
        "owner",
        "expires_at",
        "token",
        "updated_at",
    )

    def __init__(self, now: float) -> None:
        self.created_at = now
        self.updated_at = now
        self.metadata: dict[str, Any] = {}
        self.owner: str | None = None
        self.token = 0
        self.expires_at = 0.0

    def current_token(self) -> int | None:
        return self.token if self.owner is not None else None


@overload
def frozen(data: bytes) -> bytes: ...


@overload
def frozen(data: bytes | None) -> bytes | None: ...


def frozen(data: bytes | None) -> bytes | None:
    """``data`` itself if it is immutable, else an immutable copy (of a bytearray...)."""
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise StoreError(f"a store keeps bytes, not {type(data).__name__}")


def json_copy(value: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        copied: dict[str, Any] = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serializable: {exc}") from exc
    return copied


def copy_execution(ex: ExecutionRecord, namespace: str | None = None) -> ExecutionRecord:
    # explicit construction: dataclasses.replace() costs several times more, per step
    return ExecutionRecord(
        ex.id,
        ex.run_id,
        ex.thread_id,
        ex.graph,
        ex.node,
        ex.step,
        ex.status,
        ex.namespace if namespace is None else namespace,
        ex.attempt,
        frozen(ex.inputs),
        frozen(ex.outputs),
        ex.error,
        tuple(ex.parents),
        tuple(Attempt(a.number, a.started_at, a.ended_at, a.error) for a in ex.attempts),
        ex.checkpoint_seq,
        ex.created_at,
        ex.started_at,
        ex.ended_at,
    )


def copy_run(
    run: RunRecord, metadata: dict[str, Any] | None = None, namespace: str | None = None
) -> RunRecord:
    if metadata is None:
        metadata = (
            json_copy(run.metadata, f"metadata of run {run.run_id!r}") if run.metadata else {}
        )
    return RunRecord(
        run.run_id,
        run.thread_id,
        run.graph,
        run.status,
        run.namespace if namespace is None else namespace,
        frozen(run.input),
        frozen(run.output),
        run.error,
        run.durability,
        run.created_at,
        run.updated_at,
        run.started_at,
        run.ended_at,
        run.steps,
        run.executions,
        run.resumed_from,
        metadata,
        run.traceparent,
        json_copy(run.stats, f"stats of run {run.run_id!r}") if run.stats else {},
    )


def kept(
    run_id: str,
    created_at: float,
    error: str | None,
    run_id_prefix: str | None,
    timed_out: bool | None,
    created_after: float | None,
    created_before: float | None,
) -> bool:
    """Whether a run or execution passes the filters of a keyset page (see
    :meth:`Store.page_runs <threadloom.checkpoint.base.Store.page_runs>`)."""
    if run_id_prefix and not run_id.startswith(run_id_prefix):
        return False
    if timed_out is not None:
        if (error is not None and error.startswith(_TIMEOUT_ERRORS)) != timed_out:
            return False
    if created_after is not None and created_at < created_after:
        return False
    return created_before is None or created_at < created_before


class MemoryRecords:
    """The part of :class:`~threadloom.checkpoint.memory.MemoryStore` that reads, pages and
    deletes runs, executions and threads."""

    if TYPE_CHECKING:  # the store's own, used here
        _lock: threading.RLock
        _threads: dict[tuple[str, str], ThreadRow]
        _checkpoints: dict[tuple[str, str, str], dict[int, CheckpointRecord]]
        _heads: dict[tuple[str, str, str], int]
        _blobs: dict[tuple[str, str, str, str], dict[int, BlobRecord]]
        _writes: dict[tuple[str, str, str, int], dict[tuple[str, str, int], WriteRecord]]
        _runs: dict[tuple[str, str], RunRecord]
        _executions: dict[tuple[str, str, str], ExecutionRecord]

        def _check_open(self) -> None: ...

        def _write_audit(self, event: AuditEvent | None, now: float) -> AuditEvent | None: ...

        def _drop_run_logs(self, namespace: str, run_ids: Sequence[str] = (),
                           thread_id: str | None = None) -> None: ...

    # -- runs and executions --------------------------------------------------------------

    def get_run(self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> RunRecord | None:
        """The run recorded under ``run_id`` in the namespace, if any."""
        with self._lock:
            self._check_open()
            run = self._runs.get((namespace, run_id))
            return copy_run(run) if run is not None else None

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
        with self._lock:
            self._check_open()
            runs = [
                r
                for (space, _), r in self._runs.items()
                if (namespace is None or space == namespace)
                and (thread_id is None or r.thread_id == thread_id)
                and (status is None or r.status == status)
                and (graph is None or r.graph == graph)
                and (created_after is None or r.created_at >= created_after)
                and (created_before is None or r.created_at < created_before)
            ]
            runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
            return [copy_run(r) for r in runs[offset : offset + limit]]

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
        with self._lock:
            self._check_open()
            found = [
                e
                for (space, _, _), e in self._executions.items()
                if (namespace is None or space == namespace)
                and (run_id is None or e.run_id == run_id)
                and (thread_id is None or e.thread_id == thread_id)
                and (status is None or e.status == status)
            ]
            found.sort(key=lambda e: (e.created_at, e.step, e.node, e.id))
            end = None if limit is None else offset + limit
            return [copy_execution(e) for e in found[offset:end]]

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
        with self._lock:
            self._check_open()
            runs = [
                r
                for (space, _), r in self._runs.items()
                if space == namespace
                and (status is None or r.status == status)
                and (graph is None or r.graph == graph)
                and kept(r.run_id, r.created_at, r.error, run_id_prefix, timed_out,
                          created_after, created_before)
                and (after is None or (r.created_at, r.run_id) < after)
            ]
            runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
            return [copy_run(r) for r in runs[:limit]]

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
        with self._lock:
            self._check_open()
            found = [
                e
                for (space, _, _), e in self._executions.items()
                if space == namespace
                and (run_id is None or e.run_id == run_id)
                and (status is None or e.status == status)
                and kept(e.run_id, e.created_at, e.error, run_id_prefix, timed_out,
                          created_after, created_before)
                and (after is None or ((e.created_at, e.id) < after if descending
                                       else (e.created_at, e.id) > after))
            ]
            found.sort(key=lambda e: (e.created_at, e.id), reverse=descending)
            return [copy_execution(e) for e in found[:limit]]

    # -- threads --------------------------------------------------------------------------

    def get_thread(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ThreadRecord | None:
        """The thread row (created by the first lease or commit on the thread).

        ``lease`` is the current lease, also when it has expired but nobody took it over
        (compare ``lease.expires_at`` with the time); ``None`` once released.
        """
        with self._lock:
            self._check_open()
            row = self._threads.get((namespace, thread_id))
            return self._thread_record(namespace, thread_id, row) if row is not None else None

    def list_threads(
        self,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ThreadRecord]:
        """Threads, most recently updated first (then by ``thread_id``, descending).
        ``namespace=None``: every namespace."""
        with self._lock:
            self._check_open()
            rows = [
                (key, row)
                for key, row in self._threads.items()
                if namespace is None or key[0] == namespace
            ]
            rows.sort(key=lambda item: (item[1].updated_at, item[0][1]), reverse=True)
            page = rows[offset : offset + limit]
            return [self._thread_record(key[0], key[1], row) for key, row in page]

    @staticmethod
    def _thread_record(namespace: str, thread_id: str, row: ThreadRow) -> ThreadRecord:
        lease = None
        if row.owner is not None:
            lease = Lease(thread_id, row.owner, row.token, row.expires_at, namespace)
        return ThreadRecord(
            thread_id=thread_id,
            namespace=namespace,
            created_at=row.created_at,
            updated_at=row.updated_at,
            metadata=json_copy(row.metadata, "thread metadata"),
            lease=lease,
        )

    def delete_thread(self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE,
                      audit: AuditEvent | None = None) -> None:
        """Delete the thread and everything recorded for it (checkpoints, blobs, writes,
        runs, executions, lease) in the namespace, and append ``audit``. Deleting an unknown
        thread does nothing (but append ``audit``)."""
        with self._lock:
            self._check_open()
            self._write_audit(audit, time.time())
            self._threads.pop((namespace, thread_id), None)
            _drop_thread(self._checkpoints, namespace, thread_id)
            _drop_thread(self._heads, namespace, thread_id)
            _drop_thread(self._blobs, namespace, thread_id)
            _drop_thread(self._writes, namespace, thread_id)
            for key in [
                k for k, r in self._runs.items() if k[0] == namespace and r.thread_id == thread_id
            ]:
                del self._runs[key]
            _drop_thread(self._executions, namespace, thread_id)
            self._drop_run_logs(namespace, thread_id=thread_id)

    def create_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Create the thread with ``metadata`` unless it exists (see the runtime protocol;
        ``audit`` is appended with it)."""
        copied = json_copy(metadata, "thread metadata")
        with self._lock:
            self._check_open()
            if (namespace, thread_id) in self._threads:
                return None
            now = time.time()
            row = self._threads[(namespace, thread_id)] = ThreadRow(now)
            row.metadata = copied
            self._write_audit(audit, now)
            return self._thread_record(namespace, thread_id, row)

    def update_thread(
        self, thread_id: str, metadata: dict[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> ThreadRecord | None:
        """Replace the thread's metadata (see the protocol; ``audit`` is appended with it)."""
        copied = json_copy(metadata, "thread metadata")
        with self._lock:
            self._check_open()
            row = self._threads.get((namespace, thread_id))
            if row is None:
                return None
            row.metadata = copied
            row.updated_at = max(time.time(), row.updated_at)
            self._write_audit(audit, time.time())
            return self._thread_record(namespace, thread_id, row)

    def prune_checkpoints(
        self, thread_id: str, keep: int, *, namespace: str = DEFAULT_NAMESPACE,
        audit: AuditEvent | None = None,
    ) -> int:
        """Keep the latest ``keep`` checkpoints of the thread (see the protocol)."""
        check_keep(keep)
        with self._lock:
            self._check_open()
            self._write_audit(audit, time.time())
            checkpoints = self._checkpoints.get((namespace, thread_id, ""), {})
            seqs = sorted(checkpoints, reverse=True)
            if len(seqs) <= keep:
                return 0
            floors = blob_floors(checkpoints[seq] for seq in seqs[:keep])
            cutoff = seqs[keep - 1]
            for seq in seqs[keep:]:
                del checkpoints[seq]
                self._writes.pop((namespace, thread_id, "", seq), None)
            for key, versions in list(self._blobs.items()):
                space, tid, ns, channel = key
                if space != namespace or tid != thread_id or ns != "":
                    continue
                floor = floors.get(channel)
                for version in [v for v in versions if floor is None or v < floor]:
                    del versions[version]
                if not versions:
                    del self._blobs[key]
            assert cutoff == min(checkpoints)
            return len(seqs) - keep

    def delete_runs(
        self, *, created_before: float, namespace: str | None = DEFAULT_NAMESPACE
    ) -> int:
        """Delete finished runs created before the cutoff (see the protocol)."""
        with self._lock:
            self._check_open()
            doomed = {
                key
                for key, run in self._runs.items()
                if run.created_at < created_before
                and run.status in FINISHED_RUN_STATUSES
                and (namespace is None or key[0] == namespace)
            }
            for key in doomed:
                del self._runs[key]
                self._drop_run_logs(key[0], (key[1],))
            for ex_key in [
                k for k, e in self._executions.items() if (k[0], e.run_id) in doomed
            ]:
                del self._executions[ex_key]
            return len(doomed)


def _drop_thread(table: dict[_K, Any], namespace: str, thread_id: str) -> None:
    """Remove every entry of ``table`` whose key tuple starts with the namespace and thread."""
    for key in [k for k in table if k[0] == namespace and k[1] == thread_id]:
        del table[key]
