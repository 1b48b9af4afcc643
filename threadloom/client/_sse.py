"""Server-Sent Events: the parser, and what a stream remembers to resume after a dropped
connection. Pure: no I/O, shared by the sync and the async transport."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventParser", "StreamPart", "StreamResume"]

_MODES = ("values", "updates", "custom", "debug")


@dataclass(frozen=True, slots=True)
class StreamPart:
    """One event of a run's stream: ``event`` (``metadata``, a stream mode such as
    ``values`` or ``updates``, or ``error``), its ``data`` (decoded JSON) and its ``id`` (its
    number in the run, which ``Last-Event-ID`` resumes after)."""

    event: str
    data: Any
    id: str | None = None


class EventParser:
    """Turns the lines of an SSE body (without line endings) into events, one connection's
    worth: an event is complete at the blank line that ends it, so one cut short by a
    dropped connection is never produced. Comment lines (``: keepalive``) are skipped."""

    __slots__ = ("_data", "_event", "_id")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> StreamPart | None:
        """Take one line; the event it completes, if any."""
        if not line:
            part = None
            if self._data or self._event:
                part = _part(self._event or "message", self._data, self._id)
            self._event, self._data, self._id = "", [], None
            return part
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def _part(event: str, data: list[str], event_id: str | None) -> StreamPart:
    text = "\n".join(data)
    try:
        decoded: Any = json.loads(text) if text else None
    except ValueError:
        decoded = text
    return StreamPart(event, decoded, event_id)


@dataclass(slots=True)
class StreamResume:
    """Where a run's stream is and how to rejoin it: the join route (the ``Location`` the
    server named, or the one a join was made on) and the last event id received. Events
    at or before that id are dropped, so a rejoin never repeats one."""

    join_path: str | None = None
    stream_mode: list[str] | None = None
    last_id: str | None = None
    _last_number: int = field(default=0, repr=False)

    def opened(self, headers: Mapping[str, str]) -> None:
        """Take the join route from a run-creating response's ``Location``."""
        location = headers.get("location")
        if location and location.endswith("/stream"):
            self.join_path = location

    def accept(self, part: StreamPart) -> bool:
        """Record ``part`` as received; ``False`` if it was received before, or is of a
        stream mode not asked for (the server's worker records ``values`` always, and a
        run-creating stream sends them; a rejoined one would not)."""
        if part.id is not None:
            try:
                number = int(part.id)
            except ValueError:
                number = None
            if number is not None:
                if number <= self._last_number:
                    return False
                self._last_number = number
            self.last_id = part.id
        return not (self.stream_mode and part.event in _MODES
                    and part.event not in self.stream_mode)

    def rejoin(self) -> tuple[str, dict[str, str], dict[str, str]] | None:
        """The path, query and headers that resume the stream after the last event, or
        ``None`` when the route is not known (the connection broke before the answer)."""
        if self.join_path is None:
            return None
        params = {"stream_mode": json.dumps(self.stream_mode)} if self.stream_mode else {}
        headers = {"Last-Event-ID": self.last_id} if self.last_id is not None else {}
        return self.join_path, params, headers
