"""A fast lane for the hottest request: create a run and wait for its result.

``POST /threads/{thread_id}/runs/wait`` and ``POST /runs/wait`` are what a client that treats
the runtime as a function call sends, once per run. FastAPI's per-request machinery (matching
the path against every route, solving the dependencies, validating through its generic
layer) costs about as much CPU as queueing and executing a small run. The lane serves the
requests it can answer in full with the route's own parts (:class:`RunCreate`,
:func:`queue_run`, :func:`wait_response`, :func:`authenticate`), so the response is the
route's, byte for byte.

With a worker in the process (``threadloom dev``), a run that can start at once executes on it
without a trip through the queue (:mod:`threadloom.server._inline`).

Anything else goes to the app unchanged, with the body replayed: other routes, a body that is
not JSON or not valid, a missing or insufficient key, or a run that cannot be queued (an
unknown assistant, a busy thread under ``reject``...). The route then answers, including
every error, exactly as it would without the lane. The lane hands over only before it has
queued anything, so a request never queues two runs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadloom.checkpoint.queue import RuntimeStore
from threadloom.graph.compiled import CompiledGraph
from threadloom.server._inline import Refused, run_here
from threadloom.server._metrics import ROUTE_KEY
from threadloom.server._strictjson import body_problem
from threadloom.server.auth import TOUCH_EVERY, Principal, authenticate, is_namespace, touch
from threadloom.server.runs import RunCreate, queue_run, result_response, wait_response
from threadloom.server.settings import Settings

if TYPE_CHECKING:
    from threadloom.worker import Worker

__all__ = ["FastLane"]

# the routes' paths; ``[^/]+`` is what a ``{thread_id}`` path parameter matches
_WAIT = re.compile(r"(?:/threads/([^/]+))?/runs/wait")


class FastLane:
    """ASGI middleware that answers the run-and-wait routes without going through FastAPI
    when it can (see the module docstring); everything else passes to ``app``."""

    def __init__(self, app: ASGIApp, store: RuntimeStore,
                 graphs: Mapping[str, CompiledGraph], settings: Settings,
                 worker: Worker | None = None) -> None:
        self.app = app
        self.store = store
        self.graphs = graphs
        self.settings = settings
        self.worker = worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _WAIT.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        messages, body = await _read_body(receive, self.settings.max_body_bytes)
        handled = body is not None and await self._serve(scope, receive, send, match[1], body)
        if handled:
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send,
                     thread_id: str | None, raw: bytes) -> bool:
        """Answer the request, or return ``False`` (having queued nothing) for the app to."""
        if body_problem(raw) is not None:
            return False  # the app refuses it (BodyLimit)
        try:
            who = await self._caller(scope)
            if who is None:
                return False
            body = RunCreate.model_validate_json(raw)
        except Exception:  # e.g. a ValidationError: the route answers it, error and all
            return False
        traceparent = _header(scope, b"traceparent")
        worker = self.worker
        if worker is not None and body.on_disconnect != "cancel" and worker.reserve():
            # from the moment it is queued, an error is the app's to answer (its outermost
            # handler makes it a JSON 500), never a second attempt
            ran = await run_here(worker, self.store, self.graphs, who, thread_id, body,
                                 traceparent)
            if isinstance(ran, Refused):
                return False  # the route answers it, error and all
            record, result = ran
        else:
            try:
                record = await queue_run(self.store, self.graphs, who, thread_id, body,
                                         traceparent)
            except Exception:  # e.g. an unknown assistant: the route answers it
                return False
            result = None
        if result is not None:
            response = result_response(record, result)
        else:
            response = await wait_response(self.store, self.graphs, record, body,
                                           self.settings.wait_poll,
                                           stateless=thread_id is None)
        scope[ROUTE_KEY] = "/runs/wait" if thread_id is None else "/threads/{thread_id}/runs/wait"
        await response(scope, receive, send)
        return True

    async def _caller(self, scope: Scope) -> Principal | None:
        """The caller, if its key may create runs in the namespace it acts in."""
        key = namespace = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value.decode("latin-1")
            elif name == b"x-namespace":
                namespace = value.decode("latin-1")
            elif name == b"content-type" and not _is_json(value):
                return None
        store = self.store
        if store.reads_are_local:
            who = authenticate(store, key, namespace)
        else:
            who = await asyncio.to_thread(authenticate, store, key, namespace)
        if (who is None or not is_namespace(who.namespace) or not who.covers(who.namespace)
                or not who.may("operator")):
            return None  # the routes answer it
        if who.last_used_at is None or time.time() - who.last_used_at >= TOUCH_EVERY:
            await asyncio.to_thread(touch, store, who)
        return who


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The request's messages, and its body (``None`` when the client left or the body is
    over ``limit``: the app answers those)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message: dict[str, Any] = dict(await receive())
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return messages, None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    """The value of request header ``name`` (lower case), if it was sent."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
