"""The runtime store contract (:mod:`threadloom.checkpoint.queue`), written once and run on
every backend.

Subclass :class:`QueueConformance` in a test module and give it a ``store`` fixture that yields
a fresh, set-up :class:`~threadloom.checkpoint.queue.RuntimeStore` (closed afterwards); every
``test_*`` method then runs against that backend. No test depends on timing: expiry is made
with a negative ``ttl``, delays with an hour, and signals are waited for with a generous
timeout.

Requires ``pytest``.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.checkpoint.base import Commit, RunRecord
from threadloom.checkpoint.queue import (
    RuntimeStore,
    WorkerRecord,
)
from threadloom.errors import (
    InvalidConfigError,
    RunConflictError,
    RunNotFoundError,
    StoreError,
    ThreadBusyError,
)
from threadloom.testing._admin_conformance import AdminConformance
from threadloom.testing._claimed_conformance import ClaimedEnqueueConformance
from threadloom.testing._queue_concurrency import claim_concurrently
from threadloom.testing._queue_records import (
    END,
    EXPIRED,
    HOUR,
    NS,
    WAIT,
    ids,
    pending,
    put,
    queued,
)

__all__ = [
    "Collector",
    "QueueConformance",
    "SignalsConformance",
    "claim_concurrently",
    "pending",
    "put",
    "queued",
]

class Collector:
    """A signal subscriber that remembers what it got and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, message: str) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)


