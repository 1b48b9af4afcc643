"""Subgraph checkpoints: a compiled graph running as a node of a durable run keeps its own
checkpoints in the parent's thread, so that an interrupted (or failed) subgraph continues
inside itself when the parent resumes, instead of starting over.

A subgraph node's checkpoints live under the namespace ``"<node>:<execution id>"`` of the
parent's thread (the execution id is the parent's, stable on replay), in the parent's store,
and are committed under the parent's lease token: the subgraph takes no lease of its own and
a fenced-out parent cannot write them either. They are written per step in ``sync`` and
``async`` durability (``async``: queued behind the parent's own commits), and only when the
subgraph pauses or fails in ``exit`` durability.

When the parent replays the node (it resumed after an interrupt, a failure or a crash), the
subgraph loads its latest checkpoint and continues from there: nodes that finished before
the interrupt do not run again, and the node that called ``interrupt()`` receives the resume
value. A retry of the node within one invocation (its ``RetryPolicy``) starts the subgraph
over, as LangGraph does (the node's execution remembers that it has run the subgraph). As in
LangGraph, the namespace's checkpoints are kept after the parent's step completes (the next
execution of the node gets a new namespace, so they are never read again by a run; they
show the subgraph's history and go with the thread's retention).

An interrupt inside the subgraph pauses the parent: the parent node raises a
``GraphInterrupt`` whose interrupt id is the parent execution's, so ``Command(resume=...)``
and ``Command(resume={id: value})`` address it like any interrupt of the parent.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from threadloom import _metrics
from threadloom._context import interrupt_id
from threadloom._ids import interrupt_task
from threadloom.checkpoint.base import ANY_HEAD, CheckpointRecord, Commit, WriteRecord
from threadloom.engine._algo import PlannedTask, TaskResult, plan_tasks, with_recorded
from threadloom.engine._loop import Run, RunContext, _input_writes
from threadloom.engine._persist import (
    INTERRUPT,
    RESUME,
    Chain,
    Codec,
    Loaded,
    StepIds,
)
from threadloom.engine._runner import StepOutcome
from threadloom.engine._tasks import TaskCalls, TaskRecorder
from threadloom.errors import GraphInterrupt
from threadloom.types import Interrupt

if TYPE_CHECKING:
    from threadloom._context import TaskScope
    from threadloom.engine._durable import DurableRun

__all__ = ["NestedContext", "NestedRecorder", "NestedRun", "nested_interrupt",
           "subgraph_namespace", "thread_key"]

STARTED = "threadloom.subgraph_head"
"""Key in the parent node's task scope: the subgraph has run in this execution (a retry
starts it over), with its namespace's latest checkpoint."""

PARENT_RESUME = "__parent__"
"""Task id of the ``RESUME`` write that says how many of the parent node's resume values the
subgraph had used when it paused (later ones answer its pending interrupts)."""


def subgraph_namespace(node: str, task_id: str, outer: str = "") -> str:
    """The checkpoint namespace of a subgraph run by execution ``task_id`` of ``node`` (of a
    subgraph whose namespace is ``outer``, for a subgraph in a subgraph)."""
    return f"{outer}|{node}:{task_id}" if outer else f"{node}:{task_id}"


def thread_key(thread_id: str, ns: str) -> str:
    """What a subgraph's execution ids are derived from (unique per thread and namespace)."""
    return f"{thread_id}\x00{ns}"


def nested_interrupt(interrupts: list[Interrupt], parent_task_id: str,
                     used: int) -> GraphInterrupt:
    """The parent node's pause for interrupts raised inside its subgraph: addressed with the
    parent execution's interrupt id, at the index of the next resume value it will take."""
    iid = interrupt_id(parent_task_id, used)
    return GraphInterrupt([Interrupt(i.value, iid) for i in interrupts], used)


class NestedContext(RunContext):
    """Run context of a subgraph with checkpoints: stable execution ids and resume values
    from its namespace."""

    __slots__ = ("run",)
    run: NestedRun

    def task_id(self, task: PlannedTask) -> str:
        return str(self.run.ids[(task.name, task.push)])

    def resume_for(self, task_id: str) -> list[Any] | None:
        values = self.run.resume.get(task_id)
        return list(values) if values else None

    def task_calls(self, scope: Any) -> TaskCalls:
        return TaskCalls(NestedRecorder(self.run, scope.task_id))


