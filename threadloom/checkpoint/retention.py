"""Retention: delete threads, prune old checkpoints and runs, export and import a thread.

Deleting and pruning are store methods (:meth:`Store.delete_thread`,
:meth:`Store.prune_checkpoints`, :meth:`Store.delete_runs`); this module adds the
backend-agnostic pieces: an export of a thread's whole history (checkpoints with their blobs,
pending writes, runs, executions) as JSON, and its import into any other store.

Values are exported as the store holds them (base64 of the serialized, possibly encrypted,
bytes), so an export is an exact backup: importing it needs the same serializer and keys to
read the values, and never decrypts anything on the way.

Example:
    >>> data = export_thread(sqlite_store, "customer-88291")
    >>> json.dump(data, open("customer-88291.json", "w"))
    >>> import_thread(postgres_store, json.load(open("customer-88291.json")))
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from threadloom.checkpoint.base import (
    Attempt,
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    RunRecord,
    Store,
    WriteRecord,
)
from threadloom.errors import InvalidConfigError

__all__ = ["FORMAT", "delete_runs_before", "export_thread", "import_thread"]

FORMAT = "threadloom.thread/1"
_PAGE = 500


def check_keep(keep: Any) -> None:
    """What every store's ``prune_checkpoints`` checks first: ``keep`` is an int >= 1 (a
    thread keeps at least its latest checkpoint, which is its state).

    Raises:
        InvalidConfigError: it is not.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidConfigError(
            f"prune_checkpoints(keep={keep!r}): keep must be an int >= 1 (a thread keeps at "
            "least its latest checkpoint; delete_thread removes it all)"
        )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _raw(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def delete_runs_before(
    store: Store, when: datetime | float, *, namespace: str | None = None
) -> int:
    """Delete the finished runs created before ``when`` (a datetime or epoch seconds)."""
    cutoff = when.timestamp() if isinstance(when, datetime) else float(when)
    return store.delete_runs(created_before=cutoff, namespace=namespace)


def export_thread(store: Store, thread_id: str) -> dict[str, Any]:
    """A thread's full history as a JSON-serializable dict (see the module docstring).

    Raises:
        InvalidConfigError: the store has no such thread.
    """
    thread = store.get_thread(thread_id)
    records = list(reversed(store.list_checkpoints(thread_id, "")))
    if thread is None and not records:
        raise InvalidConfigError(f"no thread {thread_id!r} to export")
    top = max((r.seq for r in records), default=0)
    channels = {c for r in records for c in r.channels}
    blobs = store.get_blobs(thread_id, "", {c: (0, top) for c in channels}) if channels else []
    by_version: dict[int, list[BlobRecord]] = {}
    for blob in blobs:
        by_version.setdefault(blob.version, []).append(blob)
    seqs = {r.seq for r in records}
    orphans = [b for v, bs in by_version.items() if v not in seqs for b in bs]
    checkpoints = []
    for index, record in enumerate(records):
        own = by_version.get(record.seq, []) + (orphans if index == 0 else [])
        checkpoints.append(
            {
                "seq": record.seq,
                "parent_seq": record.parent_seq,
                "run_id": record.run_id,
                "step": record.step,
                "source": record.source,
                "created_at": record.created_at,
                "channels": {k: list(v) for k, v in record.channels.items()},
                "next": list(record.next),
                "metadata": _b64(record.metadata),
                "frontier": _b64(record.frontier),
                "blobs": [
                    {
                        "channel": b.channel,
                        "version": b.version,
                        "prev": b.prev,
                        "data": _b64(b.data),
                    }
                    for b in own
                ],
                "writes": [
                    {"task_id": w.task_id, "channel": w.channel, "idx": w.idx, "data": _b64(w.data)}
                    for w in store.get_writes(thread_id, "", record.seq)
                ],
            }
        )
    runs: list[RunRecord] = []
    while batch := store.list_runs(thread_id=thread_id, limit=_PAGE, offset=len(runs)):
        runs += batch
    executions: list[ExecutionRecord] = []
    while batch_e := store.list_executions(
        thread_id=thread_id, limit=_PAGE, offset=len(executions)
    ):
        executions += batch_e
    return {
        "format": FORMAT,
        "thread": {
            "thread_id": thread_id,
            "namespace": thread.namespace if thread is not None else "default",
            "created_at": thread.created_at if thread is not None else None,
            "metadata": dict(thread.metadata) if thread is not None else {},
        },
        "checkpoints": checkpoints,
        "runs": [_run_dict(r) for r in runs],
        "executions": [_execution_dict(e) for e in executions],
    }


def import_thread(store: Store, data: dict[str, Any], *, thread_id: str | None = None) -> str:
    """Write an exported thread into ``store`` in one transaction, optionally under a new
    thread id. Nothing is written if the store already holds any of its checkpoints.

    Returns:
        The thread id it was imported as.

    Raises:
        InvalidConfigError: ``data`` is not an export this version understands.
        CheckpointConflictError, RunConflictError: the store already has some of it.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidConfigError(f"not a threadloom thread export (format {FORMAT!r})")
    tid = thread_id or data["thread"]["thread_id"]
    namespace = data["thread"].get("namespace", "default")
    commits = []
    for cp in data["checkpoints"]:
        record = CheckpointRecord(
            thread_id=tid,
            checkpoint_ns="",
            seq=cp["seq"],
            parent_seq=cp["parent_seq"],
            run_id=cp["run_id"],
            step=cp["step"],
            source=cp["source"],
            created_at=cp["created_at"],
            channels={k: (int(v[0]), int(v[1])) for k, v in cp["channels"].items()},
            next=tuple(cp["next"]),
            metadata=_raw(cp["metadata"]) or b"",
            frontier=_raw(cp["frontier"]) or b"",
            blobs=[
                BlobRecord(b["channel"], b["version"], b["prev"], _raw(b["data"]) or b"")
                for b in cp["blobs"]
            ],
        )
        writes = [
            WriteRecord(
                tid, "", cp["seq"], w["task_id"], w["channel"], w["idx"], _raw(w["data"]) or b""
            )
            for w in cp["writes"]
        ]
        commits.append(Commit(tid, namespace, checkpoint=record, writes=writes))
    runs = [_run_record(r, tid) for r in data["runs"]]
    executions = [_execution_record(e, tid) for e in data["executions"]]
    commits.append(Commit(tid, namespace, runs=runs, executions=executions))
    store.commit(commits)
    return tid


def _run_dict(r: RunRecord) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "graph": r.graph,
        "status": r.status,
        "namespace": r.namespace,
        "input": _b64(r.input),
        "output": _b64(r.output),
        "error": r.error,
        "durability": r.durability,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "steps": r.steps,
        "executions": r.executions,
        "resumed_from": r.resumed_from,
        "metadata": dict(r.metadata),
    }


def _run_record(d: dict[str, Any], thread_id: str) -> RunRecord:
    return RunRecord(
        run_id=d["run_id"],
        thread_id=thread_id,
        graph=d["graph"],
        status=d["status"],
        namespace=d["namespace"],
        input=_raw(d["input"]),
        output=_raw(d["output"]),
        error=d["error"],
        durability=d["durability"],
        created_at=d["created_at"],
        updated_at=d["updated_at"],
        started_at=d["started_at"],
        ended_at=d["ended_at"],
        steps=d["steps"],
        executions=d["executions"],
        resumed_from=d["resumed_from"],
        metadata=dict(d["metadata"]),
    )


def _execution_dict(e: ExecutionRecord) -> dict[str, Any]:
    return {
        "id": e.id,
        "run_id": e.run_id,
        "graph": e.graph,
        "node": e.node,
        "step": e.step,
        "status": e.status,
        "namespace": e.namespace,
        "attempt": e.attempt,
        "inputs": _b64(e.inputs),
        "outputs": _b64(e.outputs),
        "error": e.error,
        "parents": list(e.parents),
        "attempts": [[a.number, a.started_at, a.ended_at, a.error] for a in e.attempts],
        "checkpoint_seq": e.checkpoint_seq,
        "created_at": e.created_at,
        "started_at": e.started_at,
        "ended_at": e.ended_at,
    }


def _execution_record(d: dict[str, Any], thread_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        id=d["id"],
        run_id=d["run_id"],
        thread_id=thread_id,
        graph=d["graph"],
        node=d["node"],
        step=d["step"],
        status=d["status"],
        namespace=d["namespace"],
        attempt=d["attempt"],
        inputs=_raw(d["inputs"]),
        outputs=_raw(d["outputs"]),
        error=d["error"],
        parents=tuple(d["parents"]),
        attempts=tuple(Attempt(*a) for a in d["attempts"]),
        checkpoint_seq=d["checkpoint_seq"],
        created_at=d["created_at"],
        started_at=d["started_at"],
        ended_at=d["ended_at"],
    )
