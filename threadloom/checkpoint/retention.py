"""Retention: delete threads, prune old checkpoints and runs, export and import a thread.

Deleting and pruning are store methods (:meth:`Store.delete_thread`,
:meth:`Store.prune_checkpoints`, :meth:`Store.delete_runs`); this module adds the
backend-agnostic pieces: an export of a thread's whole history (checkpoints with their blobs,
pending writes, runs, executions; the checkpoints its subgraphs kept in their own checkpoint
namespaces too) as JSON, and its import into any other store.

Values are exported as the store holds them (base64 of the serialized, possibly encrypted,
bytes), so an export is an exact backup: importing it under its own thread id needs the same
serializer and keys to read the values afterwards, and never decrypts anything on the way.

**Importing under a new thread id** makes a copy that behaves exactly as the original would:
the engine derives execution ids, ``@task`` call ids and interrupt ids from the thread id (so
that a replayed step finds what it recorded), and the import derives them again for the new
id, in the execution records, their parents, the pending writes and the pending interrupts.
A recorded ``@task`` is not run again on resume, and ``Command(resume=...)`` answers the
interrupt the original was waiting on. Encrypted values are bound to where they are stored
(:mod:`threadloom.checkpoint.crypto`), so they are decrypted and sealed again for their new
rows: pass the graph's serializer (``serde=EncryptedSerializer(key)``; by default the one
``THREADLOOM_ENCRYPTION_KEY`` configures). Run ids are kept: import into a store that does not
hold the runs (another store, or after deleting the original thread). A subgraph's checkpoint
namespace and ids are derived from the thread's id, so its checkpoints are imported only under
the thread's own id and namespace; a copy under a new id or in another namespace leaves them
out (a subgraph interrupted there starts over when the copy resumes).

Pruning (:meth:`Store.prune_checkpoints`) keeps to the root checkpoint namespace: a
subgraph's checkpoints are few (one namespace per execution of the subgraph node) and are
removed with the thread.

Example:
    >>> data = export_thread(sqlite_store, "customer-88291")
    >>> json.dump(data, open("customer-88291.json", "w"))
    >>> import_thread(postgres_store, json.load(open("customer-88291.json")))
    >>> import_thread(other_store, data, thread_id="customer-88291-copy",
    ...               serde=EncryptedSerializer(key))
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from threadloom._ids import execution_id, interrupt_id, task_execution_id
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    Attempt,
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    RunRecord,
    Store,
    WriteRecord,
)
from threadloom.checkpoint.crypto import (
    blob_location,
    checkpoint_location,
    execution_location,
    is_encrypted,
    run_location,
    serializer_from_env,
    write_location,
)
from threadloom.checkpoint.serde import JsonPlusSerializer, Serializer
from threadloom.errors import DecryptionError, InvalidConfigError

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
    store: Store, when: datetime | float, *, namespace: str | None = DEFAULT_NAMESPACE
) -> int:
    """Delete the finished runs of ``namespace`` (``None``: of every namespace) created
    before ``when`` (a datetime or epoch seconds)."""
    cutoff = when.timestamp() if isinstance(when, datetime) else float(when)
    return store.delete_runs(created_before=cutoff, namespace=namespace)


def _export_checkpoints(
    store: Store, thread_id: str, checkpoint_ns: str, namespace: str
) -> list[dict[str, Any]]:
    """The checkpoints of one checkpoint namespace of the thread, oldest first, each with the
    blobs it introduced (the first also with any blob no kept checkpoint wrote: a pruned
    history's chain bases) and its pending writes."""
    cns, ns = checkpoint_ns, namespace
    records = list(reversed(store.list_checkpoints(thread_id, cns, namespace=ns)))
    top = max((r.seq for r in records), default=0)
    channels = {c for r in records for c in r.channels}
    blobs = (
        store.get_blobs(thread_id, cns, {c: (0, top) for c in channels}, namespace=ns)
        if channels
        else []
    )
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
                    for w in store.get_writes(thread_id, cns, record.seq, namespace=ns)
                ],
            }
        )
    return checkpoints


