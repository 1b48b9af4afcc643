"""Errors of the HTTP client.

Every error the server answers is JSON ``{"code", "message"}`` with a status; the client raises
the class of that status, carrying the server's code (``server_code``: e.g. ``thread_busy`` or
``run_conflict`` for a 409) and message. All of them are :class:`~threadloom.ThreadloomError`\\ s.

The tree::

    ThreadloomError
    └── ClientError                     client_error
        ├── TransportError              transport_error   (no answer, after the retries)
        ├── APIError                    api_error         (any other status >= 400)
        │   ├── BadRequestError         bad_request       400
        │   ├── UnauthorizedError       unauthorized      401
        │   ├── ForbiddenError          forbidden         403
        │   ├── NotFoundError           not_found         404
        │   ├── ConflictError           conflict          409
        │   ├── PayloadTooLargeError    payload_too_large 413
        │   ├── InvalidRequestError     invalid_request   422
        │   ├── RateLimitedError        rate_limited      429
        │   └── ServerError             server_error      5xx
        │       └── ServiceUnavailableError  service_unavailable  502, 503, 504
        └── RemoteRunError              remote_run_failed (a run failed on the server)
"""

from __future__ import annotations

import json
from typing import Any

from threadloom.errors import ThreadloomError

__all__ = [
    "APIError",
    "BadRequestError",
    "ClientError",
    "ConflictError",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RemoteRunError",
    "ServerError",
    "ServiceUnavailableError",
    "TransportError",
    "UnauthorizedError",
    "api_error",
]


class ClientError(ThreadloomError):
    """Root of the HTTP client's errors."""

    code = "client_error"


class TransportError(ClientError):
    """The server could not be reached, or the connection broke, and retrying did not help
    (or was not safe: a request that creates something is not sent twice)."""

    code = "transport_error"


class APIError(ClientError):
    """The server answered an error. ``status`` is the HTTP status, ``server_code`` the
    server's stable code and ``message`` its message."""

    code = "api_error"

    def __init__(self, status: int, server_code: str, message: str) -> None:
        super().__init__(f"{status} {server_code}: {message}")
        self.status = status
        self.server_code = server_code
        self.message = message


class BadRequestError(APIError):
    """400: the server cannot act on the request as given (e.g. ``thread_has_no_graph``)."""

    code = "bad_request"


class UnauthorizedError(APIError):
    """401: no API key, or not a valid one."""

    code = "unauthorized"


class ForbiddenError(APIError):
    """403: the key's role may not do this."""

    code = "forbidden"


class NotFoundError(APIError):
    """404: no such thing in the key's namespace (or no such route)."""

    code = "not_found"


class ConflictError(APIError):
    """409: the request conflicts with what exists (a taken id, a busy thread, a rejected
    multitask run); ``server_code`` says which."""

    code = "conflict"


class PayloadTooLargeError(APIError):
    """413: the body is over the server's limit."""

    code = "payload_too_large"


class InvalidRequestError(APIError):
    """422: the request is malformed (body, query or path)."""

    code = "invalid_request"


class RateLimitedError(APIError):
    """429: too many requests, still after the retries."""

    code = "rate_limited"


class ServerError(APIError):
    """5xx: the server failed (its log has the details)."""

    code = "server_error"


class ServiceUnavailableError(ServerError):
    """502, 503 or 504: the server, its store or a proxy is unavailable, still after the
    retries (or the request was not safe to repeat)."""

    code = "service_unavailable"


class RemoteRunError(ClientError):
    """A run failed on the server. ``error`` is the exception's class name there (e.g.
    ``ValueError``), ``message`` its message."""

    code = "remote_run_failed"

    def __init__(self, error: str, message: str, run_id: str | None = None) -> None:
        super().__init__(f"{error}: {message}" if message else error)
        self.error = error
        self.message = message
        self.run_id = run_id


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: RateLimitedError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def api_error(status: int, body: bytes) -> APIError:
    """The error for a response of ``status`` with ``body`` (the server's ``{code,
    message}``; anything else, e.g. a proxy's HTML page, gives code ``http_<status>``)."""
    code, message = f"http_{status}", ""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
        code = parsed["code"]
        message = str(parsed.get("message", ""))
    else:
        message = body[:200].decode("utf-8", "replace").strip()
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(status, code, message)
