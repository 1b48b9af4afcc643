"""Signals over Redis pub/sub (``--redis URL``): messages reach subscribers of other bus
objects (other processes), the store's own signals are heard too, unsubscribing stops
delivery, and a failing callback does not stop the others.

Needs Redis at ``THREADLOOM_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); skips
when none answers, or fails under ``THREADLOOM_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import os
import queue
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.checkpoint.conftest import unavailable

REDIS_URL = os.environ.get("THREADLOOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class LocalBus:
    """A minimal in-process bus standing in for a store's own signals."""

    def __init__(self) -> None:
        self.subs: dict[str, list[Callable[[str], None]]] = {}

    def publish(self, topic: str, message: str) -> None:
        for callback in list(self.subs.get(topic, ())):
            callback(message)

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        self.subs.setdefault(topic, []).append(callback)
        return lambda: self.subs[topic].remove(callback)


@pytest.fixture
def buses() -> Iterator[Callable[..., object]]:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable server
        unavailable(f"Redis is unreachable at {REDIS_URL}: {exc}")
    from threadloom.checkpoint.redis_signals import RedisSignals

    made: list[RedisSignals] = []
    prefix = f"test-{uuid.uuid4().hex[:8]}:"

    def make(local: LocalBus | None = None) -> RedisSignals:
        bus = RedisSignals(REDIS_URL, local, prefix=prefix)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()


def _receiver() -> tuple[queue.Queue[str], Callable[[str], None]]:
    got: queue.Queue[str] = queue.Queue()
    return got, got.put


def _publish_until_heard(bus, topic: str, message: str, got: queue.Queue[str]) -> str:
    """Subscriptions reach Redis asynchronously: publish until the first one is heard."""
    for _ in range(50):
        bus.publish(topic, message)
        try:
            return got.get(timeout=0.2)
        except queue.Empty:
            continue
    raise AssertionError(f"no message on {topic!r} arrived")


def test_a_message_reaches_a_subscriber_of_another_bus(buses):
    api, worker = buses(), buses()
    got, callback = _receiver()
    worker.subscribe("cancel", callback)

    assert _publish_until_heard(api, "cancel", "default/run-1", got) == "default/run-1"


def test_the_stores_own_signals_are_heard_and_publishing_goes_to_redis_only(buses):
    local = LocalBus()
    bus = buses(local)
    got, callback = _receiver()
    bus.subscribe("work", callback)

    local.publish("work", "from-the-store")
    assert got.get(timeout=5) == "from-the-store"

    heard_locally: list[str] = []
    local.subscribe("done", heard_locally.append)
    got_done, on_done = _receiver()
    bus.subscribe("done", on_done)
    # the bus's own publish travels through Redis (so it comes back), not the local bus
    assert _publish_until_heard(bus, "done", "default/r", got_done) == "default/r"
    assert heard_locally == []


def test_unsubscribe_stops_delivery_and_a_failing_callback_spares_the_others(buses):
    publisher, listener = buses(), buses()
    got, callback = _receiver()

    def broken(_: str) -> None:
        raise RuntimeError("subscriber bug")

    listener.subscribe("event", broken)
    off = listener.subscribe("event", callback)
    assert _publish_until_heard(publisher, "event", "ns/r/1", got) == "ns/r/1"
    off()
    while not got.empty():
        got.get_nowait()
    publisher.publish("event", "ns/r/2")
    marker, mark = _receiver()
    listener.subscribe("event", mark)
    assert _publish_until_heard(publisher, "event", "ns/r/3", marker) in ("ns/r/2", "ns/r/3")
    assert got.empty()
