"""``client.states`` and ``client.keys``: the seed's state-manager routes and API keys, under
``/v0/namespace/{ns}`` (the audit log is ``client.audit``).

Every method takes ``namespace``; without it, the client's ``namespace`` argument (sent as
``X-Namespace``) or ``"default"``. Lists page by cursor: pass a page's ``next_cursor`` back
as ``cursor`` until it is ``None``.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from urllib.parse import quote

from threadloom.client._endpoints import M, Resource, endpoint
from threadloom.client._transport import Call, json_call
from threadloom.client._types import (
    CreatedStates,
    KeyList,
    NamespaceRunsPage,
    NewApiKey,
    RunCheckpointsPage,
    RunItem,
    RunMetrics,
    RunStatesPage,
    StatesPage,
)

__all__ = ["Keys", "States", "namespace_path", "query"]


def namespace_path(resource: Resource[Any], namespace: str | None, *parts: str) -> str:
    """``/v0/namespace/{ns}/...`` with each part quoted (an id may hold ``/`` or ``?``)."""
    settings = resource._transport.settings
    ns = namespace or settings.headers.get("X-Namespace") or "default"
    return "/".join(["/v0/namespace", quote(ns, safe=""), *(quote(p, safe="") for p in parts)])


def query(**given: Any) -> dict[str, Any]:
    """Query parameters: the given ones, datetimes as ISO 8601."""
    return {k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in given.items() if v is not None}


class States(Resource[M]):
    """The seed 001 routes: states (node executions) by run, and the run-level operations."""

    @endpoint
    def create(self, graph: str, run_id: str, states: builtins.list[dict[str, Any]], *,
               thread_id: str | None = None,
               namespace: str | None = None) -> Call[CreatedStates]:
        """Start run ``run_id`` of ``graph`` with the first executions ``states``
        (``[{"identifier": node, "inputs": {...}}]``). Posting the same body again returns the
        same states, so the call is safe to retry; the same run id with other input raises
        :class:`~threadloom.client.ConflictError`."""
        body: dict[str, Any] = {"run_id": run_id, "states": states}
        if thread_id is not None:
            body["thread_id"] = thread_id
        path = namespace_path(self, namespace, "graph", graph, "states", "create")
        return json_call("POST", path, body=body, idempotent=True)

    @endpoint
    def list(self, *, namespace: str | None = None, status: str | None = None,
             since: datetime | str | None = None, until: datetime | str | None = None,
             run_id_prefix: str | None = None, limit: int | None = None,
             cursor: str | None = None) -> Call[StatesPage]:
        """The namespace's states, oldest first, with the page's ``run_ids``; ``since`` is
        inclusive, ``until`` exclusive (on ``created_at``)."""
        params = query(status=status, since=since, until=until,
                          run_id_prefix=run_id_prefix, limit=limit, cursor=cursor)
        return json_call("GET", namespace_path(self, namespace, "states", ""), params=params)

    @endpoint
    def of_run(self, run_id: str, *, namespace: str | None = None, status: str | None = None,
               since: datetime | str | None = None, until: datetime | str | None = None,
               limit: int | None = None, cursor: str | None = None) -> Call[RunStatesPage]:
        """The states of run ``run_id`` (an unknown run: an empty list)."""
        params = query(status=status, since=since, until=until, limit=limit, cursor=cursor)
        path = namespace_path(self, namespace, "states", "run", run_id)
        return json_call("GET", path, params=params)

    @endpoint
    def runs(self, *, namespace: str | None = None, status: str | None = None,
             graph: str | None = None, since: datetime | str | None = None,
             until: datetime | str | None = None, run_id_prefix: str | None = None,
             limit: int | None = None, cursor: str | None = None) -> Call[NamespaceRunsPage]:
        """The namespace's runs, with the same filters as :meth:`list` and ``graph``."""
        params = query(status=status, graph=graph, since=since, until=until,
                          run_id_prefix=run_id_prefix, limit=limit, cursor=cursor)
        return json_call("GET", namespace_path(self, namespace, "runs"), params=params)

    @endpoint
    def cancel_run(self, run_id: str, *, namespace: str | None = None) -> Call[RunItem]:
        """Cancel the whole run: a queued one never starts, a running one stops at its next
        step."""
        path = namespace_path(self, namespace, "runs", run_id, "cancel")
        return json_call("POST", path, body={})

    @endpoint
    def retry_run(self, run_id: str, *, namespace: str | None = None) -> Call[RunItem]:
        """Run a failed or cancelled run again from its last checkpoint."""
        path = namespace_path(self, namespace, "runs", run_id, "retry")
        return json_call("POST", path, body={})

    @endpoint
    def run_metrics(self, run_id: str, *, namespace: str | None = None) -> Call[RunMetrics]:
        """Counts, attempts and durations of the run's steps and executions."""
        return json_call("GET", namespace_path(self, namespace, "runs", run_id, "metrics"))

    @endpoint
    def run_checkpoints(self, run_id: str, *, namespace: str | None = None,
                        limit: int | None = None,
                        cursor: str | None = None) -> Call[RunCheckpointsPage]:
        """A page of the run's checkpoints in order, with values, next nodes and writes."""
        path = namespace_path(self, namespace, "runs", run_id, "checkpoints")
        return json_call("GET", path, params=query(limit=limit, cursor=cursor))


class Keys(Resource[M]):
    """API keys of a namespace (an admin key's business)."""

    @endpoint
    def create(self, role: str, *, name: str | None = None,
               namespace: str | None = None) -> Call[NewApiKey]:
        """A new key with ``role`` (``viewer``, ``operator`` or ``admin``) and an optional
        ``name``; the answer holds the key itself, which the server never shows again."""
        body = {"role": role} if name is None else {"role": role, "name": name}
        return json_call("POST", namespace_path(self, namespace, "keys"), body=body)

    @endpoint
    def list(self, *, namespace: str | None = None) -> Call[KeyList]:
        """The namespace's keys, newest first (ids and roles, never the keys)."""
        return json_call("GET", namespace_path(self, namespace, "keys"))

    @endpoint
    def revoke(self, key_id: str, *, namespace: str | None = None) -> Call[None]:
        """Revoke a key; requests with it are refused at once."""
        return json_call("DELETE", namespace_path(self, namespace, "keys", key_id),
                         idempotent=True)
