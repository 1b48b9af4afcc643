"""The seed graphs ``threadloom dev`` serves without a ``threadloom.toml`` log what their nodes
do at ``INFO`` through their module's logger, so that a newcomer's first runs have logs in
the dashboard's run detail (and in ``threadloom runs logs``), kept by the capture that
``threadloom dev`` turns on by default."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import threadloom.logging as tlog
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.types import Command
from threadloom.worker.registry import LogSettings, RuntimeConfig, load_graphs


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store whose runs' records are captured as ``threadloom dev`` does by default."""
    opened = SqliteStore(str(tmp_path / "seeds.db"))
    opened.setup()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # as threadloom dev's [logs] level = "INFO" does
    settings = LogSettings()
    assert settings.capture and settings.capture_level == "INFO"  # dev's defaults
    capture = tlog.capture_run_logs(opened, level=settings.capture_level)
    try:
        yield opened
    finally:
        capture.close()
        root.setLevel(level)
        opened.close()


def _node_logs(store: SqliteStore, run_id: str, module: str) -> list[tuple[str | None, str]]:
    return [(item.node, item.message) for item in store.page_run_logs(run_id, limit=1000)
            if item.logger == f"threadloom.examples.{module}" and item.level == "INFO"]


@pytest.mark.parametrize(("name", "module", "payload", "expected"), [
    ("seed_loop", "loop", {"step": 0}, [
        ("increment", "step 0 -> 1"), ("check", "step 1: one more round"),
        ("increment", "step 1 -> 2"), ("check", "step 2: one more round"),
        ("increment", "step 2 -> 3"), ("check", "step 3: done")]),
    ("chat", "chat", {"messages": ["Hello"]}, [
        ("chat", "answering 'Hello' (message 1 of the thread)")]),
    ("fetch", "fetch", {"urls": ["https://example.com/a", "https://example.com/b"]}, [
        ("call_api", "fetching 2 URL(s): https://example.com/a, https://example.com/b"),
        ("call_api", "fetched 2 page(s), 110 characters")]),  # "<html><body>Fetched ...": 55
    ("cloud", "cloud", {"step": 0}, [
        ("planner", "planning round 1 of 3"), ("worker", "round 1 worked: Processed step 1"),
        ("planner", "planning round 2 of 3"), ("worker", "round 2 worked: Processed step 2"),
        ("planner", "planning round 3 of 3"), ("worker", "round 3 worked: Processed step 3")]),
])
def test_each_seed_graphs_nodes_log_what_they_do(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch, name: str, module: str,
        payload: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    monkeypatch.setenv("THREADLOOM_SEED004_FAIL_RATE", "0")  # cloud: no simulated failure
    graph = load_graphs(RuntimeConfig.seeds(), store)[name]
    graph.invoke(payload, {"thread_id": f"t-{name}", "run_id": f"r-{name}"})
    assert _node_logs(store, f"r-{name}", module) == expected


def test_the_review_seed_logs_the_draft_the_answer_and_the_outcome(store: SqliteStore) -> None:
    graph = load_graphs(RuntimeConfig.seeds(), store)["review"]
    graph.invoke({"topic": "refund"}, {"thread_id": "t-review", "run_id": "r-ask"})
    assert _node_logs(store, "r-ask", "review") == [
        ("draft", "drafted a reply about 'refund' for review")]
    graph.invoke(Command(resume=False), {"thread_id": "t-review", "run_id": "r-answer"})
    assert _node_logs(store, "r-answer", "review") == [
        ("review", "the reviewer answered False"),
        ("publish", "reply not published: rejected")]
