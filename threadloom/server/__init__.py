"""The HTTP API: a FastAPI app over a store and a set of registered graphs.

``create_app(store, graphs, settings)`` builds it; ``threadloom dev`` and ``threadloom serve``
run it. Needs the ``server`` extra (``pip install 'threadloom[server]'``).
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "threadloom.server needs the server extra: pip install 'threadloom[server]'"
    ) from exc

from threadloom.server.app import create_app
from threadloom.server.settings import Settings

__all__ = ["Settings", "create_app"]
