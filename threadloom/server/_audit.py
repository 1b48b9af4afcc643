"""The audit trail of the HTTP API: which routes change something, and the events they log.

Every route that changes something is listed in :data:`MUTATIONS` with its action name and
the role it needs (a test enumerates the app's routes against this table, so a new route
cannot be left out). A route that succeeds writes its event itself, through the store method
that makes the change (``audit=``, the same transaction; for the engine's ``update_state``,
inside :func:`threadloom.checkpoint.base.audited`, whose event its commit carries); it then
calls :func:`mark_audited`. :class:`AuditTrail` logs the rest: a listed route refused or failed
(the error's code is the outcome) once its key is known, or a success the route did not log
itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadloom.checkpoint.queue import AuditEvent, RuntimeStore
from threadloom.server.auth import Principal, Role

__all__ = [
    "MUTATIONS",
    "READS",
    "AuditTrail",
    "audit_event",
    "mark_audited",
    "route_key",
]

log = logging.getLogger("threadloom.server")

MUTATIONS: dict[tuple[str, str], tuple[str, Role]] = {
    ("POST", "/threads"): ("thread.create", "operator"),
    ("PATCH", "/threads/{}"): ("thread.update", "operator"),
    ("DELETE", "/threads/{}"): ("thread.delete", "operator"),
    ("POST", "/threads/prune"): ("thread.prune", "operator"),
    ("POST", "/threads/{}/copy"): ("thread.copy", "operator"),
    ("POST", "/threads/{}/state"): ("state.update", "operator"),
    ("POST", "/threads/{}/runs"): ("run.create", "operator"),
    ("POST", "/threads/{}/runs/wait"): ("run.create", "operator"),
    ("POST", "/threads/{}/runs/stream"): ("run.create", "operator"),
    ("POST", "/runs"): ("run.create", "operator"),
    ("POST", "/runs/wait"): ("run.create", "operator"),
    ("POST", "/runs/stream"): ("run.create", "operator"),
    ("POST", "/runs/batch"): ("run.create", "operator"),
    ("POST", "/threads/{}/runs/{}/cancel"): ("run.cancel", "operator"),
    ("POST", "/runs/cancel"): ("run.cancel", "operator"),
    ("DELETE", "/threads/{}/runs/{}"): ("run.delete", "operator"),
    ("POST", "/assistants/{}/latest"): ("assistant.set_latest", "operator"),
    ("POST", "/v0/namespace/{}/keys"): ("key.create", "admin"),
    ("DELETE", "/v0/namespace/{}/keys/{}"): ("key.revoke", "admin"),
    # seed 001's state manager (runtime.md "Seed 001 state-manager routes")
    ("POST", "/v0/namespace/{}/graph/{}/states/create"): ("states.create", "operator"),
    ("POST", "/v0/namespace/{}/runs/{}/cancel"): ("run.cancel", "operator"),
    ("POST", "/v0/namespace/{}/runs/{}/retry"): ("run.retry", "operator"),
}
"""``(method, path with every parameter written {})`` -> ``(action, role needed)``."""

READS: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/threads/search"),
    ("POST", "/threads/count"),
    ("POST", "/threads/{}/history"),
    ("POST", "/threads/{}/state/checkpoint"),
    ("POST", "/assistants/search"),
    ("POST", "/assistants/count"),
    ("POST", "/assistants/{}/versions"),
})
"""Routes with a changing method (``POST``) that only read: a query in a body."""

_PARAM = re.compile(r"\{[^}]*\}")


def route_key(method: str, path: str) -> tuple[str, str]:
    """The key of :data:`MUTATIONS` and :data:`READS` for a route's method and path template."""
    return method.upper(), _PARAM.sub("{}", path)


def audit_event(who: Principal, action: str, target: str, *, run_id: str | None = None,
                thread_id: str | None = None, outcome: str = "ok") -> AuditEvent:
    """The event of ``who`` doing ``action`` to ``target`` in the namespace it acts in."""
    return AuditEvent(who.namespace, action, target, key_id=who.key_id, role=who.role,
                      run_id=run_id, thread_id=thread_id, outcome=outcome)


def mark_audited(request: Request) -> None:
    """Tell :class:`AuditTrail` that the route logged its own event."""
    request.state.audited = True


class AuditTrail:
    """ASGI middleware: the events the routes of :data:`MUTATIONS` did not log themselves (a
    refusal or failure, with the error code as outcome; a success a route left unlogged).
    A request without a valid key (401) is not logged: there is no one to name."""

    def __init__(self, app: ASGIApp, store: RuntimeStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PATCH", "PUT", "DELETE"):
            await self.app(scope, receive, send)
            return
        status = 0
        body: list[bytes] = []

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:  # answered by the outermost handler, as internal_error
            await self._log(scope, "internal_error")
            raise
        await self._log(scope, "ok" if 0 < status < 400 else _code(status, b"".join(body)))

    async def _log(self, scope: Scope, outcome: str) -> None:
        state: dict[str, Any] = scope.get("state") or {}
        who: Principal | None = state.get("principal")
        route = scope.get("route")
        path = getattr(route, "path", None)
        if who is None or path is None or state.get("audited"):
            return
        known = MUTATIONS.get(route_key(scope["method"], path))
        if known is None:
            return
        params: dict[str, Any] = scope.get("path_params") or {}
        target = next((str(params[k]) for k in ("run_id", "key_id", "thread_id",
                                                 "assistant_id", "graph") if k in params),
                      scope["path"])
        event = audit_event(who, known[0], target[:300], run_id=params.get("run_id"),
                            thread_id=params.get("thread_id"), outcome=outcome)
        try:
            await asyncio.to_thread(self.store.append_audit, replace(event))
        except Exception:  # the response is sent: the log says what could not be logged
            log.exception("could not append an audit event (%s %s)", event.action, outcome)


def _code(status: int, body: bytes) -> str:
    try:
        code = json.loads(body)["code"]
    except (ValueError, KeyError, TypeError):
        return f"http_{status}"
    return str(code)[:64] if isinstance(code, str) else f"http_{status}"
