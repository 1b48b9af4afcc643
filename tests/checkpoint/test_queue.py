"""The runtime store (run queue, events, signals, workers, API keys): the conformance suite
on every backend, and what only Postgres has (signals between store objects through
``LISTEN/NOTIFY``, many claimers with stores of their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from threadloom.checkpoint.memory import MemoryStore
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.testing.queue_conformance import QueueConformance


class TestMemoryQueue(QueueConformance):
    @pytest.fixture
    def store(self) -> Iterator[MemoryStore]:
        s = MemoryStore()
        s.setup()
        yield s
        s.close()


class TestSqliteFileQueue(QueueConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        s = SqliteStore(tmp_path / "queue.db")
        s.setup()
        yield s
        s.close()


class TestSqliteMemoryQueue(QueueConformance):
    @pytest.fixture
    def store(self) -> Iterator[SqliteStore]:
        s = SqliteStore(":memory:")
        s.setup()
        yield s
        s.close()
