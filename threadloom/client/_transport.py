"""How a call reaches the server: one description of a request (:class:`Call`), one retry
rule (:class:`RetryPolicy`), and two transports that send it, :class:`SyncTransport` and
:class:`AsyncTransport` (httpx's ``Client`` and ``AsyncClient``).

A call is retried, with exponential backoff, when retrying cannot do something twice:

- a connection that could not be made (nothing was sent): every call;
- a connection that broke after the request was sent, and the answers 502, 503, 504:
  calls that are idempotent (reads, deletes, and writes the server deduplicates);
- 429: every call (the server refused it before doing anything), after ``Retry-After``.

A stream whose connection breaks is joined again after its last event (``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from threadloom._json import dumps
from threadloom.client._errors import TransportError, api_error
from threadloom.client._sse import EventParser, StreamPart, StreamResume

__all__ = [
    "DEFAULT_URL",
    "AsyncTransport",
    "Call",
    "RetryPolicy",
    "StreamCall",
    "SyncTransport",
]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"  # where `threadloom dev` listens
_NO_BODY = object()
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
_RETRY_STATUSES = (502, 503, 504)


def _json(response: httpx.Response) -> Any:
    return response.json() if response.content.strip() else None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how its answer becomes a result. ``body``: JSON (made JSON-safe);
    ``idempotent``: sending it twice does no more than once (default: by the method)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    body: Any = _NO_BODY
    headers: Mapping[str, str] | None = None
    idempotent: bool | None = None

    @property
    def safe_to_repeat(self) -> bool:
        """Whether the call may be sent again after it may have reached the server."""
        if self.idempotent is not None:
            return self.idempotent
        return self.method in _SAFE_METHODS


def json_call(method: str, path: str, *, body: Any = _NO_BODY,
              params: Mapping[str, Any] | None = None,
              idempotent: bool | None = None) -> Call[Any]:
    """A call answered with JSON (``None`` for an empty answer, e.g. 204)."""
    return Call(method, path, _json, params=params, body=body, idempotent=idempotent)


@dataclass(frozen=True, slots=True)
class StreamCall:
    """A request answered with a run's SSE stream: ``call`` opens it; ``resume`` rejoins
    it after a broken connection."""

    call: Call[None]
    resume: StreamResume = field(default_factory=StreamResume)


def stream_call(method: str, path: str, *, body: Any = _NO_BODY,
                params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                stream_mode: list[str] | None = None, join_path: str | None = None,
                last_event_id: str | None = None) -> StreamCall:
    """A call that streams; ``join_path``: the run's join route when already known."""
    resume = StreamResume(join_path=join_path, stream_mode=stream_mode)
    if last_event_id is not None:
        resume.accept(StreamPart("", None, last_event_id))
    return StreamCall(Call(method, path, lambda r: None, params=params, body=body,
                           headers=headers), resume)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry (see the module docstring for which calls).

    Args:
        attempts: tries in all, the first included (1: never retry); a stream may fail
            this many times in a row without receiving an event before it gives up.
        backoff: the first wait, in seconds; it doubles each time (with jitter).
        max_backoff: the longest wait between tries.
        max_retry_after: a ``Retry-After`` longer than this is not waited for: the error
            is raised.
    """

    attempts: int = 5
    backoff: float = 0.2
    max_backoff: float = 5.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float | None:
        """Seconds to wait before try ``attempt + 2`` (``attempt`` counts from 0), or
        ``None`` when no try is left (or ``Retry-After`` asks for too long)."""
        if attempt + 1 >= self.attempts:
            return None
        wait = min(self.max_backoff, self.backoff * 2.0 ** attempt) * random.uniform(0.5, 1.0)
        asked = _retry_after(retry_after)
        if asked is not None:
            if asked > self.max_retry_after:
                return None
            wait = max(wait, asked)
        return wait


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_delay(policy: RetryPolicy, call: Call[Any], attempt: int,
                 exc: httpx.TransportError) -> float | None:
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return policy.delay(attempt) if unsent or call.safe_to_repeat else None


def _status_delay(policy: RetryPolicy, call: Call[Any], attempt: int,
                  response: httpx.Response) -> float | None:
    status = response.status_code
    if status == 429 or (status in _RETRY_STATUSES and call.safe_to_repeat):
        return policy.delay(attempt, response.headers.get("retry-after"))
    return None


def _transport_error(call: Call[Any], exc: httpx.TransportError) -> TransportError:
    return TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class Settings:
    """What every request of a client carries, from the arguments or the environment."""

    url: str
    headers: dict[str, str]
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def resolve(cls, url: str | None, api_key: str | None, namespace: str | None,
                headers: Mapping[str, str] | None, timeout: float | httpx.Timeout | None,
                retry: RetryPolicy | None) -> Settings:
        """``url`` (else ``THREADLOOM_URL``, else :data:`DEFAULT_URL`), ``api_key`` (else
        ``THREADLOOM_API_KEY``) and ``namespace`` (sent as ``X-Namespace``)."""
        sent = {"Accept": "application/json", **(headers or {})}
        key = api_key if api_key is not None else os.environ.get("THREADLOOM_API_KEY")
        if key:
            sent["X-API-Key"] = key
        if namespace:
            sent["X-Namespace"] = namespace
        base = (url or os.environ.get("THREADLOOM_URL") or DEFAULT_URL).rstrip("/")
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(30.0 if timeout is None else timeout, connect=5.0)
        return cls(base, sent, timeout, retry or RetryPolicy())


def _request(http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
    headers = dict(call.headers or {})
    content = None
    if call.body is not _NO_BODY:
        content = dumps(call.body)
        headers["Content-Type"] = "application/json"
    params = {k: v for k, v in (call.params or {}).items() if v is not None}
    return http.build_request(call.method, call.path, params=params, content=content,
                              headers=headers)


def _checked(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise api_error(response.status_code, response.content)
    return call.parse(response)


def _rejoin_call(stream: StreamCall, exc: httpx.TransportError) -> Call[None]:
    rejoin = stream.resume.rejoin()
    if rejoin is None:
        raise _transport_error(stream.call, exc) from exc
    path, params, headers = rejoin
    return Call("GET", path, lambda r: None, params=params, headers=headers)


class SyncTransport:
    """Sends calls with an ``httpx.Client`` (see the module docstring for the retries)."""

    is_async = False

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.Client(base_url=settings.url, headers=settings.headers,
                                         timeout=settings.timeout)

    def send(self, call: Call[T]) -> T:
        """Send ``call`` (retrying as allowed) and parse its answer.

        Raises:
            APIError: the server answered an error.
            TransportError: no answer, and no retry left or allowed.
        """
        response = self._open(call, stream=False)
        return _checked(call, response)

    def _open(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        policy = self.settings.retry
        attempt = 0
        while True:
            try:
                response = self.http.send(_request(self.http, call), stream=stream)
            except httpx.TransportError as exc:
                wait = _error_delay(policy, call, attempt, exc)
                if wait is None:
                    raise _transport_error(call, exc) from exc
            else:
                wait = _status_delay(policy, call, attempt, response)
                if wait is None:
                    if stream and response.status_code >= 400:
                        response.read()
                        response.close()
                    return response
                response.close()
            time.sleep(wait)
            attempt += 1

    def stream(self, stream: StreamCall) -> Iterator[StreamPart]:
        """The events of a run's stream; a broken connection is joined again after the last
        event received, until the run's stream ends.

        Raises:
            APIError: the server answered an error.
            TransportError: the stream could not be joined again.
        """
        call, failures = stream.call, 0
        while True:
            try:
                response = self._open(call, stream=True)
                try:
                    _checked(call, response)
                    stream.resume.opened(response.headers)
                    parser = EventParser()
                    for line in response.iter_lines():
                        part = parser.feed(line)
                        if part is not None and stream.resume.accept(part):
                            failures = 0
                            yield part
                finally:
                    response.close()
                return
            except httpx.TransportError as exc:
                wait = self.settings.retry.delay(failures)
                call = _rejoin_call(stream, exc)
                if wait is None:
                    raise _transport_error(call, exc) from exc
            time.sleep(wait)
            failures += 1

    def close(self) -> None:
        """Close the connections."""
        self.http.close()


class AsyncTransport:
    """Sends calls with an ``httpx.AsyncClient``: :class:`SyncTransport`, awaited."""

    is_async = True

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.AsyncClient(base_url=settings.url, headers=settings.headers,
                                              timeout=settings.timeout)

    async def send(self, call: Call[T]) -> T:
        """See :meth:`SyncTransport.send`."""
        response = await self._open(call, stream=False)
        return _checked(call, response)

    async def _open(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        policy = self.settings.retry
        attempt = 0
        while True:
            try:
                response = await self.http.send(_request(self.http, call), stream=stream)
            except httpx.TransportError as exc:
                wait = _error_delay(policy, call, attempt, exc)
                if wait is None:
                    raise _transport_error(call, exc) from exc
            else:
                wait = _status_delay(policy, call, attempt, response)
                if wait is None:
                    if stream and response.status_code >= 400:
                        await response.aread()
                        await response.aclose()
                    return response
                await response.aclose()
            await asyncio.sleep(wait)
            attempt += 1

    async def stream(self, stream: StreamCall) -> AsyncIterator[StreamPart]:
        """See :meth:`SyncTransport.stream`."""
        call, failures = stream.call, 0
        while True:
            try:
                response = await self._open(call, stream=True)
                try:
                    _checked(call, response)
                    stream.resume.opened(response.headers)
                    parser = EventParser()
                    async for line in response.aiter_lines():
                        part = parser.feed(line)
                        if part is not None and stream.resume.accept(part):
                            failures = 0
                            yield part
                finally:
                    await response.aclose()
                return
            except httpx.TransportError as exc:
                wait = self.settings.retry.delay(failures)
                call = _rejoin_call(stream, exc)
                if wait is None:
                    raise _transport_error(call, exc) from exc
            await asyncio.sleep(wait)
            failures += 1

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()