class NestedRecorder(TaskRecorder):
    """Looks up and records the ``@task`` calls of one execution inside a subgraph, as
    pending writes in the subgraph's namespace (so a replayed node gets them back)."""

    def __init__(self, run: NestedRun, task_id: str) -> None:
        self.run = run
        self.task_id = task_id

    def recorded(self, name: str, index: int) -> tuple[bool, Any]:
        write = self.run.task_results.get((self.task_id, name, index))
        if write is None:
            return False, None
        return True, self.run.codec.decode_write(write)

    def record(self, name: str, index: int, args: tuple[Any, ...], value: Any,
               attempts: list[tuple[int, float, float, str]]) -> None:
        run = self.run
        seq = run.head if run.head is not None else -1
        write = run.codec.task_write(run.thread_id, seq, self.task_id, name, index, value, run.ns)
        if run.root.durability == "exit":
            with run.root.lock:
                run.task_writes.append(write)
        else:  # recorded before the caller sees the result, as a node's task calls are
            commit = Commit(run.thread_id, run.root.p.namespace, run.token, writes=[write],
                            flush=run.root.durability == "sync")
            run.store.commit([commit])
            run.root.stats.wrote(commit)
            _metrics.committed((commit,))

    def pool(self) -> concurrent.futures.Executor | None:
        return self.run.ctx.task_pool()