class SignalsConformance:
    """The store's signals (``work``, ``cancel``, ``event``, ``done``), whatever carries them;
    subclasses provide a ``store`` fixture (with an external bus installed, or not)."""

    # -- signals --------------------------------------------------------------------------

    def test_signals_of_the_queue(self, store: RuntimeStore) -> None:
        bus = store.signals()
        got = {topic: Collector() for topic in ("work", "cancel", "event", "done")}
        stops = [bus.subscribe(topic, c) for topic, c in got.items()]
        try:
            put(store, "r1", "t1")
            assert got["work"].wait_for(bool)
            [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
            store.request_cancel(NS, "r1")
            assert got["cancel"].wait_for(lambda m: f"{NS}/r1" in m)
            store.append_events(NS, "r1", [("values", b"1"), ("values", b"2")])
            assert got["event"].wait_for(lambda m: f"{NS}/r1/2" in m)
            store.finish_claim(claim)
            assert got["done"].wait_for(lambda m: f"{NS}/r1" in m)
        finally:
            for stop in stops:
                stop()

    def test_a_failing_subscriber_does_not_stop_delivery(self, store: RuntimeStore) -> None:
        bus = store.signals()
        good, dropped = Collector(), Collector()

        def bad(message: str) -> None:
            raise RuntimeError("subscriber bug")

        stops = [bus.subscribe("work", bad), bus.subscribe("work", good)]
        stop_dropped = bus.subscribe("work", dropped)
        try:
            bus.publish("work", "one")
            assert good.wait_for(lambda m: "one" in m) and dropped.wait_for(lambda m: "one" in m)
            stop_dropped()
            stop_dropped()  # twice is harmless
            bus.publish("work", "two")
            assert good.wait_for(lambda m: "two" in m)
            assert "two" not in dropped.messages  # delivered in order: "two" went past it
        finally:
            for stop in stops:
                stop()


class QueueConformance(AdminConformance, ClaimedEnqueueConformance, SignalsConformance):
    """The runtime store contract; subclasses provide a ``store`` fixture."""

    # -- enqueue ---------------------------------------------------------------------------

    def test_implements_the_protocol(self, store: RuntimeStore) -> None:
        assert isinstance(store, RuntimeStore)

    def test_enqueue_records_the_pending_run_and_its_row(self, store: RuntimeStore) -> None:
        before = time.time()
        assert put(store, "r1", "t1", timeout=30.0) == []
        record = store.get_run("r1")
        assert record is not None and record.status == "pending"
        assert record.thread_id == "t1" and record.created_at >= before
        row = store.get_queued(NS, "r1")
        assert row is not None
        assert (row.status, row.thread_id, row.graph, row.payload) == (
            "queued", "t1", "g", b'{"input": 1}')
        assert row.timeout == 30.0 and row.attempts == 0 and row.worker is None
        assert before <= row.created_at <= time.time()
        assert store.get_thread("t1") is not None  # created like a commit would
        assert store.queue_depth() == 1 and store.queue_depth(NS) == 1
        assert store.get_queued(NS, "nope") is None

    def test_enqueue_refuses_an_existing_run_id(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        with pytest.raises(RunConflictError):
            put(store, "r1", "t2")
        store.commit([Commit("t3", runs=[RunRecord("r2", "t3", "g", "succeeded")])])
        with pytest.raises(RunConflictError):  # recorded without the queue: still taken
            put(store, "r2", "t3")
        assert store.get_queued(NS, "r2") is None
        assert store.queue_depth() == 1

    def test_enqueue_sets_thread_metadata_keys(self, store: RuntimeStore) -> None:
        store.enqueue(pending("r1", "t1"), queued("r1", "t1"), thread_metadata={"graph_id": "g"})
        thread = store.get_thread("t1")
        assert thread is not None and thread.metadata == {"graph_id": "g"}
        store.update_thread("t1", {"owner": "ann", "graph_id": "g"}, namespace=NS)
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        store.finish_claim(claim)
        store.enqueue(pending("r2", "t1", graph="h"), queued("r2", "t1", graph="h"),
                      thread_metadata={"graph_id": "h", "n": [1, None]})
        thread = store.get_thread("t1")
        assert thread is not None
        assert thread.metadata == {"owner": "ann", "graph_id": "h", "n": [1, None]}
        with pytest.raises(StoreError):  # not JSON: nothing of the call is written
            store.enqueue(pending("r3", "t2"), queued("r3", "t2"),
                          thread_metadata={"bad": object()})
        assert store.get_run("r3") is None and store.get_thread("t2") is None

    def test_enqueue_checks_its_arguments(self, store: RuntimeStore) -> None:
        with pytest.raises(InvalidConfigError):
            store.enqueue(pending("r1", "t1"), queued("r1", "t2"))
        with pytest.raises(InvalidConfigError):
            store.enqueue(pending("r1", "t1", status="running"), queued("r1", "t1"))
        with pytest.raises(InvalidConfigError):
            store.enqueue(pending("r1", "t1"), queued("r1", "t1"), "later")  # type: ignore
        assert store.get_run("r1") is None and store.get_queued(NS, "r1") is None

    def test_a_deleted_runs_id_can_be_queued_again(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        store.append_events(NS, "r1", [("values", b"old")])
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        store.finish_claim(claim)
        store.delete_thread("t1")  # its runs go with it
        put(store, "r1", "t1", payload=b"{}")
        row = store.get_queued(NS, "r1")
        assert row is not None and row.status == "queued" and row.payload == b"{}"
        assert store.read_events(NS, "r1") == []
        put(store, "r2", "t2")  # an open row of a deleted run still holds its id
        store.delete_thread("t2")
        with pytest.raises(RunConflictError):
            put(store, "r2", "t2")

    # -- claims ---------------------------------------------------------------------------

    def test_claim_and_finish(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        before = time.time()
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        assert (claim.run_id, claim.status, claim.worker, claim.attempts) == (
            "r1", "claimed", "w1", 1)
        assert claim.claim_token > 0 and claim.claim_expires is not None
        assert claim.claim_expires >= before + 60.0
        assert claim.payload == b'{"input": 1}'
        assert store.queue_depth() == 0
        assert store.claim_runs("w2", limit=8, ttl=60.0) == []
        assert store.finish_claim(claim)
        row = store.get_queued(NS, "r1")
        assert row is not None and row.status == "done" and row.finished_at is not None
        assert not store.finish_claim(claim)  # once
        assert store.claim_runs("w2", limit=8, ttl=60.0) == []

    def test_claims_a_batch_oldest_first(self, store: RuntimeStore) -> None:
        for i in range(5):
            put(store, f"r{i}", f"t{i}", created_at=1000.0 + (5 - i))  # r4 is the oldest
        assert ids(store.claim_runs("w1", limit=3, ttl=60.0)) == ["r4", "r3", "r2"]
        assert ids(store.claim_runs("w1", limit=3, ttl=60.0)) == ["r1", "r0"]
        assert store.claim_runs("w1", limit=0, ttl=60.0) == []

    def test_runs_of_one_thread_are_claimed_one_at_a_time_in_order(
        self, store: RuntimeStore
    ) -> None:
        for run_id in ("a", "b", "c"):
            put(store, run_id, "t1")
        put(store, "x", "t2")
        first = store.claim_runs("w1", limit=10, ttl=60.0)
        assert sorted(ids(first)) == ["a", "x"]
        assert store.claim_runs("w2", limit=10, ttl=60.0) == []  # a holds the thread
        for claim in first:
            store.finish_claim(claim)
        assert ids(second := store.claim_runs("w2", limit=10, ttl=60.0)) == ["b"]
        store.finish_claim(second[0])
        assert ids(store.claim_runs("w2", limit=10, ttl=60.0)) == ["c"]

    def test_a_thread_keeps_its_order_whatever_the_clocks_say(self, store: RuntimeStore) -> None:
        put(store, "late", "t1", created_at=time.time() + HOUR)  # a clock ahead
        put(store, "early", "t1", created_at=1.0)  # a clock far behind
        late, early = store.get_queued(NS, "late"), store.get_queued(NS, "early")
        assert late is not None and early is not None
        assert early.created_at > late.created_at
        [claim] = store.claim_runs("w1", limit=10, ttl=60.0)
        assert claim.run_id == "late"

    def test_graph_filter(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1", graph="a")
        put(store, "r2", "t2", graph="b")
        assert ids(store.claim_runs("w1", limit=10, ttl=60.0, graphs=["b", "c"])) == ["r2"]
        assert store.claim_runs("w1", limit=10, ttl=60.0, graphs=[]) == []
        assert ids(store.claim_runs("w1", limit=10, ttl=60.0)) == ["r1"]

    def test_a_lapsed_claim_is_reclaimed_with_a_new_token(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        put(store, "r2", "t1")
        [old] = store.claim_runs("w1", limit=8, ttl=EXPIRED)
        [new] = store.claim_runs("w2", limit=8, ttl=60.0)
        assert new.run_id == "r1" and new.worker == "w2"
        assert new.attempts == 2 and new.claim_token > old.claim_token
        assert store.renew_claims("w1", [old], 60.0)[0].lost
        assert not store.finish_claim(old)
        assert not store.release_claim(old)
        assert store.claim_runs("w3", limit=8, ttl=60.0) == []  # r2 waits for r1
        assert store.finish_claim(new)
        assert ids(store.claim_runs("w3", limit=8, ttl=60.0)) == ["r2"]

    def test_renew_extends_claims_and_reports_lost_and_cancelled(
        self, store: RuntimeStore
    ) -> None:
        put(store, "r1", "t1")
        put(store, "r2", "t2")
        claims = store.claim_runs("w1", limit=8, ttl=EXPIRED)
        states = store.renew_claims("w1", claims, 60.0)
        assert [(s.run_id, s.namespace, s.lost, s.cancel) for s in states] == [
            ("r1", NS, False, None), ("r2", NS, False, None)]
        assert store.claim_runs("w2", limit=8, ttl=60.0) == []  # renewed: held again
        assert store.request_cancel(NS, "r2") == "signalled"
        store.finish_claim(claims[0])
        states = store.renew_claims("w1", claims, 60.0)
        assert [(s.lost, s.cancel) for s in states] == [(True, None), (False, "interrupt")]
        [worker] = [w for w in store.list_workers() if w.worker_id == "w1"]
        assert worker.last_seen >= worker.started_at > 0
        assert store.renew_claims("w9", [], 60.0) == []  # a heartbeat alone
        assert "w9" in [w.worker_id for w in store.list_workers()]

    def test_a_live_workers_claims_are_never_expired_as_dead(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        lost: list[bool] = []
        release = store.hold_liveness("w1", "host-x pid 1 start -", lambda: lost.append(True))
        try:
            [claim] = store.claim_runs("w1", limit=8, ttl=HOUR)
            store.renew_claims("w1", [claim], HOUR)
            store.worker_heartbeat(WorkerRecord("w1", time.time(), time.time()))
            assert store.expire_dead_claims() == 0
            assert store.claim_runs("w2", limit=8, ttl=HOUR) == []
            assert store.renew_claims("w1", [claim], HOUR)[0].lost is False
            assert lost == []
        finally:
            release()
        release()  # twice: nothing more

    def test_release_hands_the_run_back(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        put(store, "r2", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        assert store.release_claim(claim, delay=HOUR)
        row = store.get_queued(NS, "r1")
        assert row is not None and row.status == "queued" and row.worker is None
        assert row.available_at > time.time() + HOUR / 2
        assert store.claim_runs("w2", limit=8, ttl=60.0) == []  # delayed, and r2 behind it
        assert not store.release_claim(claim)  # no longer claimed
        assert store.queue_depth() == 2

    def test_release_makes_a_stopped_run_pending_again(self, store: RuntimeStore) -> None:
        for run_id, thread_id in (("r1", "t1"), ("r2", "t2"), ("r3", "t3")):
            put(store, run_id, thread_id)
        claims = {c.run_id: c for c in store.claim_runs("w1", limit=8, ttl=60.0)}
        started = time.time()
        store.commit([  # the engine's commits: stopped for the hand-back, running, failed
            Commit(t, runs=[pending(r, t, status=s, started_at=started, ended_at=e)])
            for r, t, s, e in (("r1", "t1", "cancelled", started + 1),
                               ("r2", "t2", "running", None),
                               ("r3", "t3", "failed", started + 1))
        ])
        for claim in claims.values():
            assert store.release_claim(claim)
        r1, r2, r3 = (store.get_run(r) for r in ("r1", "r2", "r3"))
        assert r1 is not None and r1.status == "pending" and r1.ended_at is None
        assert r1.started_at == started  # continued from its checkpoint, not started again
        assert r2 is not None and r2.status == "pending"
        assert r3 is not None and r3.status == "failed"  # not a hand-back: left alone

    def test_release_without_delay_is_claimable_again(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        assert store.release_claim(claim)
        [again] = store.claim_runs("w2", limit=8, ttl=60.0)
        assert again.run_id == "r1" and again.claim_token > claim.claim_token
        assert again.attempts == 2

    def test_a_delayed_run_waits(self, store: RuntimeStore) -> None:
        put(store, "later", "t1", available_at=time.time() + HOUR)
        put(store, "behind", "t1")
        put(store, "now", "t2", available_at=time.time() - 1)
        assert ids(store.claim_runs("w1", limit=8, ttl=60.0)) == ["now"]
        assert store.queue_depth() == 2

    # -- multitask strategies -------------------------------------------------------------

    def test_reject_on_a_busy_thread(self, store: RuntimeStore) -> None:
        assert put(store, "r1", "t1", strategy="reject") == []
        with pytest.raises(ThreadBusyError):
            put(store, "r2", "t1", strategy="reject")
        assert store.get_run("r2") is None and store.get_queued(NS, "r2") is None
        assert put(store, "r3", "t2", strategy="reject") == []

    def test_a_finished_run_does_not_keep_its_thread_busy(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        done = RunRecord("r1", "t1", "g", "succeeded", NS)
        store.commit([Commit("t1", runs=[done])])  # the engine's last commit
        assert put(store, "r2", "t1", strategy="reject") == []  # before finish_claim
        assert store.claim_runs("w2", limit=8, ttl=60.0) == []  # but it still waits
        store.finish_claim(claim)
        assert ids(store.claim_runs("w2", limit=8, ttl=60.0)) == ["r2"]

    def test_enqueue_queues_behind(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        assert put(store, "r2", "t1", strategy="enqueue") == []
        assert store.queue_depth() == 2

    def test_interrupt_cancels_queued_and_signals_claimed_runs(
        self, store: RuntimeStore
    ) -> None:
        put(store, "r1", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        put(store, "r2", "t1")
        assert put(store, "r3", "t1", strategy="interrupt") == ["r1", "r2"]
        row1 = store.get_queued(NS, "r1")
        assert row1 is not None and row1.status == "claimed" and row1.cancel == "interrupt"
        record2 = store.get_run("r2")
        assert record2 is not None and record2.status == "cancelled"
        assert record2.ended_at is not None
        row2 = store.get_queued(NS, "r2")
        assert row2 is not None and row2.status == "done"
        assert [e.event for e in store.read_events(NS, "r2")] == ["end"]
        assert store.claim_runs("w2", limit=8, ttl=60.0) == []  # r1 still stops
        store.finish_claim(claim)
        assert ids(store.claim_runs("w2", limit=8, ttl=60.0)) == ["r3"]

    def test_rollback_deletes_queued_and_signals_claimed_runs(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        put(store, "r2", "t1")
        assert put(store, "r3", "t1", strategy="rollback") == ["r1", "r2"]
        row1 = store.get_queued(NS, "r1")
        assert row1 is not None and row1.cancel == "rollback"
        assert store.get_run("r2") is None and store.get_queued(NS, "r2") is None
        assert store.get_run("r1") is not None  # its worker rolls it back
        store.rollback_run(NS, "r1")
        assert store.get_run("r1") is None and store.get_queued(NS, "r1") is None
        assert not store.finish_claim(claim)
        assert ids(store.claim_runs("w2", limit=8, ttl=60.0)) == ["r3"]

    def test_concurrent_rejects_admit_one(self, store: RuntimeStore) -> None:
        contenders = 6
        barrier = threading.Barrier(contenders)
        outcomes: list[str] = []

        def contend(i: int) -> None:
            barrier.wait()
            try:
                put(store, f"r{i}", "t1", strategy="reject")
                outcomes.append("ok")
            except ThreadBusyError:
                outcomes.append("busy")

        workers = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert sorted(outcomes) == ["busy"] * (contenders - 1) + ["ok"]
        assert store.queue_depth() == 1

    # -- cancellation and rollback --------------------------------------------------------

    def test_cancel_answers(self, store: RuntimeStore) -> None:
        put(store, "q", "t1")
        put(store, "c", "t2")
        [claim] = store.claim_runs("w1", limit=1, ttl=60.0)
        assert claim.run_id == "q"
        assert store.request_cancel(NS, "q", "rollback") == "signalled"
        assert store.request_cancel(NS, "q", "interrupt") == "signalled"
        row = store.get_queued(NS, "q")
        assert row is not None and row.cancel == "rollback"  # not weakened
        [again] = store.claim_runs("w2", limit=8, ttl=60.0)  # c, not q (held)
        assert again.run_id == "c" and again.cancel is None
        store.finish_claim(claim)
        assert store.request_cancel(NS, "q") == "finished"
        store.commit([Commit("t3", runs=[RunRecord("lib", "t3", "g", "running")])])
        assert store.request_cancel(NS, "lib") == "finished"  # recorded, never queued
        assert store.request_cancel(NS, "nope") == "unknown"

    def test_cancel_of_a_queued_run(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        put(store, "r2", "t2")
        assert store.request_cancel(NS, "r1") == "cancelled"
        record = store.get_run("r1")
        assert record is not None and record.status == "cancelled"
        assert store.request_cancel(NS, "r2", "rollback") == "cancelled"
        assert store.get_run("r2") is None and store.get_queued(NS, "r2") is None
        assert store.claim_runs("w1", limit=8, ttl=60.0) == []
        assert store.request_cancel(NS, "r1") == "finished"

    def test_a_reclaimed_run_keeps_its_cancel_request(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        store.claim_runs("w1", limit=8, ttl=EXPIRED)
        assert store.request_cancel(NS, "r1") == "signalled"
        [claim] = store.claim_runs("w2", limit=8, ttl=60.0)
        assert claim.cancel == "interrupt"

    def test_rollback_run_deletes_its_rows(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        store.append_events(NS, "r1", [("values", b"{}")])
        store.commit([Commit("t1", runs=[RunRecord("r0", "t1", "g", "succeeded", NS)])])
        store.rollback_run(NS, "r1")
        assert store.get_run("r1") is None and store.get_queued(NS, "r1") is None
        assert store.read_events(NS, "r1") == []
        assert store.get_run("r0") is not None
        store.rollback_run(NS, "nope")  # nothing
        put(store, "r1", "t1")  # the id is free again

    def test_delete_run_keeps_the_threads_checkpoints(self, store: RuntimeStore) -> None:
        graph = _counter_graph(store)
        thread = {"configurable": {"thread_id": "t1"}}
        graph.invoke({"n": 1, "log": []}, {**thread, "run_id": "first"})
        graph.invoke({"n": 5, "log": []}, {**thread, "run_id": "second"})
        state = graph.get_state(thread)
        store.append_events(NS, "second", [("values", b"{}"), END])
        assert store.list_executions(run_id="second")
        assert store.delete_run(NS, "second")
        assert store.get_run("second") is None
        assert store.list_executions(run_id="second") == []
        assert store.read_events(NS, "second") == []
        assert graph.get_state(thread).values == state.values  # the thread's state stays
        assert store.list_checkpoints("t1", run_id="second") != []
        assert store.get_run("first") is not None
        assert not store.delete_run(NS, "second")  # gone
        assert not store.delete_run(NS, "nope")

    def test_delete_run_refuses_an_active_run_and_drops_a_finished_ones_row(
        self, store: RuntimeStore
    ) -> None:
        put(store, "queued", "t1")
        put(store, "claimed", "t2")
        [claim] = [c for c in store.claim_runs("w1", limit=8, ttl=60.0)
                   if c.run_id == "claimed"]
        store.commit([Commit("t3", runs=[RunRecord("lib", "t3", "g", "running")])])
        for run_id in ("queued", "claimed", "lib"):  # pending, running, or held by a worker
            with pytest.raises(ThreadBusyError):
                store.delete_run(NS, run_id)
        assert store.get_run("queued") is not None and store.get_queued(NS, "claimed")
        done = store.get_run("claimed")
        assert done is not None
        done.status = "succeeded"
        store.commit([Commit("t2", runs=[done])])
        with pytest.raises(ThreadBusyError):  # recorded, but its worker still holds it
            store.delete_run(NS, "claimed")
        assert store.finish_claim(claim)
        store.append_events(NS, "claimed", [END])
        assert store.delete_run(NS, "claimed")
        assert store.get_run("claimed") is None and store.get_queued(NS, "claimed") is None
        assert store.read_events(NS, "claimed") == []
        put(store, "claimed", "t2")  # the id is free again

    def test_rollback_restores_the_threads_latest_checkpoint(self, store: RuntimeStore) -> None:
        graph = _counter_graph(store)
        thread = {"configurable": {"thread_id": "t1"}}
        graph.invoke({"n": 1, "log": []}, {**thread, "run_id": "first"})
        before = graph.get_state(thread)
        head = store.get_checkpoint("t1")
        assert head is not None
        graph.invoke({"n": 5, "log": []}, {**thread, "run_id": "second"})
        assert graph.get_state(thread).values != before.values
        assert store.list_executions(run_id="second")
        store.rollback_run(NS, "second")
        after = store.get_checkpoint("t1")
        assert after is not None and after.seq == head.seq
        assert graph.get_state(thread).values == before.values
        assert store.get_run("second") is None
        assert store.list_executions(run_id="second") == []
        assert store.list_checkpoints("t1", run_id="second") == []
        assert store.get_run("first") is not None
        graph.invoke({"n": 2, "log": []}, {**thread, "run_id": "third"})  # continues from it
        assert graph.get_state(thread).values["log"] == [
            *before.values["log"], "count:2", "count:3"]

    # -- requeue --------------------------------------------------------------------------

    def test_requeue_a_finished_run(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        with pytest.raises(ThreadBusyError):
            store.requeue(NS, "r1")
        store.commit([Commit("t1", runs=[RunRecord("r1", "t1", "g", "failed", NS,
                                                   ended_at=time.time())])])
        store.finish_claim(claim)
        row = store.requeue(NS, "r1", payload=b'{"resume": true}')
        assert row.status == "queued" and row.payload == b'{"resume": true}'
        record = store.get_run("r1")
        assert record is not None and record.status == "pending" and record.ended_at is None
        [again] = store.claim_runs("w2", limit=8, ttl=60.0)
        assert again.attempts == 2 and again.claim_token > claim.claim_token
        with pytest.raises(RunNotFoundError):
            store.requeue(NS, "nope")

    def test_requeue_a_run_that_was_never_queued(self, store: RuntimeStore) -> None:
        store.commit([Commit("t1", runs=[RunRecord("r1", "t1", "g", "interrupted", NS)])])
        row = store.requeue(NS, "r1", available_at=time.time() + HOUR, payload=b"{}")
        assert (row.thread_id, row.graph, row.status) == ("t1", "g", "queued")
        assert store.claim_runs("w1", limit=8, ttl=60.0) == []  # delayed
        assert store.queue_depth() == 1

    def test_a_requeued_run_goes_behind_its_threads_queue(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
        store.finish_claim(claim)
        put(store, "r2", "t1", available_at=time.time() + HOUR)
        store.requeue(NS, "r1")
        assert store.claim_runs("w1", limit=8, ttl=60.0) == []  # r2 is older

    # -- events ---------------------------------------------------------------------------

    def test_events_are_numbered_per_run(self, store: RuntimeStore) -> None:
        assert store.append_events(NS, "r1", [("metadata", b"{}"), ("values", b"1")]) == 2
        assert store.append_events(NS, "r2", [("values", b"9")]) == 1
        assert store.append_events(NS, "r1", [("end", b"null")]) == 3
        assert store.append_events(NS, "r1", []) == 3
        assert store.append_events(NS, "r3", []) == 0
        events = store.read_events(NS, "r1")
        assert [(e.seq, e.event, e.data) for e in events] == [
            (1, "metadata", b"{}"), (2, "values", b"1"), (3, "end", b"null")]
        assert all(e.namespace == NS and e.run_id == "r1" and e.created_at > 0 for e in events)
        assert [e.seq for e in store.read_events(NS, "r1", after=1)] == [2, 3]
        assert [e.seq for e in store.read_events(NS, "r1", after=1, limit=1)] == [2]
        assert store.read_events(NS, "r1", after=3) == []
        assert store.read_events("other", "r1") == []

    def test_finish_claim_appends_the_last_events_only_while_the_claim_holds(
            self, store: RuntimeStore) -> None:
        bus = store.signals()
        got = {topic: Collector() for topic in ("event", "done")}
        stops = [bus.subscribe(topic, c) for topic, c in got.items()]
        try:
            put(store, "r1", "t1")
            [claim] = store.claim_runs("w1", limit=1, ttl=60.0)
            assert store.append_events(NS, "r1", [("metadata", b"{}")]) == 1
            assert store.finish_claim(claim, [("values", b"2"), ("end", b"null")])
            assert [(e.seq, e.event) for e in store.read_events(NS, "r1")] == [
                (1, "metadata"), (2, "values"), (3, "end")]
            row = store.get_queued(NS, "r1")
            assert row is not None and row.status == "done"
            assert got["event"].wait_for(lambda m: f"{NS}/r1/3" in m)
            assert got["done"].wait_for(lambda m: f"{NS}/r1" in m)
            # a lost claim writes nothing: the run is another worker's
            assert not store.finish_claim(claim, [("end", b"null")])
            assert len(store.read_events(NS, "r1")) == 3
        finally:
            for stop in stops:
                stop()

    def test_concurrent_appends_never_collide(self, store: RuntimeStore) -> None:
        writers, each = 6, 15
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []

        def write(i: int) -> None:
            barrier.wait()
            try:
                for j in range(each):
                    store.append_events(NS, "r1", [("custom", b"%d" % (i * 100 + j))])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        events = store.read_events(NS, "r1", limit=writers * each + 10)
        assert [e.seq for e in events] == list(range(1, writers * each + 1))
        assert len({e.data for e in events}) == writers * each
        for i in range(writers):  # each writer's events in its own order
            mine = [int(e.data) for e in events if int(e.data) // 100 == i]
            assert mine == sorted(mine)

    def test_delete_events_of_finished_runs(self, store: RuntimeStore) -> None:
        put(store, "done", "t1")
        put(store, "open", "t2")
        for run_id in ("done", "open", "loose"):
            store.append_events(NS, run_id, [("values", b"1"), ("values", b"2")])
        [claim] = [c for c in store.claim_runs("w1", limit=8, ttl=60.0) if c.run_id == "done"]
        store.finish_claim(claim)
        assert store.delete_events(finished_before=time.time() - HOUR) == 0
        assert store.delete_events(finished_before=time.time() + 1) == 4
        assert store.read_events(NS, "done") == [] and store.read_events(NS, "loose") == []
        assert len(store.read_events(NS, "open")) == 2

    def test_an_installed_bus_carries_the_stores_announcements(
        self, store: RuntimeStore
    ) -> None:
        from threadloom.checkpoint._signals import LocalSignals

        bus = LocalSignals("threadloom-signals:installed")
        built_in = store.signals()
        work, done = Collector(), Collector()
        stops = [bus.subscribe("work", work), bus.subscribe("done", done)]
        try:
            store.use_signals(bus)
            assert store.signals() is bus
            put(store, "r1", "t1")
            assert work.wait_for(bool)
            [claim] = store.claim_runs("w1", limit=8, ttl=60.0)
            assert store.finish_claim(claim)
            assert done.wait_for(lambda m: f"{NS}/r1" in m)
            store.use_signals(None)
            assert store.signals() is built_in
            later = Collector()
            stops.append(store.signals().subscribe("work", later))
            put(store, "r2", "t2")  # on the built-in bus again
            assert later.wait_for(bool)
        finally:
            store.use_signals(None)
            for stop in stops:
                stop()
            bus.close()

    # -- workers and keys -----------------------------------------------------------------

    def test_workers(self, store: RuntimeStore) -> None:
        now = time.time()
        store.worker_heartbeat(WorkerRecord("w2", now, now - 10, {"host": "a", "slots": 4}))
        store.worker_heartbeat(WorkerRecord("w1", now - HOUR, now - HOUR))
        assert [w.worker_id for w in store.list_workers()] == ["w1", "w2"]
        [w2] = store.list_workers(seen_after=now - 60)
        assert w2.info == {"host": "a", "slots": 4} and w2.started_at == now - 10
        store.worker_heartbeat(WorkerRecord("w1", now, now - HOUR))
        assert len(store.list_workers(seen_after=now - 60)) == 2
        store.remove_worker("w1")
        store.remove_worker("nope")
        assert [w.worker_id for w in store.list_workers()] == ["w2"]
        with pytest.raises(InvalidConfigError):
            store.worker_heartbeat(WorkerRecord("w3", now, now, {"x": object()}))

    def test_queue_events_and_depth_are_per_namespace(self, store: RuntimeStore) -> None:
        put(store, "a1", "ta", namespace="tenant-a")
        put(store, "b1", "tb", namespace="tenant-b")
        put(store, "b2", "tb2", namespace="tenant-b")
        assert store.queue_depth("tenant-a") == 1 and store.queue_depth("tenant-b") == 2
        assert store.queue_depth() == 3
        assert store.get_queued("tenant-a", "b1") is None
        assert store.request_cancel("tenant-a", "b1") == "unknown"
        store.append_events("tenant-a", "same", [("values", b"a")])
        store.append_events("tenant-b", "same", [("values", b"b"), ("values", b"c")])
        assert [e.data for e in store.read_events("tenant-a", "same")] == [b"a"]
        claims = store.claim_runs("w1", limit=8, ttl=60.0)
        assert {(c.namespace, c.run_id) for c in claims} == {
            ("tenant-a", "a1"), ("tenant-b", "b1"), ("tenant-b", "b2")}

    def test_the_same_run_id_in_two_namespaces(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1", namespace="tenant-a")
        put(store, "r1", "t1", namespace="tenant-b")
        claims = store.claim_runs("w1", limit=8, ttl=60.0)
        assert sorted(c.namespace for c in claims) == ["tenant-a", "tenant-b"]
        assert store.request_cancel("tenant-a", "r1") == "signalled"
        row = store.get_queued("tenant-b", "r1")
        assert row is not None and row.cancel is None
        store.rollback_run("tenant-a", "r1")
        assert store.get_queued("tenant-b", "r1") is not None
        assert store.get_run("r1", namespace="tenant-a") is None
        kept = store.get_run("r1", namespace="tenant-b")
        assert kept is not None and kept.namespace == "tenant-b"

    def test_a_closed_store_refuses_calls(self, store: RuntimeStore) -> None:
        store.close()
        with pytest.raises(StoreError):
            put(store, "r1", "t1")
        with pytest.raises(StoreError):
            store.claim_runs("w1", limit=1, ttl=60.0)
        with pytest.raises(StoreError):
            store.append_events(NS, "r1", [("values", b"1")])

    # -- concurrency ----------------------------------------------------------------------

    def test_concurrent_claimers_share_the_work(self, store: RuntimeStore) -> None:
        claim_concurrently(lambda: store, workers=4, runs=40, threads=10)


class _Counter(TypedDict):
    n: int
    log: Annotated[list[str], operator.add]


def _counter_graph(store: RuntimeStore) -> Any:
    """``count`` twice: ``n`` +1 and a log entry (a delta-encoded channel) per step."""
    from threadloom.graph import END, START, StateGraph

    def count(state: _Counter) -> dict[str, Any]:
        return {"n": state["n"] + 1, "log": [f"count:{state['n']}"]}

    def again(state: _Counter) -> dict[str, Any]:
        return {"n": state["n"] + 1, "log": [f"count:{state['n']}"]}

    builder = StateGraph(_Counter)
    builder.add_node("count", count)
    builder.add_node("again", again)
    builder.add_edge(START, "count")
    builder.add_edge("count", "again")
    builder.add_edge("again", END)
    return builder.compile(checkpointer=store)
