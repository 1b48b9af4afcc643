"""Which commits a run asks the store to flush (``Commit.flush``, design §4).

``sync`` flushes every commit: a step is durable against the machine crashing before the next
starts. ``async`` leaves a step's commit unflushed (it survives the process crashing as soon
as it is written, which is what "at most the last step re-runs" is about), flushes at least
every ``FLUSH_SECONDS``, and always flushes the run's last commit before ``invoke`` returns.
A store records the flag of every batch it is handed, so these tests need no timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import pytest

from threadloom.checkpoint.base import Commit
from threadloom.checkpoint.sqlite import SqliteSaver
from threadloom.engine import _persist
from threadloom.func import entrypoint, task
from threadloom.graph import END, START, StateGraph


class FlushLog(SqliteSaver):
    """A SQLite store that remembers, per batch, whether it was asked to flush."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[bool] = []

    def commit(self, commits: Sequence[Commit]) -> None:
        self.batches.append(any(c.flush for c in commits))
        super().commit(commits)


class Count(TypedDict):
    n: int


def loop(store: FlushLog, durability: str, steps: int = 6) -> Any:
    builder = StateGraph(Count)
    builder.add_node("bump", lambda s: {"n": s["n"] + 1})
    builder.add_edge(START, "bump")
    builder.add_conditional_edges("bump", lambda s: "bump" if s["n"] < steps else END)
    return builder.compile(checkpointer=store, durability=durability)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = FlushLog(tmp_path / "flush.db")
    s.setup()
    yield s
    s.close()


def test_sync_flushes_every_commit(store: FlushLog) -> None:
    assert loop(store, "sync").invoke({"n": 0}, {"thread_id": "t"}) == {"n": 6}
    assert store.batches and all(store.batches)


def test_async_flushes_the_runs_last_commit(
    store: FlushLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_persist, "FLUSH_SECONDS", 1e9)  # never forced by time
    graph = loop(store, "async")
    assert graph.invoke({"n": 0}, {"thread_id": "t"}) == {"n": 6}
    assert store.batches[-1] is True
    assert False in store.batches  # the steps before it were not flushed
    # and what was not flushed is stored all the same, step by step
    history = [s.values["n"] for s in graph.get_state_history({"thread_id": "t"})]
    assert history[:7] == [6, 5, 4, 3, 2, 1, 0]


def test_async_flushes_at_least_every_interval(
    store: FlushLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_persist, "FLUSH_SECONDS", 0.0)  # the interval is always over
    assert loop(store, "async").invoke({"n": 0}, {"thread_id": "t"}) == {"n": 6}
    assert all(store.batches)


def test_an_interrupted_async_run_is_flushed_before_invoke_returns(
    store: FlushLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_persist, "FLUSH_SECONDS", 1e9)
    config = {"thread_id": "t"}
    builder = StateGraph(Count)
    builder.add_node("bump", lambda s: {"n": s["n"] + 1})
    builder.add_node("stop", lambda s: {})
    builder.add_edge(START, "bump")
    builder.add_edge("bump", "stop")
    builder.add_edge("stop", END)
    paused = builder.compile(checkpointer=store, durability="async", interrupt_before=["stop"])
    paused.invoke({"n": 0}, config)
    assert paused.get_state(config).next == ("stop",)
    assert store.batches[-1] is True


@pytest.mark.parametrize(("durability", "flushed"), [("sync", True), ("async", False)])
def test_task_results_are_flushed_under_sync_only(
    tmp_path: Path, durability: str, flushed: bool
) -> None:
    flags: list[bool] = []

    class TaskLog(SqliteSaver):
        def commit(self, commits: Sequence[Commit]) -> None:
            flags.extend(c.flush for c in commits if c.writes and not c.checkpoint)
            super().commit(commits)

    @task
    def double(x: int) -> int:
        return 2 * x

    store = TaskLog(tmp_path / "tasks.db")

    @entrypoint(checkpointer=store)
    def main(x: int) -> int:
        return double(x).result()

    assert main.invoke(3, {"thread_id": "t", "durability": durability}) == 6
    assert flags == [flushed]
    store.close()
