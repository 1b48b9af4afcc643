"""The contract of ``enqueue_claimed``: a run queued already claimed by the worker that will
execute it (see :meth:`threadloom.checkpoint.queue.RuntimeStore.enqueue_claimed`); mixed into
:class:`threadloom.testing.queue_conformance.QueueConformance`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from threadloom.checkpoint.queue import QueuedRun, RuntimeStore
from threadloom.errors import RunConflictError, ThreadBusyError
from threadloom.testing._queue_records import HOUR, NS, ids, pending, put, queued

__all__ = ["ClaimedEnqueueConformance"]


def put_claimed(store: RuntimeStore, run_id: str, thread_id: str, worker: str = "w1",
                ttl: float = HOUR, strategy: Any = "enqueue", **fields: Any
                ) -> QueuedRun | None:
    """``enqueue_claimed`` run ``run_id`` on ``thread_id`` for ``worker``."""
    return store.enqueue_claimed(pending(run_id, thread_id), queued(run_id, thread_id, **fields),
                                 worker, ttl, strategy)


class ClaimedEnqueueConformance:
    """``enqueue_claimed``; subclasses provide a ``store`` fixture."""

    def test_enqueue_claimed_claims_a_run_that_can_start(self, store: RuntimeStore) -> None:
        before = time.time()
        claim = put_claimed(store, "r1", "t1", ttl=60.0)
        assert claim is not None
        assert (claim.status, claim.worker, claim.attempts, claim.claim_token) == (
            "claimed", "w1", 1, 1)
        assert claim.claim_expires is not None and claim.claim_expires >= before + 60.0
        assert store.get_queued(NS, "r1") == claim  # as stored
        record = store.get_run("r1")
        assert record is not None and record.status == "pending"
        # it is this worker's: no one else claims it, and it renews and finishes as claimed
        assert store.claim_runs("w2", limit=8, ttl=60.0) == []
        [state] = store.renew_claims("w1", [claim], 60.0)
        assert not state.lost and state.cancel is None
        assert store.finish_claim(claim)
        row = store.get_queued(NS, "r1")
        assert row is not None and row.status == "done"

    def test_enqueue_claimed_sends_no_work_signal(self, store: RuntimeStore) -> None:
        from threadloom.testing.queue_conformance import Collector

        bus, got = store.signals(), Collector()
        stop = bus.subscribe("work", got)
        try:
            assert put_claimed(store, "r1", "t1") is not None
            bus.publish("work", "marker")  # signals arrive in order: r1's would come first
            assert got.wait_for(lambda m: "marker" in m)
            assert got.messages == ["marker"]
        finally:
            stop()

    def test_enqueue_claimed_queues_behind_an_open_run(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        assert put_claimed(store, "r2", "t1") is None  # its turn comes after r1's
        row = store.get_queued(NS, "r2")
        assert row is not None and row.status == "queued" and row.worker is None
        assert ids(store.claim_runs("w2", limit=8, ttl=60.0)) == ["r1"]

    def test_enqueue_claimed_queues_a_delayed_run(self, store: RuntimeStore) -> None:
        assert put_claimed(store, "r1", "t1", available_at=time.time() + HOUR) is None
        row = store.get_queued(NS, "r1")
        assert row is not None and row.status == "queued"

    def test_enqueue_claimed_claims_after_the_thread_went_idle(
        self, store: RuntimeStore
    ) -> None:
        put(store, "r1", "t1")
        [first] = store.claim_runs("w1", limit=8, ttl=60.0)
        store.finish_claim(first)
        claim = put_claimed(store, "r2", "t1", worker="w2")
        assert claim is not None and claim.worker == "w2"

    def test_enqueue_claimed_lapses_like_any_claim(self, store: RuntimeStore) -> None:
        claim = put_claimed(store, "r1", "t1", ttl=-1.0)  # lapsed at once: the worker died
        assert claim is not None
        [taken] = store.claim_runs("w2", limit=8, ttl=60.0)
        assert taken.run_id == "r1" and taken.attempts == 2 and taken.worker == "w2"
        assert not store.finish_claim(claim)  # fenced: the first claim is not current

    def test_enqueue_claimed_refuses_what_enqueue_refuses(self, store: RuntimeStore) -> None:
        put(store, "r1", "t1")
        with pytest.raises(RunConflictError):
            put_claimed(store, "r1", "t2")
        with pytest.raises(ThreadBusyError):
            put_claimed(store, "r2", "t1", strategy="reject")
        assert store.get_run("r2") is None and store.get_queued(NS, "r2") is None
