"""Run-and-wait requests executed by the worker of the API's own process (``threadloom dev``).

A request that waits for its run would otherwise queue it, wake the worker, have the worker
claim it in a transaction of its own, and be woken when the worker signals the run done. When
the process has a worker with a free slot, :func:`run_here` instead queues the run already
claimed by that worker (:meth:`~threadloom.checkpoint.queue.RuntimeStore.enqueue_claimed`, one
transaction) on one of the worker's runner threads, executes it there at once, and reads its
result there: one hand-off from the event loop and back. The run is an ordinary claimed run
all along: renewed by the worker's heartbeat, cancellable, continued by the next process if
this one dies, and its record, events and result are what the queued path gives.

A run that cannot start at once (its thread is busy, or it is delayed) is queued as usual,
and its request waits for it as usual.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.server.auth import Principal
from threadloom.server.runs import RunCreate, _created, ended_result

if TYPE_CHECKING:
    from collections.abc import Mapping

    from threadloom.graph.compiled import CompiledGraph
    from threadloom.worker import Worker

__all__ = ["Refused", "run_here"]


@dataclass(slots=True)
class Refused:
    """The run was not queued: ``error`` is why (the route answers it, as it would have)."""

    error: Exception


async def run_here(worker: Worker, store: RuntimeStore, graphs: Mapping[str, CompiledGraph],
                   who: Principal, thread_id: str | None, body: RunCreate,
                   traceparent: str | None) -> Refused | tuple[RunRecord, dict[str, Any] | None]:
    """Queue the run ``body`` asks for and, if it can start now, execute it on ``worker``
    (which the caller :meth:`~threadloom.worker.Worker.reserve`-d a slot of). Returns the run
    as queued and its result, or ``None`` for a result still to wait for (the run was queued
    behind others, handed back, or its claim was lost); :class:`Refused` when nothing was
    queued. An error after the run was queued is raised."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Refused | tuple[RunRecord, dict[str, Any] | None]] = \
        loop.create_future()
    stateless = thread_id is None

    def job() -> None:
        try:
            outcome = _execute(worker, store, graphs, who, thread_id, body, traceparent,
                               stateless)
        except BaseException as exc:  # noqa: BLE001 - handed to the request, not swallowed
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, outcome, None)

    worker.submit(job)
    return await done


def _execute(worker: Worker, store: RuntimeStore, graphs: Mapping[str, CompiledGraph],
             who: Principal, thread_id: str | None, body: RunCreate, traceparent: str | None,
             stateless: bool) -> Refused | tuple[RunRecord, dict[str, Any] | None]:
    try:
        record, row = _created(store, graphs, who, thread_id, body, stateless, False,
                               traceparent, claim_for=(worker.worker_id, worker.run_lease))
    except Exception as exc:
        worker.unreserve()
        return Refused(exc)
    if row.status != "claimed":  # it waits for its turn: the worker's loop claims it later
        worker.unreserve()
        return record, None
    if worker.run_claimed(row) != "finished":
        return record, None
    return record, ended_result(store, graphs, record, body, stateless)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the request is gone; the run went on regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
