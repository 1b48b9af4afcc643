"""The store contract, written once and run on every backend.

Subclass :class:`StoreConformance` in a test module and give it a ``store`` fixture that
yields a fresh, set-up store (and closes it afterwards); every ``test_*`` method below then
runs against that backend. The tests use only the public
:class:`~threadloom.checkpoint.base.Store` protocol, the record dataclasses and
:func:`~threadloom.checkpoint.delta.resolve_chain`, and the behaviour they pin is the one
documented by :mod:`threadloom.checkpoint.memory` (the reference backend) where the protocol
leaves a choice open.

Requires ``pytest``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from threadloom.checkpoint.base import (
    Attempt,
    BlobRecord,
    Commit,
    RunProgress,
    Store,
    WriteRecord,
)
from threadloom.checkpoint.delta import resolve_chain
from threadloom.errors import (
    CheckpointConflictError,
    LeaseLostError,
    RunConflictError,
    StoreError,
    ThreadBusyError,
)
from threadloom.testing._leases import LeaseConformance
from threadloom.testing._namespaces import NamespaceConformance
from threadloom.testing._pages import PageConformance
from threadloom.testing._records import (
    TTL,
    checkpoint,
    execution,
    run,
    snapshot,
    step,
)
from threadloom.testing._run_logs import RunLogConformance

__all__ = ["StoreConformance", "checkpoint", "execution", "run", "snapshot", "step"]

def _chain_blobs(store: Store, thread_id: str, channel: str, base: int, version: int) -> list[int]:
    blobs = store.get_blobs(thread_id, "", {channel: (base, version)})
    return [b.version for b in resolve_chain(blobs, version)]


class StoreConformance(LeaseConformance, NamespaceConformance, PageConformance,
                       RunLogConformance):
    """The store contract; subclasses provide a ``store`` fixture (fresh and set up). The
    lease takeover and fencing-across-delete tests come from
    :class:`~threadloom.testing._leases.LeaseConformance`, the two-namespaces tests from
    :class:`~threadloom.testing._namespaces.NamespaceConformance`, the keyset pages from
    :class:`~threadloom.testing._pages.PageConformance`, the run logs from
    :class:`~threadloom.testing._run_logs.RunLogConformance`."""

    # -- basics ---------------------------------------------------------------------------

    def test_implements_the_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)

    def test_setup_is_idempotent(self, store: Store) -> None:
        store.commit([step("t1", 0)])
        store.setup()
        store.setup()
        assert store.get_checkpoint("t1") is not None

    def test_empty_store_answers_empty(self, store: Store) -> None:
        assert store.get_checkpoint("nope") is None
        assert store.get_checkpoint("nope", seq=3) is None
        assert store.list_checkpoints("nope") == []
        assert store.get_blobs("nope", "", {"value": (0, 5)}) == []
        assert store.get_blobs("nope", "", {}) == []
        assert store.get_writes("nope", "", 0) == []
        assert store.get_run("nope") is None
        assert store.list_runs() == []
        assert store.list_executions() == []
        assert store.get_thread("nope") is None
        assert store.list_threads() == []
        store.delete_thread("nope")
        store.commit([])

    # -- commit: checks and atomicity -----------------------------------------------------

    def test_commit_creates_and_touches_the_thread(self, store: Store) -> None:
        before = time.time()
        store.commit([step("t1", 0, namespace="tenant-a")])
        thread = store.get_thread("t1", namespace="tenant-a")
        assert thread is not None
        assert thread.namespace == "tenant-a"
        assert thread.lease is None
        assert before <= thread.created_at <= thread.updated_at <= time.time()
        assert store.get_thread("t1") is None  # another namespace's thread of the same id
        store.commit([step("t1", 1, namespace="tenant-a")])
        touched = store.get_thread("t1", namespace="tenant-a")
        assert touched is not None
        assert touched.namespace == "tenant-a"
        assert touched.created_at == thread.created_at
        assert touched.updated_at >= thread.updated_at

    def test_unflushed_commits_are_applied_like_flushed_ones(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        first = step("t1", 0, token=lease.token, expected=None)
        first.flush = False
        store.commit([first])
        second, third = step("t1", 1, token=lease.token), step("t1", 2, token=lease.token)
        second.flush = False  # a batch is flushed if any of its commits asks for it
        store.commit([second, third])
        assert [c.seq for c in store.list_checkpoints("t1")] == [2, 1, 0]
        assert [w.data for w in store.get_writes("t1", "", 1)] == [b"w1"]
        assert [e.id for e in store.list_executions(run_id="run-1")] == ["t1:0", "t1:1", "t1:2"]
        stale = step("t1", 3, token=lease.token + 1)
        stale.flush = False
        with pytest.raises(LeaseLostError):  # the checks are the same
            store.commit([stale])
        assert store.get_checkpoint("t1").seq == 2  # type: ignore[union-attr]

    def test_a_leased_writer_keeps_its_thread_recent(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.commit([Commit("t2")])
        store.commit([step("t1", 0, token=lease.token)])  # carries a run record: touches
        assert [t.thread_id for t in store.list_threads()][0] == "t1"

    def test_a_lease_and_its_commits_name_one_namespaces_thread(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL, namespace="tenant-a")
        assert lease.namespace == "tenant-a"
        store.commit([step("t1", 0, token=lease.token, namespace="tenant-a")])
        thread = store.get_thread("t1", namespace="tenant-a")
        assert thread is not None and thread.namespace == "tenant-a"
        assert thread.lease == lease
        with pytest.raises(LeaseLostError):  # no lease on the default namespace's t1
            store.commit([step("t1", 1, token=lease.token)])
        assert [t.thread_id for t in store.list_threads(namespace="tenant-a")] == ["t1"]
        assert store.list_threads(namespace="default") == []

    def test_expected_head_none_means_no_checkpoint_yet(self, store: Store) -> None:
        store.commit([step("t1", 0, expected=None)])
        with pytest.raises(CheckpointConflictError):
            store.commit([step("t1", 1, expected=None)])
        with pytest.raises(CheckpointConflictError):
            store.commit([step("t1", 1, expected=5)])
        store.commit([step("t1", 1, expected=0)])
        store.commit([step("t1", 2)])  # ANY_HEAD: no compare-and-set
        latest = store.get_checkpoint("t1")
        assert latest is not None and latest.seq == 2

    def test_expected_head_is_per_namespace(self, store: Store) -> None:
        store.commit([Commit("t1", checkpoint=checkpoint("t1", 0, ns="sub"), expected_head=None)])
        store.commit([Commit("t1", checkpoint=checkpoint("t1", 0), expected_head=None)])
        assert store.get_checkpoint("t1", "sub") is not None

    def test_batch_sees_its_own_earlier_commits(self, store: Store) -> None:
        store.commit([step("t1", 0, expected=None), step("t1", 1, expected=0)])
        assert [c.seq for c in store.list_checkpoints("t1")] == [1, 0]

    @pytest.mark.parametrize("failure", ["lease", "head", "run", "duplicate"])
    def test_a_failing_commit_undoes_the_whole_batch(self, store: Store, failure: str) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.commit([step("t1", 0, token=lease.token)])
        store.commit([Commit("t9", runs=[run("foreign", "t9")])])
        before = snapshot(store, "t1"), snapshot(store, "t2")
        second = {
            "lease": step("t2", 0, token=99),
            "head": step("t2", 0, expected=7),
            "run": Commit("t2", runs=[run("foreign", "t2")]),
            "duplicate": step("t1", 0),
        }[failure]
        first = step("t1", 1, token=lease.token, expected=0, run_id="run-new")
        first.writes.append(WriteRecord("t1", "", 0, "task-0", "value", 0, b"replaced?"))
        with pytest.raises((LeaseLostError, CheckpointConflictError, RunConflictError)):
            store.commit([first, second])
        assert (snapshot(store, "t1"), snapshot(store, "t2")) == before
        assert store.get_run("run-new") is None

    def test_checks_run_in_the_documented_order(self, store: Store) -> None:
        lease = store.acquire_lease("t1", "worker-a", TTL)
        store.commit([Commit("t2", runs=[run("foreign", "t2")])])
        bad_everything = Commit(
            "t1", lease_token=lease.token + 1, expected_head=5, runs=[run("foreign", "t1")]
        )
        with pytest.raises(LeaseLostError):
            store.commit([bad_everything])
        bad_everything.lease_token = lease.token
        with pytest.raises(CheckpointConflictError):
            store.commit([bad_everything])
        bad_everything.expected_head = None
        with pytest.raises(RunConflictError):
            store.commit([bad_everything])

    def test_run_of_another_thread_is_a_conflict(self, store: Store) -> None:
        store.commit([step("t1", 0, run_id="run-x")])
        before = snapshot(store, "t2")
        with pytest.raises(RunConflictError):
            store.commit([step("t2", 0, run_id="run-x")])
        assert snapshot(store, "t2") == before
        stored = store.get_run("run-x")
        assert stored is not None and stored.thread_id == "t1"
        with pytest.raises(RunConflictError):  # also when the batch itself records it first
            store.commit([Commit("t3", runs=[run("run-y", "t3")]), step("t4", 0, run_id="run-y")])
        assert store.get_run("run-y") is None

    def test_duplicate_checkpoint_is_a_conflict(self, store: Store) -> None:
        store.commit([step("t1", 0), step("t1", 1)])
        with pytest.raises(CheckpointConflictError):
            store.commit([step("t1", 0)])
        with pytest.raises(CheckpointConflictError):
            store.commit([step("t1", 5), step("t1", 5)])
        assert [c.seq for c in store.list_checkpoints("t1")] == [1, 0]

    def test_commit_without_checkpoint_records_the_rest(self, store: Store) -> None:
        w = WriteRecord("t1", "", 0, "task-1", "value", 0, b"x")
        store.commit([Commit("t1", writes=[w], executions=[execution("e1", "r1", "t1")])])
        assert store.get_writes("t1", "", 0) == [w]
        assert [e.id for e in store.list_executions(thread_id="t1")] == ["e1"]
        assert store.get_checkpoint("t1") is None
        assert store.get_thread("t1") is not None

    # -- checkpoints ----------------------------------------------------------------------

    def test_checkpoint_round_trips(self, store: Store) -> None:
        cp = checkpoint("t1", 3, channels={"a": (3, 1), "b": (2, 2)}, blobs=[])
        cp.parent_seq = None
        store.commit([Commit("t1", checkpoint=cp)])
        got = store.get_checkpoint("t1", seq=3)
        assert got == cp
        assert got is not None and got.checkpoint_id == "0000000000000003"
        assert got.channels["a"] == (3, 1) and isinstance(got.channels["a"], tuple)
        assert isinstance(got.next, tuple)

    def test_get_checkpoint_latest_and_by_seq(self, store: Store) -> None:
        store.commit([step("t1", s) for s in range(4)])
        store.commit([Commit("t1", checkpoint=checkpoint("t1", 9, ns="sub"))])
        latest = store.get_checkpoint("t1")
        assert latest is not None and latest.seq == 3
        by_seq = store.get_checkpoint("t1", "", 1)
        assert by_seq is not None and (by_seq.seq, by_seq.parent_seq) == (1, 0)
        assert store.get_checkpoint("t1", seq=7) is None
        sub = store.get_checkpoint("t1", "sub")
        assert sub is not None and sub.seq == 9
        assert store.get_checkpoint("t1", "other") is None

    def test_list_checkpoints_filters_newest_first(self, store: Store) -> None:
        commits = [
            Commit("t1", checkpoint=checkpoint("t1", s, run_id=r, source=src))
            for s, r, src in [
                (0, "r1", "input"), (1, "r1", "loop"), (2, "r1", "loop"),
                (3, "r2", "input"), (4, "r2", "loop"), (5, None, "update"),
            ]
        ]  # fmt: skip
        store.commit(commits)
        store.commit([Commit("t2", checkpoint=checkpoint("t2", 7, run_id="r1"))])

        def seqs(**kw: Any) -> list[int]:
            return [c.seq for c in store.list_checkpoints("t1", **kw)]

        assert seqs() == [5, 4, 3, 2, 1, 0]
        assert seqs(before=3) == [2, 1, 0]
        assert seqs(run_id="r1") == [2, 1, 0]
        assert seqs(source="loop") == [4, 2, 1]
        assert seqs(source="input", run_id="r2") == [3]
        assert seqs(limit=2) == [5, 4]
        assert seqs(run_id="r1", limit=2, before=2) == [1, 0]
        assert seqs(limit=0) == []
        assert store.list_checkpoints("t1", "sub") == []
        assert all(not c.blobs for c in store.list_checkpoints("t1"))

    # -- blobs ----------------------------------------------------------------------------

    def test_blob_chain_with_deltas(self, store: Store) -> None:
        chain = [BlobRecord("msgs", 0, None, b"[1]")]
        chain += [BlobRecord("msgs", v, v - 1, b"[%d]" % (v + 1)) for v in range(1, 5)]
        chain.append(BlobRecord("msgs", 5, None, b"[1,2,3,4,5,6]"))  # a new snapshot
        store.commit(
            [
                Commit("t1", checkpoint=checkpoint("t1", b.version, channels={}, blobs=[b]))
                for b in chain
            ]
        )
        got = store.get_blobs("t1", "", {"msgs": (0, 3)})
        assert sorted(got, key=lambda b: b.version) == chain[:4]
        assert _chain_blobs(store, "t1", "msgs", 0, 4) == [0, 1, 2, 3, 4]
        assert _chain_blobs(store, "t1", "msgs", 5, 5) == [5]
        assert [b.data for b in resolve_chain(got, 2)] == [b"[1]", b"[2]", b"[3]"]
        assert store.get_blobs("t1", "", {"msgs": (2, 3)}) != []
        assert sorted(b.version for b in store.get_blobs("t1", "", {"msgs": (2, 3)})) == [2, 3]

    def test_blob_chain_after_a_fork(self, store: Store) -> None:
        def cp(seq: int, prev: int | None) -> Commit:
            blob = BlobRecord("msgs", seq, prev, b"m%d" % seq)
            return Commit(
                "t1", checkpoint=checkpoint("t1", seq, channels={"msgs": (seq, 0)}, blobs=[blob])
            )

        store.commit([cp(0, None), cp(1, 0), cp(2, 1), cp(3, 2)])
        store.commit([cp(4, 1)])  # a fork from checkpoint 1 appends to version 1
        blobs = store.get_blobs("t1", "", {"msgs": (0, 4)})
        assert sorted(b.version for b in blobs) == [0, 1, 2, 3, 4]  # other lineage included
        assert [b.version for b in resolve_chain(blobs, 4)] == [0, 1, 4]
        assert [b.version for b in resolve_chain(blobs, 3)] == [0, 1, 2, 3]

    def test_get_blobs_of_many_channels(self, store: Store) -> None:
        names = [f"ch{i:02d}" for i in range(40)]
        blobs = [BlobRecord(n, s, None, f"{n}@{s}".encode()) for s in range(3) for n in names]
        store.commit(
            [
                Commit(
                    "t1",
                    checkpoint=checkpoint(
                        "t1",
                        s,
                        channels={n: (s, s) for n in names},
                        blobs=blobs[40 * s : 40 * s + 40],
                    ),
                )
                for s in range(3)
            ]
        )
        wants = {n: (1, 2) if i % 2 else (2, 2) for i, n in enumerate(names)}
        wants["missing"] = (0, 9)
        got = store.get_blobs("t1", "", wants)
        expected = {(n, v) for i, n in enumerate(names) for v in ([1, 2] if i % 2 else [2])}
        assert {(b.channel, b.version) for b in got} == expected
        assert len(got) == len(expected)
        assert all(b.data == f"{b.channel}@{b.version}".encode() and b.prev is None for b in got)
        assert store.get_blobs("t2", "", wants) == []
        assert store.get_blobs("t1", "sub", wants) == []

    # -- writes ---------------------------------------------------------------------------

    def test_writes_are_ordered_and_filtered(self, store: Store) -> None:
        def w(task: str, channel: str, idx: int, data: bytes = b"x", seq: int = 0) -> WriteRecord:
            return WriteRecord("t1", "", seq, task, channel, idx, data)

        store.commit([Commit("t1", writes=[w("b", "a", 0), w("a", "z", 1), w("a", "z", 0)])])
        store.commit([Commit("t1", writes=[w("a", "b", 0), w("c", "a", 0, seq=1)])])
        keys = [(x.task_id, x.channel, x.idx) for x in store.get_writes("t1", "", 0)]
        assert keys == [("a", "b", 0), ("a", "z", 0), ("a", "z", 1), ("b", "a", 0)]
        assert [x.channel for x in store.get_writes("t1", "", 0, task_id="a")] == ["b", "z", "z"]
        assert store.get_writes("t1", "", 0, task_id="nope") == []
        assert store.get_writes("t1", "", 1) == [w("c", "a", 0, seq=1)]
        assert store.get_writes("t1", "sub", 0) == []

    def test_writing_an_existing_key_replaces_it(self, store: Store) -> None:
        store.commit([Commit("t1", writes=[WriteRecord("t1", "", 0, "a", "__error__", 0, b"1")])])
        store.commit([Commit("t1", writes=[WriteRecord("t1", "", 0, "a", "__error__", 0, b"2")])])
        assert [x.data for x in store.get_writes("t1", "", 0)] == [b"2"]

    # -- runs -----------------------------------------------------------------------------

    def test_run_round_trips_and_upserts(self, store: Store) -> None:
        rec = run(
            "r1", "t1", namespace="tenant-a", input=b"in", durability="sync", started_at=1.5,
            resumed_from="r0", metadata={"user": {"id": 7, "tags": ["a", "b"]}},
        )  # fmt: skip
        store.commit([Commit("t1", namespace="tenant-a", runs=[rec])])
        assert store.get_run("r1", namespace="tenant-a") == rec
        assert store.get_run("r1") is None
        done = run(
            "r1", "t1", status="succeeded", output=b"out", error=None, steps=4, executions=5,
            updated_at=1_700_000_009.0, ended_at=1_700_000_009.0, namespace="tenant-a",
        )  # fmt: skip
        store.commit([Commit("t1", namespace="tenant-a", runs=[done])])
        assert store.get_run("r1", namespace="tenant-a") == done

    def test_run_trace_parent_and_stats_round_trip(self, store: Store) -> None:
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        rec = run("r1", "t1", traceparent=parent)
        store.commit([Commit("t1", runs=[rec])])
        assert store.get_run("r1") == rec
        stats = {"retries": 2, "queue_wait_ms": 12.5, "bytes_written": 4096,
                 "nodes": {"a": {"count": 3, "total_ms": 1.25, "max_ms": 0.75}}}
        done = run("r1", "t1", status="succeeded", traceparent=parent, stats=stats)
        store.commit([Commit("t1", runs=[done])])
        found = store.get_run("r1")
        assert found is not None and found.stats == stats and found.traceparent == parent
        assert store.list_runs(thread_id="t1")[0].stats == stats

    def test_run_progress_sets_only_the_counters_of_the_commits_thread(
        self, store: Store
    ) -> None:
        rec = run("r1", "t1", input=b"in", metadata={"k": 1})
        store.commit([Commit("t1", runs=[rec])])
        store.commit([step("t1", 0, run_id="other"), Commit(
            "t1", checkpoint=checkpoint("t1", 1, run_id="r1"),
            progress=RunProgress("r1", 2, 3, 1_700_000_002.0),
        )])
        got = store.get_run("r1")
        assert got is not None
        assert (got.steps, got.executions, got.updated_at) == (2, 3, 1_700_000_002.0)
        assert got == replace(rec, steps=2, executions=3, updated_at=1_700_000_002.0)
        # another thread's commit, or a run not recorded, changes nothing
        store.commit([Commit("t2", progress=RunProgress("r1", 9, 9, 9.0))])
        store.commit([Commit("t1", progress=RunProgress("nobody", 9, 9, 9.0))])
        assert store.get_run("r1") == got
        assert store.get_run("nobody") is None

    def test_run_identity_is_fixed_by_its_first_record(self, store: Store) -> None:
        store.commit([Commit("t1", runs=[run("r1", "t1", graph="g1", namespace="n1")])])
        moved = run("r1", "t1", graph="g2", namespace="n2", created_at=5.0, status="failed")
        store.commit([Commit("t1", runs=[moved])])
        got = store.get_run("r1")
        assert got is not None  # recorded in its commit's namespace, whatever it says
        assert (got.graph, got.namespace, got.created_at) == ("g1", "default", 1_700_000_000.0)
        assert store.get_run("r1", namespace="n1") is None
        assert got.status == "failed"

    def test_list_runs_filters_orders_and_paginates(self, store: Store) -> None:
        runs = [
            run("r1", "t1", created_at=10.0, graph="g1", status="succeeded"),
            run("r2", "t1", created_at=20.0, graph="g2", status="failed"),
            run("r3", "t2", created_at=30.0, graph="g1", status="running", namespace="n2"),
            run("r4", "t2", created_at=30.0, graph="g1", status="succeeded", namespace="n2"),
            run("r5", "t3", created_at=40.0, graph="g2", status="interrupted"),
        ]
        for r in runs:
            store.commit([Commit(r.thread_id, namespace=r.namespace, runs=[r])])

        def ids(**kw: Any) -> list[str]:
            kw.setdefault("namespace", None)  # every namespace, unless the test names one
            return [r.run_id for r in store.list_runs(**kw)]

        assert [r.run_id for r in store.list_runs()] == ["r5", "r2", "r1"]  # "default"
        assert ids() == ["r5", "r4", "r3", "r2", "r1"]
        assert ids(thread_id="t1") == ["r2", "r1"]
        assert ids(status="succeeded") == ["r4", "r1"]
        assert ids(graph="g1") == ["r4", "r3", "r1"]
        assert ids(namespace="default") == ["r5", "r2", "r1"]
        assert ids(created_after=20.0) == ["r5", "r4", "r3", "r2"]
        assert ids(created_before=30.0) == ["r2", "r1"]
        assert ids(created_after=20.0, created_before=40.0) == ["r4", "r3", "r2"]
        assert ids(graph="g1", namespace="n2", status="running") == ["r3"]
        assert ids(limit=2) == ["r5", "r4"]
        assert ids(limit=2, offset=2) == ["r3", "r2"]
        assert ids(limit=2, offset=4) == ["r1"]
        assert ids(offset=9) == []
        assert ids(thread_id="nope") == []
        assert store.list_runs(thread_id="t1") == [runs[1], runs[0]]
        assert store.list_runs(thread_id="t2") == []  # the default namespace's t2 has none

    # -- executions -----------------------------------------------------------------------

    def test_execution_round_trips_and_moves_through_statuses(self, store: Store) -> None:
        ex = execution(
            "e1", "r1", "t1", status="PENDING", inputs=b"{}", parents=("e0", "e00"),
            checkpoint_seq=3, namespace="tenant-a",
        )  # fmt: skip
        store.commit([Commit("t1", namespace="tenant-a", executions=[ex])])
        assert store.list_executions(run_id="r1", namespace="tenant-a") == [ex]
        assert store.list_executions(run_id="r1") == []
        first = Attempt(1, 100.0, 101.0, "TimeoutError: slow")
        ex.status, ex.attempt, ex.started_at, ex.attempts = "RUNNING", 2, 100.0, (first,)
        store.commit([Commit("t1", namespace="tenant-a", executions=[ex])])
        ex.status, ex.outputs, ex.ended_at = "SUCCEEDED", b'{"x": 1}', 103.0
        ex.attempts = (first, Attempt(2, 102.0, 103.0))
        store.commit([Commit("t1", namespace="tenant-a", executions=[ex])])
        assert store.list_executions(thread_id="t1", namespace="tenant-a") == [ex]
        assert store.list_executions(status="RUNNING", namespace="tenant-a") == []
        moved = execution("e1", "r2", "t9", namespace="other", status="FAILED", error="boom")
        store.commit([Commit("t1", namespace="tenant-a", executions=[moved])])
        (got,) = store.list_executions(namespace=None)
        assert (got.thread_id, got.namespace) == ("t1", "tenant-a")  # the commit's
        assert (got.run_id, got.status, got.error, got.attempts) == ("r2", "FAILED", "boom", ())

    def test_executions_are_kept_by_their_commits_thread(self, store: Store) -> None:
        store.commit([Commit("t1", executions=[execution("e1", "r1", "t9", node="a")])])
        store.commit([Commit("t2", executions=[execution("e1", "r2", "t2", node="b")])])
        store.commit([Commit("t1", executions=[execution("e1", "r1", "t1", node="c")])])
        got = {(e.thread_id, e.node) for e in store.list_executions()}
        assert got == {("t1", "c"), ("t2", "b")}
        assert [e.node for e in store.list_executions(thread_id="t1")] == ["c"]
        assert [e.node for e in store.list_executions(run_id="r2")] == ["b"]
        store.delete_thread("t2")
        assert [e.thread_id for e in store.list_executions()] == ["t1"]

    def test_list_executions_filters_orders_and_paginates(self, store: Store) -> None:
        exs = [
            execution("e5", "r1", "t1", created_at=3.0, step=0, node="a", status="SUCCEEDED"),
            execution("e1", "r1", "t1", created_at=1.0, step=1, node="b", status="SUCCEEDED"),
            execution("e3", "r1", "t1", created_at=2.0, step=1, node="a", status="FAILED"),
            execution("e2", "r1", "t1", created_at=2.0, step=0, node="z", status="RUNNING"),
            execution("e4", "r2", "t2", created_at=0.5, step=0, node="a", namespace="n2"),
            execution("e6", "r1", "t1", created_at=2.0, step=1, node="a", status="RUNNING"),
        ]
        store.commit(
            [
                Commit("t1", executions=[*exs[:4], exs[5]]),
                Commit("t2", namespace="n2", executions=[exs[4]]),
            ]
        )

        def ids(**kw: Any) -> list[str]:
            kw.setdefault("namespace", None)  # every namespace, unless the test names one
            return [e.id for e in store.list_executions(**kw)]

        assert [e.id for e in store.list_executions()] == ["e1", "e2", "e3", "e6", "e5"]
        assert ids() == ["e4", "e1", "e2", "e3", "e6", "e5"]
        assert ids(run_id="r1") == ["e1", "e2", "e3", "e6", "e5"]
        assert ids(thread_id="t2") == ["e4"]
        assert ids(namespace="n2") == ["e4"]
        assert ids(namespace="default", status="RUNNING") == ["e2", "e6"]
        assert ids(status="SUCCEEDED") == ["e1", "e5"]
        assert ids(run_id="r1", limit=2) == ["e1", "e2"]
        assert ids(run_id="r1", limit=2, offset=3) == ["e6", "e5"]
        assert ids(run_id="r1", offset=4) == ["e5"]
        assert ids(run_id="nope") == []

    # -- threads --------------------------------------------------------------------------

    def test_list_threads_newest_first_by_namespace(self, store: Store) -> None:
        for tid, ns in [("t1", "n1"), ("t2", "n2"), ("t3", "n1"), ("t4", "n1")]:
            store.commit([Commit(tid, namespace=ns)])
        store.commit([Commit("t1", namespace="n1")])  # touched last
        order = [t.thread_id for t in store.list_threads(namespace=None)]
        stamps = [t.updated_at for t in store.list_threads(namespace=None)]
        assert stamps == sorted(stamps, reverse=True)
        assert order[0] == "t1" and sorted(order) == ["t1", "t2", "t3", "t4"]
        n1 = [t.thread_id for t in store.list_threads(namespace="n1")]
        assert n1 == [t for t in order if t != "t2"]
        assert [t.thread_id for t in store.list_threads(namespace="n1", limit=1, offset=1)] == [
            n1[1]
        ]
        assert store.list_threads(namespace="n3") == []
        assert store.list_threads() == []  # none in "default"
        assert store.list_threads(namespace=None, offset=4) == []

    def test_update_thread_replaces_metadata_of_an_existing_thread(self, store: Store) -> None:
        assert store.update_thread("t1", {"a": 1}) is None  # no thread: nothing created
        assert store.get_thread("t1") is None
        store.commit([Commit("t1"), Commit("t2", namespace="n2")])
        created = store.get_thread("t1")
        assert created is not None and created.metadata == {}
        meta = {"user": "ada", "tags": ["x", "y"], "nested": {"n": 1.5, "none": None}}
        updated = store.update_thread("t1", meta)
        assert updated is not None
        assert updated.metadata == meta
        assert created.updated_at <= updated.updated_at
        assert store.get_thread("t1").metadata == meta  # type: ignore[union-attr]
        assert store.update_thread("t1", {"b": "\u00e9"}).metadata == {  # type: ignore[union-attr]
            "b": "\u00e9"
        }
        assert store.update_thread("t2", {"c": 1}) is None  # another namespace's thread
        assert store.update_thread("t2", {"c": 1}, namespace="n2").metadata == {  # type: ignore[union-attr]
            "c": 1
        }
        with pytest.raises(StoreError):
            store.update_thread("t1", {"bad": object()})
        assert store.get_thread("t1").metadata == {"b": "\u00e9"}  # type: ignore[union-attr]

    def test_delete_thread_removes_everything_of_that_thread_only(self, store: Store) -> None:
        for tid in ("t1", "t2"):
            lease = store.acquire_lease(tid, "worker", TTL)
            store.commit([step(tid, s, token=lease.token, run_id=f"run-{tid}") for s in range(3)])
        keep = snapshot(store, "t2")
        store.delete_thread("t1")
        assert store.get_thread("t1") is None
        assert store.get_checkpoint("t1") is None
        assert store.list_checkpoints("t1") == []
        assert store.get_blobs("t1", "", {"value": (0, 9)}) == []
        assert store.get_writes("t1", "", 1) == []
        assert store.get_run("run-t1") is None
        assert store.list_executions(thread_id="t1") == []
        assert [t.thread_id for t in store.list_threads()] == ["t2"]
        assert snapshot(store, "t2") == keep
        fresh = store.acquire_lease("t1", "other", TTL)  # the old lease went with the thread
        store.commit([step("t1", 0, token=fresh.token, expected=None, run_id="run-t1")])

    def test_threads_are_isolated(self, store: Store) -> None:
        store.commit([step("t1", 0), step("t1", 1)])
        store.commit([step("t2", 0, run_id="run-2")])
        one, two = store.get_checkpoint("t1"), store.get_checkpoint("t2")
        assert one is not None and two is not None and (one.seq, two.seq) == (1, 0)
        assert [b.data for b in store.get_blobs("t2", "", {"value": (0, 9)})] == [b"v0"]
        assert [w.data for w in store.get_writes("t2", "", 0)] == [b"w0"]
        lease = store.acquire_lease("t1", "worker-a", TTL)
        assert store.acquire_lease("t2", "worker-b", TTL).owner == "worker-b"
        store.commit([step("t1", 2, token=lease.token, expected=1)])

    # -- copies, not references -----------------------------------------------------------

    def test_records_are_copies(self, store: Store) -> None:
        cp = checkpoint("t1", 0, channels={"a": (0, 0)}, blobs=[BlobRecord("a", 0, None, b"x")])
        ex = execution("e1", "r1", "t1", attempts=(Attempt(1, 1.0),), parents=("p",))
        rec = run("r1", "t1", metadata={"k": ["v"]})
        store.commit([Commit("t1", checkpoint=cp, executions=[ex], runs=[rec])])
        cp.channels["b"] = (9, 9)
        cp.blobs[0].version = 7
        ex.attempts[0].error = "changed"
        rec.metadata["k"].append("changed")
        got = store.get_checkpoint("t1")
        assert got is not None and got.channels == {"a": (0, 0)}
        got.channels["c"] = (1, 1)
        got_run = store.get_run("r1")
        assert got_run is not None and got_run.metadata == {"k": ["v"]}
        got_run.metadata["k"].append("again")
        (got_ex,) = store.list_executions()
        assert got_ex.attempts == (Attempt(1, 1.0),)
        got_ex.attempts[0].error = "again"
        thread = store.get_thread("t1")
        assert thread is not None
        thread.metadata["x"] = 1
        assert store.get_checkpoint("t1") == checkpoint("t1", 0, channels={"a": (0, 0)}, blobs=[])
        assert store.get_run("r1") == run("r1", "t1", metadata={"k": ["v"]})
        assert store.list_executions()[0].attempts == (Attempt(1, 1.0),)
        assert store.get_blobs("t1", "", {"a": (0, 0)}) == [BlobRecord("a", 0, None, b"x")]
        thread_again = store.get_thread("t1")
        assert thread_again is not None and thread_again.metadata == {}

    # -- concurrency ----------------------------------------------------------------------

    def test_concurrent_writers_on_their_own_threads(self, store: Store) -> None:
        errors: list[BaseException] = []

        def writer(tid: str) -> None:
            try:
                lease = store.acquire_lease(tid, f"owner-{tid}", TTL)
                for s in range(50):
                    head = s - 1 if s else None
                    store.commit(
                        [step(tid, s, token=lease.token, expected=head, run_id=f"run-{tid}")]
                    )
                    assert store.get_checkpoint(tid) is not None
                store.release_lease(lease)
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        for i in range(8):
            latest = store.get_checkpoint(f"t{i}")
            assert latest is not None and latest.seq == 49
            assert len(store.list_checkpoints(f"t{i}")) == 50
            run_rec = store.get_run(f"run-t{i}")
            assert run_rec is not None and run_rec.steps == 49
        assert len(store.list_executions(limit=None)) == 400

    def test_racing_for_one_lease_admits_one_holder_at_a_time(self, store: Store) -> None:
        guard = threading.Lock()
        holders: list[str] = []
        tokens: list[int] = []
        overlaps: list[str] = []
        errors: list[BaseException] = []

        def contender(name: str) -> None:
            try:
                wins = 0
                while wins < 5:
                    try:
                        lease = store.acquire_lease("shared", name, TTL)
                    except ThreadBusyError:
                        time.sleep(0.0005)
                        continue
                    with guard:
                        if holders:
                            overlaps.append(f"{name} while {holders}")
                        holders.append(name)
                        tokens.append(lease.token)
                    store.commit([Commit("shared", lease_token=lease.token)])
                    with guard:
                        holders.remove(name)
                    store.release_lease(lease)
                    wins += 1
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=contender, args=(f"w{i}",)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == [] and overlaps == []
        assert len(tokens) == 20
        assert tokens == sorted(tokens) and len(set(tokens)) == 20  # fencing tokens increase

    # -- lifecycle ------------------------------------------------------------------------

    def test_a_closed_store_refuses_calls(self, store: Store) -> None:
        store.close()
        with pytest.raises(StoreError):
            store.get_thread("t1")
        with pytest.raises(StoreError):
            store.commit([step("t1", 0)])
