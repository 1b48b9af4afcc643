"""The namespace contract: two namespaces hold the same thread ids and run ids with different
data, and nothing done in one (a commit, a lease, a deletion, retention) reaches the other.
Mixed into :class:`~threadloom.testing.conformance.StoreConformance`, which runs it on every
backend.

Requires ``pytest``.
"""

from __future__ import annotations

import pytest

from threadloom.checkpoint.base import (
    BlobRecord,
    Commit,
    RunProgress,
    Store,
    WriteRecord,
)
from threadloom.errors import CheckpointConflictError, LeaseLostError, RunConflictError
from threadloom.testing._records import TTL, checkpoint, execution, run

__all__ = ["NamespaceConformance"]

A, B = "tenant-a", "tenant-b"


def _step(namespace: str, seq: int, *, thread_id: str = "t1", run_id: str = "r1",
          token: int | None = None, status: str = "running") -> Commit:
    """Step ``seq`` of run ``run_id`` on the thread, with data naming the namespace."""
    tag = namespace.encode()
    cp = checkpoint(thread_id, seq, run_id=run_id, channels={"value": (seq, seq)},
                    blobs=[BlobRecord("value", seq, None, b"%s-v%d" % (tag, seq))])
    return Commit(
        thread_id, namespace, lease_token=token, checkpoint=cp,
        writes=[WriteRecord(thread_id, "", seq, "task-1", "value", 0, b"%s-w%d" % (tag, seq))],
        executions=[execution(f"{thread_id}:{seq}", run_id, thread_id, step=seq,
                              outputs=b"%s-out%d" % (tag, seq))],
        runs=[run(run_id, thread_id, steps=seq, status=status, metadata={"tenant": namespace})],
    )  # fmt: skip


def _fill(store: Store, *namespaces: str, steps: int = 3) -> None:
    for ns in namespaces:
        store.commit([_step(ns, seq) for seq in range(steps)])


