"""Run configuration: identity (run id, thread id), limits, and the helpers nodes call
(``get_config``, ``get_stream_writer``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from threadloom import _context
from threadloom.errors import InvalidConfigError
from threadloom.types import Durability, RunnableConfig, StreamWriter

__all__ = [
    "DEFAULT_RECURSION_LIMIT",
    "Identity",
    "check_config",
    "get_config",
    "get_stream_writer",
    "resolve_identity",
    "resolve_namespace",
    "validate_namespace",
    "validate_run_id",
]

DEFAULT_RECURSION_LIMIT = 10_000
DEFAULT_NAMESPACE = "default"
_NAMESPACE_MAX = 64
_DURABILITIES = ("sync", "async", "exit")


def get_config() -> RunnableConfig:
    """The config of the run the calling node belongs to (with ``run_id`` and
    ``thread_id`` filled in).

    Raises:
        RuntimeError: called outside a running node.
    """
    return cast(RunnableConfig, _context.current_task("get_config()").config)


def get_stream_writer() -> StreamWriter:
    """A callable that emits a chunk on the ``custom`` stream of the current run.

    When nobody streams ``custom``, the writer discards what it gets.

    Raises:
        RuntimeError: called outside a running node.
    """
    return _context.current_task("get_stream_writer()").writer


def validate_run_id(run_id: Any) -> str:
    """Check a caller-supplied run id: 1–255 printable characters.

    Raises:
        InvalidConfigError: (a ``ValueError``) the id is not acceptable.
    """
    if isinstance(run_id, uuid.UUID):
        return str(run_id)
    if not isinstance(run_id, str):
        raise InvalidConfigError(f"run_id must be a string, got {type(run_id).__name__}")
    if not 1 <= len(run_id) <= 255:
        raise InvalidConfigError(f"run_id must be 1 to 255 characters long, got {len(run_id)}")
    if not run_id.isprintable():
        raise InvalidConfigError(f"run_id must contain only printable characters: {run_id!r}")
    return run_id


def _validate_thread_id(thread_id: Any) -> str:
    if isinstance(thread_id, int | uuid.UUID) and not isinstance(thread_id, bool):
        thread_id = str(thread_id)
    if not isinstance(thread_id, str) or not 1 <= len(thread_id) <= 255:
        raise InvalidConfigError(
            f"thread_id must be a string of 1 to 255 characters: {thread_id!r}"
        )
    if not thread_id.isprintable():
        raise InvalidConfigError(f"thread_id must contain only printable characters: {thread_id!r}")
    return thread_id


def validate_namespace(namespace: Any) -> str:
    """Check a namespace name: 1 to 64 printable characters, no ``/``.

    A namespace is a tenant of the store: every record is keyed by it first, so two
    namespaces may hold the same thread and run ids. ``/`` is reserved (the runtime joins a
    namespace and a run id with it in its signal topics).

    Raises:
        InvalidConfigError: (a ``ValueError``) the name is not acceptable.
    """
    if not isinstance(namespace, str):
        raise InvalidConfigError(
            f"namespace must be a string, got {type(namespace).__name__} {namespace!r:.80}"
        )
    if not 1 <= len(namespace) <= _NAMESPACE_MAX:
        raise InvalidConfigError(
            f"namespace must be 1 to {_NAMESPACE_MAX} characters long, got {len(namespace)}"
        )
    if not namespace.isprintable() or "/" in namespace:
        raise InvalidConfigError(
            f"namespace must be printable characters other than '/': {namespace!r}"
        )
    return namespace


def check_config(config: Any) -> Mapping[str, Any]:
    """``config`` itself when it is a mapping (``None``: an empty one).

    Raises:
        InvalidConfigError: anything else, e.g. a thread id passed where the config goes.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise InvalidConfigError(
            f"the config must be a mapping such as {{'configurable': {{'thread_id': 't1'}}}}, "
            f"got {type(config).__name__} {config!r:.80}"
        )
    return config


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a run is: its run id (given or generated), thread id (if any) and namespace."""

    run_id: str
    thread_id: str | None
    run_id_given: bool
    namespace: str = DEFAULT_NAMESPACE


def resolve_identity(config: Mapping[str, Any] | None) -> Identity:
    """Read and validate the run id and thread id of a config.

    ``thread_id`` may be at the top level (as in the seeds) or under ``configurable`` (as
    in LangGraph); both are accepted, and giving both with different values is an error.
    ``namespace`` likewise (default ``"default"``; see :func:`validate_namespace`). A
    missing ``run_id`` is generated as a UUID4 string.

    Raises:
        InvalidConfigError: an id or the namespace is malformed, or the two thread ids (or
            namespaces) disagree.
    """
    config = check_config(config)
    raw_run = config.get("run_id")
    run_id = validate_run_id(raw_run) if raw_run is not None else str(uuid.uuid4())
    top = config.get("thread_id")
    configurable = config.get("configurable") or {}
    nested = configurable.get("thread_id")
    if top is not None and nested is not None and str(top) != str(nested):
        raise InvalidConfigError(
            f"thread_id given twice with different values: {top!r} (top level) and "
            f"{nested!r} (configurable)"
        )
    raw_thread = top if top is not None else nested
    thread_id = _validate_thread_id(raw_thread) if raw_thread is not None else None
    return Identity(run_id, thread_id, raw_run is not None, resolve_namespace(config))


def resolve_namespace(config: Mapping[str, Any] | None) -> str:
    """The namespace a config names (top level or under ``configurable``; ``"default"``
    when neither does).

    Raises:
        InvalidConfigError: it is malformed, or the two places disagree.
    """
    config = check_config(config)
    top = config.get("namespace")
    configurable = config.get("configurable") or {}
    nested = configurable.get("namespace")
    if top is not None and nested is not None and top != nested:
        raise InvalidConfigError(
            f"namespace given twice with different values: {top!r} (top level) and "
            f"{nested!r} (configurable)"
        )
    raw = top if top is not None else nested
    if raw is None:
        return DEFAULT_NAMESPACE
    if raw == DEFAULT_NAMESPACE:
        return DEFAULT_NAMESPACE
    return validate_namespace(raw)


def resolve_durability(value: Any, default: Durability) -> Durability:
    """The durability mode named by ``value`` (``None``: ``default``).

    Raises:
        InvalidConfigError: not one of ``"sync"``, ``"async"``, ``"exit"``.
    """
    if value is None:
        return default
    if value not in _DURABILITIES:
        raise InvalidConfigError(f"durability must be one of {_DURABILITIES}, got {value!r}")
    return cast(Durability, value)


def resolve_recursion_limit(config: Mapping[str, Any]) -> int:
    """The run's superstep limit (default 10,000).

    Raises:
        InvalidConfigError: not a positive integer.
    """
    limit = config.get("recursion_limit", DEFAULT_RECURSION_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidConfigError(f"recursion_limit must be a positive integer, got {limit!r}")
    return limit