def export_thread(
    store: Store, thread_id: str, *, namespace: str = DEFAULT_NAMESPACE
) -> dict[str, Any]:
    """A thread's full history (the thread of ``namespace``) as a JSON-serializable dict
    (see the module docstring).

    Raises:
        InvalidConfigError: the store has no such thread.
    """
    ns = namespace
    thread = store.get_thread(thread_id, namespace=ns)
    checkpoints = _export_checkpoints(store, thread_id, "", ns)
    if thread is None and not checkpoints:
        where = f" in namespace {ns!r}" if ns != DEFAULT_NAMESPACE else ""
        raise InvalidConfigError(f"no thread {thread_id!r}{where} to export")
    subgraphs = [
        {"checkpoint_ns": cns, "checkpoints": _export_checkpoints(store, thread_id, cns, ns)}
        for cns in store.list_checkpoint_namespaces(thread_id, namespace=ns)
        if cns != ""
    ]
    runs: list[RunRecord] = []
    while batch := store.list_runs(
        thread_id=thread_id, limit=_PAGE, offset=len(runs), namespace=ns
    ):
        runs += batch
    executions: list[ExecutionRecord] = []
    while batch_e := store.list_executions(
        thread_id=thread_id, limit=_PAGE, offset=len(executions), namespace=ns
    ):
        executions += batch_e
    return {
        "format": FORMAT,
        "thread": {
            "thread_id": thread_id,
            "namespace": ns,
            "created_at": thread.created_at if thread is not None else None,
            "metadata": dict(thread.metadata) if thread is not None else {},
        },
        "checkpoints": checkpoints,
        "subgraphs": subgraphs,
        "runs": [_run_dict(r) for r in runs],
        "executions": [_execution_dict(e) for e in executions],
    }


