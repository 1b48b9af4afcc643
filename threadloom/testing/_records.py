"""Records with plausible fields for the store contract tests (see
:mod:`threadloom.testing.conformance`, which re-exports them). Requires nothing but the
store protocol."""

from __future__ import annotations

from typing import Any

from threadloom.checkpoint.base import (
    ANY_HEAD,
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    RunRecord,
    Store,
    WriteRecord,
)

__all__ = ["EXPIRED", "TTL", "checkpoint", "execution", "run", "snapshot", "step"]

TTL = 60.0
EXPIRED = -1.0  # a ttl that makes the lease expire at once: expiry without sleeping


def checkpoint(
    thread_id: str,
    seq: int,
    *,
    ns: str = "",
    run_id: str | None = "run-1",
    source: str = "loop",
    channels: dict[str, tuple[int, int]] | None = None,
    blobs: list[BlobRecord] | None = None,
    parent_seq: int | None = -1,
) -> CheckpointRecord:
    """A checkpoint record with plausible fields (``parent_seq`` defaults to ``seq - 1``)."""
    if channels is None and blobs is None:
        channels = {"value": (seq, seq)}
        blobs = [BlobRecord("value", seq, None, b"v%d" % seq)]
    return CheckpointRecord(
        thread_id=thread_id,
        checkpoint_ns=ns,
        seq=seq,
        parent_seq=(seq - 1 if seq > 0 else None) if parent_seq == -1 else parent_seq,
        run_id=run_id,
        step=seq - 1,
        source=source,
        created_at=1_700_000_000.0 + seq,
        channels=dict(channels or {}),
        next=("node_a", "node_b"),
        metadata=b'{"step": %d}' % seq,
        frontier=b"\x00frontier",
        blobs=list(blobs or []),
    )


def run(run_id: str, thread_id: str, **fields: Any) -> RunRecord:
    """A run record; ``fields`` override the defaults."""
    values: dict[str, Any] = {
        "graph": "graph-a",
        "status": "running",
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
    }
    values.update(fields)
    return RunRecord(run_id=run_id, thread_id=thread_id, **values)


def execution(ex_id: str, run_id: str, thread_id: str, **fields: Any) -> ExecutionRecord:
    """An execution record; ``fields`` override the defaults."""
    values: dict[str, Any] = {
        "graph": "graph-a",
        "node": "node_a",
        "step": 0,
        "status": "RUNNING",
        "created_at": 1_700_000_000.0,
    }
    values.update(fields)
    return ExecutionRecord(id=ex_id, run_id=run_id, thread_id=thread_id, **values)


def step(
    thread_id: str,
    seq: int,
    *,
    token: int | None = None,
    expected: Any = ANY_HEAD,
    namespace: str = "default",
    run_id: str = "run-1",
) -> Commit:
    """One engine step: a checkpoint, a write, an execution and the run."""
    return Commit(
        thread_id=thread_id,
        namespace=namespace,
        lease_token=token,
        expected_head=expected,
        checkpoint=checkpoint(thread_id, seq, run_id=run_id),
        writes=[WriteRecord(thread_id, "", seq, "task-1", "value", 0, b"w%d" % seq)],
        executions=[execution(f"{thread_id}:{seq}", run_id, thread_id, step=seq)],
        runs=[run(run_id, thread_id, steps=seq)],
    )


def snapshot(store: Store, thread_id: str) -> tuple[Any, ...]:
    """Everything the store holds for a thread (to check a failed commit wrote nothing)."""
    blobs = store.get_blobs(thread_id, "", {"value": (0, 99)})
    return (
        store.get_thread(thread_id),
        store.list_checkpoints(thread_id),
        sorted(blobs, key=lambda b: b.version),
        [store.get_writes(thread_id, "", s) for s in range(5)],
        store.list_runs(thread_id=thread_id),
        store.list_executions(thread_id=thread_id),
    )
