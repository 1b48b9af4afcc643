"""Plain-text tables, times and JSON for the CLI's output (no dependency)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

__all__ = ["duration", "emit_json", "fields", "mask_url", "table", "when"]

MAX_CELL = 60


def when(ts: float | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC), ``-`` when there is none."""
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def iso(ts: float | None) -> str | None:
    """A timestamp as ISO 8601 UTC with milliseconds, for JSON output."""
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def duration(start: float | None, end: float | None) -> str:
    """``12ms`` / ``1.23s`` / ``2m05s`` between two timestamps, ``-`` if either is missing."""
    if not start or not end:
        return "-"
    seconds = max(0.0, end - start)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = " ".join(text.split())  # one line per row
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
          out: TextIO | None = None, empty: str = "(none)") -> None:
    """Print ``rows`` as left-aligned columns: ``columns`` is ``(header, key)`` pairs."""
    out = out or sys.stdout
    if not rows:
        print(empty, file=out)
        return
    cells = [[_cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, (h, _) in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    print(line([h for h, _ in columns]), file=out)
    for row in cells:
        print(line(row), file=out)


def fields(pairs: Sequence[tuple[str, Any]], out: TextIO | None = None) -> None:
    """Print ``name: value`` lines, the names aligned."""
    out = out or sys.stdout
    width = max((len(name) for name, _ in pairs), default=0)
    for name, value in pairs:
        text = "-" if value is None or value == "" else str(value)
        print(f"{name + ':':<{width + 1}} {text}", file=out)


def emit_json(value: Any, out: TextIO | None = None, indent: int | None = 2) -> None:
    """Print ``value`` as JSON (non-JSON values as their ``str``)."""
    out = out or sys.stdout
    json.dump(value, out, indent=indent, default=str, ensure_ascii=False)
    out.write("\n")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for output and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
