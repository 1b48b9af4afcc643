"""The event pump (:mod:`threadloom.worker._events`): a streamed run's events are written as
they come, an unwatched run's may wait (``delay``) and then go with the end of its claim, in
one write, or are written when the delay is up, or when the pump closes; never twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.worker.conftest import events_of, until
from threadloom.checkpoint.queue import QueuedRun, RuntimeStore
from threadloom.worker._events import EventBuffer, EventPump

HOUR = 3600.0


@pytest.fixture
def pump() -> Iterator[EventPump]:
    made = EventPump("test-events")
    yield made
    made.close()


@pytest.fixture
def claimed(store: RuntimeStore, queue: Callable[..., str]) -> QueuedRun:
    run_id = queue("chain", {"log": []})
    [claim] = store.claim_runs("w1", limit=1, ttl=HOUR)
    assert claim.run_id == run_id
    return claim


def test_a_streamed_runs_events_are_written_as_they_come(
        store: RuntimeStore, pump: EventPump, claimed: QueuedRun) -> None:
    events = EventBuffer(store, "default", claimed.run_id, pump)
    events.add("metadata", {"run_id": claimed.run_id})
    assert until(lambda: events_of(store, claimed.run_id)) == [
        ("metadata", {"run_id": claimed.run_id})]


def test_an_unwatched_runs_events_go_with_the_end_of_its_claim(
        store: RuntimeStore, pump: EventPump, claimed: QueuedRun) -> None:
    events = EventBuffer(store, "default", claimed.run_id, pump, delay=HOUR)
    events.add("metadata", {"run_id": claimed.run_id})
    events.add("values", {"log": ["a"]})
    assert events_of(store, claimed.run_id) == []  # held back: the run goes on
    events.add("end", None)
    assert events.finish(claimed)
    pump.close()  # the delayed mark comes due at close: nothing is left to write
    assert events_of(store, claimed.run_id) == [
        ("metadata", {"run_id": claimed.run_id}), ("values", {"log": ["a"]}), ("end", None)]


def test_an_unwatched_runs_events_are_written_when_the_delay_is_up(
        store: RuntimeStore, pump: EventPump, claimed: QueuedRun) -> None:
    events = EventBuffer(store, "default", claimed.run_id, pump, delay=0.05)
    events.add("values", {"log": ["a"]})
    assert until(lambda: events_of(store, claimed.run_id)) == [("values", {"log": ["a"]})]
    events.add("values", {"log": ["a", "b"]})  # the next ones are delayed again, in order
    assert until(lambda: len(events_of(store, claimed.run_id)) == 2)
    assert events_of(store, claimed.run_id)[1] == ("values", {"log": ["a", "b"]})


def test_closing_the_pump_writes_what_waits(
        store: RuntimeStore, pump: EventPump, claimed: QueuedRun) -> None:
    events = EventBuffer(store, "default", claimed.run_id, pump, delay=HOUR)
    events.add("values", {"log": ["a"]})
    pump.close()
    assert events_of(store, claimed.run_id) == [("values", {"log": ["a"]})]

