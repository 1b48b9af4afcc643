"""What a compiled graph with a checkpointer can answer and change about its threads and
runs: state snapshots and history, ``update_state``, run and execution records, ``resume``.
Mixed into :class:`~threadloom.graph.compiled.CompiledGraph`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from threadloom.checkpoint.base import (
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    RunRecord,
    Store,
    format_checkpoint_id,
    parse_checkpoint_id,
    pending_audit,
)
from threadloom.config import (
    DEFAULT_NAMESPACE,
    resolve_identity,
    resolve_namespace,
    validate_namespace,
)
from threadloom.engine._algo import (
    Frontier,
    PlannedTask,
    TaskResult,
    advance,
    apply_writes,
    extract_update,
    fresh_values,
    plan_tasks,
    route,
    settle_deferred,
)
from threadloom.engine._owner import acquire as acquire_lease
from threadloom.engine._persist import Codec, Loaded, execution_id
from threadloom.engine._recording import superseded_run
from threadloom.engine._spec import END, START
from threadloom.errors import InvalidConfigError, InvalidUpdateError, RunNotFoundError
from threadloom.types import (
    Command,
    ExecutionInfo,
    RunInfo,
    RunnableConfig,
    StateSnapshot,
    StateTask,
)

if TYPE_CHECKING:
    from threadloom.engine._spec import GraphSpec

__all__ = ["ThreadsMixin"]


def _namespace(namespace: str) -> str:
    """``namespace``, checked (see :func:`~threadloom.config.validate_namespace`)."""
    return namespace if namespace == DEFAULT_NAMESPACE else validate_namespace(namespace)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def config_checkpoint(config: Any) -> int | None:
    """The checkpoint number a config addresses: its ``checkpoint_id`` (top level or in
    ``configurable``), in the root graph.

    Raises:
        InvalidConfigError: a malformed ``checkpoint_id``, or a ``checkpoint_ns`` naming a
            subgraph: a subgraph's checkpoints are reached through its parent's thread
            (``get_state(config, subgraphs=True)`` shows them), not addressed directly.
    """
    cfg: dict[str, Any] = dict(config or {})
    configurable = cfg.get("configurable") or {}
    ns = configurable.get("checkpoint_ns") or cfg.get("checkpoint_ns")
    if ns:
        raise InvalidConfigError(
            f"checkpoint_ns {ns!r} names a subgraph; a subgraph's checkpoints cannot be read "
            "or written through its own config: use the parent's config (and "
            "get_state(config, subgraphs=True) to see the subgraph's state)"
        )
    return checkpoint_seq(configurable.get("checkpoint_id") or cfg.get("checkpoint_id"))


def checkpoint_seq(raw: Any) -> int | None:
    """The checkpoint number a config's ``checkpoint_id`` names (``None`` when it names none).

    Raises:
        InvalidConfigError: it is not an id threadloom makes (16 lowercase hex digits of a
            number below 2**63).
    """
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) != 16 or raw.strip(_HEX) or raw[0] > "7":
        raise InvalidConfigError(
            f"not a checkpoint id: {raw!r} (threadloom's are 16 lowercase hex digits, as in "
            "a StateSnapshot's config)"
        )
    return parse_checkpoint_id(raw)


_HEX = "0123456789abcdef"
_log = logging.getLogger("threadloom.graph")


def _warn_unknown_keys(values: Any, spec: GraphSpec, thread_id: str) -> None:
    """``update_state`` drops keys the state has no channel for, as LangGraph does; it says
    so in the log, since a misspelt key otherwise vanishes without a trace."""
    update = values.update if isinstance(values, Command) else values
    if not isinstance(update, dict):
        return
    unknown = [k for k in update if k not in spec.channels]
    if unknown:
        _log.warning(
            "update_state on thread %r ignored keys the state does not have: %s",
            thread_id, ", ".join(repr(k) for k in unknown),
        )


def _thread_config(thread_id: str, seq: int, namespace: str = DEFAULT_NAMESPACE,
                   checkpoint_ns: str = "") -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns,
                                    "checkpoint_id": format_checkpoint_id(seq)}
    if namespace != DEFAULT_NAMESPACE:  # a config without one addresses "default"
        configurable["namespace"] = namespace
    return {"configurable": configurable}


class ThreadsMixin:
    """Thread and run queries (needs ``self.spec`` and a checkpointer)."""

    __slots__ = ()

    spec: GraphSpec
    name: str
    lease_ttl: float

    if TYPE_CHECKING:  # provided by CompiledGraph, which mixes this in

        def _durable(self, namespace: str = DEFAULT_NAMESPACE) -> tuple[Store, Codec]: ...

        def _run_durable(self, input: Any, config: RunnableConfig | None) -> Any: ...

    # -- addressing -----------------------------------------------------------------------

    @staticmethod
    def _address(config: RunnableConfig | None) -> tuple[str, int | None]:
        identity = resolve_identity(config or {})
        if identity.thread_id is None:
            raise InvalidConfigError(
                "this call needs a thread_id in the config, e.g. {'thread_id': 'user-1'}"
            )
        return identity.thread_id, config_checkpoint(config)

    def _durable_for(self, config: RunnableConfig | None) -> tuple[Store, Codec]:
        """The store and the codec of the namespace ``config`` names."""
        return self._durable(resolve_namespace(config))

    # -- state ----------------------------------------------------------------------------

    def get_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> StateSnapshot:
        """The thread's state at its latest checkpoint (or at ``checkpoint_id``).

        Raises:
            InvalidConfigError: no ``thread_id``, or a malformed ``checkpoint_id``.
            CheckpointNotFoundError: ``checkpoint_id`` names no checkpoint of the thread.
        """
        store, codec = self._durable_for(config)
        thread_id, seq = self._address(config)
        loaded = codec.load(store, thread_id, seq)
        return self._snapshot(thread_id, loaded, config,
                              (store, codec) if subgraphs else None, codec.namespace)

    def _snapshot(self, thread_id: str, loaded: Loaded, config: RunnableConfig,
                  subgraphs: tuple[Store, Codec] | None = None,
                  namespace: str = DEFAULT_NAMESPACE) -> StateSnapshot:
        record = loaded.record
        if record is None:
            return StateSnapshot({}, (), config, None, None, None, (), ())
        spec = self.spec
        # a reducer channel no node wrote shows its empty value, as in invoke's output
        stored = loaded.values
        values = {
            k: stored[k] if k in stored else ch.initial()  # type: ignore[misc]
            for k, ch in spec.channels.items() if k in stored or ch.initial is not None
        }
        pending = loaded.pending_interrupts()
        tasks: list[StateTask] = []
        for task in plan_tasks(spec, loaded.frontier):
            task_id = execution_id(thread_id, record.seq, task.name, task.push)
            result = loaded.results.get(task_id)
            tasks.append(StateTask(
                id=task_id, name=task.name,
                path=("send", task.push) if task.push >= 0 else ("edge", task.name),
                error=loaded.errors.get(task_id),
                interrupts=(pending[task_id],) if task_id in pending else (),
                result=dict(result[0]) if result is not None else None,
                state=(self._subgraph_state(subgraphs, thread_id, task.node.subgraph,
                                            task.name, task_id)
                       if subgraphs is not None and task.node.subgraph is not None else None),
            ))
        metadata = dict(loaded.metadata)
        return StateSnapshot(
            values=values,
            next=record.next,
            config=_thread_config(thread_id, record.seq, namespace),
            metadata=metadata,
            created_at=_iso(record.created_at),
            parent_config=(
                _thread_config(thread_id, record.parent_seq, namespace)
                if record.parent_seq is not None else None
            ),
            tasks=tuple(tasks),
            interrupts=tuple(pending.values()),
        )

    @staticmethod
    def _subgraph_state(where: tuple[Store, Codec], thread_id: str, subgraph: Any, node: str,
                        task_id: str) -> StateSnapshot | None:
        """The state of the subgraph run by execution ``task_id`` of ``node``: its latest
        checkpoint in that execution's namespace of the parent's thread
        (:mod:`threadloom.engine._nested`), or ``None`` when it has none."""
        from threadloom.engine._nested import subgraph_namespace, thread_key

        store, codec = where
        ns = subgraph_namespace(node, task_id)
        # the subgraph's checkpoints are in the parent's namespace, bound to it
        namespace = codec.namespace
        loaded = Codec(subgraph.spec, codec.serde, namespace).load(store, thread_id, None, ns)
        record = loaded.record
        if record is None:
            return None
        snap: StateSnapshot = subgraph._snapshot(thread_key(thread_id, ns), loaded, {},
                                                 namespace=namespace)

        def address(seq: int) -> RunnableConfig:
            return _thread_config(thread_id, seq, namespace, ns)

        return snap._replace(
            config=address(record.seq),
            parent_config=address(record.parent_seq) if record.parent_seq is not None
            else None,
        )

    def get_state_history(
        self,
        config: RunnableConfig,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[StateSnapshot]:
        """The thread's checkpoints, newest first, as snapshots.

        Args:
            config: addresses the thread.
            filter: match metadata, e.g. ``{"source": "loop"}`` or ``{"run_id": ...}``.
            before: only checkpoints older than this config's ``checkpoint_id``.
            limit: at most this many.
        """
        store, codec = self._durable_for(config)
        thread_id, _ = self._address(config)
        before_seq = self._address(before)[1] if before is not None else None
        filter = dict(filter or {})
        run_id = filter.pop("run_id", None)
        source = filter.pop("source", None)
        records = store.list_checkpoints(thread_id, "", before=before_seq, run_id=run_id,
                                         source=source, limit=None if filter else limit,
                                         namespace=codec.namespace)
        count = 0
        decoded = codec.decode_many(store, records)
        for record in records:
            values, chains = decoded[record.seq]
            loaded = Loaded(record, values, codec.decode_frontier(record), chains,
                            codec.decode_metadata(record.metadata, record))
            if any(loaded.metadata.get(k) != v for k, v in filter.items()):
                continue
            codec._load_writes(store, loaded)
            yield self._snapshot(thread_id, loaded, config, namespace=codec.namespace)
            count += 1
            if limit is not None and count >= limit:
                return

    def update_state(
        self, config: RunnableConfig, values: Any, as_node: str | None = None
    ) -> RunnableConfig:
        """Apply ``values`` to the thread as if node ``as_node`` had returned them, and
        record a new checkpoint (source ``"update"``); with a ``checkpoint_id`` the update
        forks from that checkpoint. The next nodes are those ``as_node`` leads to.

        Returns:
            The config of the new checkpoint.

        Raises:
            InvalidUpdateError: ``as_node`` is unknown, or cannot be inferred because the
                last step ran several nodes.
        """
        store, codec = self._durable_for(config)
        ns = codec.namespace
        thread_id, seq = self._address(config)
        # like a run: a dead local holder is taken over at once, a live one is ThreadBusyError
        lease = acquire_lease(store, thread_id, "update_state", self.lease_ttl, wait=False,
                              namespace=ns)
        try:
            loaded = codec.load(store, thread_id, seq)
            head = store.get_checkpoint(thread_id, "", namespace=ns)
            head_seq = head.seq if head is not None else None
            node = self._update_source(loaded, as_node)
            spec = self.spec
            state = {**{k: ch.initial() for k, ch in spec.channels.items()
                        if ch.initial is not None}, **loaded.values}
            writes, goto = extract_update(spec.channels, values, node)
            _warn_unknown_keys(values, spec, thread_id)
            if node == START:
                task = PlannedTask(START, None)  # type: ignore[arg-type]
            else:
                task = PlannedTask(node, spec.nodes[node]) if node != END else PlannedTask(
                    END, None)  # type: ignore[arg-type]
            result = TaskResult(task, writes, list(goto))
            updated = apply_writes(spec.channels, state, [result])
            frontier = self._frontier_after(node, loaded, state, writes, result)
            new_seq = (head_seq or 0) + 1
            chains = dict(loaded.chains)
            blobs = codec.encode_channels(state, updated, chains, new_seq, thread_id)
            step = loaded.step + 1
            record = CheckpointRecord(
                thread_id=thread_id, checkpoint_ns="", seq=new_seq, parent_seq=loaded.seq,
                run_id=None, step=step, source="update", created_at=time.time(),
                channels={k: (c.version, c.base) for k, c in chains.items()},
                next=frontier.names(),
                metadata=codec.encode_metadata([result], thread_id=thread_id, seq=new_seq),
                frontier=codec.encode_frontier(frontier, thread_id=thread_id, seq=new_seq),
                blobs=blobs,
            )
            # a run left 'running' by a process that died or lost the lease is over
            latest = store.list_runs(thread_id=thread_id, limit=1, namespace=ns)
            dead, stopped = superseded_run(store, thread_id, latest, record.created_at,
                                           namespace=ns)
            store.commit([Commit(thread_id, ns, lease_token=lease.token,
                                 expected_head=head_seq, checkpoint=record, runs=dead,
                                 executions=stopped, audit=pending_audit())])
        finally:
            store.release_lease(lease)
        return _thread_config(thread_id, new_seq, ns)

    def _update_source(self, loaded: Loaded, as_node: str | None) -> str:
        if as_node is not None:
            if as_node not in self.spec.nodes and as_node not in (START, END):
                raise InvalidUpdateError(f"update_state: unknown node {as_node!r}")
            return as_node
        if loaded.record is None:
            return START
        nodes = list(loaded.metadata.get("writes") or ())
        if not nodes:
            return START
        if len(nodes) > 1:
            raise InvalidUpdateError(
                f"update_state: the last step ran {nodes}; say which with as_node=..."
            )
        return str(nodes[0])

    def _frontier_after(self, node: str, loaded: Loaded, state: dict[str, Any],
                        writes: list[Any], result: TaskResult) -> Frontier:
        spec = self.spec
        if node == END:
            return Frontier(barriers=loaded.frontier.barriers)
        if node == START:
            triggered: dict[str, None] = dict.fromkeys(spec.start_next)
            sends = []
            for branch in spec.start_branches:
                view = state if branch.coerce is None else branch.coerce(dict(state))
                for target in route(branch, branch.path(view, {}), spec.nodes, START):
                    if isinstance(target, str):
                        triggered[target] = None
                    else:
                        sends.append(target)
            return settle_deferred(spec, triggered, sends, dict(loaded.frontier.barriers),
                                   loaded.frontier.deferred)
        spec_node = spec.nodes[node]
        if spec_node.branches:
            fresh = fresh_values(spec.channels, loaded.values, writes)
            for branch in spec_node.branches:
                view = fresh if branch.coerce is None else branch.coerce(fresh)
                result.goto += route(branch, branch.path(view, {}), spec.nodes, node)
        waiting = Frontier(barriers=dict(loaded.frontier.barriers),
                           deferred=list(loaded.frontier.deferred))
        return advance(spec, waiting, [result])

    # -- runs -----------------------------------------------------------------------------

    def get_run(self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> RunInfo | None:
        """The run recorded under ``run_id`` in ``namespace`` (status, input, output, error,
        counts)."""
        store, codec = self._durable(_namespace(namespace))
        record = store.get_run(run_id, namespace=namespace)
        return None if record is None else _run_info(record, codec)

    def list_runs(
        self,
        thread_id: str | None = None,
        status: str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> list[RunInfo]:
        """This graph's runs in ``namespace``, newest first, optionally of one thread or
        status."""
        store, codec = self._durable(_namespace(namespace))
        records = store.list_runs(thread_id=thread_id, status=status, graph=self.name,
                                  limit=limit, offset=offset, namespace=namespace)
        return [_run_info(r, codec) for r in records]

    def list_executions(
        self, run_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[ExecutionInfo]:
        """Every node execution of a run (of ``namespace``), in execution order."""
        store, codec = self._durable(_namespace(namespace))
        return [_execution_info(e, codec)
                for e in store.list_executions(run_id=run_id, namespace=namespace)]

    def resume(self, run_id: str, value: Any = None, *,
               config: RunnableConfig | None = None,
               namespace: str | None = None) -> Any:
        """Continue run ``run_id`` from its last checkpoint (seed 000's
        ``graph.resume(run_id=...)``); ``value`` answers its pending ``interrupt()``.

        Works in the very next process after a crash: a lease left by a process of this host
        that is gone is taken over at once. A lease held by a live process, or by one on
        another host (which this process cannot check), is waited for: up to the graph's
        ``lease_ttl`` seconds, unless ``config`` gives ``wait`` itself.

        Returns:
            The run's output (the recorded one if it already succeeded).

        ``namespace`` names the run's namespace (else ``config``'s, else ``"default"``).

        Raises:
            RunNotFoundError: no run is recorded under ``run_id`` in the namespace.
            ThreadBusyError: the thread's lease was still held when the wait ran out.
            InvalidConfigError: ``namespace`` and ``config``'s namespace disagree.
        """
        given = resolve_namespace(config)
        if namespace is None:
            namespace = given
        elif (config or {}).get("namespace") is not None or (
            (config or {}).get("configurable") or {}
        ).get("namespace") is not None:
            if given != namespace:
                raise InvalidConfigError(
                    f"namespace given twice with different values: {namespace!r} and "
                    f"{given!r} (config)"
                )
        store, _ = self._durable(_namespace(namespace))
        record = store.get_run(run_id, namespace=namespace)
        if record is None:
            suffix = f" in namespace {namespace!r}" if namespace != DEFAULT_NAMESPACE else ""
            raise RunNotFoundError(f"no run is recorded under run_id {run_id!r}{suffix}")
        merged: dict[str, Any] = {**(config or {}), "run_id": run_id,
                                  "thread_id": record.thread_id, "namespace": namespace}
        configurable = dict(merged.get("configurable") or {})
        configurable.pop("thread_id", None)
        configurable.pop("namespace", None)
        merged["configurable"] = configurable
        merged.setdefault("wait", self.lease_ttl)  # a lease elsewhere lapses within it
        return self._run_durable(None if value is None else Command(resume=value),
                                 merged)  # type: ignore[arg-type]


def _run_info(record: RunRecord, codec: Codec) -> RunInfo:
    return RunInfo(
        run_id=record.run_id, thread_id=record.thread_id, graph=record.graph,
        status=record.status, input=codec.decode_run(record, "input"),
        output=codec.decode_run(record, "output"),
        error=record.error, durability=record.durability, created_at=record.created_at,
        updated_at=record.updated_at, started_at=record.started_at, ended_at=record.ended_at,
        steps=record.steps, executions=record.executions, resumed_from=record.resumed_from,
        namespace=record.namespace, metadata=dict(record.metadata),
    )


def _execution_info(record: ExecutionRecord, codec: Codec) -> ExecutionInfo:
    return ExecutionInfo(
        id=record.id, run_id=record.run_id, thread_id=record.thread_id, graph=record.graph,
        node=record.node, step=record.step, status=record.status, attempt=record.attempt,
        inputs=codec.decode_execution(record, "inputs"),
        outputs=codec.decode_execution(record, "outputs"),
        error=record.error, attempts=record.attempts, parents=tuple(record.parents),
        checkpoint_id=(format_checkpoint_id(record.checkpoint_seq)
                       if record.checkpoint_seq is not None else None),
        created_at=record.created_at, started_at=record.started_at,
        ended_at=record.ended_at, namespace=record.namespace,
    )
