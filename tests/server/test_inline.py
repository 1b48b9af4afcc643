"""Wait requests whose runs execute on the worker of the API's own process
(:mod:`threadloom.server._inline`, as in ``threadloom dev``): queued already claimed by that
worker and run at once; queued as usual when they cannot start (a busy thread, no free
slot); the route's answer either way, and nothing queued when the request is refused."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from _app import build
from graphs import compiled
from harness import API_KEY
from test_fastlane import Recorder, call

from threadloom.checkpoint.queue import QueuedRun, RuntimeStore
from threadloom.graph import END, StateGraph
from threadloom.graph.compiled import CompiledGraph
from threadloom.server import Settings
from threadloom.server._fastlane import FastLane
from threadloom.worker import Worker

JSON = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
LOOP = {"assistant_id": "seed_loop", "input": {"step": 0, "done": False},
        "if_not_exists": "create"}


class GateState(TypedDict):
    n: int


class Gate:
    """A graph whose first node waits until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.open = threading.Event()

    def node(self, state: GateState) -> dict[str, Any]:
        self.entered.release()
        assert self.open.wait(30.0), "the test never opened the gate"
        return {"n": state["n"] + 1}

    def graph(self, store: RuntimeStore) -> CompiledGraph:
        builder = StateGraph(GateState)
        builder.add_node("wait", self.node)
        builder.add_node("after", lambda state: {})  # a step boundary after the wait
        builder.set_entry_point("wait")
        builder.add_edge("wait", "after")
        builder.add_edge("after", END)
        return builder.compile(checkpointer=store, name="gate")


