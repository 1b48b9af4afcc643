"""The lease contract: acquire / renew / release, taking a dead holder's lease over at
once (:meth:`~threadloom.checkpoint.base.Store.takeover_lease`), and fencing tokens that a
thread deleted and created again never reissues. Mixed into
:class:`~threadloom.testing.conformance.StoreConformance`, which runs it on every backend.

Requires ``pytest``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from threadloom.checkpoint.base import CheckpointRecord, Commit, Lease, Store
from threadloom.errors import LeaseLostError, ThreadBusyError
from threadloom.testing._records import EXPIRED, TTL, snapshot, step

__all__ = ["LeaseConformance"]



def _commit(thread_id: str, seq: int, token: int | None) -> Commit:
    """A commit of checkpoint ``seq`` on the thread, fenced by ``token``."""
    checkpoint = CheckpointRecord(
        thread_id=thread_id, checkpoint_ns="", seq=seq,
        parent_seq=seq - 1 if seq else None, run_id="run-1", step=seq, source="loop",
        created_at=1_700_000_000.0 + seq, channels={}, next=(), metadata=b"{}",
        frontier=b"",
    )
    return Commit(thread_id, lease_token=token, checkpoint=checkpoint)


class LeaseConformance:
    """Leases, takeover and fencing across delete (subclasses provide a ``store`` fixture)."""

    # -- acquire, renew, release -----------------------------------------------------------

    def test_acquire_creates_the_thread_and_holds_the_lease(self, store: Store) -> None:
        before = time.time()
        lease = store.acquire_lease("t1", "worker-a", TTL)
        after = time.time()
        assert (lease.thread_id, lease.owner) == ("t1", "worker-a")
        assert lease.token >= 1
        assert before + TTL <= lease.expires_at <= after + TTL
        thread = store.get_thread("t1")
        assert thread is not None
        assert thread.lease == lease
        assert thread.namespace == "default"
        assert before <= thread.created_at <= after

    def test_another_owner_is_refused_while_held(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        with pytest.raises(ThreadBusyError):
            store.acquire_lease("t1", "worker-b", TTL)
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == lease

    def test_same_owner_reacquires_with_the_same_token(self, store: Store) -> None:
        first = store.acquire_lease("t1", "worker-a", 5.0)
        again = store.acquire_lease("t1", "worker-a", TTL)
        assert again.token == first.token
        assert again.expires_at > first.expires_at

    def test_takeover_after_expiry_bumps_the_token(self, store: Store) -> None:
        old = store.acquire_lease("t1", "worker-a", EXPIRED)
        new = store.acquire_lease("t1", "worker-b", TTL)
        assert new.owner == "worker-b"
        assert new.token > old.token
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == new

    def test_taking_an_expired_lease_back_bumps_the_token(self, store: Store) -> None:
        old = store.acquire_lease("t1", "worker-a", EXPIRED)
        new = store.acquire_lease("t1", "worker-a", TTL)
        assert new.token > old.token

    def test_expired_lease_nobody_took_may_still_commit_and_renew(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", EXPIRED)
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == lease  # expired, but still current
        store.commit([step("t1", 0, token=lease.token)])
        renewed = store.renew_lease(lease, TTL)
        assert renewed.token == lease.token
        assert renewed.expires_at > lease.expires_at

    def test_renew_extends_a_held_lease(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", 1.0)
        renewed = store.renew_lease(lease, TTL)
        assert (renewed.thread_id, renewed.owner, renewed.token) == ("t1", "worker-a", lease.token)
        assert renewed.expires_at > lease.expires_at
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == renewed

    def test_renew_after_takeover_is_refused(self, store: Store) -> None:
        old = store.acquire_lease("t1", "worker-a", EXPIRED)
        store.acquire_lease("t1", "worker-b", TTL)
        with pytest.raises(LeaseLostError):
            store.renew_lease(old, TTL)

    def test_renew_after_release_is_refused(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.release_lease(lease)
        with pytest.raises(LeaseLostError):
            store.renew_lease(lease, TTL)
        with pytest.raises(LeaseLostError):
            store.renew_lease(Lease("unknown", "worker-a", 1, 0.0), TTL)

    def test_release_frees_the_thread(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.release_lease(lease)
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease is None
        other = store.acquire_lease("t1", "worker-b", TTL)
        assert other.token > lease.token

    def test_a_commit_can_release_the_lease_it_was_fenced_by(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.commit([replace(_commit("t1", 0, lease.token), release_lease=True)])
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease is None
        checkpoint = store.get_checkpoint("t1")
        assert checkpoint is not None and checkpoint.seq == 0
        other = store.acquire_lease("t1", "worker-b", TTL)
        assert other.token > lease.token
        # a stale token neither commits nor releases the new holder's lease
        with pytest.raises(LeaseLostError):
            store.commit([replace(_commit("t1", 1, lease.token), release_lease=True)])
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == other

    def test_a_commit_after_a_release_in_its_batch_is_refused(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        before = snapshot(store, "t1")
        with pytest.raises(LeaseLostError):
            store.commit([replace(_commit("t1", 0, lease.token), release_lease=True),
                          _commit("t1", 1, lease.token)])
        assert snapshot(store, "t1") == before  # nothing written, the lease still held
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == lease

    def test_release_with_a_stale_token_does_nothing(self, store: Store) -> None:
        old = store.acquire_lease("t1", "worker-a", EXPIRED)
        new = store.acquire_lease("t1", "worker-b", TTL)
        store.release_lease(old)
        store.release_lease(Lease("unknown", "worker-a", 1, 0.0))
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == new
        with pytest.raises(ThreadBusyError):
            store.acquire_lease("t1", "worker-a", TTL)

    def test_stale_token_commit_is_refused_and_writes_nothing(self, store: Store) -> None:
        old = store.acquire_lease("t1", "worker-a", EXPIRED)
        store.commit([step("t1", 0, token=old.token)])
        new = store.acquire_lease("t1", "worker-b", TTL)
        before = snapshot(store, "t1")
        with pytest.raises(LeaseLostError):
            store.commit([step("t1", 1, token=old.token, expected=0, run_id="run-2")])
        assert snapshot(store, "t1") == before
        assert store.get_run("run-2") is None
        store.commit([step("t1", 1, token=new.token, expected=0)])
        assert store.get_checkpoint("t1") is not None

    def test_released_or_unknown_token_cannot_commit(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.release_lease(lease)
        with pytest.raises(LeaseLostError):
            store.commit([step("t1", 0, token=lease.token)])
        with pytest.raises(LeaseLostError):
            store.commit([step("t2", 0, token=1)])
        assert store.get_checkpoint("t1") is None
        assert store.get_thread("t2") is None

    # -- takeover of a dead holder's lease ------------------------------------------------

    def test_takeover_takes_an_unexpired_lease_with_a_new_token(self, store: Store) -> None:
        dead = store.acquire_lease("t1", "worker-dead", TTL)
        store.commit([_commit("t1", 0, dead.token)])
        new = store.takeover_lease(dead, "worker-b", TTL)
        assert (new.thread_id, new.owner) == ("t1", "worker-b")
        assert new.token > dead.token
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == new
        # The old holder is fenced out everywhere.
        with pytest.raises(LeaseLostError):
            store.commit([_commit("t1", 1, dead.token)])
        with pytest.raises(LeaseLostError):
            store.renew_lease(dead, TTL)
        store.release_lease(dead)
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == new
        with pytest.raises(ThreadBusyError):
            store.acquire_lease("t1", "worker-dead", TTL)
        store.commit([_commit("t1", 1, new.token)])
        assert [c.seq for c in store.list_checkpoints("t1")] == [1, 0]

    def test_takeover_is_a_compare_and_set_on_the_token(self, store: Store) -> None:
        dead = store.acquire_lease("t1", "worker-dead", TTL)
        first = store.takeover_lease(dead, "worker-b", TTL)
        with pytest.raises(LeaseLostError):
            store.takeover_lease(dead, "worker-c", TTL)
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == first

    def test_repeated_takeover_by_the_new_owner_keeps_its_token(self, store: Store) -> None:
        dead = store.acquire_lease("t1", "worker-dead", TTL)
        first = store.takeover_lease(dead, "worker-b", 5.0)
        again = store.takeover_lease(dead, "worker-b", TTL)
        assert again.token == first.token
        assert again.expires_at > first.expires_at

    def test_takeover_of_a_released_or_unknown_lease_is_refused(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.release_lease(lease)
        with pytest.raises(LeaseLostError):
            store.takeover_lease(lease, "worker-b", TTL)
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease is None
        with pytest.raises(LeaseLostError):
            store.takeover_lease(Lease("unknown", "worker-a", 1, 0.0), "worker-b", TTL)
        assert store.get_thread("unknown") is None

    def test_takeover_after_a_regrant_is_refused(self, store: Store) -> None:
        old = store.acquire_lease("t1", "worker-a", -1.0)
        store.acquire_lease("t1", "worker-b", TTL)  # took the expired lease normally
        with pytest.raises(LeaseLostError):
            store.takeover_lease(old, "worker-c", TTL)

    def test_concurrent_takeovers_have_one_winner(self, store: Store) -> None:
        dead = store.acquire_lease("t1", "worker-dead", TTL)
        barrier = threading.Barrier(6)
        won: list[Lease] = []
        lost: list[BaseException] = []

        def recover(n: int) -> None:
            barrier.wait()
            try:
                won.append(store.takeover_lease(dead, f"recoverer-{n}", TTL))
            except LeaseLostError as exc:
                lost.append(exc)

        threads = [threading.Thread(target=recover, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(lost) == 5
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == won[0]

    # -- fencing tokens across delete and re-create ---------------------------------------

    def test_a_recreated_thread_refuses_the_old_threads_token(self, store: Store) -> None:
        zombie = store.acquire_lease("t1", "worker-zombie", TTL)
        store.commit([_commit("t1", 0, zombie.token)])
        store.delete_thread("t1")
        new = store.acquire_lease("t1", "worker-new", TTL)
        assert new.token > zombie.token
        with pytest.raises(LeaseLostError):
            store.commit([_commit("t1", 0, zombie.token)])
        with pytest.raises(LeaseLostError):
            store.renew_lease(zombie, TTL)
        store.release_lease(zombie)
        assert store.list_checkpoints("t1") == []
        thread = store.get_thread("t1")
        assert thread is not None and thread.lease == new
        store.commit([_commit("t1", 0, new.token)])

    def test_tokens_keep_increasing_over_many_recreations(self, store: Store) -> None:
        seen: list[int] = []
        for round_ in range(4):
            lease = store.acquire_lease("t1", f"worker-{round_}", TTL)
            store.release_lease(lease)
            again = store.acquire_lease("t1", f"worker-{round_}", TTL)
            seen += [lease.token, again.token]
            store.delete_thread("t1")
        assert seen == sorted(seen) and len(set(seen)) == len(seen)

    def test_a_thread_recreated_by_a_commit_still_fences_the_old_token(
        self, store: Store
    ) -> None:
        zombie = store.acquire_lease("t1", "worker-zombie", TTL)
        store.delete_thread("t1")
        store.commit([_commit("t1", 0, None)])  # created again without a lease
        with pytest.raises(LeaseLostError):
            store.commit([_commit("t1", 1, zombie.token)])
        new = store.acquire_lease("t1", "worker-new", TTL)
        assert new.token > zombie.token
        with pytest.raises(LeaseLostError):
            store.commit([_commit("t1", 1, zombie.token)])

    def test_a_recreated_thread_outranks_other_deleted_threads(self, store: Store) -> None:
        # Tokens are not per thread id only: whatever thread a zombie held, the recreated
        # thread's token is above it.
        busy = [store.acquire_lease("t2", f"worker-{n}", -1.0) for n in range(5)]
        store.delete_thread("t2")
        store.commit([_commit("t2", 0, None)])
        new = store.acquire_lease("t2", "worker-new", TTL)
        assert new.token > max(lease.token for lease in busy)
