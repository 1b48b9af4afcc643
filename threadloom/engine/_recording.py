"""What a durable run uses besides its own state: the graph's persistence bundle (with the
heartbeat that keeps its leases), the recorder that looks up and records the ``@task`` calls
of one node execution, and the execution and run records a run writes besides its
checkpoints (scheduled, finished, failed or interrupted executions, and a run another one
took the thread from)."""

from __future__ import annotations

import concurrent.futures
import copy
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadloom import _metrics
from threadloom._faults import fault
from threadloom._ids import interrupt_task
from threadloom.checkpoint.base import (
    DEFAULT_NAMESPACE,
    Attempt,
    Commit,
    ExecutionRecord,
    RunRecord,
    Store,
    WriteRecord,
)
from threadloom.engine._algo import TaskResult
from threadloom.engine._persist import (
    ERROR,
    INTERRUPT,
    RESUME,
    TASK_PREFIX,
    Codec,
    Writer,
    task_execution_id,
)
from threadloom.engine._runner import StepOutcome
from threadloom.engine._tasks import TaskRecorder
from threadloom.errors import GraphInterrupt, RunCancelled

if TYPE_CHECKING:
    from threadloom.engine._durable import DurableRun

__all__ = [
    "DurableRecorder",
    "Heartbeat",
    "Persistence",
    "error_text",
    "execution_marker",
    "finished_execution",
    "record_partial",
    "scheduled_executions",
    "superseded_run",
    "unfinished_executions",
]


