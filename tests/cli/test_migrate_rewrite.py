"""``threadloom migrate --rewrite-values``: values earlier versions pickled are re-encoded in
the current format, on SQLite and Postgres, and read afterwards without the pickle opt-in."""

from __future__ import annotations

import datetime
import os
import pickle
import sqlite3
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pytest

from threadloom.checkpoint import open_store
from threadloom.checkpoint.rewrite import VALUE_COLUMNS, rewrite_values
from threadloom.checkpoint.serde import JsonPlusSerializer, _is_plain
from threadloom.cli import main
from threadloom.errors import PickleNotAllowedError
from threadloom.graph import END, START, StateGraph
from threadloom.types import Command, interrupt


@dataclass
class Point:
    x: int
    y: int


class State(TypedDict, total=False):
    value: Any
    answer: Any


class EarlierDefault(JsonPlusSerializer):
    """What the default serializer wrote before: JSON for plain data, pickle for the rest."""

    def dumps(self, value: Any) -> bytes:
        if value is None or _is_plain(value):
            return super().dumps(value)
        return b"p" + pickle.dumps(value, protocol=5)


def _builder() -> StateGraph:
    def ask(state: State) -> dict[str, Any]:
        return {"answer": interrupt(("question", state["value"]))}

    builder = StateGraph(State)
    builder.add_node("shape", lambda s: {"value": (s["value"], datetime.date(2020, 1, 2))})
    builder.add_node("ask", ask)
    builder.add_edge(START, "shape")
    builder.add_edge("shape", "ask")
    builder.add_edge("ask", END)
    return builder


DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONFIG = {"configurable": {"thread_id": "old-thread"}}


def _write_earlier_rows(url: str, value: Any) -> None:
    """A thread as an earlier version left it: interrupted, its values pickled."""
    store = open_store(url)
    try:
        graph = _builder().compile(checkpointer=store, serde=EarlierDefault(allow_pickle=True))
        graph.invoke({"value": value}, CONFIG)
    finally:
        store.close()


def _pickled(url: str, schema: str | None) -> dict[str, int]:
    """``table.column`` -> rows whose value is a pickle, read with a connection of its own."""
    counts: dict[str, int] = {}
    if schema is None:
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            for table, columns in VALUE_COLUMNS:
                for column in columns:
                    counts[f"{table}.{column}"] = conn.execute(
                        f"SELECT count(*) FROM {table} WHERE substr({column}, 1, 1) = X'70'"
                    ).fetchone()[0]
        return counts
    import psycopg

    with psycopg.connect(url.partition("?")[0], autocommit=True) as pg:
        for table, columns in VALUE_COLUMNS:
            for column in columns:
                counts[f"{table}.{column}"] = pg.execute(
                    f'SELECT count(*) FROM "{schema}".{table}'
                    f" WHERE substring({column} from 1 for 1) = %s", (b"p",)).fetchone()[0]
    return counts


