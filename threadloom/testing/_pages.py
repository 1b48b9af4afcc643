"""The keyset pages of runs and executions (``Store.page_runs`` / ``page_executions``),
part of the store contract run on every backend (see :mod:`threadloom.testing.conformance`).
"""

from __future__ import annotations

from typing import Any

from threadloom.checkpoint.base import Commit, ExecutionRecord, RunRecord, Store
from threadloom.testing._records import execution, run

__all__ = ["PageConformance"]


def _walk_executions(store: Store, size: int, **filters: Any) -> list[str]:
    """Every execution id the filters match, read page by page through ``after``."""
    seen: list[str] = []
    after: tuple[float, str] | None = None
    while True:
        page = store.page_executions(limit=size, after=after, **filters)
        seen.extend(e.id for e in page)
        if len(page) < size:
            return seen
        after = (page[-1].created_at, page[-1].id)


def _walk_runs(store: Store, size: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    after: tuple[float, str] | None = None
    while True:
        page = store.page_runs(limit=size, after=after, **filters)
        seen.extend(r.run_id for r in page)
        if len(page) < size:
            return seen
        after = (page[-1].created_at, page[-1].run_id)


class PageConformance:
    """Keyset pages: order, cursors, every filter, namespaces."""

    def _executions(self, store: Store) -> list[ExecutionRecord]:
        exs = [
            execution("e1", "run-a1", "t1", created_at=1.0, status="SUCCEEDED"),
            execution("e2", "run-a1", "t1", created_at=2.0, status="FAILED",
                      error="NodeTimeoutError: node 'a' ran over 1.0 s"),
            execution("e3", "run-a2", "t2", created_at=2.0, status="FAILED",
                      error="ValueError: boom"),
            execution("e0", "run-a2", "t2", created_at=2.0, status="RUNNING"),
            execution("e4", "run-b1", "t3", created_at=3.0, status="PENDING"),
            execution("e5", "run-b1", "t3", created_at=4.0, status="SUCCEEDED"),
            execution("e6", "run-a1", "t1", created_at=5.0, status="INTERRUPTED"),
        ]  # fmt: skip
        by_thread: dict[str, list[ExecutionRecord]] = {}
        for ex in exs:
            by_thread.setdefault(ex.thread_id, []).append(ex)
        store.commit([Commit(t, executions=group) for t, group in by_thread.items()])
        # the same ids in another namespace are other executions
        other = [execution("e1", "run-a1", "t1", created_at=1.5, status="SUCCEEDED"),
                 execution("e9", "run-a1", "t1", created_at=0.5, status="FAILED", error="x")]
        store.commit([Commit("t1", namespace="n2", executions=other)])
        return exs

    def test_page_executions_orders_by_time_then_id(self, store: Store) -> None:
        self._executions(store)
        assert [e.id for e in store.page_executions()] == [
            "e1", "e0", "e2", "e3", "e4", "e5", "e6"]  # fmt: skip
        assert [e.id for e in store.page_executions(descending=True)] == [
            "e6", "e5", "e4", "e3", "e2", "e0", "e1"]  # fmt: skip
        assert [e.id for e in store.page_executions(namespace="n2")] == ["e9", "e1"]
        assert store.page_executions(namespace="n3") == []

    def test_page_executions_cursor_walks_every_one_once(self, store: Store) -> None:
        self._executions(store)
        whole = [e.id for e in store.page_executions()]
        for size in (1, 2, 3, 7, 8):
            assert _walk_executions(store, size) == whole
        assert _walk_executions(store, 2, descending=True) == whole[::-1]
        (third,) = store.page_executions(after=(2.0, "e0"), limit=1)
        assert third.id == "e2"  # ties on created_at go by id
        assert [e.id for e in store.page_executions(after=(2.0, "e2"), descending=True)] == [
            "e0", "e1"]  # fmt: skip
        assert store.page_executions(after=(9.0, "")) == []

    def test_page_executions_filters(self, store: Store) -> None:
        self._executions(store)

        def ids(**kw: Any) -> list[str]:
            return [e.id for e in store.page_executions(**kw)]

        assert ids(run_id="run-a1") == ["e1", "e2", "e6"]
        assert ids(run_id="run-a") == []
        assert ids(run_id_prefix="run-a") == ["e1", "e0", "e2", "e3", "e6"]
        assert ids(run_id_prefix="run-a2") == ["e0", "e3"]
        assert ids(run_id_prefix="run-c") == []
        assert ids(status="FAILED") == ["e2", "e3"]
        assert ids(status="FAILED", timed_out=True) == ["e2"]
        assert ids(status="FAILED", timed_out=False) == ["e3"]
        assert ids(status="RUNNING") == ["e0"]
        assert ids(status="SUCCEEDED") == ["e1", "e5"]
        assert ids(status="PENDING") == ["e4"]
        assert ids(status="SUCCEEDED", descending=True) == ["e5", "e1"]
        assert ids(created_after=2.0) == ["e0", "e2", "e3", "e4", "e5", "e6"]
        assert ids(created_before=2.0) == ["e1"]
        assert ids(created_after=2.0, created_before=4.0) == ["e0", "e2", "e3", "e4"]
        assert ids(run_id_prefix="run-", status="FAILED", created_after=2.0) == ["e2", "e3"]
        assert ids(run_id="run-a1", status="FAILED", after=(1.0, "e1")) == ["e2"]
        assert ids(namespace="n2", status="FAILED") == ["e9"]
        assert _walk_executions(store, 1, status="FAILED") == ["e2", "e3"]
        assert _walk_executions(store, 2, run_id_prefix="run-a") == ids(run_id_prefix="run-a")

    def test_an_executions_created_at_is_fixed_by_its_first_record(self, store: Store) -> None:
        first = execution("e1", "r1", "t1", created_at=5.0, status="RUNNING")
        store.commit([Commit("t1", executions=[first])])
        later = execution("e1", "r1", "t1", created_at=7.0, status="SUCCEEDED", started_at=6.0)
        store.commit([Commit("t1", executions=[later, execution("e2", "r1", "t1",
                                                                   created_at=6.5)])])
        assert [(e.id, e.created_at, e.status) for e in store.page_executions()] == [
            ("e1", 5.0, "SUCCEEDED"), ("e2", 6.5, "RUNNING")]  # fmt: skip
        twice = [execution("e3", "r1", "t1", created_at=8.0),
                 execution("e3", "r1", "t1", created_at=9.0, status="SUCCEEDED")]
        store.commit([Commit("t1", executions=twice)])  # also within one batch
        (e3,) = store.page_executions(after=(6.5, "e2"))
        assert (e3.created_at, e3.status) == (8.0, "SUCCEEDED")

    def test_page_executions_common_run_id_prefix(self, store: Store) -> None:
        # enough rows that a backend may serve the prefix from its by-time index
        exs = [execution(f"x{i:05d}", f"run-{i % 7}", "t1", created_at=float(i // 3),
                         status="SUCCEEDED") for i in range(5200)]  # fmt: skip
        for start in range(0, len(exs), 1000):  # a statement's parameters are bounded
            store.commit([Commit("t1", executions=exs[start:start + 1000])])
        want = sorted((e for e in exs if e.run_id.startswith("run-")),
                      key=lambda e: (e.created_at, e.id))  # fmt: skip
        assert _walk_executions(store, 500, run_id_prefix="run-") == [e.id for e in want]
        assert [e.id for e in store.page_executions(run_id_prefix="run-3", limit=3)] == [
            e.id for e in want if e.run_id == "run-3"][:3]  # fmt: skip

    def _runs(self, store: Store) -> list[RunRecord]:
        runs = [
            run("run-a1", "t1", created_at=1.0, status="succeeded", graph="g1"),
            run("run-a2", "t2", created_at=2.0, status="failed", graph="g1",
                error="RunTimeoutError: run ran over 5.0 s"),
            run("run-b1", "t3", created_at=2.0, status="failed", graph="g2", error="KeyError: k"),
            run("run-b2", "t4", created_at=3.0, status="running", graph="g2"),
            run("run-a3", "t5", created_at=4.0, status="pending", graph="g1"),
        ]  # fmt: skip
        store.commit([Commit(r.thread_id, runs=[r]) for r in runs])
        store.commit([Commit("t1", namespace="n2",
                             runs=[run("run-a1", "t1", created_at=9.0, status="running")])])
        return runs

    def test_page_runs_newest_first_with_cursor(self, store: Store) -> None:
        self._runs(store)
        whole = ["run-a3", "run-b2", "run-b1", "run-a2", "run-a1"]
        assert [r.run_id for r in store.page_runs()] == whole
        for size in (1, 2, 5, 6):
            assert _walk_runs(store, size) == whole
        assert [r.run_id for r in store.page_runs(after=(2.0, "run-b1"))] == ["run-a2", "run-a1"]
        (other,) = store.page_runs(namespace="n2")
        assert (other.run_id, other.status, other.created_at) == ("run-a1", "running", 9.0)

    def test_page_runs_filters(self, store: Store) -> None:
        runs = self._runs(store)

        def ids(**kw: Any) -> list[str]:
            return [r.run_id for r in store.page_runs(**kw)]

        assert ids(status="failed") == ["run-b1", "run-a2"]
        assert ids(status="failed", timed_out=True) == ["run-a2"]
        assert ids(status="failed", timed_out=False) == ["run-b1"]
        assert ids(graph="g1") == ["run-a3", "run-a2", "run-a1"]
        assert ids(graph="g2", status="running") == ["run-b2"]
        assert ids(run_id_prefix="run-a") == ["run-a3", "run-a2", "run-a1"]
        assert ids(run_id_prefix="run-b2") == ["run-b2"]
        assert ids(run_id_prefix="zzz") == []
        assert ids(created_after=2.0, created_before=4.0) == ["run-b2", "run-b1", "run-a2"]
        assert ids(status="failed", after=(2.0, "run-b1")) == ["run-a2"]
        assert _walk_runs(store, 1, graph="g1") == ["run-a3", "run-a2", "run-a1"]
        assert store.page_runs(run_id_prefix="run-a1") == [runs[0]]
        assert ids(namespace="n2", status="running") == ["run-a1"]

    def test_page_runs_common_run_id_prefix(self, store: Store) -> None:
        runs = [run(f"run-{i:05d}", f"t{i % 5}", created_at=float(i // 2), status="succeeded")
                for i in range(5200)]  # fmt: skip
        for start in range(0, len(runs), 1000):  # a statement's parameters are bounded
            store.commit([Commit(r.thread_id, runs=[r]) for r in runs[start:start + 1000]])
        want = [r.run_id for r in sorted(runs, key=lambda r: (r.created_at, r.run_id),
                                         reverse=True)]  # fmt: skip
        assert _walk_runs(store, 700, run_id_prefix="run-") == want
        assert _walk_runs(store, 7, run_id_prefix="run-001") == [
            i for i in want if i.startswith("run-001")]  # fmt: skip
