"""Signals over Redis pub/sub (``--redis URL``): messages reach subscribers of other bus
objects (other processes), unsubscribing stops delivery, a failing callback does not stop the
others, and a Redis that does not answer is a clear error at once.

Needs Redis at ``THREADLOOM_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); skips
when none answers, or fails under ``THREADLOOM_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import queue
import socket
from collections.abc import Callable

import pytest

from threadloom.errors import InvalidConfigError, StoreUnavailableError


def _receiver() -> tuple[queue.Queue[str], Callable[[str], None]]:
    got: queue.Queue[str] = queue.Queue()
    return got, got.put


def test_a_message_reaches_a_subscriber_of_another_bus(redis_bus):
    api, worker = redis_bus(), redis_bus()
    got, callback = _receiver()
    worker.subscribe("cancel", callback)  # returns once Redis confirmed the subscription
    api.publish("cancel", "default/run-1")
    assert got.get(timeout=10) == "default/run-1"


def test_a_bus_hears_its_own_messages_and_other_topics_stay_apart(redis_bus):
    bus = redis_bus()
    done, work = _receiver(), _receiver()
    bus.subscribe("done", done[1])
    bus.subscribe("work", work[1])
    bus.publish("done", "default/r")
    assert done[0].get(timeout=10) == "default/r"
    bus.publish("work", "")
    assert work[0].get(timeout=10) == ""
    assert done[0].empty()


def test_unsubscribe_stops_delivery_and_a_failing_callback_spares_the_others(redis_bus):
    publisher, listener = redis_bus(), redis_bus()
    got, callback = _receiver()

    def broken(_: str) -> None:
        raise RuntimeError("subscriber bug")

    listener.subscribe("event", broken)
    off = listener.subscribe("event", callback)
    publisher.publish("event", "ns/r/1")
    assert got.get(timeout=10) == "ns/r/1"
    off()
    off()  # twice is harmless
    marker, mark = _receiver()
    listener.subscribe("event", mark)
    publisher.publish("event", "ns/r/2")
    assert marker.get(timeout=10) == "ns/r/2"  # delivered in order: ns/r/2 went past `off`
    assert got.empty()


def test_an_unreachable_redis_or_a_wrong_url_fails_at_once():
    pytest.importorskip("redis")
    from threadloom.checkpoint.redis_signals import RedisSignals

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreUnavailableError, match=f"cannot reach Redis at redis://127.0.0.1:"
                                                    f"{port}/0"):
        RedisSignals(f"redis://127.0.0.1:{port}/0", connect_timeout=2)
    with pytest.raises(InvalidConfigError, match="not a Redis URL"):
        RedisSignals("postgresql://u:secret@host/db")


def test_a_password_is_never_shown():
    from threadloom.checkpoint.redis_signals import redact

    assert redact("redis://user:secret@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"
