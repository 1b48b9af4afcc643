"""Serializers: how values become the bytes a store keeps.

The default :class:`JsonPlusSerializer` writes JSON for plain data (dicts with string keys,
lists, strings, numbers, booleans, ``None``), so stored state stays readable by other tools,
and *typed JSON* for an allowlist of other types, which it reconstructs exactly:

- tuples, sets, frozensets, dicts with non-string keys, ``bytes``, ``bytearray``, floats that
  are not finite;
- ``datetime``, ``date``, ``time`` (naive, fixed-offset or ``zoneinfo`` zones), ``timedelta``,
  ``Decimal``, ``UUID``;
- dataclasses, Pydantic models, enums and named tuples **defined in a module the application
  registers** (``JsonPlusSerializer(allowed_modules=[...])``, :func:`allow_modules`, or
  ``[serde] allowed_modules`` in ``threadloom.toml``; a module allows its submodules), and
  threadloom's own ``Send``, ``Command`` and ``Interrupt``.

Reading never runs code a stored value chooses: a typed value names its class, which must be
on the allowlist (nothing is imported otherwise), must be what it claims (a dataclass, a
Pydantic model, an enum, a named tuple), and is rebuilt from its fields without calling its
``__init__`` (dataclasses), through ``model_construct`` (Pydantic), or from its value (enums,
named tuples). Storing any other type raises :class:`~threadloom.errors.TypeNotAllowedError`.

Pickle is an explicit opt-in for stores trusted like code: ``JsonPlusSerializer(
allow_pickle=True)`` pickles what typed JSON cannot express and reads pickled values, as
threadloom did by default before. Without it a pickled value (written by an earlier version)
is refused unread with :class:`~threadloom.errors.PickleNotAllowedError`; ``threadloom
migrate --rewrite-values`` re-encodes such rows.

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
    >>> serde.loads(serde.dumps((1, {2, 3})))
    (1, {2, 3})
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import importlib
import json
import math
import pickle
import sys
import threading
import typing
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from threadloom.errors import (
    DecryptionError,
    PickleNotAllowedError,
    SerializationError,
    StoreError,
    TypeNotAllowedError,
)

__all__ = [
    "BoundSerializer",
    "JsonPlusSerializer",
    "Serializer",
    "allow_modules",
    "allow_schema",
    "allowed_modules",
    "unserializable",
]

_JSON = b"j"
_TYPED = b"t"
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
    kind = SerializationError
    if isinstance(exc, SerializationError):
        reason, kind = str(exc), type(exc)
    elif isinstance(exc, RecursionError):
        reason = "it is nested too deeply"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return kind(f"cannot store {what}: {reason}")


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


# -- the allowlist ------------------------------------------------------------------------

_BUILTIN_MODULES = frozenset({"threadloom.types"})  # Send, Command, Interrupt
# replaced, never changed in place: serializers in other threads iterate it without a lock
_registered: frozenset[str] = frozenset()
_registering = threading.Lock()
_TAG = "$t"  # the key of a typed value; a plain dict holding it is stored as pairs
_MAX_DEPTH = 200


def _check_module_name(name: Any) -> str:
    if not isinstance(name, str) or not name or not all(
        part.isidentifier() for part in name.split(".")
    ):
        raise ValueError(f"not a module name: {name!r}")
    return name


def allow_modules(*modules: str) -> None:
    """Allow the dataclasses, Pydantic models, enums and named tuples defined in ``modules``
    (and their submodules) for every :class:`JsonPlusSerializer` in this process, as ``[serde]
    allowed_modules`` in ``threadloom.toml`` does for the runtime.

    Raises:
        ValueError: a name is not a dotted module name.
    """
    global _registered
    names = {_check_module_name(m) for m in modules}
    with _registering:
        _registered = _registered | names


def allowed_modules() -> frozenset[str]:
    """The modules :func:`allow_modules` registered in this process."""
    return _registered


def allow_schema(schema: Any) -> None:
    """Allow the module of a graph's state schema, and those of the dataclasses, Pydantic
    models, enums and named tuples its fields are annotated with (also inside ``list[...]``,
    ``X | None``, ``Annotated[...]`` and nested schemas), as :func:`allow_modules` does:
    ``StateGraph`` calls it for its schemas, since they declare what the state holds."""
    seen: set[int] = set()

    def visit(hint: Any, depth: int) -> None:
        if depth > 8 or id(hint) in seen:
            return
        seen.add(id(hint))
        for arg in typing.get_args(hint):
            visit(arg, depth + 1)
        if not isinstance(hint, type) or hint.__module__ in ("builtins", "typing"):
            return
        declared = typing.is_typeddict(hint) or any(check(hint) for check in _KINDS.values())
        if not declared:
            return
        allow_modules(hint.__module__)
        try:
            fields = typing.get_type_hints(hint, include_extras=True)
        except Exception:  # a forward reference that does not resolve: what it can see
            fields = dict(getattr(hint, "__annotations__", {}))
        for field_hint in fields.values():
            visit(field_hint, depth + 1)

    visit(schema, 0)


def _in(module: str, allowed: Iterable[str]) -> bool:
    for name in allowed:
        if module == name or module.startswith(name + "."):
            return True
    return False


def _path(kind: type) -> tuple[str, str]:
    return kind.__module__, kind.__qualname__


def _lookup(module: str, qualname: str) -> Any:
    """The object named ``module:qualname``, importing only ``module``."""
    obj: Any = sys.modules.get(module)
    if obj is None:
        obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _is_model(value: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # no model can exist before pydantic is imported
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def _is_namedtuple(kind: type) -> bool:
    return issubclass(kind, tuple) and isinstance(getattr(kind, "_fields", None), tuple)


_KINDS: dict[str, Callable[[type], bool]] = {
    "enum": lambda k: issubclass(k, enum.Enum),
    "dataclass": lambda k: dataclasses.is_dataclass(k),
    "model": lambda k: "pydantic" in sys.modules
    and issubclass(k, sys.modules["pydantic"].BaseModel),
    "namedtuple": _is_namedtuple,
}


# -- tz-aware times -------------------------------------------------------------------------


def _tz(tzinfo: datetime.tzinfo | None) -> Any:
    if tzinfo is None:
        return None
    if isinstance(tzinfo, zoneinfo.ZoneInfo):
        return {"zone": tzinfo.key}
    if isinstance(tzinfo, datetime.timezone):
        offset = tzinfo.utcoffset(None)
        name = tzinfo.tzname(None)
        default = datetime.timezone(offset).tzname(None)
        return [offset.days * 86400 + offset.seconds, offset.microseconds,
                None if name == default else name]
    raise SerializationError(
        f"cannot serialize a time in the zone {tzinfo!r} ({type(tzinfo).__name__}): use "
        "datetime.timezone or zoneinfo.ZoneInfo")


def _untz(spec: Any) -> datetime.tzinfo | None:
    if spec is None:
        return None
    if isinstance(spec, dict):
        return zoneinfo.ZoneInfo(spec["zone"])
    seconds, micros, name = spec
    offset = datetime.timedelta(seconds=seconds, microseconds=micros)
    return datetime.timezone(offset) if name is None else datetime.timezone(offset, name)


# -- the serializer -------------------------------------------------------------------------

_FROM_LIST: dict[str, Callable[[list[Any]], Any]] = {
    "tuple": tuple, "set": set, "frozenset": frozenset,
}


class JsonPlusSerializer:
    """JSON for plain data, typed JSON for an allowlist of other types; pickle only if
    asked (see the module docstring).

    Args:
        allowed_modules: modules (with their submodules) whose dataclasses, Pydantic
            models, enums and named tuples may be stored and read, besides those
            :func:`allow_modules` registered for the whole process.
        allow_pickle: **trust the store like code**: pickle values typed JSON cannot express
            and read pickled values, including those earlier versions wrote. Anyone who can
            write a row can then run code in every process that reads it.
    """

    __slots__ = ("allow_pickle", "allowed_modules", "_classes", "_paths", "_typed")

    def __init__(self, *, allowed_modules: Iterable[str] = (),
                 allow_pickle: bool = False) -> None:
        if isinstance(allowed_modules, str):
            allowed_modules = (allowed_modules,)
        self.allowed_modules = frozenset(_check_module_name(m) for m in allowed_modules)
        self.allow_pickle = allow_pickle
        self._classes: dict[tuple[str, str], type] = {}  # read: (path, kind) -> class
        self._paths: dict[type, str] = {}  # written: class -> "module:qualname" (allowed)
        # one decoder, made once: json.loads(object_hook=...) builds a new one per call
        self._typed = json.JSONDecoder(object_hook=self._decode).decode

    def __repr__(self) -> str:
        return (f"JsonPlusSerializer(allowed_modules={sorted(self.allowed_modules)!r}, "
                f"allow_pickle={self.allow_pickle!r})")

    def allows(self, module: str) -> bool:
        """Whether classes defined in ``module`` may be stored and read."""
        return (_in(module, self.allowed_modules) or _in(module, _registered)
                or module in _BUILTIN_MODULES)

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
        try:
            return _TYPED + _ENCODE(self._encode(value, 0)).encode()
        except SerializationError:
            if not self.allow_pickle:
                raise
        except RecursionError:
            raise SerializationError(
                f"cannot serialize a {kind.__name__}: it is nested too deeply") from None
        try:
            return _PICKLE + pickle.dumps(value, protocol=5)
        except RecursionError:
            raise SerializationError(
                f"cannot serialize a {kind.__name__}: it is nested too deeply"
            ) from None
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize a {kind.__name__}: {type(exc).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        tag, body = data[:1], data[1:]
        if tag == _JSON:
            return _DECODE(body.decode())
        if tag == _TYPED:
            return self._typed(body.decode())
        if tag == _PICKLE:
            if not self.allow_pickle:
                raise PickleNotAllowedError(
                    "refusing to unpickle a stored value (nothing was unpickled): it was "
                    "written with pickle by an earlier threadloom, and pickled data can run "
                    "code. Re-encode such values with `threadloom migrate --rewrite-values`, "
                    "or, if the store is trusted like code, read them with "
                    "JsonPlusSerializer(allow_pickle=True)"
                )
            return pickle.loads(body)
        if tag in ENCRYPTED_TAGS:
            raise DecryptionError(
                "this store holds encrypted values and no encryption key is configured: set "
                "THREADLOOM_ENCRYPTION_KEY, or compile the graph with "
                "serde=EncryptedSerializer(key) (threadloom.checkpoint.crypto)"
            )
        raise StoreError(f"unknown serialization tag {tag!r}")

    # -- typed JSON --------------------------------------------------------------------------

    def _class_path(self, kind: type, what: str) -> str:
        known = self._paths.get(kind)
        if known is not None:
            return known
        module, qualname = _path(kind)
        if not self.allows(module):
            raise TypeNotAllowedError(
                f"cannot store a {qualname} ({what} from module {module!r}): its module is "
                "not allowed; register it with JsonPlusSerializer(allowed_modules=[...]) or "
                f"[serde] allowed_modules in threadloom.toml (\"{module}\")"
            )
        try:
            found = _lookup(module, qualname)
        except Exception:
            found = None
        if found is not kind:
            raise TypeNotAllowedError(
                f"cannot store a {qualname} ({what} from module {module!r}): it cannot be "
                f"found again as {module}.{qualname}; define it at the top level of its "
                "module"
            )
        path = self._paths[kind] = f"{module}:{qualname}"
        return path

    def _encode(self, value: Any, depth: int) -> Any:
        """``value`` as JSON data, with a ``{"$t": ...}`` object for every non-plain part."""
        kind = type(value)
        if kind in _EXACT:
            return value
        if kind is float:
            return value if math.isfinite(value) else {_TAG: "float", "v": repr(value)}
        if depth > _MAX_DEPTH:
            raise RecursionError
        depth += 1
        enc = self._encode
        if kind is list:
            return [v if type(v) in _EXACT else enc(v, depth) for v in value]
        if kind is dict:
            if _TAG not in value:
                out: dict[str, Any] = {}
                for k, v in value.items():
                    if type(k) is not str:
                        break
                    out[k] = v if type(v) in _EXACT else enc(v, depth)
                else:
                    return out
            return {_TAG: "dict", "v": [[enc(k, depth), enc(v, depth)] for k, v in value.items()]}
        if kind is tuple:
            return {_TAG: "tuple", "v": [v if type(v) in _EXACT else enc(v, depth) for v in value]}
        if kind is set or kind is frozenset:
            return {_TAG: kind.__name__, "v": [enc(item, depth) for item in value]}
        if kind is bytes or kind is bytearray:
            return {_TAG: kind.__name__, "v": base64.b64encode(value).decode("ascii")}
        if kind is datetime.datetime:
            return {_TAG: "datetime", "v": value.replace(tzinfo=None).isoformat(),
                    "z": _tz(value.tzinfo), "f": value.fold}
        if kind is datetime.date:
            return {_TAG: "date", "v": value.isoformat()}
        if kind is datetime.time:
            return {_TAG: "time", "v": value.replace(tzinfo=None).isoformat(),
                    "z": _tz(value.tzinfo), "f": value.fold}
        if kind is datetime.timedelta:
            return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
        if kind is decimal.Decimal:
            return {_TAG: "decimal", "v": str(value)}
        if kind is uuid.UUID:
            return {_TAG: "uuid", "v": value.hex}
        if isinstance(value, enum.Enum):
            return {_TAG: "enum", "c": self._class_path(kind, "an enum"),
                    "v": enc(value.value, depth)}
        if dataclasses.is_dataclass(value):
            path = self._class_path(kind, "a dataclass")
            fields = {f.name: enc(getattr(value, f.name), depth)
                      for f in dataclasses.fields(value)}
            return {_TAG: "dataclass", "c": path, "v": fields}
        if _is_model(value):
            path = self._class_path(kind, "a Pydantic model")
            model: dict[str, Any] = {_TAG: "model", "c": path,
                                     "v": enc(dict(value.__dict__), depth),
                                     "s": sorted(value.model_fields_set)}
            if value.__pydantic_extra__:
                model["x"] = enc(dict(value.__pydantic_extra__), depth)
            if value.__pydantic_private__:
                model["p"] = enc(dict(value.__pydantic_private__), depth)
            return model
        if _is_namedtuple(kind):
            return {_TAG: "namedtuple", "c": self._class_path(kind, "a named tuple"),
                    "v": [enc(item, depth) for item in value]}
        raise SerializationError(
            f"cannot serialize a {kind.__module__}.{kind.__qualname__}: not a type the "
            "default serializer reconstructs (plain JSON data, tuples, sets, bytes, "
            "datetimes, UUIDs, decimals, and dataclasses, Pydantic models, enums and named "
            "tuples from allowed modules); convert it, or opt in to pickle with "
            "JsonPlusSerializer(allow_pickle=True) if the store is trusted like code"
        )

    def _class(self, path: Any, kind: str) -> Any:
        """The allowed class ``module:qualname`` of the given kind, else an error; nothing is
        imported for a module that is not allowed."""
        try:
            return self._classes[(path, kind)]
        except (KeyError, TypeError):
            pass
        module, _, qualname = path.partition(":") if isinstance(path, str) else ("", "", "")
        if not module or not qualname:
            raise StoreError(f"stored value names no valid class: {path!r}")
        if not self.allows(module):
            raise TypeNotAllowedError(
                f"a stored value is a {qualname} from module {module!r}, which is not allowed; "
                "nothing was imported. If it is the application's, register the module with "
                "JsonPlusSerializer(allowed_modules=[...]) or [serde] allowed_modules in "
                "threadloom.toml"
            )
        try:
            found = _lookup(module, qualname)
        except Exception as exc:
            raise StoreError(
                f"a stored value is a {qualname} from module {module!r}, which cannot be "
                f"found: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(found, type) or _path(found) != (module, qualname) \
                or not _KINDS[kind](found):
            raise TypeNotAllowedError(
                f"a stored value names {path!r} as {'an' if kind == 'enum' else 'a'} {kind}, "
                "which it is not"
            )
        self._classes[(path, kind)] = found
        return found

    def _decode(self, obj: dict[str, Any]) -> Any:
        """``json.loads``' object hook: called innermost first, so a tagged object's parts are
        already decoded."""
        tag = obj.get(_TAG)
        if tag is None:
            return obj
        try:
            of_list = _FROM_LIST.get(tag)
            if of_list is not None:
                items = obj["v"]
                if type(items) is not list:
                    raise TypeError(f"expected a list, got {type(items).__name__}")
                return of_list(items)
            return self._rebuild(tag, obj)
        except (StoreError, TypeNotAllowedError):
            raise
        except Exception as exc:
            raise StoreError(
                f"a stored {tag!r} value is malformed: {type(exc).__name__}: {exc}"
            ) from None

    def _rebuild(self, tag: Any, obj: dict[str, Any]) -> Any:
        v: Any = obj.get("v")
        if tag == "dict":
            return {k: item for k, item in v}
        if tag == "bytes":
            return base64.b64decode(v, validate=True)
        if tag == "bytearray":
            return bytearray(base64.b64decode(v, validate=True))
        if tag == "float":
            if v not in ("nan", "inf", "-inf"):
                raise ValueError(f"not a float: {v!r}")
            return float(v)
        if tag == "datetime":
            naive = datetime.datetime.fromisoformat(v)
            return naive.replace(tzinfo=_untz(obj.get("z")), fold=obj.get("f", 0))
        if tag == "date":
            return datetime.date.fromisoformat(v)
        if tag == "time":
            naive_t = datetime.time.fromisoformat(v)
            return naive_t.replace(tzinfo=_untz(obj.get("z")), fold=obj.get("f", 0))
        if tag == "timedelta":
            days, seconds, micros = v
            return datetime.timedelta(days=days, seconds=seconds, microseconds=micros)
        if tag == "decimal":
            return decimal.Decimal(v)
        if tag == "uuid":
            return uuid.UUID(hex=v)
        if tag == "enum":
            return self._class(obj.get("c"), "enum")(v)
        if tag == "dataclass":
            cls = self._class(obj.get("c"), "dataclass")
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = set(v) - names
            if unknown:
                raise ValueError(f"{cls.__qualname__} has no field {sorted(unknown)[0]!r}")
            made = cls.__new__(cls)
            for name, item in v.items():
                object.__setattr__(made, name, item)
            return made
        if tag == "model":
            cls = self._class(obj.get("c"), "model")
            fields = dict(v)
            fields.update(obj.get("x") or {})
            model = cls.model_construct(_fields_set=set(obj.get("s", ())), **fields)
            private = obj.get("p")
            if private:
                object.__setattr__(model, "__pydantic_private__", private)
            return model
        if tag == "namedtuple":
            return self._class(obj.get("c"), "namedtuple")(*v)
        raise StoreError(f"unknown typed value {tag!r}")
