"""A run persisted to a store: leases, checkpoints, run and execution records, replay.

:class:`DurableRun` overrides the hooks of :class:`~threadloom.engine._loop.Run`:

* ``begin`` takes the thread's lease, loads the checkpoint to continue from, decides whether
  this is a new run, a resume of an unfinished one, or a fork, and records the run;
* ``next_tasks`` skips tasks whose results the interrupted or failed step already recorded;
* ``finish_step`` persists each step per the durability mode: ``sync`` commits the step's
  writes, checkpoint, execution records and the run's counters in one transaction before the
  next step; ``async`` queues the same commit to the background writer; ``exit`` keeps it all
  in memory until the run ends;
* ``abort`` / ``complete`` record how the run ended and release the lease.

The commit that schedules a step (the one whose checkpoint lists its tasks as ``next``) also
records those tasks' executions: ``RUNNING`` when the step follows at once, ``PENDING`` when
the run pauses before it. So a node's record exists while it runs, at no extra transaction.
A run that takes a thread over from a run still recorded as ``running`` (whose process died,
or lost its lease) records that run as failed in its own first commit.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import TYPE_CHECKING, Any

from threadloom import _metrics
from threadloom._faults import fault
from threadloom.checkpoint.base import (
    Attempt,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    Lease,
    RunProgress,
    RunRecord,
    WriteRecord,
)
from threadloom.engine._algo import PlannedTask, TaskResult, with_recorded
from threadloom.engine._loop import Run, _hits, _input_writes
from threadloom.engine._owner import acquire as acquire_lease
from threadloom.engine._persist import (
    RESUME,
    Chain,
    Loaded,
    StepIds,
)
from threadloom.engine._recording import (
    Persistence,
    error_text,
    finished_execution,
    record_partial,
    scheduled_executions,
    superseded_run,
    unfinished_executions,
)
from threadloom.engine._runner import StepOutcome
from threadloom.engine._stats import RunStats
from threadloom.errors import (
    EmptyInputError,
    InvalidConfigError,
    RunCancelled,
    RunConflictError,
    ThreadloomError,
)
from threadloom.types import Command, Durability

if TYPE_CHECKING:
    from threadloom.engine._durable_context import DurableContext

__all__ = ["DurableRun"]

_UNFINISHED = ("pending", "running", "failed", "cancelled")
ERROR_CODE_KEY = "threadloom.error_code"  # in run metadata: the code of an engine error


class DurableRun(Run):
    """A run that persists as it goes (see the module docstring)."""

    __slots__ = (
        "p", "codec", "store", "thread_id", "durability", "lease", "run_record", "head",
        "parent_seq", "chains", "ids", "loaded_resume", "recorded", "attempts", "lock",
        "handle", "pending_execs", "fork_from", "resuming", "task_times",
        "exit_writes", "dirty", "stored_head", "_wait", "last_results",
        "prev_mark", "replay_until", "parallel", "noop", "parents", "run_written",
        "finalized", "final_output", "replayed", "early", "scheduled", "_latest_run",
        "_loaded_task_results", "stats",
    )

    def __init__(self, ctx: DurableContext, limit: int, persistence: Persistence,
                 durability: Durability, interrupt_before: frozenset[str],
                 interrupt_after: frozenset[str], fork_from: int | None,
                 explicit_run_id: bool, wait: bool | float = False) -> None:
        super().__init__(ctx, limit, interrupt_before, interrupt_after)
        ctx.run = self
        self.p = persistence
        self.codec = persistence.codec
        self.store = persistence.store
        assert ctx.thread_id is not None
        self.thread_id: str = ctx.thread_id
        self.durability = durability
        self.lease: Lease | None = None
        self.run_record: RunRecord | None = None
        self.head: int | None = None
        self.parent_seq: int | None = None
        self.chains: dict[str, Chain] = {}
        self.ids = StepIds(self.thread_id, -1)
        self.loaded_resume: dict[str, list[Any]] = {}
        self.recorded: dict[str, tuple[list[Any], list[Any]]] = {}
        # results recorded before a replay, and (async) during this step, with their records
        self.replayed: dict[str, tuple[list[Any], list[Any]]] = {}
        self.early: dict[str, bytes | None] = {}  # task id -> its encoded update
        self.attempts: dict[str, list[Attempt]] = {}
        self.lock = threading.Lock()
        inline = getattr(persistence.store, "commits_in_process", False)
        self.handle = (
            persistence.writer().handle() if durability == "async" and not inline else None
        )
        self.prev_mark = 0
        self.replay_until: int | None = None
        self.noop = False
        self.run_written = False
        self.finalized = False
        self.final_output: Any = None
        self.parents: dict[tuple[str, int], tuple[str, ...]] = {}
        self.pending_execs: dict[str, ExecutionRecord] = {}
        self.fork_from = fork_from
        self.resuming = explicit_run_id
        self.task_times: dict[str, float] = {}
        self.exit_writes: list[WriteRecord] = []
        self.dirty: set[str] = set()
        self.last_results: list[TaskResult] = []
        self.parallel = False
        self.stored_head: int | None = None
        self._wait = wait
        self._loaded_task_results: dict[tuple[str, str, int], WriteRecord] = {}
        # the RUNNING / PENDING records written for the step about to run
        self.scheduled: list[ExecutionRecord] = []
        self._latest_run: list[RunRecord] | None = None  # the thread's latest run, read once
        self.stats = RunStats()  # this invocation's, added to the record's when written

    # -- begin ----------------------------------------------------------------------------

    def begin(self, input: Any) -> bool:
        ctx = self.ctx
        store = self.store
        existing = store.get_run(ctx.run_id, namespace=self.p.namespace) \
            if self.resuming else None
        if existing is not None:
            self._check_same_run(existing, input)
        if existing is not None and existing.status == "succeeded":
            self.run_record = existing
            return False
        self._acquire_lease()
        loaded = self.codec.load(store, self.thread_id, self.fork_from)
        latest = loaded if self.fork_from is None else self.codec.load(store, self.thread_id)
        self.head = self.stored_head = latest.seq
        command = input if isinstance(input, Command) else None
        if _never_started(existing) and input is not None and command is None:
            return self._start_new(loaded, input, queued=existing)
        if existing is None and input is not None and command is None:
            existing = self._retry_candidate(input)
        if existing is not None or input is None or command is not None:
            return self._continue(loaded, existing, command)
        return self._start_new(loaded, input)

    def _check_same_run(self, existing: RunRecord, input: Any) -> None:
        """A run id names one run: same thread, same graph, same input (or none).

        Raises:
            RunConflictError: it is recorded for another thread or graph, or other input.
        """
        if existing.thread_id != self.thread_id:
            raise RunConflictError(
                f"run {existing.run_id!r} belongs to thread {existing.thread_id!r}, not "
                f"{self.thread_id!r}"
            )
        if existing.graph != self.p.graph_name:
            raise RunConflictError(
                f"run {existing.run_id!r} belongs to graph {existing.graph!r}, not "
                f"{self.p.graph_name!r}"
            )
        if input is None or isinstance(input, Command) or existing.input is None:
            return
        if self.codec.decode_run(existing, "input") != input:
            raise RunConflictError(
                f"run {existing.run_id!r} was started with different input; resume it with "
                "input None, or use a new run id"
            )

    def _acquire_lease(self) -> None:
        """Take the thread's lease (at once from a dead holder on this host; see
        :func:`threadloom.engine._owner.acquire`) and start heartbeating it."""
        self.lease = acquire_lease(self.store, self.thread_id, self.ctx.run_id,
                                   self.p.lease_ttl, self._wait, self.p.namespace)
        self.p.heartbeat.add(self)

    def _retry_candidate(self, input: Any) -> RunRecord | None:
        """The thread's latest run, if it failed (in a node, not in the engine) or died, and
        had exactly this input: calling again with the same input after a failure resumes it
        instead of starting over."""
        runs = self._thread_latest_run()
        if not runs or runs[0].status not in ("failed", "running") or runs[0].input is None:
            return None
        if ERROR_CODE_KEY in runs[0].metadata:
            return None  # a recursion limit or a bad update fails the same way again
        try:
            same = self.codec.decode_run(runs[0], "input") == input
        except Exception:
            return None
        if not same or runs[0].graph != self.p.graph_name:
            return None
        self.ctx.run_id = runs[0].run_id
        self.ctx.node_config["run_id"] = runs[0].run_id
        return runs[0]

    def _adopt_run_id(self, run_id: str) -> None:
        ctx = self.ctx
        ctx.run_id = run_id
        ctx.node_config["run_id"] = run_id
        configurable = ctx.node_config.get("configurable")
        if isinstance(configurable, dict):
            configurable["run_id"] = run_id

    def _continue(self, loaded: Loaded, existing: RunRecord | None,
                  command: Command[Any] | None) -> bool:
        """Resume an unfinished run (or continue the thread) from ``loaded``."""
        if loaded.record is None and command is None and existing is None:
            raise EmptyInputError(
                f"thread {self.thread_id!r} has nothing to continue: pass an input to start "
                "a run"
            )
        resumed_from = None
        if existing is None and not self.resuming:
            latest = self._thread_latest_run()
            if latest and latest[0].status in (*_UNFINISHED, "interrupted"):
                existing = latest[0]
                if existing.graph != self.p.graph_name:
                    raise RunConflictError(
                        f"thread {self.thread_id!r} has an unfinished run {existing.run_id!r} "
                        f"of graph {existing.graph!r}, not {self.p.graph_name!r}"
                    )
                self._adopt_run_id(existing.run_id)
            elif latest:
                resumed_from = latest[0].run_id
            if existing is None and command is None and not loaded.frontier:
                self.noop = True  # a finished thread: nothing to run, nothing to record
                self._install(loaded)
                return False
        elif existing is not None:
            self._check_not_overtaken(existing, loaded)
        self._install(loaded)
        self.skip_breakpoint = True
        if existing is not None:
            self.run_record = existing
            if existing.status in ("running", "pending"):
                self._recount(existing)  # it died mid-run: its counters were not written
        else:
            self.run_record = self._new_record(None, resumed_from)
        if command is not None:
            self._apply_command(loaded, command)
        # LangGraph's bound for a continued run: up to recursion_limit + 1 more steps
        self.stop = self.ctx.step + self.limit + 1
        self.run_record.status = "running"
        if self.run_record.started_at is None:  # a queued run, started by a command
            self.run_record.started_at = time.time()
            if existing is not None:
                self.stats.queue_wait_ms = \
                    (self.run_record.started_at - existing.created_at) * 1000.0
        self.run_record.error = None  # a resumed run is no longer failed
        self.run_record.ended_at = None
        self.run_record.metadata.pop(ERROR_CODE_KEY, None)
        self.run_record.updated_at = time.time()
        resume_writes = self._resume_writes(command)
        if self.durability == "exit":
            self.exit_writes.extend(resume_writes)
        else:
            now = time.time()
            superseded, stopped = self._superseded(now)
            scheduled = scheduled_executions(self, now, self.ctx.step)
            self._persist(Commit(self.thread_id, self.p.namespace, self._token(),
                                 runs=[self._snapshot(self.run_record), *superseded],
                                 writes=resume_writes, executions=[*stopped, *scheduled]))
            self.run_written = True
        return True

    def _recount(self, run: RunRecord) -> None:
        """Steps and node executions of a run, counted from what the store holds."""
        ns = self.p.namespace
        run.steps = len(self.store.list_checkpoints(self.thread_id, "", run_id=run.run_id,
                                                    namespace=ns))
        nodes = self.spec.nodes
        run.executions = sum(
            1 for e in self.store.list_executions(run_id=run.run_id, namespace=ns)
            if e.status == "SUCCEEDED" and e.node in nodes
        )

    def _check_not_overtaken(self, existing: RunRecord, loaded: Loaded) -> None:
        """A run can be resumed only while the thread has not moved on past it.

        Raises:
            RunConflictError: a later run wrote the thread's latest checkpoint.
        """
        record = loaded.record
        if record is None or record.run_id in (None, existing.run_id) or _never_started(existing):
            return  # a queued run starts on whatever the thread holds when it is claimed
        if record.created_at > existing.created_at:
            raise RunConflictError(
                f"run {existing.run_id!r} can no longer be resumed: thread {self.thread_id!r} "
                f"has moved on (its latest checkpoint belongs to run {record.run_id!r})"
            )

    def _install(self, loaded: Loaded) -> None:
        if loaded.seq is not None:
            self.replay_until = loaded.seq + 2  # async lets one step's commit lag behind
        self.values = {**self.values, **loaded.values}
        self.frontier = loaded.frontier
        self.chains = loaded.chains
        self.parent_seq = loaded.seq
        self.loaded_resume = dict(loaded.resume)
        self.ctx.step = loaded.step + 1
        if self._output_keys & loaded.values.keys():
            self.has_output = True
        self._plan_ids()
        self.recorded.update(loaded.results)
        self._loaded_task_results = loaded.task_results

    def _apply_command(self, loaded: Loaded, command: Command[Any]) -> None:
        pending = loaded.pending_interrupts()
        if command.resume is not None:
            resume = command.resume
            if isinstance(resume, dict) and pending and set(resume) <= {
                i.id for i in pending.values()
            }:
                for task_id, item in pending.items():
                    if item.id in resume:
                        self.loaded_resume.setdefault(task_id, []).append(resume[item.id])
            elif len(pending) == 1:
                (task_id,) = pending
                self.loaded_resume.setdefault(task_id, []).append(resume)
            elif not pending:
                raise InvalidConfigError(
                    f"thread {self.thread_id!r} has no pending interrupt to resume"
                )
            else:
                raise InvalidConfigError(
                    "several interrupts are pending; resume them with a dict mapping "
                    f"interrupt ids to values: {sorted(i.id for i in pending.values())}"
                )
        if command.update is not None or command.goto:
            from threadloom.engine._algo import extract_update

            writes, goto = extract_update(self.spec.channels, Command(update=command.update,
                                                                      goto=command.goto), "")
            self.merge_external(writes, goto)

    def merge_external(self, writes: list[tuple[str, Any]], goto: list[Any]) -> None:
        """Writes and destinations given with the resume command, applied as input."""
        updated = self.apply_input(writes)
        self._emit_values(updated)
        if goto:
            frontier = self.frontier
            names = dict.fromkeys(frontier.nodes)
            for target in goto:
                if isinstance(target, str):
                    names[target] = None
                else:
                    frontier.sends.append(target)
            frontier.nodes = sorted(names)
            self._plan_ids()

    def _resume_writes(self, command: Command[Any] | None) -> list[WriteRecord]:
        if command is None or command.resume is None or self.parent_seq is None:
            return []
        return [
            self.codec.special_write(self.thread_id, self.parent_seq, task_id, RESUME, values)
            for task_id, values in self.loaded_resume.items()
        ]

    def _start_new(self, loaded: Loaded, input: Any, queued: RunRecord | None = None) -> bool:
        """A new run on the thread: the input is applied on top of the thread's state.
        ``queued``: the run's ``pending`` record, written when it was queued."""
        self.values = {**self.values, **loaded.values}
        self.chains = loaded.chains
        self.parent_seq = loaded.seq
        if self._output_keys & loaded.values.keys():
            self.has_output = True
        base_step = loaded.step
        self.ctx.step = base_step + 1
        writes = _input_writes(self.spec, input)
        updated = self.apply_input(writes)
        self.frontier = self.start_frontier()
        self._emit_values(updated)
        self.run_record = self._new_record(None, None)
        self.run_record.input = self.codec.encode_run(self.run_record, "input", input)
        if queued is not None:
            self.run_record.created_at = queued.created_at
            self.run_record.metadata = {**queued.metadata, **self.run_record.metadata}
            self.run_record.traceparent = queued.traceparent or self.run_record.traceparent
            waited = (self.run_record.started_at or queued.created_at) - queued.created_at
            self.stats.queue_wait_ms = waited * 1000.0
        # as for a fresh run: a run needing N supersteps succeeds when recursion_limit > N
        self.stop = self.ctx.step + self.limit
        self._checkpoint(updated, "input", [], [], self.ctx.step, {})
        self.ctx.step += 1
        return True

    def _new_record(self, input: bytes | None, resumed_from: str | None) -> RunRecord:
        now = time.time()
        return RunRecord(
            run_id=self.ctx.run_id, thread_id=self.thread_id, graph=self.p.graph_name,
            status="running", namespace=self.p.namespace, input=input,
            durability=self.durability, created_at=now, updated_at=now, started_at=now,
            resumed_from=resumed_from,
            metadata=dict(self.ctx.node_config.get("metadata") or {}),
            traceparent=self.ctx.trace.given if self.ctx.trace is not None else None,
        )

    def _thread_latest_run(self) -> list[RunRecord]:
        """The thread's latest run (none or one), read at most once per run."""
        if self._latest_run is None:
            self._latest_run = self.store.list_runs(thread_id=self.thread_id, limit=1,
                                                    namespace=self.p.namespace)
        return self._latest_run

    def _superseded(self, now: float) -> tuple[list[RunRecord], list[ExecutionRecord]]:
        """See :func:`superseded_run`; written with this run's first commit."""
        return superseded_run(self.store, self.thread_id, self._thread_latest_run(), now,
                              self.ctx.run_id, self.p.namespace)

    # -- steps ----------------------------------------------------------------------------

    def _plan_ids(self) -> None:
        self.ids = StepIds(self.thread_id, self.parent_seq if self.parent_seq is not None else -1)

    def next_tasks(self) -> list[PlannedTask] | None:
        tasks = super().next_tasks()
        if tasks is not None and self.recorded:
            tasks = [t for t in tasks if self.ids[(t.name, t.push)] not in self.recorded]
        self.parallel = tasks is not None and len(tasks) > 1
        return tasks

    def task_finished(self, result: TaskResult, task_id: str, attempts: int) -> None:
        """A task of a parallel step succeeded: in ``async`` mode its writes are queued at
        once, so a crash before the step's checkpoint does not run it again. (A step of one
        task needs no such write: its checkpoint follows at once, and ``async`` allows the
        last step to re-run.) Its execution record goes with it, so a replay after a crash
        finds it recorded and counted (:meth:`_recount`) like any recorded result."""
        if self.durability == "async" and self.parallel and self.parent_seq is not None:
            write = self.codec.result_write(self.thread_id, self.parent_seq, task_id, result)
            outputs = self.codec.encode_update(result, self.thread_id, self.ctx.run_id, self.ids)
            execution = finished_execution(self, result, "SUCCEEDED", time.time(),
                                           self.ctx.step, outputs)
            self.early[task_id] = outputs
            self._persist(Commit(self.thread_id, self.p.namespace, self._token(),
                                 writes=[write], executions=[execution], flush=False))

    def finish_step(self, outcome: StepOutcome) -> None:
        if outcome.error is not None or outcome.interrupts:
            record_partial(self, outcome)
            self.early = {}
            if outcome.error is not None:
                raise outcome.error
            self.paused = True
            for signal in outcome.interrupts:
                self.interrupts.extend(signal.interrupts)  # type: ignore[attr-defined]
            return
        results = with_recorded(self.spec, self.frontier, self.ids, self.recorded,
                                outcome.results)
        updates = self._encode_updates(results)
        # results recorded before a replay already have their records and were counted
        self.replayed, self.recorded = self.recorded, {}
        self.loaded_resume = {}
        next_parents = self._parents_of_next(results)
        step = self.ctx.step
        updated = self.merge(results)
        if self.interrupt_after and _hits(self.interrupt_after, results):
            self.paused = True
        # the run ends with this step: its final record rides in the step's own commit
        final = not self.frontier and not self.paused and self.ctx.step <= self.stop
        if final and self.durability != "exit":
            self._finalize(Run.complete(self))
        self._checkpoint(updated, "loop", results, updates, step, next_parents)
        self.parents = next_parents

    def _encode_updates(self, results: list[TaskResult]) -> list[bytes | None]:
        """The step's updates, encoded before they are merged: an output that cannot be
        encoded fails its task like an exception would (the others' results are recorded),
        and the state stays the last good one, which ``abort`` records in every mode."""
        codec, thread_id, run_id, ids = self.codec, self.thread_id, self.ctx.run_id, self.ids

        early = self.early  # async: parallel tasks encoded as they finished

        def encode(result: TaskResult) -> bytes | None:
            if early:
                task_id = ids[(result.task.name, result.task.push)]
                if task_id in early:
                    return early[task_id]
            return codec.encode_update(result, thread_id, run_id, ids)

        try:
            return [encode(r) for r in results]
        except Exception:
            pass
        partial = StepOutcome()
        for result in results:
            try:
                encode(result)
            except Exception as exc:
                partial.fail(result.task, exc)
            else:
                partial.results.append(result)
        record_partial(self, partial)
        assert partial.error is not None
        raise partial.error

    def _parents_of_next(self, results: list[TaskResult]
                         ) -> dict[tuple[str, int], tuple[str, ...]]:
        """Which of this step's executions trigger each task of the next step (by edge,
        route, join or Send), for the execution records' ``parents``."""
        nodes = self.spec.nodes
        barriers = self.spec.barriers
        by_target: dict[tuple[str, int], list[str]] = {}
        sends = 0
        for result in results:
            rid = self.ids[(result.task.name, result.task.push)]
            node = nodes[result.task.name]
            targets = [*node.static_next, *(barriers[b].target for b in node.barriers)]
            for goto in result.goto:
                if isinstance(goto, str):
                    targets.append(goto)
                else:
                    by_target.setdefault((goto.node, sends), []).append(rid)
                    sends += 1
            for target in dict.fromkeys(targets):
                by_target.setdefault((target, -1), []).append(rid)
        return {k: tuple(v) for k, v in by_target.items()}

    def _checkpoint(self, updated: set[str], source: str, results: list[TaskResult],
                    updates: list[bytes | None], step: int,
                    next_parents: dict[tuple[str, int], tuple[str, ...]]) -> None:
        """Persist the state after a step (``sync``: now, in one transaction; ``async``:
        queued; ``exit``: only remembered, see :meth:`_exit_commit`), with the records of the
        executions it schedules."""
        now = time.time()
        executions = [finished_execution(self, r, "SUCCEEDED", now, step, outputs=u)
                      for r, u in zip(results, updates, strict=True)
                      if self.ids[(r.task.name, r.task.push)] not in self.replayed
                      and self.ids[(r.task.name, r.task.push)] not in self.early]
        early = len(self.early)  # recorded as they finished, counted with their step
        self.replayed, self.early = {}, {}
        run = self.run_record
        assert run is not None
        run.steps += 1
        run.executions += len(executions) + early
        run.updated_at = now
        if self.durability == "exit":
            self.run_written = True
            self.dirty |= updated
            self.last_results = results
            self.pending_execs.update({e.id: e for e in executions})
            self._advance_head()
            return
        # the whole run record is written when the run starts and when it ends; every step
        # in between sets its counters (a snapshot: an async commit is written later)
        progress = None
        if not self.run_written:
            superseded, stopped = self._superseded(now)
            runs = [self._snapshot(run), *superseded]
            executions += stopped
        elif self.finalized:
            runs = [self._snapshot(run)]
        else:
            runs = []
            progress = RunProgress(run.run_id, run.steps, run.executions, now)
        self.run_written = True
        record = self._record(updated, source, results, step, now, updates)
        expected = self.head
        self._advance_head()
        executions += scheduled_executions(self, now, step + 1, next_parents, breakpoints=True)
        fault("before_step_commit")
        # async: a step's commit need not be flushed (see Commit.flush), the run's last must
        # the run's last commit also lets the thread go (no transaction of its own)
        self._persist(Commit(self.thread_id, self.p.namespace, self._token(), expected, record,
                             executions=executions, runs=runs,
                             flush=self.finalized or self.handle is None, progress=progress,
                             release_lease=self.finalized))
        fault("after_step_commit")
        self._bound_lag()

    def _record(self, updated: set[str], source: str, results: list[TaskResult], step: int,
                now: float, updates: list[bytes | None]) -> CheckpointRecord:
        seq = (self.head if self.head is not None else 0) + 1
        blobs = self.codec.encode_channels(self.values, updated, self.chains, seq, self.thread_id)
        return CheckpointRecord(
            thread_id=self.thread_id, checkpoint_ns="", seq=seq, parent_seq=self.parent_seq,
            run_id=self.ctx.run_id, step=step, source=source, created_at=now,
            channels={k: (c.version, c.base) for k, c in self.chains.items()},
            next=self.frontier.names(),
            metadata=self.codec.encode_metadata(results, updates, thread_id=self.thread_id,
                                                seq=seq),
            frontier=self.codec.encode_frontier(self.frontier, thread_id=self.thread_id, seq=seq),
            blobs=blobs,
        )

    def _advance_head(self) -> None:
        seq = (self.head if self.head is not None else 0) + 1
        self.head = seq
        self.parent_seq = seq
        if self.durability != "exit":
            self.stored_head = seq
        self._plan_ids()

    def _checkpoint_seq(self) -> int | None:
        """The checkpoint the step's executions read (``exit`` writes none per step)."""
        return None if self.durability == "exit" else self.parent_seq

    # -- persistence ----------------------------------------------------------------------

    def _token(self) -> int | None:
        return None if self.lease is None else self.lease.token

    def stored_traceparent(self) -> str | None:
        record = self.run_record
        return record.traceparent if record is not None else None

    def _persist(self, commit: Commit) -> None:
        """Write now (``sync``, or a store that commits in process) or queue to the
        background writer (``async``)."""
        self.stats.count(commit, self.ctx.run_id)
        if self.handle is None:
            self.store.commit([commit])
            _metrics.committed((commit,))
        else:
            self.p.writer().submit(self.handle, commit)

    def _snapshot(self, run: RunRecord) -> RunRecord:
        """The run record as it is now: a queued commit must not see later steps' changes
        (the record would run ahead of its checkpoint)."""
        return copy.copy(run) if self.handle is not None else run

    def _bound_lag(self) -> None:
        """``async``: before the next step starts, everything up to the step before this one
        must be written, so a crash re-runs at most the last step (and the one in flight)."""
        handle = self.handle
        if handle is None:
            return
        self.p.writer().wait_for(handle, self.prev_mark)
        self.prev_mark = handle.submitted

    def _exit_commit(self, run: RunRecord) -> Commit:
        """``exit`` durability: everything the run did, as one commit. The checkpoint takes
        the sequence number the last step's tasks were planned against, so writes recorded
        for an interrupted or failed step attach to it."""
        superseded, stopped = self._superseded(run.updated_at)
        commit = Commit(self.thread_id, self.p.namespace, self._token(), self.stored_head,
                        runs=[run, *superseded],
                        executions=[*self.pending_execs.values(), *stopped],
                        writes=list(self.exit_writes))
        if self.parent_seq != self.stored_head:
            now = time.time()
            seq = self.parent_seq
            assert seq is not None
            blobs = self.codec.encode_channels(self.values, self.dirty, self.chains, seq,
                                               self.thread_id)
            commit.checkpoint = CheckpointRecord(
                thread_id=self.thread_id, checkpoint_ns="", seq=seq,
                parent_seq=self.stored_head, run_id=self.ctx.run_id, step=self.ctx.step - 1,
                source="exit", created_at=now,
                channels={k: (c.version, c.base) for k, c in self.chains.items()},
                next=self.frontier.names(),
                metadata=self.codec.encode_metadata(self.last_results, thread_id=self.thread_id,
                                                    seq=seq),
                frontier=self.codec.encode_frontier(self.frontier, thread_id=self.thread_id,
                                                    seq=seq),
                blobs=blobs,
            )
        return commit

    # -- end ------------------------------------------------------------------------------

    def _finalize(self, out: Any) -> None:
        """Mark the run record finished with ``out`` (written by the caller's commit)."""
        record = self.run_record
        assert record is not None
        now = time.time()
        if self.paused:
            record.status = "interrupted"
        else:
            # encoded first: an output that cannot be stored leaves the record as it was
            record.output = self.codec.encode_run(record, "output", out) if out is not None \
                else None
            record.status = "succeeded"
            record.ended_at = now
        record.updated_at = now
        self.finalized = True
        self.final_output = out

    def complete(self) -> Any:
        if self.noop:
            self._release()
            return super().complete()
        record = self.run_record
        if record is not None and record.status == "succeeded" and self.lease is None:
            return self.codec.decode_run(record, "output")
        if self.finalized and self.durability != "exit":
            # the last step's commit carried the final record and the lease: wait for it
            released = False
            try:
                if self.handle is not None:
                    self.p.writer().flush(self.handle)
                released = True
            finally:
                self._release(released)
            return self.final_output
        out = super().complete()
        assert record is not None
        self._finalize(out)
        self._finish(record)
        return out

    def abort(self, exc: BaseException) -> None:
        record = self.run_record
        if record is None or self.lease is None:
            self._release()
            return
        now = time.time()
        record.status = "cancelled" if isinstance(exc, RunCancelled) else "failed"
        record.error = error_text(exc)
        if isinstance(exc, ThreadloomError):  # the engine's own, deterministic failures
            record.metadata[ERROR_CODE_KEY] = exc.code
        record.updated_at = now
        record.ended_at = now
        try:
            self._finish(record, unfinished_executions(self, exc, now))
        except Exception as store_exc:  # keep the run's own error as the one raised
            exc.add_note(f"threadloom could not record the failure: {store_exc}")

    def _finish(self, run: RunRecord, executions: list[ExecutionRecord] | None = None) -> None:
        """Write the run's final record (with ``executions``) in a commit that also lets the
        thread go."""
        released = False
        try:
            if self.durability == "exit":
                commit = self._exit_commit(run)
                commit.release_lease = True
                self.stats.count(commit, self.ctx.run_id)
                self.store.commit([commit])
                _metrics.committed((commit,))
                released = True
                return
            commit = Commit(self.thread_id, self.p.namespace, self._token(), runs=[run],
                            executions=executions or [], release_lease=True)
            if not self.run_written:  # the run ended before its first commit
                superseded, stopped = self._superseded(run.updated_at)
                commit.runs += superseded
                commit.executions += stopped
            self.stats.count(commit, self.ctx.run_id)
            if self.handle is not None:
                writer = self.p.writer()
                writer.submit(self.handle, commit)
                writer.flush(self.handle)
            else:
                self.store.commit([commit])
                _metrics.committed((commit,))
            released = True
        finally:
            self._release(released)

    def _release(self, by_commit: bool = False) -> None:
        """Stop heartbeating the lease and give it up, unless the run's last commit gave it
        up already (``by_commit``)."""
        self.p.heartbeat.remove(self)
        lease, self.lease = self.lease, None
        if lease is not None and not by_commit:
            try:
                self.store.release_lease(lease)
            except Exception:  # an expired lease simply lapses
                pass


def _never_started(run: RunRecord | None) -> bool:
    """A run recorded ``pending`` by a queue that no process has started yet."""
    return run is not None and run.status == "pending" and run.started_at is None
