"""The dashboard's static files: ``GET /dashboard`` (the page), ``/dashboard/{file}`` (its
script and style sheet), and ``GET /`` redirecting to the page.

The files live in the package (``threadloom/server/dashboard/``) and are served as they are:
no build step, no Node.js, no third-party script. They need no key (runtime.md "Auth"): the
page asks for one and sends it, from ``sessionStorage``, to the public API only. The routes
are left out of the OpenAPI document: they are a page, not part of the API.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from threadloom.server.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page runs only its own script and style and talks only to this origin; it may not be
# framed (clickjacking) and sends no referrer (nothing of the page leaks to other sites).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    media_type = _FILES.get(name)
    if media_type is None:
        raise NotFoundError(f"no dashboard file {name[:80]!r}")
    body = files("threadloom.server").joinpath("dashboard", name).read_bytes()
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/")
def root() -> RedirectResponse:
    """Send a browser that opens the server's address to the dashboard."""
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard")
def page() -> Response:
    """The dashboard's page."""
    return _file("index.html")


@router.get("/dashboard/{name}")
def asset(name: str) -> Response:
    """One of the page's own files (its script and style sheet)."""
    return _file(name)
