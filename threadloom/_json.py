"""Values as JSON, for the HTTP API and the run events it streams.

State values are Python objects (dataclasses, Pydantic models, message objects, datetimes,
sets, ``Interrupt`` / ``Send`` / ``Command``). The runtime shows them to HTTP clients as JSON,
the way LangGraph's server does: models and dataclasses as their fields, messages as their
dict form, datetimes as ISO 8601, sets and tuples as lists, bytes as base64, and anything else
as its ``repr`` rather than an error (a stream must not fail because a value is exotic).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (dicts, lists, strings, numbers, booleans, ``None``)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return _default(value)


def _default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    dump = getattr(value, "model_dump", None)  # Pydantic v2 (LangChain messages too)
    if callable(dump):
        try:
            return to_jsonable(dump(mode="json"))
        except Exception:  # noqa: BLE001 - fall back to the other forms
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    as_dict = getattr(value, "to_json", None) or getattr(value, "dict", None)
    if callable(as_dict):
        try:
            return to_jsonable(as_dict())
        except Exception:  # noqa: BLE001
            pass
    fields = getattr(type(value), "__slots__", None)
    if isinstance(fields, tuple) and fields and all(hasattr(value, f) for f in fields):
        return {f: to_jsonable(getattr(value, f)) for f in fields if not f.startswith("_")}
    return repr(value)


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes (see :func:`to_jsonable`)."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False).encode()
