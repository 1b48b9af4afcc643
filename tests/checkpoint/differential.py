"""The differential model both SQL stores are checked against: random commits and lease
operations applied to a store and to the reference ``MemoryStore`` must get the same answers
and leave the same state.

Fencing tokens are compared by what they are, not by value: the protocol promises only that
a thread's tokens increase and are never reissued, and the backends number them their own
way (a Postgres sequence is shared by every thread). So an operation's token ``1`` stands for
the thread's current lease token on the store it is applied to, any other number for a token
that is not current; an acquisition answers whether it kept the token or took a higher one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from threadloom.checkpoint.base import ANY_HEAD, BlobRecord, Commit, Lease, Store, WriteRecord
from threadloom.errors import ThreadloomError
from threadloom.testing.conformance import checkpoint, execution, run

THREADS = st.sampled_from(["a", "b"])
SEQS = st.integers(0, 4)


@st.composite
def commits(draw: st.DrawFn) -> Commit:
    tid = draw(THREADS)
    cp = None
    if draw(st.booleans()):
        seq = draw(SEQS)
        channel = draw(st.sampled_from(["x", "y"]))
        prev = draw(st.one_of(st.none(), st.integers(0, seq)))
        blob = BlobRecord(channel, seq, prev if prev != seq else None, b"d%d" % seq)
        cp = checkpoint(
            tid,
            seq,
            run_id=draw(st.sampled_from([None, "r1"])),
            source=draw(st.sampled_from(["loop", "fork"])),
            channels={channel: (seq, 0)},
            blobs=[blob],
        )
    writes = [
        WriteRecord(tid, "", draw(SEQS), draw(st.sampled_from(["t1", "t2"])), "c", idx, b"w")
        for idx in draw(st.lists(st.integers(0, 2), max_size=3))
    ]
    runs = [
        run(
            rid,
            draw(THREADS),
            status=draw(st.sampled_from(["running", "succeeded"])),
            created_at=draw(st.sampled_from([1.0, 2.0])),
            graph=draw(st.sampled_from(["g", "h"])),
        )
        for rid in draw(st.lists(st.sampled_from(["r1", "r2", "r3"]), max_size=2))
    ]
    executions = [
        execution(
            eid,
            draw(st.sampled_from(["r1", "r2"])),
            tid,
            status=draw(st.sampled_from(["RUNNING", "SUCCEEDED"])),
            created_at=draw(st.sampled_from([1.0, 2.0])),
            step=draw(SEQS),
        )
        for eid in draw(st.lists(st.sampled_from(["e1", "e2", "e3"]), max_size=2))
    ]
    return Commit(
        tid,
        namespace=draw(st.sampled_from(["default", "n1"])),
        lease_token=draw(st.sampled_from([None, None, None, 1, 2])),
        expected_head=draw(st.sampled_from([ANY_HEAD, ANY_HEAD, ANY_HEAD, None, 0, 1, 2])),
        checkpoint=cp,
        writes=writes,
        executions=executions,
        runs=runs,
    )




def operations(max_commits: int, prune: bool = False) -> st.SearchStrategy[tuple[Any, ...]]:
    """One operation: a batch of up to ``max_commits`` commits, a lease call, a thread
    deletion, or (``prune``) a checkpoint prune."""
    ops = [
        st.tuples(st.just("commit"), st.lists(commits(), min_size=1, max_size=max_commits)),
        st.tuples(
            st.just("acquire"), THREADS, st.sampled_from(["o1", "o2"]),
            st.sampled_from([60.0, -1.0]),
        ),
        st.tuples(st.just("renew"), THREADS, st.integers(1, 3)),
        st.tuples(st.just("release"), THREADS, st.integers(1, 3)),
        st.tuples(st.just("delete"), THREADS),
    ]
    if prune:
        ops.append(st.tuples(st.just("prune"), THREADS, st.integers(1, 3)))
    return st.one_of(*ops)


def _current(store: Store, thread_id: str) -> int | None:
    thread = store.get_thread(thread_id)
    return thread.lease.token if thread is not None and thread.lease is not None else None


def _token(store: Store, thread_id: str, k: int | None) -> int | None:
    """The token the model's ``k`` stands for on ``store`` (see the module docstring)."""
    if k is None:
        return None
    current = _current(store, thread_id)
    if k == 1 and current is not None:
        return current
    return (current or 0) + 1000 + k  # never the current one


def apply(store: Store, op: tuple[Any, ...]) -> Any:
    """Run ``op`` on ``store``: its answer, or the name of the threadloom error it raised."""
    try:
        kind = op[0]
        if kind == "commit":
            return store.commit(
                [replace(c, lease_token=_token(store, c.thread_id, c.lease_token)) for c in op[1]]
            )
        if kind == "acquire":
            before = _current(store, op[1])
            lease = store.acquire_lease(op[1], op[2], op[3])
            kept = "kept" if lease.token == before else "higher"
            if before is not None and lease.token < before:
                kept = "lower"
            return (lease.thread_id, lease.owner, kept)
        if kind == "renew":
            token = _token(store, op[1], op[2])
            assert token is not None
            renewed = store.renew_lease(Lease(op[1], "o1", token, 0.0), 60.0)
            return (renewed.thread_id, renewed.token == token)
        if kind == "release":
            token = _token(store, op[1], op[2])
            assert token is not None
            return store.release_lease(Lease(op[1], "o1", token, 0.0))
        if kind == "prune":
            return store.prune_checkpoints(op[1], op[2])
        return store.delete_thread(op[1])
    except ThreadloomError as exc:
        return type(exc).__name__


def state(store: Store) -> tuple[Any, ...]:
    """What the store holds, per thread and overall (threads last: their order follows each
    store's own clock)."""
    threads = {}
    for tid in ("a", "b"):
        thread = store.get_thread(tid)
        lease = thread.lease if thread is not None else None
        threads[tid] = (
            thread.namespace if thread is not None else None,
            lease.owner if lease is not None else None,
            store.list_checkpoints(tid),
            sorted(store.get_blobs(tid, "", {"x": (0, 4), "y": (0, 4)}), key=repr),
            [store.get_writes(tid, "", s) for s in range(5)],
            store.list_runs(thread_id=tid),
        )
    return (
        threads, store.list_runs(), store.list_executions(), store.list_runs(graph="g"),
        store.list_threads(),
    )
