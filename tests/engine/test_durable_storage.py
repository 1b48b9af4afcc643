"""O(N) storage (design §4, §7.3): a checkpoint stores only the channels that changed, and an
append-only reducer channel stores only what was appended, so a loop of N steps that appends
one item per step stores O(N) bytes (LangGraph 1.2.22 stores O(N^2): about 209 MB for the
2000-step loop below, the bench's ``append_storage_sqlite_sync``), and the delta chains still
read back whole, also after a fork.

SQLite only, under ``sync`` durability (a checkpoint per step, committed before the next)."""

from __future__ import annotations

import operator
import os
import sqlite3
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.checkpoint import format_checkpoint_id
from threadloom.checkpoint.sqlite import SqliteSaver
from threadloom.graph import END, START, CompiledGraph, StateGraph

ITEM_BYTES = 100


class Loop(TypedDict):
    items: Annotated[list[str], operator.add]
    n: int
    tag: str


def item(i: int, tag: str) -> str:
    return f"{tag}{i:05d}".ljust(ITEM_BYTES, "x")


def append_loop(store: SqliteSaver) -> CompiledGraph:
    """One node that appends one 100-byte string per step until there are ``n``."""

    def append(state: Loop) -> dict[str, Any]:
        return {"items": [item(len(state["items"]), state["tag"])]}

    builder = StateGraph(Loop)
    builder.add_node("append", append)
    builder.add_edge(START, "append")
    builder.add_conditional_edges(
        "append", lambda s: "append" if len(s["items"]) < s["n"] else END)
    return builder.compile(checkpointer=store, durability="sync")


def stored_bytes(path: Path) -> int:
    """The database file's size once the WAL is checkpointed into it."""
    conn = sqlite3.connect(path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    return os.path.getsize(path)


def run_loop(directory: Path, n: int) -> tuple[CompiledGraph, Path, dict[str, Any]]:
    """Run the loop to ``n`` items on a new database in ``directory``. (``synchronous=NORMAL``
    only saves fsync time: what is stored is the same.)"""
    path = directory / f"loop{n}.db"
    store = SqliteSaver(path, synchronous="NORMAL")
    store.setup()
    graph = append_loop(store)
    out = graph.invoke({"items": [], "n": n, "tag": "A"}, {"thread_id": "loop"})
    return graph, path, out


@pytest.fixture(scope="module")
def loop2000(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One 2000-step run, shared by the tests that only read it."""
    graph, path, out = run_loop(tmp_path_factory.mktemp("loop"), 2000)
    size = stored_bytes(path)
    yield graph, size, out
    graph.checkpointer.close()


def test_a_2000_step_append_loop_stores_o_n_bytes_and_reads_back_whole(loop2000):
    n = 2000
    graph, size, out = loop2000

    expected = [item(i, "A") for i in range(n)]
    assert out["items"] == expected
    assert graph.get_state({"thread_id": "loop"}).values["items"] == expected
    # every record included (checkpoints, blobs, executions, run, indexes): about 1.3 KB a
    # step today; the bound is 2 KB a step, against LangGraph's 209 MB for this loop
    assert size < 2 * 1024 * n, f"{size} bytes for {n} steps"
    assert len(list(graph.get_state_history({"thread_id": "loop"}, limit=5))) == 5


def test_doubling_the_steps_roughly_doubles_the_stored_bytes(loop2000, tmp_path):
    small_graph, small_path, _ = run_loop(tmp_path, 1000)
    small, large = stored_bytes(small_path), loop2000[1]
    small_graph.checkpointer.close()

    # linear growth doubles the size; O(N^2) storage would quadruple it
    assert 1.5 < large / small < 2.5, (small, large)


def test_any_checkpoint_of_the_loop_reads_back_its_own_prefix(loop2000):
    graph = loop2000[0]

    for k in (0, 1, 7, 499, 1000, 1001, 1999, 2000):
        # checkpoint k + 1 is the state after k appends (checkpoint 1 holds the input)
        snapshot = graph.get_state(
            {"thread_id": "loop", "checkpoint_id": format_checkpoint_id(k + 1)})
        assert snapshot.values["items"] == [item(i, "A") for i in range(k)], k


def test_the_delta_chain_survives_a_fork(tmp_path):
    n = 2000
    graph, _, _ = run_loop(tmp_path, n)
    thread = {"thread_id": "loop"}
    original_head = graph.get_state(thread)
    fork_point = graph.get_state({**thread, "checkpoint_id": format_checkpoint_id(1001)})
    assert len(fork_point.values["items"]) == 1000
    late_original = graph.get_state({**thread, "checkpoint_id": format_checkpoint_id(1801)})

    graph.update_state(fork_point.config, {"tag": "B"})
    forked = graph.invoke(None, thread)

    assert forked["items"] == [item(i, "A") for i in range(1000)] + [
        item(i, "B") for i in range(1000, n)]
    assert graph.get_state(thread).values["items"] == forked["items"]
    # the original branch reads back exactly as before
    assert graph.get_state(original_head.config).values == original_head.values
    assert original_head.values["items"] == [item(i, "A") for i in range(n)]
    assert graph.get_state(late_original.config).values["items"] == [
        item(i, "A") for i in range(1800)]
    assert graph.get_state(fork_point.config).values == fork_point.values
    graph.checkpointer.close()


class Counter(TypedDict):
    document: str
    count: int


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_a_channel_that_never_changes_is_stored_once_not_per_checkpoint(tmp_path, durability):
    path = tmp_path / "doc.db"
    store = SqliteSaver(path, synchronous="NORMAL")
    store.setup()
    builder = StateGraph(Counter)
    builder.add_node("tick", lambda s: {"count": s["count"] + 1})
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda s: "tick" if s["count"] < 300 else END)
    graph = builder.compile(checkpointer=store, durability=durability)
    document = "d" * 100_000

    out = graph.invoke({"document": document, "count": 0}, {"thread_id": "doc"})

    assert out == {"document": document, "count": 300}
    size = stored_bytes(path)
    # 301 checkpoints; copying the 100 KB document into each would take 30 MB
    assert size < 1_000_000, size
    middle = graph.get_state({"thread_id": "doc", "checkpoint_id": format_checkpoint_id(151)})
    assert middle.values == {"document": document, "count": 150}
    store.close()


def test_the_append_loop_is_linear_under_async_durability_too(tmp_path):
    n = 1000
    path = tmp_path / "async.db"
    store = SqliteSaver(path, synchronous="NORMAL")
    store.setup()
    graph = append_loop(store)

    out = graph.invoke({"items": [], "n": n, "tag": "A"}, {"thread_id": "loop"},
                       durability="async")

    assert out["items"] == [item(i, "A") for i in range(n)]
    assert len(list(graph.get_state_history({"thread_id": "loop"}, limit=3))) == 3
    assert stored_bytes(path) < 2 * 1024 * n
    store.close()