def _config(tmp_path: Path, modules: list[str], db: str | None = None) -> Path:
    (tmp_path / "app_graph.py").write_text(textwrap.dedent("""
        from threadloom.graph import END, START, StateGraph
        from typing import TypedDict

        class S(TypedDict):
            x: int

        builder = StateGraph(S)
        builder.add_node("n", lambda s: {"x": 1})
        builder.add_edge(START, "n")
        builder.add_edge("n", END)
        graph = builder.compile()
    """))
    path = tmp_path / "threadloom.toml"
    head = f'db = "{db}"\n' if db else ""
    path.write_text(head + '[graphs]\napp = "./app_graph.py:graph"\n\n[serde]\n'
                    + f"allowed_modules = {modules!r}\n".replace("'", '"'))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """A store URL, and its Postgres schema (``None`` on SQLite)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}", None
        return
    url = os.environ.get("THREADLOOM_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"THREADLOOM_REQUIRE_SERVICES=1 but no Postgres at {url}: {exc}")
        pytest.skip(f"no Postgres at {url}: {exc}")
    schema = f"tl_test_{uuid.uuid4().hex[:16]}"
    try:
        yield f"{url}?schema={schema}", schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_rewrite_makes_earlier_pickled_rows_readable_without_pickle(
    db: tuple[str, str | None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, schema = db
    value = {"point": Point(1, 2), "id": uuid.UUID(int=5), "pair": (1, "a")}
    _write_earlier_rows(url, value)
    before = _pickled(url, schema)
    for where in ("checkpoints.metadata", "blobs.data", "writes.data", "runs.input",
                  "executions.outputs"):
        assert before[where] > 0, where

    allowed = JsonPlusSerializer(allowed_modules=[__name__])
    store = open_store(url)
    try:
        with pytest.raises(PickleNotAllowedError):  # without the opt-in: a clear error
            _builder().compile(checkpointer=store, serde=allowed).get_state(CONFIG)
        opted = JsonPlusSerializer(allowed_modules=[__name__], allow_pickle=True)
        expected = _builder().compile(checkpointer=store, serde=opted).get_state(CONFIG).values
        assert expected["value"] == (value, datetime.date(2020, 1, 2))
    finally:
        store.close()

    config = _config(tmp_path, [__name__])
    code = main(["migrate", "--rewrite-values", "--db", url, "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"rewrote {sum(before.values())} pickled values" in out
    assert all(n == 0 for n in _pickled(url, schema).values())

    store = open_store(url)
    try:
        graph = _builder().compile(checkpointer=store, serde=allowed)
        assert graph.get_state(CONFIG).values == expected
        done = graph.invoke(Command(resume=("yes", Point(3, 4))), CONFIG)
        assert done["answer"] == ("yes", Point(3, 4))
        run = store.list_runs(thread_id="old-thread")[-1]
        assert allowed.loads(run.input) == {"value": value}
    finally:
        store.close()
    again = _config(tmp_path, [__name__], db=url)  # the store named by the file
    assert main(["migrate", "--rewrite-values", "--config", str(again)]) == 0
    assert "rewrote 0 pickled values" in capsys.readouterr().out


def test_a_value_of_a_module_not_allowed_stops_the_rewrite_and_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "unlisted_types.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass\nclass Secret:\n    x: int\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import unlisted_types  # type: ignore[import-not-found]

    url = f"sqlite:///{tmp_path / 'old.db'}"
    _write_earlier_rows(url, unlisted_types.Secret(1))
    before = _pickled(url, None)
    code = main(["migrate", "--rewrite-values", "--db", url,
                 "--config", str(_config(tmp_path, []))])
    err = capsys.readouterr().err
    assert code == 1
    assert "unlisted_types" in err and "allowed_modules" in err
    assert _pickled(url, None) == before
    store = open_store(url)
    try:
        opted = JsonPlusSerializer(allow_pickle=True)
        state = _builder().compile(checkpointer=store, serde=opted).get_state(CONFIG)
        assert state.values["value"][0] == unlisted_types.Secret(1)
    finally:
        store.close()
    sys.modules.pop("unlisted_types", None)


def test_rewrite_values_leaves_encrypted_values_sealed_without_a_key(tmp_path: Path) -> None:
    from threadloom.checkpoint.crypto import EncryptedSerializer

    store = open_store(f"sqlite:///{tmp_path / 'sealed.db'}")
    try:
        graph = _builder().compile(checkpointer=store, serde=EncryptedSerializer(os.urandom(32)))
        graph.invoke({"value": 1}, CONFIG)
        report = rewrite_values(store)
        assert report.total == 0 and report.encrypted > 0
    finally:
        store.close()


def _sealed_counts(url: str) -> dict[str, int]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return {f"{t}.{c}": conn.execute(
            f"SELECT count(*) FROM {t} WHERE substr({c}, 1, 1) IN (X'65', X'45')").fetchone()[0]
            for t, cs in VALUE_COLUMNS for c in cs}


def test_with_the_key_pickles_inside_encrypted_values_are_rewritten(
    db: tuple[str, str | None], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    from threadloom.checkpoint.crypto import EncryptedSerializer
    from threadloom.errors import DecryptionError

    url, schema = db
    key = os.urandom(32)
    value = {"point": Point(5, 6), "pair": (1, "a")}
    store = open_store(url)
    try:
        earlier = EncryptedSerializer(key, inner=EarlierDefault(allow_pickle=True))
        _builder().compile(checkpointer=store, serde=earlier).invoke({"value": value}, CONFIG)
        plain = EncryptedSerializer(key, inner=JsonPlusSerializer(allowed_modules=[__name__]))
        with pytest.raises(PickleNotAllowedError):
            _builder().compile(checkpointer=store, serde=plain).get_state(CONFIG)
        with pytest.raises(DecryptionError):  # a wrong key stops it, nothing changes
            rewrite_values(store, serde=EncryptedSerializer(os.urandom(32)), batch=2)
        with pytest.raises(PickleNotAllowedError):
            _builder().compile(checkpointer=store, serde=plain).get_state(CONFIG)
    finally:
        store.close()

    monkeypatch.setenv("THREADLOOM_ENCRYPTION_KEY", base64.b64encode(key).decode())
    config = _config(tmp_path, [__name__])
    assert main(["migrate", "--rewrite-values", "--db", url, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "rewrote 0 pickled values" not in out and "encrypted" not in out
    if schema is None:
        assert all(n == 0 for n in _pickled(url, schema).values())
        assert sum(_sealed_counts(url).values()) > 0  # still sealed
    store = open_store(url)
    try:
        graph = _builder().compile(checkpointer=store, serde=plain)
        assert graph.get_state(CONFIG).values["value"] == (value, datetime.date(2020, 1, 2))
        assert graph.invoke(Command(resume="ok"), CONFIG)["answer"] == "ok"
        assert rewrite_values(store, serde=plain, batch=2).total == 0  # nothing left
    finally:
        store.close()
