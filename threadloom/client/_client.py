"""``Client`` and ``AsyncClient``: the API's resources over one connection pool."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from threadloom.client._assistants import Assistants
from threadloom.client._endpoints import Async, M, Resource, Sync, endpoint
from threadloom.client._runs import Runs
from threadloom.client._state_manager import Keys, States, namespace_path, query
from threadloom.client._threads import Threads
from threadloom.client._transport import (
    AsyncTransport,
    Call,
    RetryPolicy,
    Settings,
    SyncTransport,
    json_call,
)
from threadloom.client._types import AuditPage, Me

__all__ = ["AsyncClient", "Client"]


class _Base(Resource[M]):
    """What both clients hold: the resources, and the health routes."""

    def __init__(self, transport: SyncTransport | AsyncTransport) -> None:
        super().__init__(transport)
        self.assistants: Assistants[M] = Assistants(transport)
        self.threads: Threads[M] = Threads(transport)
        self.runs: Runs[M] = Runs(transport)
        self.states: States[M] = States(transport)
        self.keys: Keys[M] = Keys(transport)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._transport.settings.url

    @endpoint
    def ok(self) -> Call[dict[str, Any]]:
        """``{"ok": true}`` once the server serves and its store is set up (no key
        needed)."""
        return json_call("GET", "/ok")

    @endpoint
    def ready(self) -> Call[dict[str, Any]]:
        """The server's deep check (store reachable now, workers seen recently); a failing
        check raises :class:`~threadloom.client.ServiceUnavailableError` at once (its
        ``server_code`` says which), without retrying."""
        return json_call("GET", "/ready", idempotent=False)

    @endpoint
    def me(self) -> Call[Me]:
        """The key's namespace, role, and every namespace it covers."""
        return json_call("GET", "/v0/me")

    @endpoint
    def audit(self, *, namespace: str | None = None, limit: int | None = None,
              cursor: str | None = None) -> Call[AuditPage]:
        """A page of the namespace's audit log (an admin key's business): every mutation,
        who made it, and how it ended."""
        return json_call("GET", namespace_path(self, namespace, "audit"),
                         params=query(limit=limit, cursor=cursor))


class Client(_Base[Sync]):
    """The threadloom API over HTTP, synchronously.

    Args:
        url: the server (default ``$THREADLOOM_URL``, else ``http://127.0.0.1:8000``, where
            ``threadloom dev`` listens).
        api_key: sent as ``X-API-Key`` (default ``$THREADLOOM_API_KEY``).
        namespace: sent as ``X-Namespace`` (for an all-namespace key).
        headers: more headers for every request.
        timeout: seconds to wait for the server to answer (a waiting or streaming
            response sends a keep-alive every few seconds).
        retry: how transient failures are retried (see :class:`RetryPolicy`).

    Example:
        >>> with Client("http://127.0.0.1:8000", api_key="tl_...") as client:
        ...     thread = client.threads.create()
        ...     client.runs.wait(thread["thread_id"], "seed_loop", input={"step": 0})
        {'step': 3, 'done': True}
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 namespace: str | None = None, headers: Mapping[str, str] | None = None,
                 timeout: float | httpx.Timeout | None = None,
                 retry: RetryPolicy | None = None) -> None:
        settings = Settings.resolve(url, api_key, namespace, headers, timeout, retry)
        self._sync = SyncTransport(settings)
        super().__init__(self._sync)

    def close(self) -> None:
        """Close the client's connections."""
        self._sync.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncClient(_Base[Async]):
    """The threadloom API over HTTP, for ``asyncio``: :class:`Client`'s methods, awaited
    (streams are async iterators). Same arguments as :class:`Client`.

    Example:
        >>> async with AsyncClient(api_key="tl_...") as client:
        ...     async for part in client.runs.stream(None, "seed_loop", input={"step": 0}):
        ...         print(part.event, part.data)
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 namespace: str | None = None, headers: Mapping[str, str] | None = None,
                 timeout: float | httpx.Timeout | None = None,
                 retry: RetryPolicy | None = None) -> None:
        settings = Settings.resolve(url, api_key, namespace, headers, timeout, retry)
        self._async = AsyncTransport(settings)
        super().__init__(self._async)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._async.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
