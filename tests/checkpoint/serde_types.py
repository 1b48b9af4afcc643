"""Classes the serializer tests store: a module of its own, which no graph schema names, so
it is allowed only where a test allows it."""

from __future__ import annotations

import datetime
import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pydantic


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


@dataclass
class Point:
    x: int
    y: Any = None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Frozen:
    when: datetime.date
    at: Point


class User(pydantic.BaseModel):
    name: str
    age: int = 0
    color: Color = Color.RED


class Loose(pydantic.BaseModel, extra="allow"):
    a: int


class Pair(NamedTuple):
    left: Any
    right: Any


class Evil:
    """Unpickling it touches a marker file: proof that stored bytes ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))
