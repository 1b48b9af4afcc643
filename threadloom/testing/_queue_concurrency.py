"""Many claimers at once on one queue (:func:`claim_concurrently`), for the queue conformance
suite and for tests that give each claimer a store of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.testing._queue_records import put

__all__ = ["claim_concurrently"]


def claim_concurrently(stores: Callable[[], RuntimeStore], workers: int, runs: int,
                       threads: int) -> None:
    """Queue ``runs`` runs over ``threads`` threads on ``stores()``, then let ``workers``
    threads, each with ``stores()`` of its own, claim and finish them all: every run is
    claimed exactly once, and no two runs of one thread are ever held at once."""
    setup = stores()
    for i in range(runs):
        put(setup, f"r{i}", f"t{i % threads}")
    claimed: list[str] = []
    held: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def work(name: str) -> None:
        store = stores()
        barrier.wait()
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline:
                claims = store.claim_runs(name, limit=3, ttl=120.0)
                if not claims:
                    with lock:
                        if len(claimed) >= runs:
                            return
                    time.sleep(0.005)
                    continue
                with lock:
                    for c in claims:
                        assert c.thread_id not in held, f"{c.thread_id} held twice"
                        held.add(c.thread_id)
                        claimed.append(c.run_id)
                for c in claims:
                    with lock:
                        held.discard(c.thread_id)
                    assert store.finish_claim(c)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(300)
    assert errors == []
    assert sorted(claimed) == sorted(f"r{i}" for i in range(runs))
    assert setup.queue_depth() == 0
