"""One route table for two clients.

Each API method is written once, as a function that builds a :class:`~threadloom.client.
_transport.Call` (or a :class:`~threadloom.client._transport.StreamCall`), and decorated with
:func:`endpoint` (or :func:`stream_endpoint`). On a resource of the sync client the method
sends the call and returns its result; on a resource of the async client it returns a
coroutine (or an async iterator of a stream). The types follow: ``Threads[Sync].get`` returns
a ``Thread``, ``Threads[Async].get`` a coroutine of one.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from threadloom.client._sse import StreamPart
from threadloom.client._transport import AsyncTransport, Call, StreamCall, SyncTransport

__all__ = ["Async", "Resource", "Sync", "endpoint", "stream_endpoint"]

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", "Sync", "Async")


class Sync:
    """Marks a resource of the sync :class:`~threadloom.client.Client`."""


class Async:
    """Marks a resource of the :class:`~threadloom.client.AsyncClient`."""


class Resource(Generic[M]):
    """A group of API methods (``client.threads``, ``client.runs``...) over one transport."""

    def __init__(self, transport: SyncTransport | AsyncTransport) -> None:
        self._transport = transport


class _Endpoint(Generic[P, T]):
    def __init__(self, build: Callable[Concatenate[Any, P], Call[T]]) -> None:
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: None, owner: type) -> _Endpoint[P, T]: ...
    @overload
    def __get__(self, obj: Resource[Sync], owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Resource[Async],
                owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Resource[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        transport, build = obj._transport, self.build
        if isinstance(transport, AsyncTransport):
            sender = transport

            async def call_async(*args: P.args, **kwargs: P.kwargs) -> T:
                return await sender.send(build(obj, *args, **kwargs))

            return functools.wraps(build)(call_async)
        sync = transport

        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return sync.send(build(obj, *args, **kwargs))

        return functools.wraps(build)(call)


class _StreamEndpoint(Generic[P]):
    def __init__(self, build: Callable[Concatenate[Any, P], StreamCall]) -> None:
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: None, owner: type) -> _StreamEndpoint[P]: ...
    @overload
    def __get__(self, obj: Resource[Sync], owner: type) -> Callable[P, Iterator[StreamPart]]: ...
    @overload
    def __get__(self, obj: Resource[Async],
                owner: type) -> Callable[P, AsyncIterator[StreamPart]]: ...

    def __get__(self, obj: Resource[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        transport, build = obj._transport, self.build

        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            # the request is checked (and built) at the call, the stream opened when read
            return transport.stream(build(obj, *args, **kwargs))

        return functools.wraps(build)(call)


def endpoint(build: Callable[Concatenate[Any, P], Call[T]]) -> _Endpoint[P, T]:
    """Make ``build`` (which describes a request) an API method of a resource."""
    return _Endpoint(build)


def stream_endpoint(build: Callable[Concatenate[Any, P], StreamCall]) -> _StreamEndpoint[P]:
    """Make ``build`` (which describes a streamed request) an API method of a resource."""
    return _StreamEndpoint(build)
