"""The JSON shapes of LangGraph's server for what the engine returns: state snapshots,
checkpoints, interrupts and timestamps.

Every value in a response goes through :func:`threadloom._json.to_jsonable`, so state holding
models, dataclasses or datetimes reaches a client as LangGraph's server would show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import Response

from threadloom._json import dumps, to_jsonable
from threadloom.types import Interrupt, StateSnapshot

__all__ = [
    "checkpoint_json",
    "interrupt_json",
    "iso",
    "json_response",
    "state_json",
    "task_interrupts",
]


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC (``None`` stays ``None``)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def json_response(content: Any, status_code: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    """``content`` (made JSON-safe) as an ``application/json`` response."""
    return Response(dumps(content), status_code=status_code, headers=dict(headers or {}),
                    media_type="application/json")


def checkpoint_json(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``{thread_id, checkpoint_ns, checkpoint_id}`` a snapshot's config addresses, or
    ``None`` when it addresses no checkpoint (a thread without one)."""
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("thread_id") or not configurable.get("checkpoint_id"):
        return None
    return {
        "thread_id": configurable["thread_id"],
        "checkpoint_ns": configurable.get("checkpoint_ns") or "",
        "checkpoint_id": configurable["checkpoint_id"],
    }


def interrupt_json(item: Interrupt) -> dict[str, Any]:
    """An interrupt as ``{"value", "id"}``."""
    return {"value": to_jsonable(item.value), "id": item.id}


def task_interrupts(snapshot: StateSnapshot) -> dict[str, list[dict[str, Any]]]:
    """The pending interrupts of a snapshot by task id (a thread's ``interrupts`` field)."""
    return {
        task.id: [interrupt_json(i) for i in task.interrupts]
        for task in snapshot.tasks
        if task.interrupts
    }


def _interrupts(items: Iterable[Interrupt]) -> list[dict[str, Any]]:
    return [interrupt_json(i) for i in items]


def state_json(snapshot: StateSnapshot) -> dict[str, Any]:
    """A snapshot as LangGraph's ``ThreadState``: values, next, tasks, metadata, created_at,
    checkpoint, parent_checkpoint, interrupts (and the older ``checkpoint_id`` and
    ``parent_checkpoint_id`` fields, which LangGraph's server still sends)."""
    checkpoint = checkpoint_json(snapshot.config)
    parent = checkpoint_json(snapshot.parent_config)
    return {
        "values": to_jsonable(snapshot.values),
        "next": list(snapshot.next),
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "path": to_jsonable(task.path),
                "error": task.error,
                "interrupts": _interrupts(task.interrupts),
                "checkpoint": None,
                "state": state_json(task.state) if task.state is not None else None,
                "result": to_jsonable(task.result),
            }
            for task in snapshot.tasks
        ],
        "metadata": to_jsonable(snapshot.metadata),
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": _interrupts(snapshot.interrupts),
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
    }
