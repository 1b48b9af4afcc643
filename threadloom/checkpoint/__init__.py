"""Stores: checkpoints, pending writes, runs, executions and thread leases.

Backends live one per module (``memory``, ``sqlite``, ``postgres``) and are chosen from a URL
by :func:`open_store`, which imports the backend lazily so that the core never imports a
database driver it does not use.
"""

from __future__ import annotations

from typing import Any

from threadloom.checkpoint.base import (
    ANY_HEAD,
    Attempt,
    BlobRecord,
    CheckpointRecord,
    Commit,
    ExecutionRecord,
    Lease,
    RunLog,
    RunProgress,
    RunRecord,
    Store,
    ThreadRecord,
    WriteRecord,
    format_checkpoint_id,
    parse_checkpoint_id,
)
from threadloom.errors import InvalidConfigError

__all__ = [
    "ANY_HEAD",
    "Attempt",
    "BlobRecord",
    "CheckpointRecord",
    "Commit",
    "ExecutionRecord",
    "Lease",
    "RunLog",
    "RunProgress",
    "RunRecord",
    "Store",
    "ThreadRecord",
    "WriteRecord",
    "format_checkpoint_id",
    "open_store",
    "parse_checkpoint_id",
]


def open_store(url: str, **options: Any) -> Store:
    """Open a store from a URL and apply its migrations.

    ``memory://`` (in-process, for tests), ``sqlite:///relative/path.db`` or
    ``sqlite:////absolute/path.db`` (embedded default), ``postgresql://...`` (scale-out).
    Extra keyword options go to the backend's constructor.

    Raises:
        InvalidConfigError: the URL's scheme is not one threadloom knows.
        ImportError: the backend's optional dependency is not installed (names the extra).
    """
    scheme = url.split(":", 1)[0].lower()
    store: Store
    if scheme == "memory":
        from threadloom.checkpoint.memory import MemoryStore

        store = MemoryStore(**options)
    elif scheme == "sqlite":
        from threadloom.checkpoint.sqlite import SqliteStore

        store = SqliteStore.from_url(url, **options)
    elif scheme in ("postgres", "postgresql"):
        from threadloom.checkpoint.postgres import PostgresStore

        store = PostgresStore.from_url(url, **options)
    else:
        raise InvalidConfigError(
            f"unknown store URL scheme {scheme!r}: use memory://, sqlite:///path or postgresql://"
        )
    store.setup()
    return store
