"""Serializers: how values become the bytes a store keeps.

The default :class:`JsonPlusSerializer` writes JSON for plain data (dicts with string keys,
lists, strings, numbers, booleans, ``None``), so stored state stays readable by other tools,
and falls back to pickle for anything else (tuples, dataclasses, Pydantic models,
datetimes...), so every value round-trips exactly. Pass ``allow_pickle=False`` to refuse
non-JSON values instead.

A value that cannot be serialized (a socket, a lambda, a structure nested too deeply) raises
:class:`~threadloom.errors.SerializationError`; the engine adds which field it was (a state
key, a node's output, the run's input).

A serializer may also bind each value to where it is stored (see
:class:`BoundSerializer`): the engine asks once, through ``binds_location``, and then passes
every value's location; a plain serializer never pays for it.

Example:
    >>> serde = JsonPlusSerializer()
    >>> serde.loads(serde.dumps({"step": 3}))
    {'step': 3}
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from threadloom.errors import DecryptionError, SerializationError, StoreError

__all__ = ["BoundSerializer", "JsonPlusSerializer", "Serializer", "unserializable"]

_JSON = b"j"
_PICKLE = b"p"
ENCRYPTED_TAGS = (b"e", b"E")
"""First bytes of values sealed by :class:`~threadloom.checkpoint.crypto.EncryptedSerializer`
(envelope versions 1 and 2)."""
_EXACT = frozenset({str, int, bool, type(None)})  # plain whatever their value
# one encoder, made once: json.dumps() with non-default options builds a new one per call
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
encode_json = _ENCODE
"""Compact JSON text, as :class:`JsonPlusSerializer` writes it (after its ``j`` tag)."""
_DECODE = json.JSONDecoder().decode
_TRUE, _FALSE, _NULL = b"jtrue", b"jfalse", b"jnull"


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back; ``loads(dumps(v)) == v``."""

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes made by :meth:`dumps`."""
        ...


@runtime_checkable
class BoundSerializer(Serializer, Protocol):
    """A serializer that binds each value to its location (``binds_location = True``), as
    :class:`~threadloom.checkpoint.crypto.EncryptedSerializer` does: a value stored at one
    location does not load at another."""

    binds_location: bool

    def dumps_at(self, value: Any, where: bytes) -> bytes:
        """Encode ``value`` for the location ``where``."""
        ...

    def loads_at(self, data: bytes, where: bytes) -> Any:
        """Decode bytes that :meth:`dumps_at` made for the location ``where``."""
        ...


def unserializable(what: str, exc: Exception, value: Any = None,
                   dumps: Callable[[Any], bytes] | None = None) -> SerializationError:
    """The error for a value a serializer refused with ``exc``, naming the field ``what`` it
    was for (and, for a dict, the first key whose value ``dumps`` refuses too)."""
    if dumps is not None and type(value) is dict:
        for key, item in value.items():
            try:
                dumps(item)
            except Exception:
                what = f"{what} (key {key!r})"
                break
    if isinstance(exc, SerializationError):
        reason = str(exc)
    elif isinstance(exc, RecursionError):
        reason = "it is nested too deeply"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return SerializationError(f"cannot store {what}: {reason}")


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether JSON round-trips ``value`` exactly (loops, not ``all()``: this runs on every
    value a step stores)."""
    kind = type(value)
    if kind in _EXACT:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth > 64:
        return False
    if kind is list:
        for item in value:
            if type(item) not in _EXACT and not _is_plain(item, depth + 1):
                return False
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            if type(item) not in _EXACT and not _is_plain(item, depth + 1):
                return False
        return True
    return False


class JsonPlusSerializer:
    """JSON for plain data, pickle for the rest (see the module docstring)."""

    __slots__ = ("allow_pickle",)

    def __init__(self, *, allow_pickle: bool = True) -> None:
        self.allow_pickle = allow_pickle

    def dumps(self, value: Any) -> bytes:
        kind = type(value)
        if kind is int:
            return _JSON + str(value).encode()
        if kind is bool:
            return _TRUE if value else _FALSE
        if value is None:
            return _NULL
        if _is_plain(value):
            return _JSON + _ENCODE(value).encode()
        if not self.allow_pickle:
            raise SerializationError(
                f"cannot store a {type(value).__name__} as JSON and pickling is disabled"
            )
        try:
            return _PICKLE + pickle.dumps(value, protocol=5)
        except RecursionError:
            raise SerializationError(
                f"cannot serialize a {type(value).__name__}: it is nested too deeply"
            ) from None
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize a {type(value).__name__}: {type(exc).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        tag, body = data[:1], data[1:]
        if tag == _JSON:
            return _DECODE(body.decode())
        if tag == _PICKLE:
            if not self.allow_pickle:
                raise StoreError("refusing to unpickle a stored value: pickling is disabled")
            return pickle.loads(body)
        if tag in ENCRYPTED_TAGS:
            raise DecryptionError(
                "this store holds encrypted values and no encryption key is configured: set "
                "THREADLOOM_ENCRYPTION_KEY, or compile the graph with "
                "serde=EncryptedSerializer(key) (threadloom.checkpoint.crypto)"
            )
        raise StoreError(f"unknown serialization tag {tag!r}")
