"""Fixtures for the worker tests: a runtime store per backend (memory, SQLite), test graphs
bound to it, ``queue(...)`` to enqueue a run as the API does, and ``wait_for`` to wait for a
run to leave the queue."""

from __future__ import annotations

import json
import operator
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

from tests.engine.conftest import postgres_database  # noqa: F401 - a fixture used here
from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.memory import MemoryStore
from threadloom.checkpoint.queue import QueuedRun, RuntimeStore
from threadloom.config import get_stream_writer
from threadloom.func import task
from threadloom.graph import END, START, CompiledGraph, StateGraph
from threadloom.types import interrupt


class State(TypedDict):
    log: Annotated[list[str], operator.add]


class Probe:
    """Shared by a test and its graphs: execution counts, and events to hold nodes on."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.release = threading.Event()

    def hit(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1


def build_graphs(store: RuntimeStore, probe: Probe) -> dict[str, CompiledGraph]:
    """The graphs the worker tests run."""

    def step(name: str) -> Callable[[State], dict[str, Any]]:
        def node(state: State) -> dict[str, Any]:
            probe.hit(name)
            get_stream_writer()({"node": name})
            return {"log": [name]}
        return node

    chain = StateGraph(State)
    for name in ("a", "b", "c"):
        chain.add_node(name, step(name))
    chain.add_edge(START, "a")
    chain.add_edge("a", "b")
    chain.add_edge("b", "c")
    chain.add_edge("c", END)

    def hold(state: State) -> dict[str, Any]:
        probe.hit("hold")
        probe.started.set()
        probe.release.wait(30)
        return {"log": ["hold"]}

    held = StateGraph(State)
    held.add_node("hold", hold)
    held.add_node("after", step("after"))
    held.add_edge(START, "hold")
    held.add_edge("hold", "after")

    @task
    def slow() -> str:
        probe.started.set()
        probe.release.wait(30)
        return "slow"

    def waits(state: State) -> dict[str, Any]:
        probe.hit("waits")
        return {"log": [slow().result()]}

    tasked = StateGraph(State)
    tasked.add_node("waits", waits)
    tasked.add_edge(START, "waits")

    def ask(state: State) -> dict[str, Any]:
        probe.hit("ask")
        return {"log": [f"answer:{interrupt('question?')}"]}

    asking = StateGraph(State)
    asking.add_node("ask", ask)
    asking.add_edge(START, "ask")

    def boom(state: State) -> dict[str, Any]:
        raise ValueError("boom")

    failing = StateGraph(State)
    failing.add_node("boom", boom)
    failing.add_edge(START, "boom")

    builders = {"chain": chain, "hold": held, "tasked": tasked, "asking": asking,
                "failing": failing}
    return {name: b.compile(checkpointer=store, name=name) for name, b in builders.items()}


@pytest.fixture(params=["memory", "sqlite",
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeStore]:
    """A runtime store of each backend (Postgres: a fresh schema, skipped without a server)."""
    if request.param == "memory":
        s: Any = MemoryStore()
    elif request.param == "sqlite":
        from threadloom.checkpoint.sqlite import SqliteStore

        s = SqliteStore(tmp_path / "worker.db")
    else:
        s = request.getfixturevalue("postgres_database")()
        assert isinstance(s, RuntimeStore)
        yield s
        return
    s.setup()
    yield s
    s.close()


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    yield p
    p.release.set()


@pytest.fixture
def graphs(store: RuntimeStore, probe: Probe) -> dict[str, CompiledGraph]:
    return build_graphs(store, probe)


@pytest.fixture
def queue(store: RuntimeStore) -> Callable[..., str]:
    """``queue(graph, input=..., thread_id=..., strategy=..., **payload)`` -> run id."""

    def enqueue(graph: str, input: Any = None, *, thread_id: str | None = None,
                strategy: Any = "enqueue", timeout: float | None = None,
                run_id: str | None = None, available_at: float = 0.0,
                **payload: Any) -> str:
        run_id = run_id or f"r-{uuid.uuid4().hex[:10]}"
        thread_id = thread_id or f"t-{uuid.uuid4().hex[:10]}"
        body = {"input": input, "stream_mode": ["values"], **payload}
        record = RunRecord(run_id, thread_id, graph, "pending")
        store.enqueue(record, QueuedRun("default", run_id, thread_id, graph,
                                        json.dumps(body).encode(), timeout=timeout,
                                        available_at=available_at),
                      strategy)
        return run_id

    return enqueue


@pytest.fixture
def wait_for(store: RuntimeStore) -> Callable[..., RunRecord]:
    """``wait_for(run_id)``: the run's record once its queue row is done (or gone)."""

    def wait(run_id: str, timeout: float = 20.0) -> RunRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = store.get_queued("default", run_id)
            if row is None or row.status == "done":
                record = store.get_run(run_id)
                assert record is not None, f"run {run_id} is gone"
                return record
            time.sleep(0.01)
        raise AssertionError(f"run {run_id} did not finish: {store.get_queued('default', run_id)}")

    return wait


def until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Wait for ``predicate()`` to be true (returns its value), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("the condition did not become true in time")


def events_of(store: RuntimeStore, run_id: str) -> list[tuple[str, Any]]:
    return [(e.event, json.loads(e.data)) for e in store.read_events("default", run_id)]
