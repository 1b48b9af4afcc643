"""``GET /threads/{thread_id}/runs/{run_id}/logs``: the log records kept with a run.

The records are those :func:`threadloom.logging.capture_run_logs` kept (the runtime captures
them for every run it executes; see the ``[logs]`` section of ``threadloom.toml``), oldest
first, in keyset pages: ``next_cursor`` is sent back as ``cursor`` for the next page, and is
``null`` on the last one. A viewer reads them in its namespace; an unknown run, or one of
another thread or namespace, is 404 ``not_found`` like every run route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from threadloom.checkpoint.base import RunLog
from threadloom.logging import flush_pending
from threadloom.server._runs import find_run
from threadloom.server._shapes import iso
from threadloom.server.deps import Store, Viewer
from threadloom.server.errors import InvalidRequestError

__all__ = ["RunLogItem", "RunLogPage", "router"]

router = APIRouter(tags=["runs"])

MAX_LIMIT = 1000


class RunLogItem(BaseModel):
    """One log record of the run."""

    seq: int
    at: str
    level: str
    logger: str
    message: str
    node: str | None
    attempt: int | None
    exc: str | None


class RunLogPage(BaseModel):
    """A page of a run's log records, oldest first; ``next_cursor`` continues it."""

    run_id: str
    thread_id: str
    count: int
    logs: list[RunLogItem]
    next_cursor: str | None


def _after(cursor: str | None) -> int:
    """The ``seq`` a cursor stands for (the last record of the previous page)."""
    if cursor is None:
        return 0
    if not cursor.isdigit() or not cursor.isascii() or len(cursor) > 18:
        raise InvalidRequestError("cursor is not one this API gave out")
    return int(cursor)


def log_json(item: RunLog) -> dict[str, Any]:
    """A stored record as the route answers it."""
    return {"seq": item.seq, "at": iso(item.at), "level": item.level, "logger": item.logger,
            "message": item.message, "node": item.node, "attempt": item.attempt,
            "exc": item.exc}


@router.get("/threads/{thread_id}/runs/{run_id}/logs", response_model=RunLogPage,
            summary="A run's log records, oldest first")
def run_logs(thread_id: str, run_id: str, store: Store, who: Viewer,
             limit: Annotated[int, Query(ge=1, le=MAX_LIMIT,
                                         description="Records per page (1-1000).")] = 100,
             cursor: Annotated[str | None, Query(
                 max_length=64, description="The next_cursor of the previous page.")] = None,
             ) -> dict[str, Any]:
    after = _after(cursor)
    find_run(store, who.namespace, thread_id, run_id)
    flush_pending(store)  # records this process collected (dev: the run's worker is here)
    page = store.page_run_logs(run_id, namespace=who.namespace, after=after, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return {"run_id": run_id, "thread_id": thread_id, "count": len(page),
            "logs": [log_json(item) for item in page],
            "next_cursor": str(page[-1].seq) if more else None}
