"""Who am I, API keys over HTTP, and the audit log (runtime.md "Auth, namespaces, roles").

- ``GET /v0/me``: the calling key's namespace, role and the namespaces it covers.
- ``POST /v0/namespace/{ns}/keys`` ``{"role"}`` -> ``{"key_id", "key"}`` (the key is shown
  this once), ``GET`` lists the namespace's keys (never a key or its hash), ``DELETE
  .../keys/{key_id}`` revokes one. Admin only. Authentication reads the key's row on every
  request (there is no key cache), so a key created or revoked here, by ``threadloom keys`` or
  by another server process, counts at once everywhere.
- ``GET /v0/namespace/{ns}/audit?limit=&cursor=``: the namespace's audit events, newest
  first. Admin only.

A namespace the key does not cover is answered 404 ``not_found``, the same whether anything
exists there or not, and before the role is looked at: a key learns nothing of other
namespaces, not even whether it would be allowed there.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from threadloom.checkpoint.queue import ApiKey, RuntimeStore
from threadloom.server._audit import audit_event, mark_audited
from threadloom.server._shapes import iso
from threadloom.server.auth import create_key
from threadloom.server.deps import Caller, NamespaceAdmin, Store
from threadloom.server.errors import InvalidRequestError, NotFoundError

__all__ = ["router"]

router = APIRouter(tags=["admin"])

_KEY_ID = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class MeModel(BaseModel):
    """The calling key, as ``GET /v0/me`` describes it."""

    namespace: str = Field(description="The namespace the request acts in.")
    role: Literal["viewer", "operator", "admin"]
    namespaces: list[str] = Field(
        description="Every namespace the key covers; ['*'] for an all-namespace key."
    )
    key_id: str


class KeyCreate(BaseModel):
    """A new key's role."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["viewer", "operator", "admin"]
    name: str | None = Field(default=None, max_length=200)


class KeyCreated(BaseModel):
    """A key just created: ``key`` is shown this once and stored only as a hash."""

    key_id: str
    key: str
    namespace: str
    role: Literal["viewer", "operator", "admin"]
    created_at: str


class KeyItem(BaseModel):
    """A stored key, as listed (never the key, nor its hash)."""

    key_id: str
    role: Literal["viewer", "operator", "admin"]
    namespace: str
    name: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class KeyList(BaseModel):
    """The keys of a namespace, newest first."""

    namespace: str
    count: int
    keys: list[KeyItem]


class AuditItem(BaseModel):
    """One audit event."""

    id: str
    at: str
    key_id: str | None
    role: str | None
    namespace: str
    action: str
    target: str
    run_id: str | None
    thread_id: str | None
    outcome: str


class AuditList(BaseModel):
    """A page of a namespace's audit events, newest first; ``next_cursor`` continues it."""

    namespace: str
    count: int
    events: list[AuditItem]
    next_cursor: str | None




async def _call(store: RuntimeStore, fn: Any, *args: Any, **kwargs: Any) -> Any:
    if store.reads_are_local:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


@router.get("/v0/me", response_model=MeModel, summary="The calling key: namespace and role")
async def me(who: Caller) -> dict[str, Any]:
    return {"namespace": who.namespace, "role": who.role,
            "namespaces": [who.key_namespace], "key_id": who.key_id}


def _item(key: ApiKey) -> dict[str, Any]:
    return {"key_id": key.key_id, "role": key.role, "namespace": key.namespace,
            "name": key.name, "created_at": iso(key.created_at),
            "last_used_at": iso(key.last_used_at), "revoked_at": iso(key.revoked_at)}


@router.post("/v0/namespace/{ns}/keys", response_model=KeyCreated, status_code=201,
             summary="Create an API key in the namespace (the key is shown once)")
def post_key(body: KeyCreate, request: Request, store: Store, who: NamespaceAdmin) -> Response:
    # the key id is only known once the key is made: create_key fills the event's target
    event = audit_event(who, "key.create", target="")
    record, key = create_key(store, who.namespace, body.role, name=body.name, audit=event)
    mark_audited(request)
    return JSONResponse(
        {"key_id": record.key_id, "key": key, "namespace": record.namespace,
         "role": record.role, "created_at": iso(record.created_at)},
        status_code=201, headers={"Cache-Control": "no-store"},
    )


@router.get("/v0/namespace/{ns}/keys", response_model=KeyList,
            summary="List the namespace's API keys (never the keys themselves)")
async def list_keys(store: Store, who: NamespaceAdmin) -> dict[str, Any]:
    keys = await _call(store, store.list_keys, who.namespace)
    return {"namespace": who.namespace, "count": len(keys), "keys": [_item(k) for k in keys]}


@router.delete("/v0/namespace/{ns}/keys/{key_id}", status_code=204,
               summary="Revoke an API key of the namespace")
def delete_key(key_id: Annotated[str, _KEY_ID], request: Request, store: Store,
               who: NamespaceAdmin) -> Response:
    found = store.get_key(key_id)
    if found is None or found.namespace != who.namespace:
        # a key of another namespace is answered as a missing one
        raise NotFoundError(f"no API key {key_id!r}")
    store.revoke_key(key_id, audit=audit_event(who, "key.revoke", target=key_id))
    mark_audited(request)
    return Response(status_code=204)


@router.get("/v0/namespace/{ns}/audit", response_model=AuditList,
            summary="The namespace's audit log, newest first")
async def list_audit(store: Store, who: NamespaceAdmin,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     cursor: Annotated[str | None, Query(max_length=200)] = None
                     ) -> dict[str, Any]:
    try:
        events, next_cursor = await _call(store, store.list_audit, who.namespace,
                                          limit=limit, cursor=cursor)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid cursor: {exc}") from None
    return {"namespace": who.namespace, "count": len(events),
            "events": [{**e.as_json(), "at": iso(e.at)} for e in events],
            "next_cursor": next_cursor}

