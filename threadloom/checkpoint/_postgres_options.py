"""The Postgres store's options: its URL query options, checked numbers, and the schema it
lives in (quoted, and the advisory lock key that serializes its migrations)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from threadloom.errors import InvalidConfigError

__all__ = ["advisory_key", "check_number", "quote_schema", "split_url"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def quote_schema(schema: str) -> str:
    """``schema`` as a quoted identifier.

    Raises:
        InvalidConfigError: not a plain identifier (letters, digits, ``_``, ``$``; at most
            63 characters, not starting with a digit).
    """
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidConfigError(
            f"schema must be a plain identifier (letters, digits, _ and $, at most 63 "
            f"characters), not {schema!r}"
        )
    return f'"{schema}"'


def advisory_key(schema: str) -> int:
    """The transaction-level advisory lock key that serializes ``setup()`` of a schema."""
    h = 0x5EED  # FNV-1a over the name, folded into a signed 64-bit integer
    for byte in ("threadloom:" + schema).encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


_URL_OPTIONS = {
    "schema": "schema",
    "pool_min": "min_size",
    "min_size": "min_size",
    "pool_max": "max_size",
    "max_size": "max_size",
    "pool_timeout": "timeout",
    "timeout": "timeout",
    "prepare_threshold": "prepare_threshold",
    "max_retries": "max_retries",
    "connect_timeout": "connect_timeout",
    "spin_wait": "spin_wait",
    "listen_url": "listen_url",
}


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without threadloom's own query options, and those options.

    Raises:
        InvalidConfigError: not a ``postgresql://`` or ``postgres://`` URL, or a bad value.
    """
    scheme, sep, _ = url.partition("://")
    if scheme.lower() not in ("postgres", "postgresql") or not sep:
        raise InvalidConfigError(f"not a Postgres URL: {url!r} (use postgresql://user@host/db)")
    parts = urlsplit(url)
    rest: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        name = _URL_OPTIONS.get(key)
        if name is None:
            rest.append((key, value))
            continue
        try:
            if name in ("schema", "listen_url"):
                options[name] = value
            elif name == "prepare_threshold":
                none = value.lower() in ("none", "null", "off", "")
                options[name] = None if none else int(value)
            elif name in ("min_size", "max_size", "max_retries"):
                options[name] = int(value)
            else:
                options[name] = float(value)
        except ValueError:
            raise InvalidConfigError(f"bad {key} in the Postgres URL: {value!r}") from None
    return urlunsplit(parts._replace(scheme=scheme.lower(), query=urlencode(rest))), options


def check_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    """``value``, if it is a number (an integer if ``integer``) >= ``minimum``.

    Raises:
        InvalidConfigError: it is not.
    """
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise InvalidConfigError(f"{name} must be {kind} >= {minimum:g}, not {value!r}")
    return value
