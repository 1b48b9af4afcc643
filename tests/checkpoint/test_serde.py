"""The default serializer reconstructs only an allowlist of types and never unpickles unless
asked: stored bytes (a row written by anyone, an imported thread file) never run code."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import os
import pickle
import sys
import uuid
import zoneinfo
from pathlib import Path
from typing import Any, TypedDict

import pytest

from threadloom.checkpoint import open_store
from threadloom.checkpoint.crypto import EncryptedSerializer
from threadloom.checkpoint.retention import export_thread, import_thread
from threadloom.checkpoint.serde import JsonPlusSerializer, allow_modules, allowed_modules
from threadloom.errors import (
    PickleNotAllowedError,
    SerializationError,
    StoreError,
    TypeNotAllowedError,
)
from threadloom.graph import END, START, StateGraph
from threadloom.types import Command, Interrupt, Send

from . import serde_types
from .serde_types import Color, Evil, Frozen, Level, Loose, Pair, Point, User

HERE = serde_types.__name__  # allowed by the tests that say so, never registered


def evil_pickle(marker: Path) -> bytes:
    """What an attacker writes into a row: the old pickle tag and a payload that runs code."""
    return b"p" + pickle.dumps(Evil(marker), protocol=5)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "pwned"
    assert not path.exists()
    return path


@pytest.fixture
def serde() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_modules=[HERE])


STANDARD = [
    (1, "a", None),
    {1, 2, 3},
    frozenset({"x"}),
    b"\x00\xffbytes",
    bytearray(b"ba"),
    float("inf"),
    -float("inf"),
    datetime.datetime(2024, 2, 29, 13, 5, 7, 123456),
    datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
    datetime.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    datetime.date(1999, 12, 31),
    datetime.time(23, 59, 59, 999, tzinfo=datetime.timezone(-datetime.timedelta(hours=3), "BRT")),
    datetime.timedelta(days=-2, seconds=7, microseconds=3),
    decimal.Decimal("3.140"),
    decimal.Decimal("-0"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    {(1, 2): "tuple key", 3: [b"x"]},
    {"$t": "dataclass", "c": "os:system", "v": {}},  # user data shaped like a tag
    {"nested": [{"$t": "bytes", "v": "eA=="}, (1,)]},
    [Send("node", {"arg": (1, 2)}), Interrupt({"q": "ok?"}, "id-1")],
    Command(goto="next", update={"k": {1}}, resume=None),
]


@pytest.mark.parametrize("value", STANDARD, ids=lambda v: type(v).__name__)
def test_standard_types_round_trip_exactly_without_configuration(value: Any) -> None:
    serde = JsonPlusSerializer()
    data = serde.dumps(value)
    assert data[:1] in (b"j", b"t")  # never pickle
    back = serde.loads(data)
    assert back == value and type(back) is type(value)
    if isinstance(value, datetime.datetime | datetime.time):
        assert back.tzinfo == value.tzinfo and back.fold == value.fold


def test_nan_round_trips() -> None:
    serde = JsonPlusSerializer()
    back = serde.loads(serde.dumps([float("nan")]))
    assert back[0] != back[0]


def test_plain_json_is_still_plain_json() -> None:
    serde = JsonPlusSerializer()
    value = {"step": 3, "items": ["a", 1.5, None, True], "$t": "user data"}
    data = serde.dumps(value)
    assert data[:1] == b"j" and json.loads(data[1:]) == value
    assert serde.loads(data) == value


def test_allowlisted_dataclasses_models_enums_and_named_tuples_round_trip(
    serde: JsonPlusSerializer,
) -> None:
    values = [
        Color.RED, Color.BLUE, Level.LOW,
        Point(1, {"deep": Point(2)}, ["a"]),
        Frozen(datetime.date(2020, 5, 17), Point(3, (4, 5))),
        User(name="ada", age=36, color=Color.BLUE),
        Loose(a=1, b=(2, 3)),
        Pair(Color.RED, User(name="x")),
        {"state": [Point(0), User(name="y")]},
    ]
    for value in values:
        back = serde.loads(serde.dumps(value))
        assert back == value and type(back) is type(value)
    user = serde.loads(serde.dumps(User(name="z")))
    assert user.model_fields_set == {"name"}
    loose = serde.loads(serde.dumps(Loose(a=1, b=(2, 3))))
    assert loose.__pydantic_extra__ == {"b": (2, 3)}


def test_a_class_from_a_module_not_registered_is_refused_at_write_time() -> None:
    serde = JsonPlusSerializer()
    for value in (Point(1), User(name="a"), Color.RED, Pair(1, 2), {"k": [Point(1)]}):
        with pytest.raises(TypeNotAllowedError, match="allowed_modules") as caught:
            serde.dumps(value)
        assert caught.value.code == "type_not_allowed"
        assert HERE in str(caught.value)


def test_other_types_are_refused_not_pickled() -> None:
    serde = JsonPlusSerializer()
    for value in (object(), Evil(Path("x")), lambda: 1, {"k": iter([])}):
        with pytest.raises(SerializationError, match="allow_pickle=True") as caught:
            serde.dumps(value)
        assert caught.value.code == "serialization_failed"


def test_a_stored_class_from_a_module_not_allowed_is_not_imported() -> None:
    assert "this" not in sys.modules  # importing it prints the Zen of Python
    crafted = b't{"$t":"dataclass","c":"this:Anything","v":{}}'
    with pytest.raises(TypeNotAllowedError, match="nothing was imported") as caught:
        JsonPlusSerializer().loads(crafted)
    assert caught.value.code == "type_not_allowed"
    assert "this" not in sys.modules


def test_a_stored_value_cannot_make_an_allowed_module_call_anything(marker: Path) -> None:
    serde = JsonPlusSerializer(allowed_modules=["os", HERE])
    attempts = [
        {"$t": "dataclass", "c": "os:system", "v": {}},  # a function, not a class
        {"$t": "enum", "c": "os:system", "v": f"touch {marker}"},
        {"$t": "namedtuple", "c": "os:system", "v": [f"touch {marker}"]},
        {"$t": "model", "c": f"{HERE}:Point", "v": {}},  # a dataclass, not a model
        {"$t": "enum", "c": f"{HERE}:Point", "v": 1},
        {"$t": "dataclass", "c": f"{HERE}:Evil", "v": {}},  # a class, not a dataclass
        {"$t": "namedtuple", "c": f"{HERE}:Evil", "v": [str(marker)]},
        {"$t": "dataclass", "c": f"{HERE}:Point", "v": {"__class__": "x"}},  # no such field
        {"$t": "dataclass", "c": f"{HERE}:Pair.left", "v": {}},
    ]
    for crafted in attempts:
        with pytest.raises((TypeNotAllowedError, StoreError)):
            serde.loads(b"t" + json.dumps(crafted).encode())
    assert not marker.exists()


def test_a_pickled_value_is_refused_unread_with_a_clear_error(marker: Path) -> None:
    with pytest.raises(PickleNotAllowedError) as caught:
        JsonPlusSerializer().loads(evil_pickle(marker))
    assert caught.value.code == "pickle_not_allowed"
    message = str(caught.value)
    assert "threadloom migrate --rewrite-values" in message
    assert "allow_pickle=True" in message
    assert not marker.exists()


def test_pickle_is_an_explicit_opt_in_that_reads_and_writes_it() -> None:
    opted = JsonPlusSerializer(allow_pickle=True)
    old_row = b"p" + pickle.dumps(("written", {"by": "an earlier version"}), protocol=5)
    assert opted.loads(old_row) == ("written", {"by": "an earlier version"})
    data = opted.dumps(Point(1))  # not allowlisted: pickled, as before
    assert data[:1] == b"p" and opted.loads(data) == Point(1)
    assert opted.dumps((1, 2))[:1] == b"t"  # what typed JSON takes is not pickled


def test_allow_modules_registers_for_every_serializer() -> None:
    name = "tests_serde_registered_pkg"
    assert name not in allowed_modules()
    allow_modules(name)
    assert JsonPlusSerializer().allows(name) and JsonPlusSerializer().allows(f"{name}.sub")
    assert not JsonPlusSerializer().allows(f"{name}x")
    with pytest.raises(ValueError):
        allow_modules("not a module")


def test_encryption_seals_typed_values(serde: JsonPlusSerializer) -> None:
    sealed = EncryptedSerializer(os.urandom(32), inner=serde)
    assert sealed.loads(sealed.dumps(Point(1, (2,)))) == Point(1, (2,))
    default = EncryptedSerializer(os.urandom(32))
    assert default.loads(default.dumps({"at": datetime.date(2020, 1, 1)})) == {
        "at": datetime.date(2020, 1, 1)}


# -- through the engine and the stores -----------------------------------------------------------


class State(TypedDict, total=False):
    value: Any
    step: int


def _graph(store: Any, serde: Any = None) -> Any:
    builder = StateGraph(State)
    builder.add_node("keep", lambda s: {"step": s.get("step", 0) + 1})
    builder.add_edge(START, "keep")
    builder.add_edge("keep", END)
    return builder.compile(checkpointer=store, serde=serde)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Any:
    store = open_store(f"sqlite:///{tmp_path / 'serde.db'}")
    yield store
    store.close()


def test_state_of_allowlisted_types_round_trips_through_a_store(sqlite_store: Any) -> None:
    graph = _graph(sqlite_store, JsonPlusSerializer(allowed_modules=[HERE]))
    config = {"configurable": {"thread_id": "typed"}}
    value = {"point": Point(1, User(name="u")), "when": datetime.datetime(2024, 1, 1),
             "ids": {uuid.UUID(int=7)}, "color": Color.BLUE}
    graph.invoke({"value": value}, config)
    assert graph.get_state(config).values == {"value": value, "step": 1}


def test_an_unregistered_class_fails_the_write_naming_the_field(sqlite_store: Any) -> None:
    graph = _graph(sqlite_store)
    with pytest.raises(TypeNotAllowedError, match="input") as caught:
        graph.invoke({"value": Point(1)}, {"configurable": {"thread_id": "refused"}})
    assert caught.value.code == "type_not_allowed"


def _poison_sqlite(path: Path, marker: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        changed = conn.execute("UPDATE blobs SET data = ? WHERE channel = 'value'",
                               (evil_pickle(marker),)).rowcount
    return changed


def test_a_crafted_pickle_in_a_sqlite_row_does_not_run(tmp_path: Path, sqlite_store: Any,
                                                      marker: Path) -> None:
    graph = _graph(sqlite_store)
    config = {"configurable": {"thread_id": "victim"}}
    graph.invoke({"value": "innocent"}, config)
    assert _poison_sqlite(tmp_path / "serde.db", marker) >= 1
    with pytest.raises(PickleNotAllowedError, match="--rewrite-values"):
        graph.get_state(config)
    with pytest.raises(PickleNotAllowedError):
        graph.invoke(None, config)
    assert not marker.exists()


@pytest.mark.slow
def test_a_crafted_pickle_in_a_postgres_row_does_not_run(postgres_url: str,
                                                        postgres_schema: str,
                                                        marker: Path) -> None:
    import psycopg

    store = open_store(f"{postgres_url}?schema={postgres_schema}")
    try:
        graph = _graph(store)
        config = {"configurable": {"thread_id": "victim"}}
        graph.invoke({"value": "innocent"}, config)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            changed = conn.execute(
                f'UPDATE "{postgres_schema}".blobs SET data = %s WHERE channel = %s',
                (evil_pickle(marker), "value")).rowcount
        assert changed >= 1
        with pytest.raises(PickleNotAllowedError, match="--rewrite-values"):
            graph.get_state(config)
        assert not marker.exists()
    finally:
        store.close()


@pytest.mark.parametrize("new_id", [None, "copy"])
def test_a_crafted_pickle_in_an_imported_thread_does_not_run(tmp_path: Path, sqlite_store: Any,
                                                            marker: Path,
                                                            new_id: str | None) -> None:
    graph = _graph(sqlite_store)
    config = {"configurable": {"thread_id": "exported"}}
    graph.invoke({"value": "innocent"}, config)
    data = json.loads(json.dumps(export_thread(sqlite_store, "exported")))  # as a file holds it
    poisoned = 0
    for checkpoint in data["checkpoints"]:
        for blob in checkpoint["blobs"]:
            if blob["channel"] == "value":
                blob["data"] = base64.b64encode(evil_pickle(marker)).decode()
                poisoned += 1
    assert poisoned >= 1
    target = open_store(f"sqlite:///{tmp_path / 'imported.db'}")
    try:
        thread_id = import_thread(target, data, thread_id=new_id)
        with pytest.raises(PickleNotAllowedError):
            _graph(target).get_state({"configurable": {"thread_id": thread_id}})
    finally:
        target.close()
    assert not marker.exists()


def test_the_classes_a_state_schema_declares_are_allowed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         sqlite_store: Any) -> None:
    (tmp_path / "declared_types.py").write_text(
        "import enum\nfrom dataclasses import dataclass\n\n"
        "class Mood(enum.Enum):\n    OK = 'ok'\n\n"
        "@dataclass\nclass Note:\n    text: str\n    mood: 'Mood'\n")
    (tmp_path / "declared_state.py").write_text(
        "from typing import Annotated, TypedDict\nimport operator\n"
        "from declared_types import Mood, Note\n\n"
        "class NoteState(TypedDict, total=False):\n"
        "    notes: Annotated[list[Note], operator.add]\n    mood: Mood | None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import declared_state  # type: ignore[import-not-found]
    import declared_types  # type: ignore[import-not-found]

    assert not JsonPlusSerializer().allows("declared_types")
    builder = StateGraph(declared_state.NoteState)
    assert JsonPlusSerializer().allows("declared_types")
    builder.add_node("n", lambda s: {"notes": [declared_types.Note("hi", declared_types.Mood.OK)],
                                     "mood": declared_types.Mood.OK})
    builder.add_edge(START, "n")
    builder.add_edge("n", END)
    graph = builder.compile(checkpointer=sqlite_store)
    config = {"configurable": {"thread_id": "declared"}}
    graph.invoke({"notes": []}, config)
    values = graph.get_state(config).values
    assert values == {"notes": [declared_types.Note("hi", declared_types.Mood.OK)],
                      "mood": declared_types.Mood.OK}
    for name in ("declared_state", "declared_types"):
        sys.modules.pop(name, None)
