"""The in-process reference store: plain dicts guarded by one lock.

:class:`MemoryStore` is the executable definition of the store protocol: every other backend
must behave like it (the conformance suite in :mod:`threadloom.testing` runs against all of
them). It keeps nothing on disk, so it suits tests and short-lived scripts.

Example:
    >>> from threadloom.checkpoint.memory import MemorySaver
    >>> store = MemorySaver()
    >>> store.setup()
    >>> store.get_thread("t-1") is None
    True

Records go in and come out as copies: mutating a record after committing it, or a record the
store returned, never changes what the store holds.

Behaviour the protocol leaves open, decided here (and matched by every backend):

* A released lease leaves no current token: a commit or renewal carrying the released token
  raises ``LeaseLostError``; the next acquisition gets a higher token.
* Fencing tokens come from one counter for the whole store, so a thread that is deleted and
  created again never hands out a token its earlier incarnation did (the SQL backends keep
  the same promise their own way: a retired-token mark, a sequence).
* Every record is keyed by its namespace first (a lease's and a commit's namespace name the
  thread; a commit's runs and executions are recorded in the commit's namespace, whatever
  their own ``namespace`` field says). ``namespace=None`` on a listing or ``delete_runs``
  means every namespace.
* Fencing tokens come from one counter for the whole store (every namespace), which keeps
  them never reissued per ``(namespace, thread)`` too.
* Inserting a checkpoint whose ``seq`` already exists on the thread raises
  ``CheckpointConflictError`` (another writer got there first); nothing is written.
* ``expected_head`` of a commit without a checkpoint is compared in the root namespace ``""``.
* Run metadata must be JSON-serializable; it is stored as JSON, so it reads back as decoded
  JSON (tuples become lists), exactly as in the SQL backends.
* An execution is stored on its commit's thread, keyed by that thread and its id (its
  record's ``thread_id`` is set to the commit's).
* Upserts keep what identifies a record where it is first recorded: a run's ``thread_id``,
  ``graph`` and ``created_at``; every other field takes the new value. (The SQL backends index these
  columns and so never rewrite them on the hot path.)
* ``list_runs`` takes ``created_after <= created_at < created_before``; listings break ties
  on their sort key by id (``run_id`` descending for runs, ``id`` ascending for executions,
  ``thread_id`` descending for threads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from threadloom.checkpoint._memory_records import (
    MemoryRecords,
    ThreadRow,
    copy_execution,
    copy_run,
    frozen,
)
from threadloom.checkpoint._queue_memory import MemoryQueue
from threadloom.checkpoint._run_logs import MemoryRunLogs
from threadloom.checkpoint.base import (
    ANY_HEAD,
    DEFAULT_NAMESPACE,
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    Lease,
    RunLog,
    RunRecord,
    WriteRecord,
)
from threadloom.errors import (
    CheckpointConflictError,
    LeaseLostError,
    RunConflictError,
    StoreError,
    ThreadBusyError,
)

__all__ = ["InMemorySaver", "MemorySaver", "MemoryStore"]

_K = TypeVar("_K", bound=tuple[Any, ...])





def _copy_checkpoint(cp: CheckpointRecord) -> CheckpointRecord:
    return CheckpointRecord(
        thread_id=cp.thread_id,
        checkpoint_ns=cp.checkpoint_ns,
        seq=cp.seq,
        parent_seq=cp.parent_seq,
        run_id=cp.run_id,
        step=cp.step,
        source=cp.source,
        created_at=cp.created_at,
        channels={ch: (int(vb[0]), int(vb[1])) for ch, vb in cp.channels.items()},
        next=tuple(cp.next),
        metadata=frozen(cp.metadata),
        frontier=frozen(cp.frontier),
    )




class MemoryStore(MemoryRecords, MemoryRunLogs, MemoryQueue):
    """The reference :class:`~threadloom.checkpoint.base.Store`, in process memory.

    Every method holds one re-entrant lock for its whole duration, so each call is atomic
    and the store is safe to share between threads. :meth:`commit` validates the whole batch
    before it writes anything, so a failing batch leaves no trace.

    Args:
        **options: accepted and ignored, so that ``open_store("memory://", **options)``
            takes the same keyword arguments whatever the backend.
    """

    commits_in_process = True
    """A hint to the engine: a commit here is a few dictionary updates, so ``async``
    durability commits inline instead of handing commits to a writer thread."""

    def __init__(self, **options: Any) -> None:
        del options
        self._lock = threading.RLock()
        # every key starts with (namespace, thread_id), or (namespace, run_id) for runs
        self._threads: dict[tuple[str, str], ThreadRow] = {}
        self._checkpoints: dict[tuple[str, str, str], dict[int, CheckpointRecord]] = {}
        self._heads: dict[tuple[str, str, str], int] = {}
        self._blobs: dict[tuple[str, str, str, str], dict[int, BlobRecord]] = {}
        self._writes: dict[
            tuple[str, str, str, int], dict[tuple[str, str, int], WriteRecord]
        ] = {}
        self._runs: dict[tuple[str, str], RunRecord] = {}
        self._executions: dict[tuple[str, str, str], ExecutionRecord] = {}  # (ns, thread, id)
        self._run_logs: dict[tuple[str, str], list[RunLog]] = {}  # (ns, run_id) -> records
        self._last_token = 0  # the fencing-token counter, store-wide (see the module doc)
        self._closed = False
        self._init_runtime()  # the run queue, events, workers and keys (MemoryQueue)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={len(self._threads)})"

    def setup(self) -> None:
        """Nothing to create; present for the protocol. Idempotent."""
        self._check_open()

    def close(self) -> None:
        """Drop every record. The store may not be used afterwards."""
        with self._lock:
            self._closed = True
            self._threads.clear()
            self._checkpoints.clear()
            self._heads.clear()
            self._blobs.clear()
            self._writes.clear()
            self._runs.clear()
            self._executions.clear()
        self._close_runtime()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    # -- leases ---------------------------------------------------------------------------

    def acquire_lease(
        self, thread_id: str, owner: str, ttl: float, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Lease:
        """Take the thread's lease for ``ttl`` seconds (see the protocol).

        The holder reacquiring an unexpired lease keeps its token (the expiry moves to
        ``now + ttl``); taking a free, released or expired lease, even by its last holder,
        bumps the token.

        Raises:
            ThreadBusyError: another owner holds an unexpired lease.
        """
        with self._lock:
            self._check_open()
            now = time.time()
            row = self._threads.get((namespace, thread_id))
            if row is None:
                row = self._threads[(namespace, thread_id)] = ThreadRow(now)
            if row.owner is not None and row.expires_at > now:
                if row.owner != owner:
                    raise ThreadBusyError(
                        f"thread {thread_id!r} is busy: its lease is held by {row.owner!r}"
                    )
            else:
                row.token = self._next_token()
            row.owner = owner
            row.expires_at = now + ttl
            return Lease(thread_id, owner, row.token, row.expires_at, namespace)

    def _next_token(self) -> int:
        self._last_token += 1
        return self._last_token

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a held lease to ``now + ttl`` (an expired one too, if nobody took it).

        Raises:
            LeaseLostError: the token is no longer current (taken over or released).
        """
        with self._lock:
            self._check_open()
            row = self._threads.get((lease.namespace, lease.thread_id))
            if row is None or row.current_token() != lease.token:
                raise LeaseLostError(f"lease on thread {lease.thread_id!r} was lost")
            row.expires_at = time.time() + ttl
            return Lease(lease.thread_id, lease.owner, row.token, row.expires_at, lease.namespace)

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up if ``lease.token`` is still current; otherwise do nothing."""
        with self._lock:
            self._check_open()
            row = self._threads.get((lease.namespace, lease.thread_id))
            if row is not None and row.current_token() == lease.token:
                row.owner = None
                row.expires_at = 0.0

    def takeover_lease(self, held: Lease, owner: str, ttl: float) -> Lease:
        """Take the lease from the holder ``held``, expired or not, with a new token (see the
        protocol).

        Raises:
            LeaseLostError: ``held.token`` is no longer current.
        """
        with self._lock:
            self._check_open()
            ns = held.namespace
            row = self._threads.get((ns, held.thread_id))
            if row is not None and row.owner == owner:  # a repeated call
                row.expires_at = time.time() + ttl
                return Lease(held.thread_id, owner, row.token, row.expires_at, ns)
            if row is None or row.current_token() != held.token:
                raise LeaseLostError(
                    f"lease token {held.token} is no longer current on thread "
                    f"{held.thread_id!r}: it was released or taken over meanwhile"
                )
            row.token = self._next_token()
            row.owner = owner
            row.expires_at = time.time() + ttl
            return Lease(held.thread_id, owner, row.token, row.expires_at, ns)

    # -- the write path -------------------------------------------------------------------

    def commit(self, commits: Sequence[Commit]) -> None:
        """Apply ``commits`` in order, atomically (see :class:`~threadloom.checkpoint.Commit`).

        The batch is first checked in full, each commit seeing the effects of the ones before
        it (a checkpoint an earlier commit inserts moves the head; a run it records claims the
        run id), then applied; a failing batch writes nothing. A checkpoint whose ``seq``
        already exists raises ``CheckpointConflictError``. Without a checkpoint,
        ``expected_head`` is compared in namespace ``""``.

        Raises:
            LeaseLostError, CheckpointConflictError, RunConflictError: a check failed.
            StoreError: run metadata is not JSON-serializable, or the checkpoint belongs
                to another thread than the commit.
        """
        with self._lock:
            self._check_open()
            staged = [self._stage(c) for c in self._validate(commits)]
            now = time.time()
            for commit, (checkpoint, blobs, writes, executions, runs) in zip(
                commits, staged, strict=True
            ):
                self._apply(commit, checkpoint, blobs, writes, executions, runs, now)
                self._write_audit(commit.audit, now)

    def _validate(self, commits: Sequence[Commit]) -> Sequence[Commit]:
        heads: dict[tuple[str, str, str], int | None] = {}
        run_threads: dict[tuple[str, str], str] = {}
        inserted: set[tuple[tuple[str, str, str], int]] = set()
        released: set[tuple[str, str]] = set()  # by an earlier commit of the batch
        for c in commits:
            space = c.namespace
            if c.lease_token is not None:
                row = self._threads.get((space, c.thread_id))
                if (row is None or row.current_token() != c.lease_token
                        or (space, c.thread_id) in released):
                    raise LeaseLostError(
                        f"lease token {c.lease_token} is not current on thread {c.thread_id!r}"
                    )
                if c.release_lease:
                    released.add((space, c.thread_id))
            ns = c.checkpoint.checkpoint_ns if c.checkpoint is not None else ""
            key = (space, c.thread_id, ns)
            head = heads[key] if key in heads else self._heads.get(key)
            if c.expected_head is not ANY_HEAD and c.expected_head != head:
                raise CheckpointConflictError(
                    f"thread {c.thread_id!r} moved on: its latest checkpoint is {head}, "
                    f"not {c.expected_head}"
                )
            for run in c.runs:
                run_key = (space, run.run_id)
                owner = run_threads.get(run_key)
                if owner is None:
                    existing = self._runs.get(run_key)
                    owner = existing.thread_id if existing is not None else None
                if owner is not None and owner != run.thread_id:
                    raise RunConflictError(
                        f"run {run.run_id!r} belongs to thread {owner!r}, not {run.thread_id!r}"
                    )
                run_threads[run_key] = run.thread_id
            if c.checkpoint is not None:
                seq = c.checkpoint.seq
                if c.checkpoint.thread_id != c.thread_id:
                    raise StoreError(
                        f"a commit for thread {c.thread_id!r} carries a checkpoint of "
                        f"thread {c.checkpoint.thread_id!r}"
                    )
                if seq in self._checkpoints.get(key, ()) or (key, seq) in inserted:
                    raise CheckpointConflictError(
                        f"checkpoint {seq} already exists on thread {c.thread_id!r}"
                    )
                inserted.add((key, seq))
                heads[key] = seq if head is None else max(head, seq)
        return commits

    def _stage(
        self, c: Commit
    ) -> tuple[
        CheckpointRecord | None,
        list[BlobRecord],
        list[WriteRecord],
        list[ExecutionRecord],
        list[RunRecord],
    ]:
        # Copies are made before anything is applied, so a failing copy (bad metadata)
        # leaves the store untouched too.
        cp = c.checkpoint
        space = c.namespace
        return (
            _copy_checkpoint(cp) if cp is not None else None,
            [BlobRecord(b.channel, b.version, b.prev, frozen(b.data)) for b in cp.blobs]
            if cp is not None
            else [],
            [replace(w, data=frozen(w.data)) for w in c.writes],
            [copy_execution(e, space) for e in c.executions],
            [copy_run(r, namespace=space) for r in c.runs],
        )

    def _apply(
        self,
        c: Commit,
        cp: CheckpointRecord | None,
        blobs: list[BlobRecord],
        writes: list[WriteRecord],
        executions: list[ExecutionRecord],
        runs: list[RunRecord],
        now: float,
    ) -> None:
        space = c.namespace
        for run in runs:
            old = self._runs.get((space, run.run_id))
            if old is not None:  # the first record fixes these (and the thread, checked)
                run.graph, run.created_at = old.graph, old.created_at
            self._runs[(space, run.run_id)] = run
        progress = c.progress
        if progress is not None:
            old = self._runs.get((space, progress.run_id))
            if old is not None and old.thread_id == c.thread_id:
                self._runs[(space, progress.run_id)] = replace(
                    old, steps=progress.steps, executions=progress.executions,
                    updated_at=progress.updated_at,
                )
        if cp is not None:
            key = (space, cp.thread_id, cp.checkpoint_ns)
            self._checkpoints.setdefault(key, {})[cp.seq] = cp
            head = self._heads.get(key)
            self._heads[key] = cp.seq if head is None else max(head, cp.seq)
            for blob in blobs:
                self._blobs.setdefault((space, cp.thread_id, cp.checkpoint_ns, blob.channel), {})[
                    blob.version
                ] = blob
        for w in writes:
            self._writes.setdefault((space, w.thread_id, w.checkpoint_ns, w.seq), {})[
                (w.task_id, w.channel, w.idx)
            ] = w
        for ex in executions:
            ex.thread_id = c.thread_id
            stored = self._executions.get((space, c.thread_id, ex.id))
            if stored is not None:  # created_at is fixed by the first record
                ex.created_at = stored.created_at
            self._executions[(space, c.thread_id, ex.id)] = ex
        row = self._threads.get((space, c.thread_id))
        if row is None:
            self._threads[(space, c.thread_id)] = ThreadRow(now)
        else:
            row.updated_at = now
            if c.release_lease and c.lease_token is not None:  # checked current above
                row.owner = None
                row.expires_at = 0.0

    # -- checkpoints ----------------------------------------------------------------------

    def get_checkpoint(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        seq: int | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> CheckpointRecord | None:
        """The checkpoint ``seq`` of the thread, or its latest when ``seq`` is ``None``."""
        with self._lock:
            self._check_open()
            key = (namespace, thread_id, checkpoint_ns)
            if seq is None:
                seq = self._heads.get(key)
                if seq is None:
                    return None
            cp = self._checkpoints.get(key, {}).get(seq)
            return _copy_checkpoint(cp) if cp is not None else None

    def list_checkpoints(
        self,
        thread_id: str,
        checkpoint_ns: str = "",
        *,
        before: int | None = None,
        run_id: str | None = None,
        source: str | None = None,
        limit: int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[CheckpointRecord]:
        """Checkpoints of a thread, newest first, optionally with ``seq < before``, of one run
        or one source, at most ``limit``."""
        with self._lock:
            self._check_open()
            found: list[CheckpointRecord] = []
            by_seq = self._checkpoints.get((namespace, thread_id, checkpoint_ns), {})
            for seq in sorted(by_seq, reverse=True):
                if limit is not None and len(found) >= limit:
                    break
                cp = by_seq[seq]
                if before is not None and seq >= before:
                    continue
                if run_id is not None and cp.run_id != run_id:
                    continue
                if source is not None and cp.source != source:
                    continue
                found.append(_copy_checkpoint(cp))
            return found

    def list_checkpoint_namespaces(
        self, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[str]:
        """The checkpoint namespaces holding checkpoints of the thread, sorted."""
        with self._lock:
            self._check_open()
            return sorted(
                key[2]
                for key, by_seq in self._checkpoints.items()
                if key[0] == namespace and key[1] == thread_id and by_seq
            )

    def get_blobs(
        self,
        thread_id: str,
        checkpoint_ns: str,
        wants: Mapping[str, tuple[int, int]],
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[BlobRecord]:
        """For each ``channel -> (base, version)`` in ``wants``, every blob of that channel
        with ``base <= blob.version <= version`` (in any order)."""
        with self._lock:
            self._check_open()
            found: list[BlobRecord] = []
            for channel, (base, version) in wants.items():
                by_version = self._blobs.get((namespace, thread_id, checkpoint_ns, channel), {})
                found.extend(
                    BlobRecord(b.channel, b.version, b.prev, b.data)
                    for v, b in by_version.items()
                    if base <= v <= version
                )
            return found

    def get_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        seq: int,
        task_id: str | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[WriteRecord]:
        """Pending writes recorded against checkpoint ``seq`` (of one task, if given),
        ordered by ``(task_id, channel, idx)``."""
        with self._lock:
            self._check_open()
            by_key = self._writes.get((namespace, thread_id, checkpoint_ns, seq), {})
            return [
                replace(by_key[k]) for k in sorted(by_key) if task_id is None or k[0] == task_id
            ]

class InMemorySaver(MemoryStore):
    """LangGraph's name for the in-memory checkpointer: ``InMemorySaver()``."""


MemorySaver = InMemorySaver
"""LangGraph's older name: ``from threadloom.checkpoint.memory import MemorySaver``."""




