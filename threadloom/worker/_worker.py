"""The worker loop: claim queued runs, execute them, keep their claims, hand them back.

Read :meth:`Worker._loop` top to bottom:

1. **wait for work**: a ``"work"`` signal (a run became claimable) wakes the loop at once;
   otherwise it re-checks every ``poll`` seconds (delayed runs, a lapsed claim of a dead
   worker, a missed signal: signals are hints, the rows are the truth);
2. **claim** up to the number of free slots (``concurrency``), only runs of graphs this
   worker has;
3. **execute** each claimed run in a thread of its own (:func:`~threadloom.worker._execute.
   execute`), which finishes the claim, hands it back, or drops it when it was lost.

Beside it, the **heartbeat** thread renews every claim each ``heartbeat`` seconds
(:meth:`~threadloom.checkpoint.queue.RuntimeStore.renew_claims`), which also reports the
cancellation requests and the claims that were lost, and stops those runs at their next step
(a ``"cancel"`` signal makes it renew at once). A worker that dies stops renewing: its claims
lapse after ``run_lease`` seconds and other workers continue its runs from their last
checkpoints (the graphs' thread leases get the same TTL, so the engine's fencing agrees).

**Liveness**: where the store can tell that a process died (Postgres: a session lock, see
:meth:`~threadloom.checkpoint.queue.RuntimeStore.hold_liveness`), the loop also ends the
claims of dead workers every ``poll`` seconds (``expire_dead_claims``, which frees their
thread leases too) and claims them, so their runs continue elsewhere within about ``poll``
seconds instead of a run lease. A worker whose own liveness is lost (its session broke) hands
its runs back at their next step: the others may take them from now on, and the engine's
fencing refuses its commits once they do.

**Shutdown** is a state of the loop: ``running`` -> ``draining`` (no more claims; running runs
may finish for up to the stop timeout) -> the rest are stopped at their next step and handed
back (``release_claim``) -> ``stopped``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

from threadloom import _metrics
from threadloom import logging as run_logs
from threadloom.checkpoint.queue import QueuedRun, RuntimeStore, WorkerRecord
from threadloom.engine._owner import this_process
from threadloom.graph.compiled import CompiledGraph
from threadloom.worker._events import EventPump
from threadloom.worker._execute import Claimed, Outcome, execute

__all__ = ["Worker"]

log = logging.getLogger("threadloom.worker")

State = Literal["new", "running", "draining", "stopped"]


class Worker:
    """Executes the queued runs of a :class:`~threadloom.checkpoint.queue.RuntimeStore`.

    Example:
        >>> with Worker(store, {"seed_loop": graph}, concurrency=8):
        ...     ...  # runs queued by the API execute here
        >>> Worker(store, graphs).run()  # blocks until stop() (e.g. from a SIGTERM handler)

    Args:
        store: the store the API queues runs in.
        graphs: registered graphs by name, compiled with ``store`` as their checkpointer.
        concurrency: how many runs execute at once.
        worker_id: this worker's id in claims and heartbeats (default: host, pid, random).
        heartbeat: seconds between claim renewals and worker heartbeats.
        run_lease: seconds a claim (and a run's thread lease) lasts without a renewal: how
            soon another worker continues the runs of a worker that died.
        poll: seconds between re-checks of the queue when no signal arrives (default: half
            the heartbeat): how soon a delayed run starts, or a dead worker's lapsed claim is
            taken (no signal says so), and between looks for workers known dead.
    """

    def __init__(self, store: RuntimeStore, graphs: Mapping[str, CompiledGraph], *,
                 concurrency: int = 8, worker_id: str | None = None, heartbeat: float = 1.0,
                 run_lease: float = 5.0, poll: float | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.store = store
        self.graphs = {name: _leased(g, run_lease) for name, g in graphs.items()}
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-" \
                                      f"{uuid.uuid4().hex[:6]}"
        self.heartbeat = heartbeat
        self.run_lease = run_lease
        self.poll = heartbeat / 2 if poll is None else poll
        self.state: State = "new"
        self._lock = threading.Lock()
        self._wake = threading.Event()  # new work, a free slot, or a state change
        self._beat = threading.Event()  # renew claims now (a cancel signal)
        self._active: dict[tuple[str, str], Claimed] = {}
        self._reserved = 0  # slots promised to callers of reserve(), not yet running
        self._threads: list[threading.Thread] = []
        # claimed runs go to `concurrency` runner threads, started once: a thread per run
        # would cost a thread start, and a hand-off to it, every run
        self._jobs: queue.SimpleQueue[Claimed | Callable[[], None] | None] = \
            queue.SimpleQueue()
        self._stopped = threading.Event()
        self._unsubscribe: list[Any] = []
        self._pump: EventPump | None = None
        self._started_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Worker:
        """Start claiming and executing runs in background threads; return at once."""
        with self._lock:
            if self.state != "new":
                raise RuntimeError(f"the worker is {self.state}; a worker starts once")
            self.state = "running"
        self._started_at = time.time()
        self._pump = EventPump(f"threadloom-events-{self.worker_id}")
        signals = self.store.signals()
        self._unsubscribe = [
            # first: its first heartbeat (below) names the lock, before anything is claimed
            self.store.hold_liveness(self.worker_id, _process(), self._on_liveness_lost),
            signals.subscribe("work", lambda _: self._wake.set()),
            signals.subscribe("cancel", self._on_cancel_signal),
        ]
        self._beat_now()
        for target, name in ((self._loop, "loop"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"threadloom-worker-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        for number in range(self.concurrency):
            # daemons: a node that never returns must not keep the process alive
            threading.Thread(target=self._runner, name=f"threadloom-run-{number}",
                             daemon=True).start()
        log.info("worker %s started: graphs %s, concurrency %d", self.worker_id,
                 ", ".join(sorted(self.graphs)), self.concurrency)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully: claim nothing more, let running runs finish for up to ``timeout``
        seconds, then stop the others at their next step and hand them back to the queue
        (another worker continues them), and remove this worker's record."""
        with self._lock:
            if self.state in ("new", "stopped"):
                self.state = "stopped"
                self._stopped.set()
                return
            if self.state == "draining":
                pass
            self.state = "draining"
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._running() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        for held in self._running():
            held.stop("handback", "the worker is shutting down")
        grace = time.monotonic() + max(self.run_lease, 1.0)
        while self._running() and time.monotonic() < grace:
            time.sleep(0.02)
        for held in self._running():  # a node that does not return: its claim goes back
            self.store.release_claim(held.claim)
        for _ in range(self.concurrency):
            self._jobs.put(None)  # the idle runners end; a stuck one stays, as a daemon
        with self._lock:
            self.state = "stopped"
        self._wake.set()
        self._beat.set()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for thread in self._threads:
            thread.join(5.0)
        if self._pump is not None:
            self._pump.close()
        try:
            self.store.remove_worker(self.worker_id)
        except Exception:
            log.exception("could not remove worker %r", self.worker_id)
        self._stopped.set()

    def run(self) -> None:
        """Start, then block until :meth:`stop` is called (from another thread or a signal
        handler) and has finished."""
        if self.state == "new":
            self.start()
        self._stopped.wait()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        graphs = sorted(self.graphs)
        sweep = 0.0  # when to look for dead workers' claims next (monotonic)
        while self.state == "running":
            self._wake.clear()
            if time.monotonic() >= sweep:  # every `poll`: their runs are claimed right here
                sweep = time.monotonic() + self.poll
                try:
                    self.store.expire_dead_claims()
                except Exception:
                    log.exception("looking for the claims of dead workers failed")
            with self._lock:
                free = self.concurrency - len(self._active) - self._reserved
            claims: list[QueuedRun] = []
            if free > 0:
                try:
                    claims = self.store.claim_runs(self.worker_id, free, self.run_lease,
                                                   graphs)
                except Exception:
                    log.exception("claiming runs failed; trying again shortly")
            for claim in claims:
                self._launch(claim)
            if claims and len(claims) == free:
                continue  # maybe more: claim again as soon as a slot frees
            self._wake.wait(self.poll)

    def _launch(self, claim: QueuedRun) -> None:
        self._jobs.put(self._adopt(claim))

    def _adopt(self, claim: QueuedRun, reserved: bool = False) -> Claimed:
        """Hold ``claim`` as one of this worker's running runs (in a slot taken by
        :meth:`reserve`, if ``reserved``): renewed by the heartbeat, stopped by a cancel."""
        if claim.attempts <= 1:  # a reclaimed run waited for a dead worker, not the queue
            _metrics.queue_wait(time.time() - max(claim.available_at, claim.created_at))
        held = Claimed(claim)
        if claim.cancel is not None:  # asked while its last worker held it
            held.stop(claim.cancel, f"cancelled ({claim.cancel})")
        key = (claim.namespace, claim.run_id)
        with self._lock:
            if reserved:
                self._reserved -= 1
            self._active[key] = held
        return held

    # -- runs of this process's own requests ----------------------------------------------

    def reserve(self) -> bool:
        """Take a free slot for a run that the caller will claim itself (the API of this
        process queues a run it waits for with ``enqueue_claimed``, see
        :func:`threadloom.server._inline`), or return ``False`` when every slot is taken or
        the worker is not running. Follow with :meth:`submit` of a job that calls
        :meth:`run_claimed` or :meth:`unreserve`, exactly once."""
        with self._lock:
            if self.state != "running" or len(self._active) + self._reserved >= self.concurrency:
                return False
            self._reserved += 1
            return True

    def unreserve(self) -> None:
        """Give back a slot taken by :meth:`reserve` that no run took."""
        with self._lock:
            self._reserved -= 1
        self._wake.set()

    def submit(self, job: Callable[[], None]) -> None:
        """Call ``job()`` on one of the worker's runner threads (after :meth:`reserve`, one is
        free or about to be); ``job`` handles its own errors."""
        self._jobs.put(job)

    def run_claimed(self, claim: QueuedRun) -> Outcome | None:
        """Execute ``claim`` (claimed for this worker by ``enqueue_claimed``) in the slot taken
        by :meth:`reserve`, on the calling runner thread, as a claimed run is executed; return
        what became of the claim (``None``: the store failed under it, and the claim
        lapses)."""
        return self._execute(self._adopt(claim, reserved=True))

    def _runner(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if isinstance(job, Claimed):
                self._execute(job)
            else:
                job()

    def _execute(self, held: Claimed) -> Outcome | None:
        claim = held.claim
        # the worker's records about the run carry its fields, and are kept with it
        logs = run_logs.enter_run(claim.run_id, claim.thread_id, claim.graph, claim.namespace,
                                  self.store)
        try:
            if claim.attempts > 1:
                log.info("reclaimed run (graph %s, claim %d): its last worker stopped or "
                         "handed it back", claim.graph, claim.attempts)
            else:
                log.debug("claimed run (graph %s)", claim.graph)
            graph = self.graphs[claim.graph]
            outcome = execute(self.store, graph, held, self._pump,
                              self.run_lease * 2 + self.heartbeat)
            if outcome != "finished":
                log.info("run %s by the worker", "handed back to the queue"
                         if outcome == "released" else "given up (the claim was lost)")
            return outcome
        except Exception:
            # the store failed under us: the claim lapses and the run continues elsewhere
            log.exception("run %r of graph %r failed in the worker", claim.run_id, claim.graph)
            return None
        finally:
            run_logs.exit_run(logs)
            with self._lock:
                self._active.pop((claim.namespace, claim.run_id), None)
            self._wake.set()

    def _running(self) -> list[Claimed]:
        with self._lock:
            return list(self._active.values())

    # -- heartbeats and cancellation --------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while self.state in ("running", "draining"):
            self._beat.wait(self.heartbeat)
            self._beat.clear()
            if self._stopped.is_set() or self.state not in ("running", "draining"):
                return
            try:
                self._beat_now()
            except Exception:
                log.exception("worker heartbeat failed")

    def _beat_now(self) -> None:
        held = self._running()
        if not held:
            self.store.worker_heartbeat(self._record())
            return
        states = self.store.renew_claims(self.worker_id, [h.claim for h in held],
                                         self.run_lease)
        by_key = {(h.claim.namespace, h.claim.run_id): h for h in held}
        for state in states:
            one = by_key.get((state.namespace, state.run_id))
            if one is None:
                continue
            if state.lost:
                log.warning("lost the claim on run %r: stopping it", state.run_id)
                one.stop("lost", "the worker lost its claim on the run")
            elif state.cancel is not None:
                if one.action is None:
                    log.info("run %r asked to stop (%s)", state.run_id, state.cancel)
                one.stop(state.cancel, f"cancelled ({state.cancel})")

    def _on_cancel_signal(self, message: str) -> None:
        namespace, _, run_id = message.partition("/")
        with self._lock:
            mine = (namespace, run_id) in self._active
        if mine:
            self._beat.set()

    def _on_liveness_lost(self) -> None:
        held = self._running()
        if held:
            log.warning("worker %r lost its liveness session: handing back %d runs",
                        self.worker_id, len(held))
        for one in held:
            one.stop("handback", "the worker lost its liveness session")

    def _record(self) -> WorkerRecord:
        return WorkerRecord(
            worker_id=self.worker_id, last_seen=time.time(), started_at=self._started_at,
            info={"host": socket.gethostname(), "pid": os.getpid(),
                  "concurrency": self.concurrency, "running": len(self._active),
                  "graphs": sorted(self.graphs)},
        )


def _process() -> str:
    """How the thread-lease owners of this process start: ``<host> pid <pid> start <stamp>``
    (see :mod:`threadloom.engine._owner`)."""
    return " ".join(str(this_process("")).split(" ")[:5])


def _leased(graph: CompiledGraph, run_lease: float) -> CompiledGraph:
    """A copy of ``graph`` whose thread leases last ``run_lease`` seconds, like the worker's
    claims: a run whose worker died can be continued as soon as its claim lapses."""
    if graph.lease_ttl == run_lease:
        return graph
    return CompiledGraph(
        graph.builder, checkpointer=graph.checkpointer, cache=graph.cache,
        interrupt_before=graph.interrupt_before, interrupt_after=graph.interrupt_after,
        durability=graph.durability, debug=graph.debug, name=graph.name, config=graph.config,
        serde=graph.serde, lease_ttl=run_lease,
    )
