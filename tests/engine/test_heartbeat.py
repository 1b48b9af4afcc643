"""The lease heartbeat (``engine._recording.Heartbeat``): once a run is removed, the heartbeat
no longer uses the store for it, even when a renewal was in flight (the run's store may be
closed right after the run returns)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from threadloom.checkpoint.base import Lease
from threadloom.engine._recording import Heartbeat

TTL = 0.3


@dataclass
class _Run:
    lease: Lease | None


class _SlowStore:
    """Renews leases slowly, remembering when each renewal started and ended."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[tuple[str, float]] = []

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        self.calls.append(("start", time.monotonic()))
        self.started.set()
        self.release.wait(10)
        self.calls.append(("end", time.monotonic()))
        return replace(lease, expires_at=time.time() + ttl)


def test_remove_waits_for_a_renewal_in_flight_and_nothing_follows_it() -> None:
    store = _SlowStore()
    heartbeat = Heartbeat(store, TTL)  # type: ignore[arg-type]
    run = _Run(Lease("t1", "me", 1, time.time()))  # due at once
    heartbeat.add(run)
    assert store.started.wait(10)
    removed = threading.Event()

    def remove() -> None:
        heartbeat.remove(run)
        removed.set()

    remover = threading.Thread(target=remove)
    remover.start()
    time.sleep(0.1)
    assert not removed.is_set()  # the renewal is still running: remove waits for it
    run.lease = None  # what the run does as it lets go
    store.release.set()
    remover.join(10)
    assert removed.is_set()
    assert run.lease is None  # a renewal that ended after remove does not bring it back
    calls = len(store.calls)
    time.sleep(TTL * 2)
    assert len(store.calls) == calls  # no renewal for a removed run


def test_a_run_still_held_is_renewed() -> None:
    store = _SlowStore()
    store.release.set()
    heartbeat = Heartbeat(store, TTL)  # type: ignore[arg-type]
    run: Any = _Run(Lease("t1", "me", 1, time.time()))
    heartbeat.add(run)
    deadline = time.monotonic() + 10
    while run.lease.expires_at <= time.time() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run.lease.expires_at > time.time()
    heartbeat.remove(run)