class NamespaceConformance:
    """Two namespaces with the same ids (subclasses provide a ``store`` fixture)."""

    def test_the_same_ids_hold_different_data_in_two_namespaces(self, store: Store) -> None:
        store.commit([_step(A, 0), _step(A, 1)])
        store.commit([_step(B, 0)])
        for ns, seqs in ((A, [1, 0]), (B, [0])):
            tag = ns.encode()
            assert [c.seq for c in store.list_checkpoints("t1", namespace=ns)] == seqs
            latest = store.get_checkpoint("t1", namespace=ns)
            assert latest is not None and latest.seq == seqs[0]
            blobs = store.get_blobs("t1", "", {"value": (0, 9)}, namespace=ns)
            assert sorted(b.data for b in blobs) == [b"%s-v%d" % (tag, s) for s in sorted(seqs)]
            writes = store.get_writes("t1", "", 0, namespace=ns)
            assert [w.data for w in writes] == [b"%s-w0" % tag]
            got = store.get_run("r1", namespace=ns)
            assert got is not None
            assert (got.namespace, got.metadata, got.steps) == (ns, {"tenant": ns}, seqs[0])
            executions = store.list_executions(run_id="r1", namespace=ns)
            assert [e.outputs for e in executions] == [
                b"%s-out%d" % (tag, s) for s in sorted(seqs)
            ]
            assert {e.namespace for e in executions} == {ns}
            thread = store.get_thread("t1", namespace=ns)
            assert thread is not None and thread.namespace == ns
        # and none of it in the default namespace
        assert store.get_thread("t1") is None
        assert store.get_checkpoint("t1") is None
        assert store.get_run("r1") is None
        assert store.get_writes("t1", "", 0) == []
        assert store.get_blobs("t1", "", {"value": (0, 9)}) == []

    def test_checkpoint_namespaces_are_listed_per_thread(self, store: Store) -> None:
        assert store.list_checkpoint_namespaces("t1") == []
        store.commit([Commit("t1", A, checkpoint=checkpoint("t1", 0)),
                      Commit("t1", A, checkpoint=checkpoint("t1", 0, ns="sub:e2")),
                      Commit("t1", A, checkpoint=checkpoint("t1", 1, ns="sub:e2")),
                      Commit("t1", A, checkpoint=checkpoint("t1", 0, ns="sub:e1")),
                      Commit("t2", A, checkpoint=checkpoint("t2", 0, ns="other:e9")),
                      Commit("t1", B, checkpoint=checkpoint("t1", 0, ns="b:e0"))])
        assert store.list_checkpoint_namespaces("t1", namespace=A) == ["", "sub:e1", "sub:e2"]
        assert store.list_checkpoint_namespaces("t1", namespace=B) == ["b:e0"]
        assert store.list_checkpoint_namespaces("t1") == []
        store.delete_thread("t1", namespace=A)
        assert store.list_checkpoint_namespaces("t1", namespace=A) == []
        assert store.list_checkpoint_namespaces("t2", namespace=A) == ["other:e9"]

    def test_heads_are_per_namespace(self, store: Store) -> None:
        store.commit([Commit("t1", A, checkpoint=checkpoint("t1", 0), expected_head=None)])
        store.commit([Commit("t1", B, checkpoint=checkpoint("t1", 0), expected_head=None)])
        store.commit([Commit("t1", A, checkpoint=checkpoint("t1", 1), expected_head=0)])
        with pytest.raises(CheckpointConflictError):
            store.commit([Commit("t1", B, checkpoint=checkpoint("t1", 1), expected_head=1)])
        with pytest.raises(CheckpointConflictError):  # the seq exists in A only: no conflict
            store.commit([Commit("t1", A, checkpoint=checkpoint("t1", 1))])
        store.commit([Commit("t1", B, checkpoint=checkpoint("t1", 1), expected_head=0)])

    def test_a_run_id_conflicts_only_within_its_namespace(self, store: Store) -> None:
        store.commit([Commit("t1", A, runs=[run("r1", "t1")])])
        store.commit([Commit("t2", B, runs=[run("r1", "t2")])])  # another run
        with pytest.raises(RunConflictError):
            store.commit([Commit("t2", A, runs=[run("r1", "t2")])])
        a, b = store.get_run("r1", namespace=A), store.get_run("r1", namespace=B)
        assert a is not None and b is not None
        assert (a.thread_id, b.thread_id) == ("t1", "t2")

    def test_progress_reaches_the_run_of_its_own_namespace(self, store: Store) -> None:
        store.commit([Commit("t1", A, runs=[run("r1", "t1")])])
        store.commit([Commit("t1", B, runs=[run("r1", "t1")])])
        store.commit([Commit("t1", A, progress=RunProgress("r1", 7, 8, 1_700_000_007.0))])
        a, b = store.get_run("r1", namespace=A), store.get_run("r1", namespace=B)
        assert a is not None and b is not None
        assert (a.steps, a.executions, b.steps, b.executions) == (7, 8, 0, 0)

    def test_a_lease_in_one_namespace_does_not_block_another(self, store: Store) -> None:
        a = store.acquire_lease("t1", "worker-a", TTL, namespace=A)
        with pytest.raises(LeaseLostError):  # a token fences its own namespace's thread only
            store.commit([_step(B, 0, token=a.token)])
        b = store.acquire_lease("t1", "worker-b", TTL, namespace=B)  # not busy
        assert (a.namespace, b.namespace) == (A, B)
        store.commit([_step(A, 0, token=a.token)])
        store.commit([_step(B, 0, token=b.token)])
        store.release_lease(a)
        thread_b = store.get_thread("t1", namespace=B)
        assert thread_b is not None and thread_b.lease == b  # releasing A's left B's
        renewed = store.renew_lease(b, TTL)
        assert (renewed.namespace, renewed.token) == (B, b.token)
        with pytest.raises(LeaseLostError):
            store.renew_lease(a, TTL)
        taken = store.takeover_lease(b, "worker-c", TTL)
        assert taken.namespace == B and taken.token > b.token
        assert store.get_thread("t1", namespace=A) is not None
        thread_a = store.get_thread("t1", namespace=A)
        assert thread_a is not None and thread_a.lease is None
        assert store.get_thread("t1") is None  # the default namespace has no t1

    def test_tokens_are_never_reissued_after_deleting_in_a_namespace(self, store: Store) -> None:
        old = store.acquire_lease("t1", "worker-a", TTL, namespace=A)
        store.delete_thread("t1", namespace=A)
        new = store.acquire_lease("t1", "worker-b", TTL, namespace=A)
        assert new.token > old.token
        with pytest.raises(LeaseLostError):
            store.commit([_step(A, 0, token=old.token)])

    def test_delete_thread_in_one_namespace_leaves_the_other(self, store: Store) -> None:
        _fill(store, A, B)
        store.acquire_lease("t1", "worker-b", TTL, namespace=B)
        keep = (
            store.get_thread("t1", namespace=B),
            store.list_checkpoints("t1", namespace=B),
            store.get_blobs("t1", "", {"value": (0, 9)}, namespace=B),
            store.get_writes("t1", "", 1, namespace=B),
            store.list_runs(namespace=B),
            store.list_executions(namespace=B),
        )
        store.delete_thread("t1", namespace=A)
        assert store.get_thread("t1", namespace=A) is None
        assert store.list_checkpoints("t1", namespace=A) == []
        assert store.get_blobs("t1", "", {"value": (0, 9)}, namespace=A) == []
        assert store.get_writes("t1", "", 1, namespace=A) == []
        assert store.get_run("r1", namespace=A) is None
        assert store.list_executions(namespace=A) == []
        assert keep == (
            store.get_thread("t1", namespace=B),
            store.list_checkpoints("t1", namespace=B),
            store.get_blobs("t1", "", {"value": (0, 9)}, namespace=B),
            store.get_writes("t1", "", 1, namespace=B),
            store.list_runs(namespace=B),
            store.list_executions(namespace=B),
        )

    def test_listings_filter_by_namespace(self, store: Store) -> None:
        _fill(store, A, B, steps=1)
        store.commit([Commit("t2", A, runs=[run("r2", "t2")],
                             executions=[execution("e2", "r2", "t2")])])
        assert sorted(t.thread_id for t in store.list_threads(namespace=A)) == ["t1", "t2"]
        assert [t.thread_id for t in store.list_threads(namespace=B)] == ["t1"]
        assert sorted((t.namespace, t.thread_id) for t in store.list_threads(namespace=None)) \
            == [(A, "t1"), (A, "t2"), (B, "t1")]
        assert store.list_threads() == []
        assert sorted(r.run_id for r in store.list_runs(namespace=A)) == ["r1", "r2"]
        assert [r.run_id for r in store.list_runs(namespace=B, thread_id="t1")] == ["r1"]
        assert sorted((r.namespace, r.run_id) for r in store.list_runs(namespace=None)) == [
            (A, "r1"), (A, "r2"), (B, "r1"),
        ]  # fmt: skip
        assert store.list_runs() == []
        assert [e.id for e in store.list_executions(run_id="r1", namespace=B)] == ["t1:0"]
        assert sorted((e.namespace, e.id) for e in store.list_executions(namespace=None)) == [
            (A, "e2"), (A, "t1:0"), (B, "t1:0"),
        ]  # fmt: skip
        assert store.list_executions() == []

    def test_prune_in_one_namespace_leaves_the_other(self, store: Store) -> None:
        _fill(store, A, B)
        assert store.prune_checkpoints("t1", 1, namespace=A) == 2
        assert [c.seq for c in store.list_checkpoints("t1", namespace=A)] == [2]
        assert [c.seq for c in store.list_checkpoints("t1", namespace=B)] == [2, 1, 0]
        assert len(store.get_blobs("t1", "", {"value": (0, 9)}, namespace=B)) == 3
        assert store.get_writes("t1", "", 0, namespace=B) != []
        assert store.get_writes("t1", "", 0, namespace=A) == []
        assert store.prune_checkpoints("t1", 1) == 0  # nothing in the default namespace

    def test_delete_runs_by_namespace(self, store: Store) -> None:
        for ns in (A, B, "default"):
            store.commit([Commit("t1", ns, runs=[run("r1", "t1", status="succeeded")],
                                 executions=[execution("e1", "r1", "t1")])])
        cutoff = 1_700_000_001.0
        assert store.delete_runs(created_before=cutoff, namespace=A) == 1
        assert store.get_run("r1", namespace=A) is None
        assert store.list_executions(namespace=A) == []
        assert store.get_run("r1", namespace=B) is not None
        assert store.delete_runs(created_before=cutoff) == 1  # "default"
        assert store.get_run("r1") is None
        assert [e.id for e in store.list_executions(namespace=B)] == ["e1"]
        store.commit([Commit("t1", A, runs=[run("r1", "t1", status="failed")])])
        assert store.delete_runs(created_before=cutoff, namespace=None) == 2  # every one
        assert store.list_runs(namespace=None) == []
        assert store.list_executions(namespace=None) == []
