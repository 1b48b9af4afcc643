"""Reading state schemas (TypedDict, dataclass, Pydantic model) into channels, and building
the objects nodes receive from channel values."""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import typing
import weakref
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, get_args, get_origin, get_type_hints

from threadloom.engine._spec import ChannelSpec
from threadloom.errors import GraphValidationError

__all__ = ["callable_info", "channels_of", "coercer_for", "is_schema", "keys_of"]

_ABSTRACT_TO_CONCRETE: dict[Any, type] = {
    collections.abc.Sequence: list,
    collections.abc.MutableSequence: list,
    collections.abc.Set: set,
    collections.abc.MutableSet: set,
    collections.abc.Mapping: dict,
    collections.abc.MutableMapping: dict,
}


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and isinstance(getattr(schema, "model_fields", None), dict)


def _is_typeddict(schema: Any) -> bool:
    return isinstance(schema, type) and typing.is_typeddict(schema)


def is_schema(obj: Any) -> bool:
    """Whether ``obj`` is a class threadloom can read channels from."""
    return (
        _is_typeddict(obj)
        or _is_pydantic(obj)
        or (isinstance(obj, type) and dataclasses.is_dataclass(obj))
    )


def _hints(schema: type) -> dict[str, Any]:
    try:
        hints = get_type_hints(schema, include_extras=True)
    except Exception as exc:  # unresolvable forward references
        raise GraphValidationError(
            f"cannot read the type hints of state schema {schema.__name__}: {exc}"
        ) from exc
    if _is_pydantic(schema):
        return {k: hints.get(k, Any) for k in schema.model_fields}  # type: ignore[attr-defined]
    if dataclasses.is_dataclass(schema):
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}
    return {k: v for k, v in hints.items() if get_origin(v) is not ClassVar}


def keys_of(schema: Any) -> tuple[str, ...]:
    """The state keys a schema declares, in declaration order."""
    if schema is None or schema is dict:
        return ()
    return tuple(_hints(schema))


def _reducer_of(hint: Any) -> Callable[[Any, Any], Any] | None:
    if get_origin(hint) is not Annotated:
        return None
    for meta in reversed(get_args(hint)[1:]):
        if callable(meta) and _takes_two_args(meta):
            return typing.cast(Callable[[Any, Any], Any], meta)
    return None


def _takes_two_args(fn: Any) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True  # builtins such as operator.add have no signature on some versions
    positional = [
        p for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _initial_of(hint: Any) -> Callable[[], Any] | None:
    base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
    origin = get_origin(base) or base
    origin = _ABSTRACT_TO_CONCRETE.get(origin, origin)
    if not isinstance(origin, type):
        return None
    try:
        origin()
    except Exception:
        return None
    return typing.cast(Callable[[], Any], origin)


def channels_of(schema: Any) -> dict[str, ChannelSpec]:
    """The channels a schema declares: ``Annotated[T, reducer]`` keys get the reducer and
    start from ``T()``; other keys keep the last value written."""
    if schema is None or schema is dict:
        return {}
    if not is_schema(schema):
        raise GraphValidationError(
            f"state schema must be a TypedDict, dataclass or Pydantic model, got {schema!r}"
        )
    out: dict[str, ChannelSpec] = {}
    for key, hint in _hints(schema).items():
        reducer = _reducer_of(hint)
        out[key] = ChannelSpec(key, reducer, _initial_of(hint) if reducer else None)
    return out


def coercer_for(schema: Any) -> Callable[[dict[str, Any]], Any] | None:
    """How to build a node's input from a dict of channel values (``None``: pass the dict)."""
    if schema is None or schema is dict or _is_typeddict(schema):
        return None
    if _is_pydantic(schema) or dataclasses.is_dataclass(schema):
        return typing.cast(Callable[[dict[str, Any]], Any], lambda values: schema(**values))
    return None


_CALLABLE_INFO: weakref.WeakKeyDictionary[Any, tuple[list[inspect.Parameter], dict[str, Any]]]
_CALLABLE_INFO = weakref.WeakKeyDictionary()


def callable_info(fn: Any) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """A callable's parameters and resolved type hints, inspected once per function (many
    nodes often share one function, and compile time is measured)."""
    try:
        return _CALLABLE_INFO[fn]
    except (KeyError, TypeError):
        pass
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    hints: dict[str, Any] = {}
    if getattr(fn, "__annotations__", None) or not inspect.isfunction(fn):
        try:
            hints = get_type_hints(fn)
        except Exception:
            hints = {}
    info = (params, hints)
    try:
        _CALLABLE_INFO[fn] = info
    except TypeError:
        pass
    return info
