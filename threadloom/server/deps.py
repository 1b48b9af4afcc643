"""Dependencies every router uses: the store, the graphs, and who is calling.

Routes get these through FastAPI's ``Depends``, never through imports of a global: the app
factory puts the store, the graphs and the settings on ``app.state``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Header, Path, Request

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.graph.compiled import CompiledGraph
from threadloom.server.auth import (
    TOUCH_EVERY,
    Principal,
    Role,
    authenticate,
    is_namespace,
    touch,
)
from threadloom.server.errors import ForbiddenError, NotFoundError, UnauthorizedError
from threadloom.server.settings import Settings

__all__ = [
    "Admin",
    "Caller",
    "Graphs",
    "NamespaceAdmin",
    "NamespaceOperator",
    "NamespaceViewer",
    "Operator",
    "Store",
    "Viewer",
    "assistant_id_for",
    "get_graph",
    "in_namespace",
    "require",
]


# The dependencies are coroutines: FastAPI runs a plain function dependency in a worker
# thread, a hand-off that costs more than the dependency itself.


async def _store(request: Request) -> RuntimeStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def _graphs(request: Request) -> Mapping[str, CompiledGraph]:
    return request.app.state.graphs  # type: ignore[no-any-return]


def settings(request: Request) -> Settings:
    """The server's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


Store = Annotated[RuntimeStore, Depends(_store)]
Graphs = Annotated[Mapping[str, CompiledGraph], Depends(_graphs)]


async def _caller(
    request: Request,
    x_api_key: Annotated[str | None, Header()] = None,
    x_namespace: Annotated[str | None, Header()] = None,
) -> Principal:
    store: RuntimeStore = request.app.state.store
    if store.reads_are_local:
        principal = authenticate(store, x_api_key, x_namespace)
    else:
        principal = await asyncio.to_thread(authenticate, store, x_api_key, x_namespace)
    if principal is None:
        raise UnauthorizedError("missing or invalid API key: send it in the X-API-Key header")
    if not is_namespace(principal.namespace) or not principal.covers(principal.namespace):
        # an all-namespace key covers any (X-Namespace: one that cannot exist, e.g. 300
        # characters or "*", is not found); a one-namespace key acts in its own, and one
        # naming another namespace is answered as a missing object
        raise NotFoundError(f"no namespace {principal.namespace[:80]!r}")
    last = principal.last_used_at
    if last is None or time.time() - last >= TOUCH_EVERY:
        await asyncio.to_thread(touch, store, principal)
    request.state.principal = principal
    return principal


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets the request through if its key's role includes ``role``."""

    async def check(principal: Annotated[Principal, Depends(_caller)]) -> Principal:
        if not principal.may(role):
            raise ForbiddenError(f"this needs the {role} role; the key has {principal.role}")
        return principal

    return check


Caller = Annotated[Principal, Depends(_caller)]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]

_NAMESPACE = Path(min_length=1, max_length=64, pattern=r"^[^/\x00-\x1f\x7f]+$")


def in_namespace(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency for a ``/v0/namespace/{ns}/...`` route: the caller, acting in ``ns``,
    if its key covers ``ns`` (else 404, before the role is checked) and its role includes
    ``role`` (else 403)."""

    async def check(request: Request, who: Caller,
                    ns: Annotated[str, _NAMESPACE]) -> Principal:
        if not who.covers(ns):
            raise NotFoundError(f"no namespace {ns!r}")
        acting = dataclasses.replace(who, namespace=ns)
        request.state.principal = acting
        if not acting.may(role):
            raise ForbiddenError(f"this needs the {role} role; the key has {who.role}")
        return acting

    return check


NamespaceViewer = Annotated[Principal, Depends(in_namespace("viewer"))]
NamespaceOperator = Annotated[Principal, Depends(in_namespace("operator"))]
NamespaceAdmin = Annotated[Principal, Depends(in_namespace("admin"))]


def get_graph(graphs: Mapping[str, CompiledGraph], assistant_id: str) -> CompiledGraph:
    """The registered graph an assistant id names (the graph's name works as an id).

    Raises:
        NotFoundError: no such graph.
    """
    graph = graphs.get(assistant_id)
    if graph is None:
        graph = next((g for name, g in graphs.items() if assistant_id_for(name) == assistant_id),
                     None)
    if graph is None:
        raise NotFoundError(f"no assistant {assistant_id!r}")
    return graph


def assistant_id_for(graph_name: str) -> str:
    """The assistant id of a registered graph: a UUID derived from its name, stable across
    processes and restarts (LangGraph's clients expect UUID assistant ids)."""
    return str(uuid.uuid5(_ASSISTANTS, graph_name))


_ASSISTANTS = uuid.UUID("6f1f3c1e-7d0a-4f57-9a8e-2a1b3c4d5e6f")
