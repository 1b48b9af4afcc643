"""The process-wide ``"done"`` watcher that wakes waiting requests (server/_done.py)."""

from __future__ import annotations

import asyncio

from threadloom.checkpoint.memory import MemoryStore
from threadloom.server._done import DoneWatcher, done_watcher


def test_a_waiter_is_woken_by_its_runs_signal_only() -> None:
    async def scenario() -> None:
        watcher = DoneWatcher()
        mine, other = watcher.watch("default/r1"), watcher.watch("default/r2")
        watcher.on_done("default/r1")
        await asyncio.wait_for(mine.wait(), 10)
        assert not other.is_set()
        watcher.forget("default/r2", other)
        assert watcher._waiters == {}

    asyncio.run(scenario())


def test_a_waiter_that_registers_after_the_signal_is_woken_at_once() -> None:
    async def scenario() -> None:
        watcher = DoneWatcher()
        watcher.on_done("default/r1")
        assert watcher.watch("default/r1").is_set()
        late = watcher.watch("default/r1")
        watcher.rearm("default/r1", late)  # the re-read found the run running again
        assert not late.is_set() and not watcher.watch("default/r1").is_set()
        watcher.on_done("default/r1")
        await asyncio.wait_for(late.wait(), 10)

    asyncio.run(scenario())


def test_one_watcher_per_store_wakes_on_the_stores_done_signal() -> None:
    store = MemoryStore()
    assert done_watcher(store) is done_watcher(store)

    async def scenario() -> None:
        woken = done_watcher(store).watch("default/r1")
        store.signals().publish("done", "default/r1")
        await asyncio.wait_for(woken.wait(), 10)

    asyncio.run(scenario())
