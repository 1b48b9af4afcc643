"""What a durable run uses besides its own state: the graph's persistence bundle (with the
heartbeat that keeps its leases), and the recorder that looks up and records the ``@task``
calls of one node execution."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadloom._faults import fault
from threadloom.checkpoint.base import Attempt, Commit, ExecutionRecord, Store
from threadloom.engine._persist import TASK_PREFIX, Codec, Writer, task_execution_id
from threadloom.engine._tasks import TaskRecorder

if TYPE_CHECKING:
    from threadloom.engine._durable import DurableRun

__all__ = ["DurableRecorder", "Heartbeat", "Persistence"]


class Heartbeat:
    """Renews the thread leases of running runs every third of their time to live, so a
    node that runs longer than the lease (a slow model call, say) keeps its thread. One
    daemon thread per store, started on first use."""

    def __init__(self, store: Store, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._runs: dict[int, Any] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

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
        with self._cond:
            self._runs.pop(id(run), None)
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
                lease = run.lease
                if lease is None or lease.expires_at - time.time() > self._ttl * 2 / 3:
                    continue
                try:
                    run.lease = self._store.renew_lease(lease, self._ttl)
                except Exception:  # lost or unreachable: the run's next commit will say so
                    pass


class Persistence:
    """What a durable run needs from its graph: the store, codec, writer, and options."""

    __slots__ = ("store", "codec", "writer", "graph_name", "lease_ttl", "namespace",
                 "heartbeat")

    def __init__(self, store: Store, codec: Codec, writer: Callable[[], Writer],
                 graph_name: str, lease_ttl: float = 30.0) -> None:
        self.store = store
        self.codec = codec
        self.writer = writer
        self.graph_name = graph_name
        self.lease_ttl = lease_ttl
        self.namespace = codec.namespace  # the codec binds values to the same namespace
        self.heartbeat = Heartbeat(store, lease_ttl)


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
            for stored in run.store.get_writes(run.thread_id, "", run.parent_seq, self.task_id):
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
        if run.durability == "exit":
            with run.lock:
                run.exit_writes.append(write)
                run.pending_execs[execution.id] = execution
            return
        fault("before_task_record")
        # recorded before the caller sees the result, in every mode but exit: a side effect
        # that happened must not happen again on replay (async: again after a process crash;
        # the run's next flushed commit covers a machine crash)
        run.store.commit([Commit(run.thread_id, run.p.namespace, run._token(), writes=[write],
                                 executions=[execution], flush=run.durability == "sync")])
        fault("after_task_record")

    def pool(self) -> concurrent.futures.Executor | None:
        return self.run.ctx.task_pool()
