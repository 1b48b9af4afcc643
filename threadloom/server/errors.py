"""How every error reaches an HTTP client: JSON ``{"code", "message"}`` with a stable code.

Routes raise domain errors (:class:`~threadloom.errors.ThreadloomError` subclasses, or the
server's own :class:`ApiError` family below); one set of handlers, installed by
:func:`install_error_handlers`, turns each into its status and body. No traceback, SQL or file
path ever reaches a client: an unexpected exception is logged and answered with
``internal_error``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from threadloom import errors as core

__all__ = [
    "ApiError",
    "ConflictError",
    "ErrorBody",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ThreadHasNoGraphError",
    "UnauthorizedError",
    "document_errors",
    "error_response",
    "install_error_handlers",
    "status_for",
]

log = logging.getLogger("threadloom.server")


class ApiError(core.ThreadloomError):
    """An error of the HTTP layer itself; ``status`` is its HTTP status."""

    code = "api_error"
    status: ClassVar[int] = 400


class NotFoundError(ApiError):
    """No such thread, run or assistant in the caller's namespace (also what a caller gets
    for anything in a namespace its key does not cover, so nothing leaks)."""

    code = "not_found"
    status = 404


class UnauthorizedError(ApiError):
    """No API key, or not a valid one."""

    code = "unauthorized"
    status = 401


class ForbiddenError(ApiError):
    """The key's role may not do this."""

    code = "forbidden"
    status = 403


class InvalidRequestError(ApiError):
    """The request is malformed (body, query or path)."""

    code = "invalid_request"
    status = 422


class ConflictError(ApiError):
    """The request conflicts with what exists (e.g. a thread id that is taken)."""

    code = "conflict"
    status = 409


class ThreadHasNoGraphError(ApiError):
    """The operation needs the thread's graph, and the thread has none yet (no run, and no
    ``graph_id`` in its metadata)."""

    code = "thread_has_no_graph"
    status = 400


class PayloadTooLargeError(ApiError):
    """The body is over the server's limit."""

    code = "payload_too_large"
    status = 413


_STATUS: dict[type[core.ThreadloomError], int] = {
    core.RunNotFoundError: 404,
    core.CheckpointNotFoundError: 404,
    core.RunConflictError: 409,
    core.ThreadBusyError: 409,
    core.CheckpointConflictError: 409,
    core.LeaseLostError: 409,
    core.StoreUnavailableError: 503,
    core.StoreError: 500,
    core.RunTimeoutError: 504,
}

# store errors may carry driver text; a client gets this instead
_STORE_MESSAGE = "the store could not complete the request; see the server's log"


def status_for(exc: core.ThreadloomError) -> int:
    """The HTTP status of a domain error (400 when nothing more specific applies)."""
    if isinstance(exc, ApiError):
        return exc.status
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 400


class ErrorBody(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="A stable, machine-readable code, e.g. not_found.")
    message: str = Field(description="What went wrong, for a human.")


# what any route behind an API key may answer besides its own statuses
_DECLARED = {
    "401": "No API key, or not a valid one (unauthorized).",
    "403": "The key's role may not do this (forbidden).",
    "404": "No such object or route in the key's namespace (not_found).",
    "422": "The request is malformed: body, query or path (invalid_request).",
}


def document_errors(app: FastAPI) -> None:
    """Declare the error responses in ``app``'s OpenAPI document: every operation behind an
    API key gets 401, 403, 404 and 422 with the :class:`ErrorBody` schema (FastAPI's own
    422 schema is not what the handlers answer), so generated clients and property-based
    tests know the shape. Routes added later are covered too: it runs when the document is
    first built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorBody"] = ErrorBody.model_json_schema()
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                headers = {p.get("name", "").lower() for p in operation.get("parameters", ())
                           if p.get("in") == "header"}
                responses = operation.setdefault("responses", {})
                if "x-api-key" in headers:
                    for status, description in _DECLARED.items():
                        responses[status] = {"description": description, "content": ref}
                elif "422" in responses:
                    responses["422"] = {"description": _DECLARED["422"], "content": ref}
        if "HTTPValidationError" not in json.dumps(schema["paths"]):
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every error body."""
    return JSONResponse({"code": code, "message": message}, status_code=status,
                        headers=headers)


def _message(exc: core.ThreadloomError) -> str:
    if isinstance(exc, core.StoreError) and not isinstance(exc, core.StoreUnavailableError):
        return _STORE_MESSAGE
    if isinstance(exc, core.StoreUnavailableError):
        return "the store is unavailable; try again shortly"
    text = str(exc.args[0]) if exc.args else str(exc)
    return text or exc.code


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, core.ThreadloomError)
    status = status_for(exc)
    if status >= 500:
        log.error("request failed: %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(status, exc.code, _message(exc))


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(422, InvalidRequestError.code, "; ".join(problems) or "invalid request")


_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_request",
}


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error: %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error; see the server's log")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error path of ``app`` answer JSON ``{code, message}``."""
    handlers: dict[Any, Any] = {
        core.ThreadloomError: _domain,
        RequestValidationError: _validation,
        StarletteHTTPException: _http,
        Exception: _unexpected,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