class Heartbeat:
    """Renews the thread leases of running runs every third of their time to live, so a
    node that runs longer than the lease (a slow model call, say) keeps its thread. One
    daemon thread per store, started on first use. Once :meth:`remove` returns, the
    heartbeat neither uses the store for that run nor touches its ``lease``: a run that ended
    (and a store closed after it) is left alone."""

    def __init__(self, store: Store, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._runs: dict[int, Any] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._renewing: Any = None  # the run whose lease is being renewed now

    def add(self, run: Any) -> None:
        """Keep ``run.lease`` alive until :meth:`remove`."""
        with self._cond:
            self._runs[id(run)] = run
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="threadloom-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, run: Any) -> None:
        """Stop renewing ``run.lease``, waiting for a renewal of it in flight to end."""
        with self._cond:
            self._runs.pop(id(run), None)
            while self._renewing is run:
                self._cond.wait()
            if not self._runs:
                self._cond.notify_all()  # let the thread end; add() starts a new one

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._runs:
                    self._thread = None
                    return
                self._cond.wait(self._ttl / 3)
                runs = list(self._runs.values())
            for run in runs:
                with self._cond:
                    lease = run.lease
                    if (id(run) not in self._runs or lease is None
                            or lease.expires_at - time.time() > self._ttl * 2 / 3):
                        continue
                    self._renewing = run
                renewed = None
                try:
                    renewed = self._store.renew_lease(lease, self._ttl)
                except Exception:  # lost or unreachable: the run's next commit will say so
                    pass
                finally:
                    with self._cond:
                        self._renewing = None
                        if renewed is not None and id(run) in self._runs:
                            run.lease = renewed
                        self._cond.notify_all()


class Persistence:
    """What a durable run needs from its graph: the store, codec, writer, and options."""

    __slots__ = ("store", "codec", "writer", "graph_name", "lease_ttl", "namespace",
                 "heartbeat")

    def __init__(self, store: Store, codec: Codec, writer: Callable[[], Writer],
                 graph_name: str, lease_ttl: float = 30.0,
                 heartbeat: Heartbeat | None = None) -> None:
        self.store = store
        self.codec = codec
        self.writer = writer
        self.graph_name = graph_name
        self.lease_ttl = lease_ttl
        # the namespace every record of the run is keyed by; the codec binds values to it
        self.namespace = codec.namespace
        self.heartbeat = heartbeat if heartbeat is not None else Heartbeat(store, lease_ttl)


class DurableRecorder(TaskRecorder):
    """Looks up and records the ``@task`` calls of one execution of a durable run."""

    def __init__(self, run: DurableRun, task_id: str, node: str, step: int) -> None:
        self.run = run
        self.task_id = task_id
        self.node = node
        self.step = step

    def recorded(self, name: str, index: int) -> tuple[bool, Any]:
        run = self.run
        key = (self.task_id, name, index)
        write = run._loaded_task_results.get(key)
        if write is None and run.replay_until is not None and run.parent_seq is not None \
                and run.parent_seq <= run.replay_until:
            # replaying the steps after a resumed checkpoint: results recorded against a
            # checkpoint that was not durable yet when the process died are keyed under the
            # same (deterministic) checkpoint number this replay recreates
            for stored in run.store.get_writes(run.thread_id, "", run.parent_seq, self.task_id,
                                               namespace=run.p.namespace):
                if stored.channel.startswith(TASK_PREFIX):
                    run._loaded_task_results[
                        (stored.task_id, stored.channel[len(TASK_PREFIX):], stored.idx)] = stored
            write = run._loaded_task_results.get(key)
        if write is None:
            return False, None
        return True, run.codec.decode_write(write)

    def record(self, name: str, index: int, args: tuple[Any, ...], value: Any,
               attempts: list[tuple[int, float, float, str]]) -> None:
        run = self.run
        seq = run.parent_seq if run.parent_seq is not None else -1
        write, inputs, outputs = run.codec.task_call(run.thread_id, run.ctx.run_id, seq,
                                                     self.task_id, name, index, list(args), value)
        now = time.time()
        execution = ExecutionRecord(
            id=task_execution_id(self.task_id, name, index),
            run_id=run.ctx.run_id, thread_id=run.thread_id, graph=run.p.graph_name,
            node=name, step=self.step, status="SUCCEEDED", namespace=run.p.namespace,
            attempt=len(attempts) + 1, inputs=inputs, outputs=outputs,
            parents=(self.task_id,),
            attempts=tuple(Attempt(n, s, e, err) for n, s, e, err in attempts),
            checkpoint_seq=run.parent_seq, created_at=now, ended_at=now,
        )
        if attempts:
            run.stats.retry(len(attempts))
        if run.durability == "exit":
            with run.lock:
                run.exit_writes.append(write)
                run.pending_execs[execution.id] = execution
            return
        fault("before_task_record")
        # recorded before the caller sees the result, in every mode but exit: a side effect
        # that happened must not happen again on replay (async: again after a process crash;
        # the run's next flushed commit covers a machine crash)
        commit = Commit(run.thread_id, run.p.namespace, run._token(), writes=[write],
                        executions=[execution], flush=run.durability == "sync")
        run.store.commit([commit])
        run.stats.wrote(commit)
        _metrics.committed((commit,))
        fault("after_task_record")

    def pool(self) -> concurrent.futures.Executor | None:
        return self.run.ctx.task_pool()


# -- execution and run records ------------------------------------------------------------


def scheduled_executions(run: DurableRun, now: float, step: int,
                         parents: dict[tuple[str, int], tuple[str, ...]] | None = None,
                         breakpoints: bool = False) -> list[ExecutionRecord]:
    """The records of the executions due in ``step`` (the frontier, less the ones whose
    results are recorded): ``RUNNING`` when the step follows this commit at once,
    ``PENDING`` when the run stops before it (a pause, a breakpoint when ``breakpoints``,
    the recursion limit). ``exit`` writes none."""
    frontier = run.frontier
    if run.durability == "exit" or not frontier or run.finalized:
        run.scheduled = []
        return run.scheduled
    before = run.interrupt_before
    pending = run.paused or step > run.stop or (
        breakpoints and bool(before) and _hits_names(before, frontier.names())
    )
    status = "PENDING" if pending else "RUNNING"
    started = None if pending else now
    ids = run.ids
    recorded = run.recorded
    seq = run.parent_seq
    parents = parents or {}
    run_id, thread_id = run.ctx.run_id, run.thread_id
    graph, namespace = run.p.graph_name, run.p.namespace
    attempt = 0 if pending else 1
    out = []
    for name in frontier.nodes:
        key = (name, -1)
        task_id = ids[key]
        if task_id not in recorded:
            out.append(ExecutionRecord(
                task_id, run_id, thread_id, graph, name, step, status,  # type: ignore[arg-type]
                namespace, attempt, parents=parents.get(key, ()), checkpoint_seq=seq,
                created_at=now, started_at=started,
            ))
    for push, send in enumerate(frontier.sends):
        key = (send.node, push)
        task_id = ids[key]
        if task_id not in recorded:
            out.append(ExecutionRecord(
                task_id, run_id, thread_id, graph, send.node, step,
                status, namespace, attempt,  # type: ignore[arg-type]
                inputs=run.codec.encode_execution(send.arg, thread_id, run_id, task_id,
                                                  "inputs", send.node),
                parents=parents.get(key, ()),
                checkpoint_seq=seq, created_at=now, started_at=started,
            ))
    run.scheduled = out
    return out


def unfinished_executions(run: DurableRun, exc: BaseException, now: float
                          ) -> list[ExecutionRecord]:
    """The scheduled executions the run ends without finishing: ``FAILED`` if they
    started, ``CANCELLED`` if they never did (or the run was cancelled)."""
    cancelled = isinstance(exc, RunCancelled)
    out = []
    for ex in run.scheduled:
        started = run.task_times.pop(ex.id, None)
        ex = copy.copy(ex)
        ex.status = "FAILED" if started is not None and not cancelled else "CANCELLED"
        ex.error = error_text(exc)
        ex.started_at = started
        ex.ended_at = now
        out.append(ex)
    run.scheduled = []
    return out


def finished_execution(run: DurableRun, result: TaskResult, status: str, now: float, step: int,
                       outputs: bytes | None = None) -> ExecutionRecord:
    """The record of a finished execution; ``outputs``: its encoded update
    (:meth:`Codec.encode_update <threadloom.engine._persist.Codec.encode_update>`)."""
    task = result.task
    task_id = run.ids[(task.name, task.push)]
    attempts = tuple(run.attempts.pop(task_id, ()))
    started = run.task_times.pop(task_id, None)
    return ExecutionRecord(
        id=task_id, run_id=run.ctx.run_id, thread_id=run.thread_id,
        graph=run.p.graph_name, node=task.name, step=step,
        status=status,  # type: ignore[arg-type]
        namespace=run.p.namespace, attempt=len(attempts) + (status == "SUCCEEDED"),
        inputs=run.codec.encode_execution(task.arg, run.thread_id, run.ctx.run_id, task_id,
                                          "inputs", task.name) if task.push >= 0 else None,
        outputs=outputs, attempts=attempts,
        parents=run.parents.get((task.name, task.push), ()),
        checkpoint_seq=run._checkpoint_seq(), created_at=started or now,
        started_at=started, ended_at=now,
    )


def record_partial(run: DurableRun, outcome: StepOutcome) -> None:
    """Persist what a failed or interrupted step completed, so it is not run again."""
    if run.parent_seq is None:
        return
    now = time.time()
    writes: list[WriteRecord] = []
    executions: list[ExecutionRecord] = []
    seq = run.parent_seq
    for result in outcome.results:
        task_id = run.ids[(result.task.name, result.task.push)]
        if task_id in run.early:  # async: written with its record as it finished
            continue
        writes.append(run.codec.result_write(run.thread_id, seq, task_id, result))
        outputs = run.codec.encode_update(result, run.thread_id, run.ctx.run_id, run.ids)
        executions.append(finished_execution(run, result, "SUCCEEDED", now, run.ctx.step,
                                             outputs))
    for signal in outcome.interrupts:
        assert isinstance(signal, GraphInterrupt)
        for item in signal.interrupts:
            task_id = interrupt_task(item.id, run.ids.values(), signal.index)
            writes.append(run.codec.special_write(
                run.thread_id, seq, task_id, INTERRUPT, [item.value, item.id, signal.index]
            ))
            executions.append(execution_marker(run, task_id, "INTERRUPTED", None, now))
    for task_id, values in run.loaded_resume.items():
        writes.append(run.codec.special_write(run.thread_id, seq, task_id, RESUME, values))
    if outcome.error is not None and outcome.error_task is not None:
        failed = run.ids[(outcome.error_task.name, outcome.error_task.push)]
        if failed:
            writes.append(run.codec.special_write(
                run.thread_id, seq, failed, ERROR, error_text(outcome.error)
            ))
    for task, exc in outcome.failed:
        executions.append(execution_marker(run, run.ids[(task.name, task.push)], "FAILED",
                                           error_text(exc), now))
    done = {ex.id for ex in executions} | run.early.keys()
    run.scheduled = [ex for ex in run.scheduled if ex.id not in done]
    record = run.run_record
    assert record is not None
    record.executions += len(outcome.results)
    if run.durability == "exit":
        run.exit_writes.extend(writes)
        run.pending_execs.update({e.id: e for e in executions})
    else:
        run._persist(Commit(run.thread_id, run.p.namespace, run._token(), writes=writes,
                            executions=executions))


def execution_marker(run: DurableRun, task_id: str, status: str, error: str | None,
                     now: float) -> ExecutionRecord:
    """The record of an execution of the current step that ended without a result
    (``INTERRUPTED`` or ``FAILED``)."""
    name, push = next(k for k, v in run.ids.items() if v == task_id)
    attempts = tuple(run.attempts.pop(task_id, ()))
    return ExecutionRecord(
        id=task_id, run_id=run.ctx.run_id, thread_id=run.thread_id,
        graph=run.p.graph_name, node=name, step=run.ctx.step, status=status,  # type: ignore[arg-type]
        parents=run.parents.get((name, push), ()),
        namespace=run.p.namespace, attempt=max(1, len(attempts)), error=error,
        attempts=attempts, checkpoint_seq=run._checkpoint_seq(), created_at=now,
        started_at=run.task_times.pop(task_id, None), ended_at=now,
    )


def error_text(exc: BaseException) -> str:
    """How an error is recorded on runs and executions."""
    return f"{type(exc).__name__}: {exc}"


def superseded_run(store: Store, thread_id: str, latest: list[RunRecord], now: float,
                   taker: str | None = None, namespace: str = DEFAULT_NAMESPACE,
                   ) -> tuple[list[RunRecord], list[ExecutionRecord]]:
    """The thread's latest run, if it is still recorded as ``running`` and is not run
    ``taker`` itself (``None``: ``update_state``), marked failed, with its unfinished
    executions (``RUNNING`` ones ``FAILED``, ``PENDING`` ones ``CANCELLED``).

    Call it holding the thread's lease: then that run's process died or lost the lease and
    can never commit again, not even its own failure (it is fenced off), so the taker records
    it, in the taker's commit.
    """
    if not latest or latest[0].status != "running" or latest[0].run_id == taker:
        return [], []
    dead = copy.copy(latest[0])
    by = f"run {taker!r}" if taker is not None else "update_state"
    error = (
        f"LeaseLostError: run {dead.run_id!r} no longer held the lease of thread "
        f"{thread_id!r} (its process died or stalled); {by} took the thread over"
    )
    dead.status = "failed"
    dead.error = error
    dead.updated_at = dead.ended_at = now
    stopped = []
    for ex in store.list_executions(run_id=dead.run_id, thread_id=thread_id,
                                    namespace=namespace):
        if ex.status in ("RUNNING", "PENDING"):
            ex.status = "FAILED" if ex.status == "RUNNING" else "CANCELLED"
            ex.error = error
            ex.ended_at = now
            stopped.append(ex)
    return [dead], stopped


def _hits_names(names: frozenset[str], due: tuple[str, ...]) -> bool:
    return bool(due) if "*" in names else not names.isdisjoint(due)