class NestedRun(Run):
    """A subgraph run that checkpoints into the parent's thread (see the module docstring)."""

    __slots__ = ("root", "parent", "parent_task", "extras", "codec", "store", "thread_id", "ns",
                 "head", "chains", "ids", "recorded", "resume", "parent_resume", "token",
                 "dirty", "stored_head", "task_results", "task_writes")
    root: DurableRun

    def __init__(self, ctx: NestedContext, limit: int, parent: DurableRun | NestedRun,
                 scope: TaskScope,
                 codec: Codec, ns: str,
                 interrupt_before: frozenset[str] = frozenset(),
                 interrupt_after: frozenset[str] = frozenset()) -> None:
        super().__init__(ctx, limit, interrupt_before, interrupt_after)
        ctx.run = self
        self.parent = parent
        self.root = parent.root if isinstance(parent, NestedRun) else parent
        root = self.root
        self.parent_task = scope.task_id
        self.extras = scope.extras  # lives as long as the node's execution, retries included
        self.codec = codec
        self.store = root.store
        self.thread_id = root.thread_id
        self.ns = ns
        self.head: int | None = None  # the namespace's latest checkpoint (in memory)
        self.stored_head: int | None = None  # ... and in the store (exit: lags behind)
        self.chains: dict[str, Chain] = {}
        self.ids = StepIds(thread_key(self.thread_id, ns), -1)
        self.recorded: dict[str, tuple[list[Any], list[Any]]] = {}
        self.resume: dict[str, list[Any]] = {}
        self.parent_resume = list(scope.resume)
        self.token = root._token()
        self.dirty: set[str] = set()
        self.task_results: dict[tuple[str, str, int], WriteRecord] = {}
        self.task_writes: list[WriteRecord] = []  # exit: written if the subgraph pauses

    # -- begin ----------------------------------------------------------------------------

    def begin(self, input: Any) -> bool:
        if STARTED not in self.extras:
            loaded = self.codec.load(self.store, self.thread_id, None, self.ns)
            record = loaded.record
            self.head = self.stored_head = record.seq if record is not None else None
            self.extras[STARTED] = self.head
            if record is not None:  # an earlier invocation's: go on from there
                self._install(loaded)
                return bool(self.frontier)
        else:  # the node's retry within this invocation: start over, as LangGraph does
            self.head = self.stored_head = self.extras[STARTED]
        self.ctx.step = 0
        updated = self.apply_input(_input_writes(self.spec, input))
        self.frontier = self.start_frontier()
        self._checkpoint(updated, "input", [], 0)
        self.ctx.step = 1
        return True

    def _install(self, loaded: Loaded) -> None:
        self.values = {**self.values, **loaded.values}
        self.chains = loaded.chains
        self.frontier = loaded.frontier
        self.ctx.step = loaded.step + 1
        if self._output_keys & loaded.values.keys():
            self.has_output = True
        self._plan_ids()
        self.recorded = dict(loaded.results)
        self.task_results = dict(loaded.task_results)
        self.skip_breakpoint = True
        resume = {k: list(v) for k, v in loaded.resume.items() if k != PARENT_RESUME}
        used = loaded.resume.get(PARENT_RESUME, [0])[0]
        fresh = list(self.parent_resume[used:])
        pending = loaded.pending_interrupts()
        order = [self.ids[(t.name, t.push)] for t in plan_tasks(self.spec, self.frontier)]
        for task_id in sorted(pending, key=lambda t: order.index(t) if t in order else 0):
            if not fresh:
                break
            resume.setdefault(task_id, []).append(fresh.pop(0))
        self.resume = resume

    def _plan_ids(self) -> None:
        self.ids = StepIds(thread_key(self.thread_id, self.ns),
                           self.head if self.head is not None else -1)

    # -- steps ----------------------------------------------------------------------------

    def next_tasks(self) -> list[PlannedTask] | None:
        tasks = super().next_tasks()
        if tasks is not None and self.recorded:
            tasks = [t for t in tasks if self.ids[(t.name, t.push)] not in self.recorded]
        return tasks

    def finish_step(self, outcome: StepOutcome) -> None:
        if outcome.error is not None or outcome.interrupts:
            self._record_partial(outcome)
            super().finish_step(outcome)
            return
        results = with_recorded(self.spec, self.frontier, self.ids, self.recorded,
                                outcome.results)
        self.recorded = {}
        self.resume = {}
        self.task_results = {}
        self.task_writes = []
        step = self.ctx.step
        updated = self.merge(results)
        if self.interrupt_after and any(r.task.name in self.interrupt_after
                                        for r in results):
            self.paused = True
        self._checkpoint(updated, "loop", results, step)

    # -- persistence ----------------------------------------------------------------------

    def _checkpoint(self, updated: set[str], source: str, results: list[TaskResult],
                    step: int) -> None:
        seq = (self.head if self.head is not None else 0) + 1
        parent_seq = self.head
        self.head = seq
        self.dirty |= updated
        if self.root.durability != "exit":
            self._commit(self._record(seq, parent_seq, source, step))
        self._plan_ids()

    def _record(self, seq: int, parent_seq: int | None, source: str,
                step: int) -> CheckpointRecord:
        codec = self.codec
        blobs = codec.encode_channels(self.values, self.dirty, self.chains, seq, self.thread_id,
                                      self.ns)
        self.dirty = set()
        parents: dict[str, int | None] = {"": self.root.parent_seq}
        if isinstance(self.parent, NestedRun):
            parents[self.parent.ns] = self.parent.head
        meta = {"parents": parents}
        return CheckpointRecord(
            thread_id=self.thread_id, checkpoint_ns=self.ns, seq=seq, parent_seq=parent_seq,
            run_id=self.root.ctx.run_id, step=step, source=source, created_at=time.time(),
            channels={k: (c.version, c.base) for k, c in self.chains.items()},
            next=self.frontier.names(),
            metadata=codec.encode_subgraph_metadata(meta, thread_id=self.thread_id, seq=seq,
                                                    checkpoint_ns=self.ns),
            frontier=codec.encode_frontier(self.frontier, thread_id=self.thread_id, seq=seq,
                                           checkpoint_ns=self.ns),
            blobs=blobs,
        )

    def _commit(self, record: CheckpointRecord | None,
                writes: Sequence[WriteRecord] = ()) -> None:
        root = self.root
        commit = Commit(self.thread_id, root.p.namespace, self.token,
                        self.stored_head if record is not None else ANY_HEAD,
                        record, writes=list(writes), flush=root.handle is None)
        if root.durability == "exit":
            self.store.commit([commit])
            root.stats.wrote(commit)
            _metrics.committed((commit,))
        else:
            root._persist(commit)
        if record is not None:
            self.stored_head = self.extras[STARTED] = record.seq

    def _record_partial(self, outcome: StepOutcome) -> None:
        """Persist what a failed or interrupted step completed, its interrupts and the resume
        values used, so that the parent's replay continues here."""
        if self.root.durability == "exit" and self.stored_head != self.head:
            # exit: the checkpoint the step started from was kept in memory until now
            assert self.head is not None
            self.ctx.step -= 1
            record = self._record(self.head, self.stored_head, "exit", self.ctx.step)
            self.ctx.step += 1
            self._commit(record)
        seq = self.head if self.head is not None else -1
        codec = self.codec
        writes: list[WriteRecord] = list(self.task_writes)
        self.task_writes = []

        def special(task_id: str, channel: str, value: Any) -> WriteRecord:
            return codec.special_write(self.thread_id, seq, task_id, channel, value,
                                       checkpoint_ns=self.ns)

        for result in outcome.results:
            task_id = self.ids[(result.task.name, result.task.push)]
            writes.append(codec.result_write(self.thread_id, seq, task_id, result, self.ns))
        for signal in outcome.interrupts:
            assert isinstance(signal, GraphInterrupt)
            for item in signal.interrupts:
                task_id = interrupt_task(item.id, self.ids.values(), signal.index)
                writes.append(special(task_id, INTERRUPT, [item.value, item.id, signal.index]))
        for task_id, values in self.resume.items():
            writes.append(special(task_id, RESUME, values))
        writes.append(special(PARENT_RESUME, RESUME, [len(self.parent_resume)]))
        self._commit(None, writes)

    def complete(self) -> Any:
        if self.interrupts:
            raise nested_interrupt(self.interrupts, self.parent_task, len(self.parent_resume))
        return super().complete()

