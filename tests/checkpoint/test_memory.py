"""The reference in-memory store: the conformance suite plus its LangGraph-shaped names."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from threadloom.checkpoint import open_store
from threadloom.checkpoint.base import Commit
from threadloom.checkpoint.memory import InMemorySaver, MemorySaver, MemoryStore
from threadloom.errors import StoreError
from threadloom.testing import StoreConformance
from threadloom.testing.conformance import run


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[MemoryStore]:
        s = MemoryStore()
        s.setup()
        yield s
        s.close()


def test_langgraph_names() -> None:
    saver = MemorySaver()
    assert isinstance(saver, InMemorySaver)
    assert isinstance(saver, MemoryStore)


def test_open_store_memory_url() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    store.commit([Commit("t1", runs=[run("r1", "t1")])])
    assert store.get_run("r1") is not None
    store.close()


def test_run_metadata_must_be_json() -> None:
    store = MemoryStore()
    with pytest.raises(StoreError):
        store.commit([Commit("t1", runs=[run("r1", "t1", metadata={"x": object()})])])
    assert store.get_run("r1") is None
    assert store.get_thread("t1") is None