class Lane:
    """A fast lane with a worker of its own, over ``store``; records the loop's claims."""

    def __init__(self, store: RuntimeStore, concurrency: int) -> None:
        build(store, API_KEY)  # registers the key
        self.gate = Gate()
        self.graphs = {**compiled(store), "gate": self.gate.graph(store)}
        self.worker = Worker(store, self.graphs, concurrency=concurrency, heartbeat=0.5,
                             run_lease=3.0)
        self.inner = Recorder()
        self.app = FastLane(self.inner, store, self.graphs, Settings(), worker=self.worker)
        self.store = store
        self.by_loop: list[str] = []  # runs the worker's loop claimed
        claim_runs = store.claim_runs

        def recorded(*args: Any, **kwargs: Any) -> list[QueuedRun]:
            claims = claim_runs(*args, **kwargs)
            self.by_loop += [c.run_id for c in claims]
            return claims

        store.claim_runs = recorded  # type: ignore[method-assign]

    async def wait(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        status, answer = await call(self.app, path, json.dumps(body).encode(), JSON)
        return status, json.loads(answer) if answer else None

    async def entered(self) -> None:
        """Until a run entered the gate's node."""
        assert await asyncio.to_thread(self.gate.entered.acquire, True, 30.0)


@pytest.fixture
def lane(store: RuntimeStore) -> Iterator[Lane]:
    made = Lane(store, concurrency=2)
    made.worker.start()
    try:
        yield made
    finally:
        made.gate.open.set()
        made.worker.stop(5.0)


def _only_run(store: RuntimeStore, thread_id: str) -> str:
    [record] = store.list_runs(thread_id=thread_id)
    return record.run_id


async def test_a_wait_runs_on_the_worker_without_a_trip_through_the_queue(
        lane: Lane) -> None:
    thread = str(uuid.uuid4())
    assert await lane.wait(f"/threads/{thread}/runs/wait", LOOP) == (
        200, {"step": 3, "done": True})
    run_id = _only_run(lane.store, thread)
    row = lane.store.get_queued("default", run_id)
    assert row is not None and row.status == "done"
    assert (row.worker, row.attempts) == (lane.worker.worker_id, 1)
    assert run_id not in lane.by_loop  # claimed when it was queued, not by the loop
    events = [e.event for e in lane.store.read_events("default", run_id)]
    assert events[0] == "metadata" and events[-1] == "end" and "values" in events
    record = lane.store.get_run(run_id)
    assert record is not None and record.status == "succeeded"
    # a stateless run: its thread goes when it ends, as on the queued path
    assert await lane.wait("/runs/wait", {**LOOP, "if_not_exists": None}) == (
        200, {"step": 3, "done": True})
    assert lane.inner.seen == []


async def test_a_run_on_a_busy_thread_waits_its_turn(lane: Lane) -> None:
    thread = str(uuid.uuid4())
    gated = {"assistant_id": "gate", "input": {"n": 0}, "if_not_exists": "create"}
    first = asyncio.ensure_future(lane.wait(f"/threads/{thread}/runs/wait", gated))
    await lane.entered()
    second = asyncio.ensure_future(lane.wait(f"/threads/{thread}/runs/wait",
                                             {**gated, "input": {"n": 10}}))
    while len(lane.store.list_runs(thread_id=thread)) < 2:
        await asyncio.sleep(0.01)
    [later, _] = lane.store.list_runs(thread_id=thread)  # newest first
    row = lane.store.get_queued("default", later.run_id)
    assert row is not None and row.status == "queued"  # behind the first, not claimed
    lane.gate.open.set()
    assert await first == (200, {"n": 1})
    assert await second == (200, {"n": 11})
    assert later.run_id in lane.by_loop  # the loop took it when its turn came
    assert lane.inner.seen == []


async def test_with_every_slot_taken_the_run_is_queued(lane: Lane) -> None:
    gated = {"assistant_id": "gate", "input": {"n": 0}, "if_not_exists": "create"}
    held = [asyncio.ensure_future(lane.wait(f"/threads/{uuid.uuid4()}/runs/wait", gated))
            for _ in range(2)]
    await lane.entered()
    await lane.entered()
    assert not lane.worker.reserve()  # both slots run gated runs
    thread = str(uuid.uuid4())
    waiting = asyncio.ensure_future(lane.wait(f"/threads/{thread}/runs/wait", LOOP))
    while not lane.store.list_runs(thread_id=thread):
        await asyncio.sleep(0.01)
    lane.gate.open.set()
    assert [await h for h in held] == [(200, {"n": 1})] * 2
    assert await waiting == (200, {"step": 3, "done": True})
    assert _only_run(lane.store, thread) in lane.by_loop


async def test_a_refused_request_gives_its_slot_back_and_queues_nothing(lane: Lane) -> None:
    status, _ = await lane.wait("/runs/wait", {"assistant_id": "nope"})
    assert status == 599  # the route answers it, as without a worker
    assert lane.store.list_runs(namespace=None) == []
    assert [lane.worker.reserve() for _ in range(3)] == [True, True, False]
    lane.worker.unreserve()
    lane.worker.unreserve()


async def test_a_cancel_reaches_a_run_on_the_worker(lane: Lane) -> None:
    thread = str(uuid.uuid4())
    gated = {"assistant_id": "gate", "input": {"n": 0}, "if_not_exists": "create"}
    waiting = asyncio.ensure_future(lane.wait(f"/threads/{thread}/runs/wait", gated))
    await lane.entered()
    run_id = _only_run(lane.store, thread)
    assert lane.store.request_cancel("default", run_id) == "signalled"
    while not any(held.action == "interrupt" for held in lane.worker._running()):
        await asyncio.sleep(0.01)  # the worker's heartbeat hands the request to the run
    lane.gate.open.set()  # the node returns; the run stops at the step's end
    status, _ = await waiting
    record = lane.store.get_run(run_id)
    assert status == 200 and record is not None and record.status == "cancelled"


def test_reserve_counts_the_free_slots(store: RuntimeStore) -> None:
    worker = Worker(store, {}, concurrency=2)
    assert not worker.reserve()  # not started
    with worker:
        assert [worker.reserve() for _ in range(3)] == [True, True, False]
        worker.unreserve()
        assert worker.reserve()
        worker.unreserve()
        worker.unreserve()
    assert not worker.reserve()  # stopped


def test_only_a_stream_asks_the_worker_for_its_runs_events_at_once() -> None:
    """The payload tells the worker whether someone reads the events as they come."""
    from threadloom.server._runs import RunRequest, _payload

    builder = StateGraph(GateState)
    builder.add_node("n", lambda state: {})
    builder.set_entry_point("n")
    builder.add_edge("n", END)
    graph = builder.compile()
    assert json.loads(_payload(graph, RunRequest("g")))["streamed"] is False
    assert json.loads(_payload(graph, RunRequest("g", streamed=True)))["streamed"] is True
    assert json.loads(_payload(graph, RunRequest("g", stream_resumable=True)))["streamed"]
