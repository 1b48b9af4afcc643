"""A run's events as Server-Sent Events, read from the store.

The worker writes a run's events into the store (``RuntimeStore.append_events``); any API
process serves them, so a stream can be opened, or resumed after ``Last-Event-ID``, on another
process than the one that created the run. Every event carries ``id:`` (its number in the
run); the stream ends at the run's ``end`` control event, which is not sent. While no event
comes, an ``"event"`` signal wakes the stream at once, a re-read every ``poll`` seconds covers
a missed one, and a comment line every ``keepalive`` seconds keeps proxies from closing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection

from threadloom.checkpoint.queue import RunEvent, RuntimeStore
from threadloom.server._runs import is_done

__all__ = ["event_stream", "format_event", "parse_last_event_id"]

_ALWAYS = ("metadata", "error")  # sent whatever stream modes a join asks for


def format_event(event: RunEvent) -> bytes:
    """One event in the SSE wire format (its data is compact JSON: a single line)."""
    return b"event: %s\ndata: %s\nid: %d\n\n" % (event.event.encode(), event.data, event.seq)


def parse_last_event_id(value: str | None) -> int:
    """The event number a ``Last-Event-ID`` header names (``0``: from the start)."""
    if not value:
        return 0
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return 0


async def event_stream(store: RuntimeStore, namespace: str, run_id: str, *, after: int = 0,
                       modes: Collection[str] | None = None, poll: float = 1.0,
                       keepalive: float = 5.0,
                       cancel_on_disconnect: bool = False) -> AsyncIterator[bytes]:
    """The run's events after number ``after``, as SSE, until its ``end`` event (or until it
    left the queue without one, e.g. rolled back). ``modes``: send only these stream modes
    (and ``metadata`` / ``error``). ``cancel_on_disconnect``: cancel the run if the client goes
    away before it ends."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    prefix = f"{namespace}/{run_id}"

    def on_signal(message: str) -> None:
        if message == prefix or message.startswith(prefix + "/"):
            loop.call_soon_threadsafe(woken.set)

    signals = store.signals()
    unsubscribe = [signals.subscribe("event", on_signal), signals.subscribe("done", on_signal)]
    finished = False
    last = after
    quiet_since = loop.time()
    try:
        while True:
            woken.clear()
            events = await asyncio.to_thread(store.read_events, namespace, run_id, last)
            for event in events:
                last = event.seq
                if event.event == "end":
                    finished = True
                    return
                if modes is None or event.event in modes or event.event in _ALWAYS:
                    yield format_event(event)
            if events:
                quiet_since = loop.time()
                continue
            if await asyncio.to_thread(is_done, store, namespace, run_id):
                # left the queue: whatever it wrote before is there now
                rest = await asyncio.to_thread(store.read_events, namespace, run_id, last)
                if not rest:
                    finished = True
                    return
                continue
            try:
                await asyncio.wait_for(woken.wait(), poll)
            except TimeoutError:
                if loop.time() - quiet_since >= keepalive:
                    quiet_since = loop.time()
                    yield b": keepalive\n\n"
    finally:
        for stop in unsubscribe:
            stop()
        if cancel_on_disconnect and not finished:
            try:
                store.request_cancel(namespace, run_id)
            except Exception:  # the client is gone; the run is the worker's business
                pass
