"""Between the engine and a store: encoding checkpoints as delta blobs, loading a thread's
state back, deterministic execution ids, and the background writer of ``async`` durability."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from threadloom import _metrics
from threadloom._faults import fault
from threadloom._ids import execution_id, interrupt_id, task_execution_id
from threadloom.checkpoint.base import (
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    RunRecord,
    Store,
    WriteRecord,
    format_checkpoint_id,
)
from threadloom.checkpoint.crypto import (
    blob_location,
    checkpoint_location,
    execution_location,
    run_location,
    write_location,
)
from threadloom.checkpoint.serde import (
    JsonPlusSerializer,
    Serializer,
    encode_json,
    unserializable,
)
from threadloom.engine._algo import Frontier, TaskResult
from threadloom.engine._spec import GraphSpec
from threadloom.errors import CheckpointNotFoundError
from threadloom.types import Interrupt, Send

__all__ = [
    "Chain",
    "Codec",
    "Loaded",
    "Writer",
    "execution_id",
    "interrupt_id",
    "task_execution_id",
]

_SNAPSHOT_MIN_BYTES = 1024
_NODE_OUTPUT = "the output of node {!r}"

RESULT = "__result__"
ERROR = "__error__"
INTERRUPT = "__interrupt__"
RESUME = "__resume__"
TASK_PREFIX = "__task__:"


@dataclass(slots=True)
class Chain:
    """How a channel is stored: its version, the full blob its deltas start from, and the
    items already stored (for channels stored as appends)."""

    version: int
    base: int
    base_size: int
    delta_bytes: int = 0
    items: list[Any] | None = None


@dataclass(slots=True)
class Loaded:
    """A thread's state at one checkpoint, with what the interrupted or failed step left."""

    record: CheckpointRecord | None
    values: dict[str, Any]
    frontier: Frontier
    chains: dict[str, Chain]
    metadata: dict[str, Any] = field(default_factory=dict)
    results: dict[str, tuple[list[Any], list[Any]]] = field(default_factory=dict)
    interrupts: dict[str, tuple[Interrupt, int]] = field(default_factory=dict)
    resume: dict[str, list[Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    task_results: dict[tuple[str, str, int], WriteRecord] = field(default_factory=dict)

    @property
    def seq(self) -> int | None:
        return None if self.record is None else self.record.seq

    @property
    def step(self) -> int:
        return -1 if self.record is None else self.record.step

    def pending_interrupts(self) -> dict[str, Interrupt]:
        """Interrupts raised in the step after this checkpoint and not yet resumed, by the
        execution that raised them."""
        return {
            task_id: item
            for task_id, (item, index) in self.interrupts.items()
            if index >= len(self.resume.get(task_id, ()))
        }


class Codec:
    """Turns engine state into store records and back, for one graph and serializer.

    With a serializer that binds values to their location (``binds_location``, as
    :class:`~threadloom.checkpoint.crypto.EncryptedSerializer` does), every value is encoded
    and decoded with its :func:`~threadloom.checkpoint.crypto.location`; the codec asks once,
    here, so a plain serializer pays nothing for it. Values a serializer refuses raise
    :class:`~threadloom.errors.SerializationError` naming the field.
    """

    __slots__ = ("spec", "serde", "namespace", "bind", "_memo", "_plain_json", "_names")

    def __init__(self, spec: GraphSpec, serde: Serializer, namespace: str = "default") -> None:
        self.spec = spec
        self.serde = serde
        self.namespace = namespace
        self.bind = getattr(serde, "binds_location", False) is True
        # the default serializer writes compact JSON tagged "j": metadata can be spliced
        self._plain_json = type(serde) is JsonPlusSerializer
        self._names: dict[str, bytes] = {}  # a node's name as a JSON key, with its colon
        # encodings of small engine values that repeat step after step (which nodes ran,
        # which are next), so a loop does not serialize the same bytes thousands of times
        self._memo: dict[tuple[str, tuple[str, ...]], bytes] = {}

    def _memoized(self, kind: str, key: tuple[str, ...], value: Callable[[], Any]) -> bytes:
        """The encoding of ``value()``, built on the first call with ``(kind, key)`` (never
        with a binding serializer: each location seals its own bytes)."""
        memo = self._memo
        data = memo.get((kind, key))
        if data is None:
            if len(memo) > 1024:
                memo.clear()
            data = memo[(kind, key)] = self.serde.dumps(value())
        return data

    def _sealed(self, value: Any, where: bytes, what: str, *args: Any) -> bytes:
        """``value`` encoded by the binding serializer for ``where``; ``what.format(*args)``
        names the field if it cannot be (formatted only then)."""
        try:
            data: bytes = self.serde.dumps_at(value, where)  # type: ignore[attr-defined]
        except Exception as exc:
            raise unserializable(what.format(*args), exc, value, self.serde.dumps) from exc
        return data

    def _plain(self, value: Any, what: str, *args: Any) -> bytes:
        """``value`` encoded by the serializer (``what``: as for :meth:`_sealed`)."""
        try:
            return self.serde.dumps(value)
        except Exception as exc:
            raise unserializable(what.format(*args), exc, value, self.serde.dumps) from exc

    def _open(self, data: bytes, where: bytes) -> Any:
        """Decode ``data`` stored at ``where`` (only called with a binding serializer)."""
        return self.serde.loads_at(data, where)  # type: ignore[attr-defined]

    # -- where values live (the associated data of a binding serializer) ---------------

    def _blob_at(self, thread_id: str, ns: str, channel: str, version: int) -> bytes:
        return blob_location(self.namespace, thread_id, ns, channel, version)

    def _checkpoint_at(self, thread_id: str, ns: str, seq: int, part: str) -> bytes:
        return checkpoint_location(self.namespace, thread_id, ns, seq, part)

    def _write_at(self, w: WriteRecord) -> bytes:
        return write_location(self.namespace, w.thread_id, w.checkpoint_ns, w.seq, w.task_id,
                              w.channel, w.idx)

    # -- channel values -------------------------------------------------------------------

    def encode_channels(
        self, values: Mapping[str, Any], updated: Sequence[str] | set[str],
        chains: dict[str, Chain], seq: int, thread_id: str, checkpoint_ns: str = "",
    ) -> list[BlobRecord]:
        """Blobs for the channels written since the last checkpoint (updating ``chains``): a
        delta of appended items where a list only grew (with a reducer, or a plain key a node
        rewrote as ``old + [new]``), otherwise the full value. A full snapshot is taken again
        once the deltas add up to the last snapshot's size.

        Raises:
            SerializationError: a value cannot be stored (the message names the state key).
        """
        dumps = self.serde.dumps
        bind = self.bind

        def encode(name: str, value: Any) -> bytes:
            if bind:
                return self._sealed(value, self._blob_at(thread_id, checkpoint_ns, name, seq),
                                    "state key {!r}", name)
            try:
                return dumps(value)
            except Exception as exc:
                raise unserializable(f"state key {name!r}", exc) from exc

        blobs: list[BlobRecord] = []
        for name in updated:
            if name not in values:
                continue
            value = values[name]
            chain = chains.get(name)
            if (
                chain is not None
                and chain.items is not None
                and type(value) is list
                and len(value) >= len(chain.items)
                and chain.delta_bytes < max(chain.base_size, _SNAPSHOT_MIN_BYTES)
                and value[: len(chain.items)] == chain.items
            ):
                delta = value[len(chain.items):]
                data = encode(name, delta)
                blobs.append(BlobRecord(name, seq, chain.version, data))
                chain.version = seq
                chain.delta_bytes += len(data)
                chain.items = list(value)
                continue
            data = encode(name, value)
            blobs.append(BlobRecord(name, seq, None, data))
            items = list(value) if type(value) is list else None
            chains[name] = Chain(seq, seq, len(data), 0, items)
        return blobs

    def decode_channels(
        self, store: Store, record: CheckpointRecord
    ) -> tuple[dict[str, Any], dict[str, Chain]]:
        """The channel values stored at a checkpoint, and their chains."""
        return self.decode_many(store, [record])[record.seq]

    def decode_many(
        self, store: Store, records: Sequence[CheckpointRecord]
    ) -> dict[int, tuple[dict[str, Any], dict[str, Chain]]]:
        """Channel values (and chains) of several checkpoints of one thread, from one blob
        query: each stored version is decoded once, and a delta extends the value of the
        version it follows (so a history of N appends costs O(N) decoding, not O(N^2))."""
        out: dict[int, tuple[dict[str, Any], dict[str, Chain]]] = {}
        if not records:
            return out
        wants: dict[str, tuple[int, int]] = {}
        for record in records:
            for name, (ver, base) in record.channels.items():
                low, high = wants.get(name, (base, ver))
                wants[name] = (min(low, base), max(high, ver))
        first = records[0]
        blobs = store.get_blobs(first.thread_id, first.checkpoint_ns, wants,
                                namespace=self.namespace) if wants else []
        by_key = {(b.channel, b.version): b for b in blobs}
        cache: dict[tuple[str, int], tuple[Any, int, int]] = {}  # value, base size, deltas
        loads = self._blob_loader(first) if self.bind else self.serde.loads
        for record in records:
            values: dict[str, Any] = {}
            chains: dict[str, Chain] = {}
            for name, (ver, base) in record.channels.items():
                value, base_size, delta_bytes = self._value_at(name, ver, by_key, cache,
                                                               len(records) > 1, loads)
                values[name] = value
                items = list(value) if type(value) is list else None
                chains[name] = Chain(ver, base, base_size, delta_bytes, items)
            out[record.seq] = (values, chains)
        return out

    def _blob_loader(self, record: CheckpointRecord) -> Callable[[BlobRecord], Any]:
        thread_id, ns = record.thread_id, record.checkpoint_ns

        def loads(blob: BlobRecord) -> Any:
            return self._open(blob.data, self._blob_at(thread_id, ns, blob.channel, blob.version))

        return loads

    def _value_at(self, channel: str, version: int, by_key: dict[tuple[str, int], BlobRecord],
                  cache: dict[tuple[str, int], tuple[Any, int, int]],
                  keep_all: bool, loads: Callable[[Any], Any]) -> tuple[Any, int, int]:
        """The decoded value of ``channel`` at ``version``, following its delta chain back
        to the nearest decoded or full version (iteratively: chains can be long). With
        ``keep_all`` every version on the way is cached too (a history asks for them)."""
        pending: list[BlobRecord] = []
        key: tuple[str, int] | None = (channel, version)
        while key is not None and key not in cache:
            blob = by_key.get(key)
            if blob is None:
                raise LookupError(f"missing blob {key} (chain for version {version})")
            pending.append(blob)
            key = None if blob.prev is None else (channel, blob.prev)
        bind = self.bind
        if key is None:
            full = pending.pop()
            current = (loads(full if bind else full.data), len(full.data), 0)
            cache[(channel, full.version)] = current
        else:
            current = cache[key]
        if not pending:
            return current
        value, base_size, delta_bytes = current
        grown = list(value)
        for blob in reversed(pending):
            grown.extend(loads(blob if bind else blob.data))
            delta_bytes += len(blob.data)
            if keep_all:
                cache[(channel, blob.version)] = (grown, base_size, delta_bytes)
                grown = list(grown)
        current = (grown, base_size, delta_bytes)
        cache[(channel, version)] = current
        return current

    # -- frontier and metadata ------------------------------------------------------------

    def encode_frontier(self, frontier: Frontier, *, thread_id: str, seq: int,
                        checkpoint_ns: str = "") -> bytes:
        """The frontier stored with checkpoint ``seq`` of ``thread_id`` (in ``checkpoint_ns``,
        a subgraph's checkpoints).

        Raises:
            SerializationError: a ``Send`` argument cannot be stored.
        """
        def value() -> dict[str, Any]:
            out = {
                "nodes": list(frontier.nodes),
                "sends": [[s.node, s.arg] for s in frontier.sends],
                "barriers": {str(k): sorted(v) for k, v in frontier.barriers.items()},
            }
            if frontier.deferred:
                out["deferred"] = list(frontier.deferred)
            return out

        if self.bind:
            return self._sealed(value(), self._checkpoint_at(thread_id, checkpoint_ns, seq,
                                                             "frontier"),
                                "the arguments of the next step's Send packets")
        if frontier.sends or frontier.barriers or frontier.deferred:
            return self._plain(value(), "the arguments of the next step's Send packets")
        return self._memoized("frontier", tuple(frontier.nodes), value)

    def decode_frontier(self, record: CheckpointRecord) -> Frontier:
        """The frontier stored with ``record``."""
        data = record.frontier
        if self.bind:
            raw = self._open(data, self._checkpoint_at(record.thread_id, record.checkpoint_ns,
                                                       record.seq, "frontier"))
        else:
            raw = self.serde.loads(data)
        return Frontier(
            list(raw["nodes"]),
            [Send(node, arg) for node, arg in raw["sends"]],
            {int(k): set(v) for k, v in raw["barriers"].items()},
            list(raw.get("deferred", ())),
        )

    def encode_update(self, result: TaskResult, thread_id: str, run_id: str,
                      ids: Mapping[tuple[str, int], str]) -> bytes | None:
        """A task's writes as one ``{channel: value}`` update, encoded (``None``: it wrote
        nothing): an execution record's outputs (of run ``run_id``; ``ids``: the step's
        execution ids), and its entry in the step's metadata.

        Raises:
            SerializationError: the update cannot be stored (the message names the node).
        """
        if not result.writes:
            return None
        if self.bind:
            task = result.task
            return self._sealed(
                dict(result.writes),
                execution_location(self.namespace, thread_id, run_id, ids[(task.name, task.push)],
                                   "outputs"),
                _NODE_OUTPUT, task.name)
        update = dict(result.writes)
        try:
            return self.serde.dumps(update)
        except Exception as exc:
            raise unserializable(_NODE_OUTPUT.format(result.task.name), exc, update,
                                  self.serde.dumps) from exc

    def encode_metadata(self, results: Sequence[TaskResult],
                        updates: Sequence[bytes | None] | None = None, *, thread_id: str,
                        seq: int, **extra: Any) -> bytes:
        """Checkpoint metadata beyond the record's own columns (source, step, run_id): the
        writes of the step as ``{node: update}`` (a list of updates for a node that ran
        several times through ``Send``), and anything in ``extra``.

        ``updates``: :meth:`encode_update` of each result, when the caller has them. With the
        default serializer and one result per node, the metadata is spliced from them rather
        than encoded again (the same bytes: both are compact JSON)."""
        if self.bind:
            return self._sealed({"writes": self._writes_by_node(results), **extra},
                                self._checkpoint_at(thread_id, "", seq, "metadata"),
                                "the checkpoint metadata")
        if updates is not None and not extra and self._plain_json:
            spliced = self._splice(results, updates)
            if spliced is not None:
                return spliced
        plain = self._writes_by_node(results)
        if not extra and all(v is None for v in plain.values()):
            return self._memoized("metadata", tuple(plain), lambda: {"writes": plain})
        return self._plain({"writes": plain, **extra}, "the checkpoint metadata")

    def encode_subgraph_metadata(self, metadata: dict[str, Any], *, thread_id: str, seq: int,
                                 checkpoint_ns: str) -> bytes:
        """``metadata`` as stored with checkpoint ``seq`` of a subgraph's ``checkpoint_ns``."""
        if self.bind:
            return self._sealed(metadata, self._checkpoint_at(thread_id, checkpoint_ns, seq,
                                                              "metadata"),
                                "the checkpoint metadata")
        return self._plain(metadata, "the checkpoint metadata")

    @staticmethod
    def _writes_by_node(results: Sequence[TaskResult]) -> dict[str, Any]:
        """``{node: update}`` (a list of updates for a node that ran several times)."""
        writes: dict[str, Any] = {}
        for result in results:
            update = dict(result.writes) if result.writes else None
            name = result.task.name
            if name in writes:
                previous = writes[name]
                writes[name] = [*previous, update] if isinstance(previous, _Several) \
                    else _Several([previous, update])
            else:
                writes[name] = update
        return {k: list(v) if isinstance(v, _Several) else v for k, v in writes.items()}

    def _splice(self, results: Sequence[TaskResult], updates: Sequence[bytes | None]
                ) -> bytes | None:
        """``{"writes": {node: update}}`` from the encoded updates, or ``None`` when one is
        not JSON or a node ran more than once."""
        if len(results) > 1 and len({r.task.name for r in results}) < len(results):
            return None
        parts: list[bytes] = []
        names = self._names
        for result, update in zip(results, updates, strict=True):
            name = result.task.name
            key = names.get(name)
            if key is None:
                key = names[name] = encode_json(name).encode() + b":"
            if update is None:
                parts.append(key + b"null")
            elif update[:1] == b"j":
                parts.append(key + update[1:])
            else:
                return None
        return b'j{"writes":{' + b",".join(parts) + b"}}"

    def decode_metadata(self, data: bytes, record: CheckpointRecord | None = None
                        ) -> dict[str, Any]:
        """The metadata dict users see: source, step and run_id from the record, plus what
        :meth:`encode_metadata` stored."""
        if not data:
            out = {}
        elif self.bind and record is not None:
            out = self._open(data, self._checkpoint_at(record.thread_id, record.checkpoint_ns,
                                                       record.seq, "metadata"))
        else:
            out = self.serde.loads(data)
        stored = dict(out) if isinstance(out, dict) else {}
        if record is None:
            return stored
        return {"source": record.source, "step": record.step, "run_id": record.run_id,
                "parents": {}, **stored}

    # -- loading --------------------------------------------------------------------------

    def load(self, store: Store, thread_id: str, seq: int | None = None,
             checkpoint_ns: str = "") -> Loaded:
        """A thread's state at checkpoint ``seq`` (latest when ``None``), with the pending
        writes of the step that follows it; ``checkpoint_ns`` names a subgraph's checkpoints
        (see :mod:`threadloom.engine._nested`).

        Raises:
            CheckpointNotFoundError: there is no checkpoint ``seq`` on the thread.
        """
        record = store.get_checkpoint(thread_id, checkpoint_ns, seq, namespace=self.namespace)
        if record is None:
            if seq is not None:
                raise CheckpointNotFoundError(
                    f"thread {thread_id!r} has no checkpoint {format_checkpoint_id(seq)!r}"
                )
            return Loaded(None, {}, Frontier(), {})
        values, chains = self.decode_channels(store, record)
        loaded = Loaded(record, values, self.decode_frontier(record), chains,
                        self.decode_metadata(record.metadata, record))
        self._load_writes(store, loaded)
        return loaded

    def _load_writes(self, store: Store, loaded: Loaded) -> None:
        assert loaded.record is not None
        loads = self.decode_write
        record = loaded.record
        for write in store.get_writes(record.thread_id, record.checkpoint_ns, record.seq,
                                      namespace=self.namespace):
            channel = write.channel
            if channel == RESULT:
                writes, goto = loads(write)
                loaded.results[write.task_id] = (
                    [tuple(w) for w in writes],
                    [Send(g[0], g[1]) if isinstance(g, list) else g for g in goto],
                )
            elif channel == INTERRUPT:
                value, iid, index = loads(write)
                loaded.interrupts[write.task_id] = (Interrupt(value, iid), index)
            elif channel == RESUME:
                loaded.resume[write.task_id] = list(loads(write))
            elif channel == ERROR:
                loaded.errors[write.task_id] = str(loads(write))
            elif channel.startswith(TASK_PREFIX):
                loaded.task_results[(write.task_id, channel[len(TASK_PREFIX):], write.idx)] = (
                    write
                )

    # -- pending writes -------------------------------------------------------------------

    def decode_write(self, write: WriteRecord) -> Any:
        """The value of a pending write."""
        if self.bind:
            return self._open(write.data, self._write_at(write))
        return self.serde.loads(write.data)

    def _write(self, thread_id: str, seq: int, task_id: str, channel: str, idx: int,
               value: Any, what: str, arg: str, checkpoint_ns: str = "") -> WriteRecord:
        write = WriteRecord(thread_id, checkpoint_ns, seq, task_id, channel, idx, b"")
        if self.bind:
            write.data = self._sealed(value, self._write_at(write), what, arg)
        else:
            write.data = self._plain(value, what, arg)
        return write

    def result_write(
        self, thread_id: str, seq: int, task_id: str, result: TaskResult,
        checkpoint_ns: str = "",
    ) -> WriteRecord:
        goto = [[g.node, g.arg] if isinstance(g, Send) else g for g in result.goto]
        return self._write(thread_id, seq, task_id, RESULT, 0,
                           [[list(w) for w in result.writes], goto], _NODE_OUTPUT,
                           result.task.name, checkpoint_ns)

    def special_write(self, thread_id: str, seq: int, task_id: str, channel: str,
                      value: Any, idx: int = 0, checkpoint_ns: str = "") -> WriteRecord:
        return self._write(thread_id, seq, task_id, channel, idx, value,
                           "the {} value of execution " + task_id, channel.strip("_"),
                           checkpoint_ns)

    def task_write(self, thread_id: str, seq: int, parent: str, name: str, index: int,
                   value: Any, checkpoint_ns: str = "") -> WriteRecord:
        """The pending write that records ``@task`` call ``index`` of ``name`` inside
        execution ``parent``."""
        return self._write(thread_id, seq, parent, TASK_PREFIX + name, index, value,
                           "the result of task {!r}", name, checkpoint_ns)

    def task_call(self, thread_id: str, run_id: str, seq: int, parent: str, name: str,
                  index: int, args: Any, value: Any) -> tuple[WriteRecord, bytes, bytes]:
        """A recorded ``@task`` call ``index`` of ``name`` inside execution ``parent``: its
        pending write, and its execution record's encoded inputs and outputs.

        Raises:
            SerializationError: the arguments or the result cannot be stored.
        """
        arguments = "the arguments of task {!r}"
        write = self.task_write(thread_id, seq, parent, name, index, value)
        if not self.bind:
            return write, self._plain(args, arguments, name), write.data
        eid = task_execution_id(parent, name, index)
        return (
            write,
            self._sealed(args, execution_location(self.namespace, thread_id, run_id, eid,
                                                  "inputs"), arguments, name),
            self._sealed(value, execution_location(self.namespace, thread_id, run_id, eid,
                                                   "outputs"), "the result of task {!r}", name),
        )

    # -- run and execution records --------------------------------------------------------

    def encode_run(self, record: RunRecord, field: str, value: Any) -> bytes:
        """``value`` encoded as the run record's ``field`` (``"input"`` or ``"output"``).

        Raises:
            SerializationError: the value cannot be stored (the message names the field).
        """
        if self.bind:
            return self._sealed(value, run_location(record.namespace, record.thread_id,
                                                    record.run_id, field), "the run's {}", field)
        return self._plain(value, "the run's {}", field)

    def decode_run(self, record: RunRecord, field: str) -> Any:
        """The run record's ``field`` (``"input"`` or ``"output"``), decoded (``None`` if
        unset)."""
        data: bytes | None = getattr(record, field)
        if data is None:
            return None
        if self.bind:
            return self._open(data, run_location(record.namespace, record.thread_id,
                                                 record.run_id, field))
        return self.serde.loads(data)

    def encode_execution(self, value: Any, thread_id: str, run_id: str, execution_id: str,
                         field: str, node: str) -> bytes:
        """``value`` encoded as ``field`` (``"inputs"`` or ``"outputs"``) of the record of
        execution ``execution_id`` (of ``node``) of run ``run_id``.

        Raises:
            SerializationError: the value cannot be stored (the message names the node).
        """
        if self.bind:
            return self._sealed(value, execution_location(self.namespace, thread_id, run_id,
                                                          execution_id, field),
                                "the {} of node {!r}", field, node)
        return self._plain(value, "the {} of node {!r}", field, node)

    def decode_execution(self, record: ExecutionRecord, field: str) -> Any:
        """The execution record's ``field`` (``"inputs"`` or ``"outputs"``), decoded."""
        data: bytes | None = getattr(record, field)
        if data is None:
            return None
        if self.bind:
            return self._open(data, execution_location(record.namespace, record.thread_id,
                                                       record.run_id, record.id, field))
        return self.serde.loads(data)


class _Several(list[Any]):
    """Updates of one node that ran several times in a step (through ``Send``)."""


class StepIds(dict[tuple[str, int], str]):
    """Execution ids of the tasks of the step that starts at checkpoint ``seq``, computed
    on first use: ``ids[(name, push)]``."""

    __slots__ = ("thread_id", "seq")

    def __init__(self, thread_id: str, seq: int) -> None:
        super().__init__()
        self.thread_id = thread_id
        self.seq = seq

    def __missing__(self, key: tuple[str, int]) -> str:
        value = self[key] = execution_id(self.thread_id, self.seq, key[0], key[1])
        return value


class _Handle:
    """A run's view of the writer: how many of its commits were submitted and written, and
    its error."""

    __slots__ = ("submitted", "written", "error", "changed")

    def __init__(self, lock: threading.Lock) -> None:
        self.submitted = 0
        self.written = 0
        self.error: BaseException | None = None
        # the run's own wake-up, on the writer's lock: a commit wakes the runs it wrote,
        # not every run waiting on the writer
        self.changed = threading.Condition(lock)

    @property
    def pending(self) -> int:
        return self.submitted - self.written


_WRITER_IDLE_SECONDS = 2.0
FLUSH_SECONDS = 0.1
"""The longest a commit of ``async`` durability waits to be flushed (made durable against the
machine or the database server crashing, not only the process): the writer flushes the next
transaction once this much time has passed since it last flushed one."""


class Writer:
    """The single background writer of ``async`` durability.

    Commits are applied in submission order. Whatever is queued while a transaction is being
    committed is folded into the next transaction, so a fast graph pays for one commit per
    batch of steps rather than one per step. If a batch fails, its commits are retried one
    by one so that one run's failure (a lost lease, say) does not fail another's.

    A transaction is flushed (:attr:`Commit.flush <threadloom.checkpoint.base.Commit.flush>`)
    when one of its commits asks for it, or when :data:`FLUSH_SECONDS` have passed since the
    writer last flushed one; each flush makes every earlier transaction durable too.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: deque[tuple[_Handle, Commit]] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the writer thread's own wake-up
        self._thread: threading.Thread | None = None
        self._closed = False
        self._flushed_at = time.monotonic()

    def handle(self) -> _Handle:
        """A new handle for one run."""
        return _Handle(self._lock)

    def submit(self, handle: _Handle, commit: Commit) -> None:
        """Queue a commit; raises the run's earlier write error, if any."""
        if handle.error is not None:
            raise handle.error
        with self._cond:
            handle.submitted += 1
            self._queue.append((handle, commit))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="threadloom-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def flush(self, handle: _Handle) -> None:
        """Wait until every commit of the run is written; raise its write error, if any."""
        self.wait_for(handle, handle.submitted)

    def wait_for(self, handle: _Handle, count: int) -> None:
        """Wait until the run's first ``count`` commits are written; raise its write error,
        if any."""
        if handle.written < count:
            with self._lock:
                while handle.written < count and handle.error is None:
                    handle.changed.wait()
        if handle.error is not None:
            raise handle.error

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(_WRITER_IDLE_SECONDS)
                if not self._queue:
                    self._thread = None  # idle or closed: end; submit() starts a new one
                    return
                batch = list(self._queue)
                self._queue.clear()
            self._write(batch)
            with self._lock:
                for handle, _ in batch:
                    handle.written += 1
                for handle in {id(h): h for h, _ in batch}.values():
                    handle.changed.notify_all()

    def _write(self, batch: list[tuple[_Handle, Commit]]) -> None:
        live = [(h, c) for h, c in batch if h.error is None]
        if not live:
            return
        fault("before_writer_commit")
        commits = [c for _, c in live]
        now = time.monotonic()
        if now - self._flushed_at >= FLUSH_SECONDS and not any(c.flush for c in commits):
            commits[-1] = replace(commits[-1], flush=True)
        try:
            self._store.commit(commits)
            _metrics.committed(commits)
            if any(c.flush for c in commits):
                self._flushed_at = now
            return
        except BaseException:
            if len(live) == 1:
                live[0][0].error = _current_exception()
                return
        for handle, commit in live:
            if handle.error is not None:
                continue
            try:
                self._store.commit([commit])
            except BaseException as exc:
                handle.error = exc
                continue
            _metrics.committed((commit,))

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()


def _current_exception() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc
