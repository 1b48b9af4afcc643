"""Node result caches: ``compile(cache=InMemoryCache())`` with ``add_node(...,
cache_policy=CachePolicy(ttl=...))`` runs a node once per distinct input (per its policy's
key function) and reuses its result until the entry expires."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol, runtime_checkable

__all__ = ["BaseCache", "InMemoryCache"]


@runtime_checkable
class BaseCache(Protocol):
    """Where node results are cached."""

    def get(self, key: tuple[str, str | bytes]) -> tuple[bool, Any]:
        """``(True, value)`` for a live entry, else ``(False, None)``."""
        ...

    def set(self, key: tuple[str, str | bytes], value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (``None``: until cleared)."""
        ...


class InMemoryCache:
    """A thread-safe cache in process memory.

    Example:
        >>> graph = builder.compile(cache=InMemoryCache())
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str | bytes], tuple[float | None, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str | bytes]) -> tuple[bool, Any]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            expires, value = entry
            if expires is not None and expires < time.monotonic():
                del self._entries[key]
                return False, None
            return True, value

    def set(self, key: tuple[str, str | bytes], value: Any, ttl: float | None) -> None:
        with self._lock:
            expires = None if ttl is None else time.monotonic() + ttl
            self._entries[key] = (expires, value)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