def import_thread(store: Store, data: dict[str, Any], *, thread_id: str | None = None,
                  namespace: str | None = None, serde: Serializer | None = None) -> str:
    """Write an exported thread into ``store`` in one transaction, optionally under a new
    thread id (see the module docstring). Nothing is written if the store already holds any
    of its checkpoints, or if anything fails.

    Args:
        store: where to write it.
        data: what :func:`export_thread` returned (possibly through JSON).
        thread_id: the id to import it under (default: its own).
        namespace: the namespace to import it into (default: the one it was exported from).
        serde: the serializer of the graphs that use the thread; needed only under a new
            ``thread_id`` or ``namespace``, to read and rewrite values bound to the old one
            (default:
            :func:`~threadloom.checkpoint.crypto.serializer_from_env`).

    Returns:
        The thread id it was imported as.

    Raises:
        InvalidConfigError: ``data`` is not an export this version understands.
        DecryptionError: it is encrypted, imported under a new ``thread_id``, and ``serde``
            has no key for it.
        CheckpointConflictError, RunConflictError: the store already has some of it.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidConfigError(f"not a threadloom thread export (format {FORMAT!r})")
    source = data["thread"]["thread_id"]
    tid = thread_id or source
    exported = data["thread"].get("namespace", DEFAULT_NAMESPACE)
    namespace = exported if namespace is None else namespace
    moved = tid != source or namespace != exported
    move = _Move(data, (exported, source), (namespace, tid), serde) if moved else None
    commits = []
    for cp in data["checkpoints"]:
        if move is not None:
            cp = move.checkpoint(cp)
        commits.append(_checkpoint_commit(cp, tid, "", namespace))
    if move is None:  # a subgraph's namespace and ids are derived from the thread's id
        for sub in data.get("subgraphs", ()):
            commits += [
                _checkpoint_commit(cp, tid, sub["checkpoint_ns"], namespace)
                for cp in sub["checkpoints"]
            ]
    runs = [_run_record(r, tid) for r in data["runs"]]
    executions = [_execution_record(e, tid) for e in data["executions"]]
    if move is not None:
        runs = [move.run(r) for r in runs]
        executions = [move.execution(e) for e in executions]
    commits.append(Commit(tid, namespace, runs=runs, executions=executions))
    store.commit(commits)
    return tid


def _checkpoint_commit(
    cp: dict[str, Any], thread_id: str, checkpoint_ns: str, namespace: str
) -> Commit:
    """The commit writing one exported checkpoint (with its blobs and writes)."""
    record = CheckpointRecord(
        thread_id=thread_id,
        checkpoint_ns=checkpoint_ns,
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
        WriteRecord(thread_id, checkpoint_ns, cp["seq"], w["task_id"], w["channel"], w["idx"],
                    _raw(w["data"]) or b"")
        for w in cp["writes"]
    ]
    return Commit(thread_id, namespace, checkpoint=record, writes=writes)


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
        "traceparent": r.traceparent,
        "stats": r.stats,
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
        traceparent=d.get("traceparent"),  # exports before issue 14 have neither
        stats=dict(d.get("stats") or {}),
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


# the engine's special write channels (threadloom.engine._persist) that import must rewrite
_INTERRUPT = "__interrupt__"
_TASK_PREFIX = "__task__:"


class _Ids:
    """Execution ids of an exported thread, derived again for a new thread id.

    An id is found by deriving candidates from the old thread id: node executions from the
    checkpoint a step started at (known for pending writes and most execution records; every
    checkpoint number is tried for the others), the node names the export mentions, and Send
    indexes up to the most a step could have had; ``@task`` calls from their parent and call
    index. An id derived some other way is kept as it is."""

    def __init__(self, source: str, target: str, checkpoints: list[dict[str, Any]],
                 executions: list[dict[str, Any]]) -> None:
        self.source = source
        self.target = target
        self.known: dict[str, str] = {}
        names = {n for cp in checkpoints for n in cp["next"]} | {e["node"] for e in executions}
        self.names = sorted(names)
        top = max((cp["seq"] for cp in checkpoints), default=-1)
        self.seqs = range(top, -2, -1)  # newest first; -1: the first step of a thread
        # a step's Send packets: the most a stored checkpoint lists, or a step's records show
        per_step = Counter((e["run_id"], e["step"]) for e in executions if e["inputs"] is not None)
        sends = max([len(cp["next"]) for cp in checkpoints] + list(per_step.values()) + [0])
        self.pushes = range(-1, sends)
        self._children = Counter(p for e in executions for p in e["parents"])
        self._tables: dict[tuple[int, str], dict[str, int]] = {}
        self._all: dict[str, tuple[int, str, int]] | None = None  # built on the first need

    def _push_of(self, old: str, seq: int, name: str) -> int | None:
        table = self._tables.get((seq, name))
        if table is None:
            table = self._tables[(seq, name)] = {
                execution_id(self.source, seq, name, push): push for push in self.pushes}
        return table.get(old)

    def node(self, old: str, seq: int | None = None, name: str | None = None) -> str:
        """The new id of node execution ``old`` (``seq``, ``name``: where to look first)."""
        new = self.known.get(old)
        if new is not None:
            return new
        if seq is not None:
            for n in [name] if name is not None else self.names:
                push = self._push_of(old, seq, n)
                if push is not None:
                    new = self.known[old] = execution_id(self.target, seq, n, push)
                    return new
        if self._all is None:  # every id the old thread could have had, at once
            self._all = {execution_id(self.source, s, n, p): (s, n, p)
                         for s in self.seqs for n in self.names for p in self.pushes}
        found = self._all.get(old)
        if found is None:
            return old
        new = self.known[old] = execution_id(self.target, *found)
        return new

    def task(self, old_parent: str, name: str, index: int) -> str:
        """The new id of ``@task`` call ``index`` of ``name`` inside ``old_parent`` (whose
        new id must be known)."""
        old = task_execution_id(old_parent, name, index)
        new = self.known.get(old)
        if new is None:
            new = self.known[old] = task_execution_id(self.known.get(old_parent, old_parent),
                                                      name, index)
        return new

    def execution(self, old: str, name: str, seq: int | None, parents: tuple[str, ...]) -> str:
        """The new id of the execution record ``old`` of node or task ``name``."""
        new = self.known.get(old)
        if new is not None:
            return new
        if seq is not None:
            push = self._push_of(old, seq, name)
            if push is not None:
                new = self.known[old] = execution_id(self.target, seq, name, push)
                return new
        if len(parents) == 1:  # perhaps a @task call of its parent execution
            self.node(parents[0], seq)
            for index in range(2 * self._children[parents[0]] + 1):
                if task_execution_id(parents[0], name, index) == old:
                    return self.task(parents[0], name, index)
        return self.node(old, seq, name)


class _Move:
    """Rewrites an export for a new thread id (see the module docstring): the ids derived
    from the old id, and the values bound to their old rows."""

    def __init__(self, data: dict[str, Any], source_at: tuple[str, str],
                 target_at: tuple[str, str], serde: Serializer | None) -> None:
        # (namespace, thread_id) of the exported thread and of the imported one
        self.source_at = source_at
        self.target_at = target_at
        source, target = source_at[1], target_at[1]
        self.source = source
        self.target = target
        self.serde = serde if serde is not None else serializer_from_env()
        self.bind = getattr(self.serde, "binds_location", False) is True
        self.keyless = isinstance(self.serde, JsonPlusSerializer)
        self.ids = _Ids(source, target, data["checkpoints"], data["executions"])

    def _check(self, data: bytes) -> None:
        if self.keyless and is_encrypted(data):
            raise DecryptionError(
                "this export holds encrypted values, bound to the rows of thread "
                f"{self.source!r}; importing it as {self.target!r} seals them again for their "
                "new rows, which needs the key: pass serde=EncryptedSerializer(key) (or set "
                "THREADLOOM_ENCRYPTION_KEY)"
            )

    def _load(self, data: bytes, where: bytes) -> Any:
        if self.bind:
            return self.serde.loads_at(data, where)  # type: ignore[attr-defined]
        self._check(data)
        return self.serde.loads(data)

    def _dump(self, value: Any, where: bytes) -> bytes:
        if self.bind:
            data: bytes = self.serde.dumps_at(value, where)  # type: ignore[attr-defined]
            return data
        return self.serde.dumps(value)

    def _recode(self, data: bytes | None, where: Callable[[tuple[str, str]], bytes]
                ) -> bytes | None:
        """``data`` sealed again for the new thread (``where((namespace, thread_id))``: its
        location)."""
        if not data:
            return data
        if not self.bind:
            self._check(data)
            return data
        return self._dump(self._load(data, where(self.source_at)), where(self.target_at))

    def _text(self, text: str | None, where: Callable[[tuple[str, str]], bytes]) -> str | None:
        return _b64(self._recode(_raw(text), where))

    @staticmethod
    def _where(kind: Callable[..., bytes], *rest: Any) -> Callable[[tuple[str, str]], bytes]:
        """``kind(namespace, thread_id, *rest)``: a value's location on either thread."""
        return lambda at: kind(at[0], at[1], *rest)

    def checkpoint(self, cp: dict[str, Any]) -> dict[str, Any]:
        """An exported checkpoint (with its blobs and writes) for the new thread."""
        seq, where = cp["seq"], self._where
        return {
            **cp,
            "metadata": self._text(cp["metadata"],
                                   where(checkpoint_location, "", seq, "metadata")),
            "frontier": self._text(cp["frontier"],
                                   where(checkpoint_location, "", seq, "frontier")),
            "blobs": [
                {**b, "data": self._text(b["data"], where(blob_location, "", b["channel"],
                                                          b["version"]))}
                for b in cp["blobs"]
            ],
            "writes": [self._write(seq, w) for w in cp["writes"]],
        }

    def _write(self, seq: int, w: dict[str, Any]) -> dict[str, Any]:
        old, channel, idx = w["task_id"], w["channel"], w["idx"]
        new = self.ids.node(old, seq)
        if channel.startswith(_TASK_PREFIX):
            self.ids.task(old, channel[len(_TASK_PREFIX):], idx)
        old_at = write_location(*self.source_at, "", seq, old, channel, idx)
        new_at = write_location(*self.target_at, "", seq, new, channel, idx)
        data = _raw(w["data"]) or b""
        if channel == _INTERRUPT:
            value, iid, index = self._load(data, old_at)
            if iid == interrupt_id(old, index):
                iid = interrupt_id(new, index)
            data = self._dump([value, iid, index], new_at)
        elif data:
            if self.bind:
                data = self._dump(self._load(data, old_at), new_at)
            else:
                self._check(data)
        return {**w, "task_id": new, "data": _b64(data)}

    def run(self, r: RunRecord) -> RunRecord:
        """A run record (already under the new thread id) with its values sealed again."""
        r.input = self._recode(r.input, self._where(run_location, r.run_id, "input"))
        r.output = self._recode(r.output, self._where(run_location, r.run_id, "output"))
        r.namespace = self.target_at[0]
        return r

    def execution(self, e: ExecutionRecord) -> ExecutionRecord:
        """An execution record (already under the new thread id) with its new id, parents'
        ids and values."""
        old = e.id
        new = self.ids.execution(old, e.node, e.checkpoint_seq, tuple(e.parents))
        for field in ("inputs", "outputs"):
            data = getattr(e, field)
            if data and self.bind:
                value = self._load(data, execution_location(*self.source_at, e.run_id,
                                                            old, field))
                data = self._dump(value, execution_location(*self.target_at, e.run_id,
                                                            new, field))
            elif data:
                self._check(data)
            setattr(e, field, data)
        e.id = new
        e.namespace = self.target_at[0]
        e.parents = tuple(self.ids.node(p) for p in e.parents)
        return e
