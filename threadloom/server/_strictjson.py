"""Bodies that are JSON only to Python's parser, found before any route reads them.

``json.loads`` takes ``NaN``, ``Infinity``, numbers too large for a float (as ``inf``) and
escapes of lone surrogates (``"\\ud800"``); none is JSON, Postgres refuses the first ones,
and a string with a lone surrogate cannot be encoded (in the store, or in an answer).
"""

from __future__ import annotations

import json
import math
import re

__all__ = ["body_problem"]

# what may make a body JSON that Python takes and nothing else does: the escape of a high or
# low surrogate, NaN/Infinity, a number too large for a float; most bodies have none of
# these and are not parsed here
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|NaN|Infinity|[eE]\+?[0-9]{3}")


class _NotStrict(ValueError):
    pass


def _constant(name: str) -> float:
    raise _NotStrict(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotStrict(f"the number {text[:40]} is too large")
    return value


def body_problem(body: bytes) -> str | None:
    """What makes ``body`` JSON that only Python's parser takes: a string with a lone
    surrogate (a pair is a character, as JSON says; such a string cannot be encoded, in the
    store or in an answer), ``NaN`` or ``Infinity`` (not JSON; Postgres refuses them), a
    number too large for a float. ``None`` for strict JSON, and for a body that is not JSON
    at all (the route answers it)."""
    if _SUSPECT.search(body) is None:
        return None
    try:
        parsed = json.loads(body, parse_constant=_constant, parse_float=_float)
    except _NotStrict as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return None
    try:
        json.dumps(parsed, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return ("a string is not valid Unicode (an escape of a lone surrogate, such as "
                "\\ud800)")
    except (ValueError, RecursionError):
        return None
    return None
