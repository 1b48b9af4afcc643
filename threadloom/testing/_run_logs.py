"""The run-logs part of the store contract (``append_run_logs``, ``page_run_logs``, and
their deletion with the run), mixed into
:class:`~threadloom.testing.conformance.StoreConformance`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from threadloom.checkpoint.base import Commit, RunLog, Store
from threadloom.testing._records import run, step

__all__ = ["RunLogConformance"]


def _log(run_id: str, message: str, *, thread_id: str = "t1", namespace: str = "default",
         **fields: Any) -> RunLog:
    values: dict[str, Any] = {"at": 1_700_000_000.5, "level": "INFO", "logger": "app"}
    values.update(fields)
    return RunLog(run_id=run_id, thread_id=thread_id, message=message, namespace=namespace,
                  **values)


def _messages(store: Store, run_id: str, **kw: Any) -> list[str]:
    return [item.message for item in store.page_run_logs(run_id, **kw)]


def _finished_run(store: Store, run_id: str, thread_id: str, **fields: Any) -> None:
    store.commit([Commit(thread_id, runs=[run(run_id, thread_id, status="succeeded",
                                              **fields)])])


class RunLogConformance:
    """A run's log records: appended in batches, numbered by the store, bounded per run,
    read by keyset pages, and deleted with the run."""

    def test_run_logs_round_trip_in_order(self, store: Store) -> None:
        assert store.page_run_logs("r1") == []
        first = _log("r1", "one", level="WARNING", logger="threadloom.engine", node="a",
                     attempt=2, step=3, exc="Traceback ...\nValueError: x")
        assert store.append_run_logs([first, _log("r1", "two")]) == 2
        assert store.append_run_logs([_log("r1", "three"), _log("r2", "other")]) == 2
        logs = store.page_run_logs("r1")
        assert [(item.seq, item.message) for item in logs] == [
            (1, "one"), (2, "two"), (3, "three")]
        got = logs[0]
        assert (got.run_id, got.thread_id, got.namespace, got.at, got.level, got.logger,
                got.node, got.attempt, got.step, got.exc) == (
            "r1", "t1", "default", 1_700_000_000.5, "WARNING", "threadloom.engine", "a", 2, 3,
            "Traceback ...\nValueError: x")
        assert (logs[1].node, logs[1].attempt, logs[1].step, logs[1].exc) == (
            None, None, None, None)
        assert _messages(store, "r2") == ["other"]
        assert store.append_run_logs([]) == 0

    def test_run_logs_page_by_seq(self, store: Store) -> None:
        store.append_run_logs([_log("r1", f"m{i}") for i in range(1, 8)])
        assert _messages(store, "r1", limit=3) == ["m1", "m2", "m3"]
        assert _messages(store, "r1", after=3, limit=3) == ["m4", "m5", "m6"]
        assert _messages(store, "r1", after=6, limit=3) == ["m7"]
        assert _messages(store, "r1", after=7) == []
        with pytest.raises(ValueError):
            store.page_run_logs("r1", limit=0)
        with pytest.raises(ValueError):
            store.page_run_logs("r1", after=-1)

    def test_run_logs_are_bounded_per_run(self, store: Store) -> None:
        assert store.append_run_logs([_log("r1", f"m{i}") for i in range(3)],
                                     max_per_run=4) == 3
        stored = store.append_run_logs(
            [_log("r1", "m3"), _log("r1", "m4"), _log("r2", "x")], max_per_run=4)
        assert stored == 2
        assert _messages(store, "r1") == ["m0", "m1", "m2", "m3"]
        assert store.append_run_logs([_log("r1", "m5")], max_per_run=4) == 0
        assert _messages(store, "r2") == ["x"]
        with pytest.raises(ValueError):
            store.append_run_logs([_log("r1", "m")], max_per_run=0)

    def test_run_logs_are_per_namespace(self, store: Store) -> None:
        store.append_run_logs([_log("r1", "mine"), _log("r1", "theirs", namespace="other")])
        assert _messages(store, "r1") == ["mine"]
        assert _messages(store, "r1", namespace="other") == ["theirs"]
        assert [item.seq for item in store.page_run_logs("r1", namespace="other")] == [1]

    def test_run_logs_keep_text_as_given(self, store: Store) -> None:
        text = "caf\u00e9 \u2603 'quoted' \"double\" \\ % {braces}\nsecond line"
        store.append_run_logs([_log("r1", text)])
        assert _messages(store, "r1") == [text]

    def test_run_logs_go_with_their_thread(self, store: Store) -> None:
        store.commit([step("t1", 0, run_id="r1"), step("t2", 0, run_id="r2")])
        store.append_run_logs([_log("r1", "a"), _log("r2", "b", thread_id="t2"),
                               _log("r1", "elsewhere", namespace="other")])
        store.delete_thread("t1")
        assert store.page_run_logs("r1") == []
        assert _messages(store, "r2") == ["b"]
        assert _messages(store, "r1", namespace="other") == ["elsewhere"]

    def test_run_logs_go_with_retention(self, store: Store) -> None:
        _finished_run(store, "old", "t1", created_at=100.0)
        _finished_run(store, "new", "t1", created_at=time.time())
        store.append_run_logs([_log("old", "a"), _log("new", "b")])
        assert store.delete_runs(created_before=1000.0) == 1
        assert store.page_run_logs("old") == []
        assert _messages(store, "new") == ["b"]

    def test_run_logs_go_with_a_deleted_or_rolled_back_run(self, store: Store) -> None:
        rollback = getattr(store, "rollback_run", None)
        delete = getattr(store, "delete_run", None)
        if rollback is None or delete is None:
            pytest.skip("not a runtime store (no rollback_run / delete_run)")
        _finished_run(store, "done", "t1")
        store.commit([step("t1", 0, run_id="undone")])
        store.append_run_logs([_log("done", "a"), _log("undone", "b"), _log("kept", "c")])
        assert delete("default", "done") is True
        rollback("default", "undone")
        assert store.page_run_logs("done") == []
        assert store.page_run_logs("undone") == []
        assert _messages(store, "kept") == ["c"]
