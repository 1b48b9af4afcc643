"""Text with NUL characters in the stores: what SQLite and the memory store keep exactly,
Postgres (whose text and jsonb cannot hold NUL) stores with each NUL as the four characters
``\\x00`` where the text is free (errors, run metadata), and refuses at once, without
retrying, where it is an id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from threadloom.checkpoint._rows import escape_nul
from threadloom.checkpoint.base import Attempt, Commit, Store
from threadloom.checkpoint.memory import MemoryStore
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.errors import StoreError, StoreUnavailableError
from threadloom.testing.conformance import execution, run, step

TEXT = "bad\x00byte"
ESCAPED = "bad\\x00byte"


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        s: Any = SqliteStore(tmp_path / "t.db")
    else:
        from threadloom.checkpoint.postgres import PostgresStore

        url = request.getfixturevalue("postgres_url")
        s = PostgresStore(url, schema=request.getfixturevalue("postgres_schema"))
    s.setup()
    yield s
    s.close()


def test_errors_and_metadata_holding_nul_are_stored(store: Store) -> None:
    postgres = type(store).__name__ == "PostgresStore"
    metadata = {"note": TEXT, TEXT: [TEXT, {"deep": TEXT}, 1, None]}
    ex = execution("e1", "r1", "t1", status="FAILED", error=f"ValueError: {TEXT}",
                   attempts=(Attempt(1, 1.0, 2.0, f"ValueError: {TEXT}"),))  # fmt: skip
    store.commit([Commit("t1", runs=[run("r1", "t1", status="failed",
                                         error=f"ValueError: {TEXT}", metadata=metadata)],
                         executions=[ex])])  # fmt: skip

    got = store.get_run("r1")
    assert got is not None
    expected = escape_nul(metadata) if postgres else metadata
    assert got.error == f"ValueError: {ESCAPED if postgres else TEXT}"
    assert got.metadata == expected
    (got_ex,) = store.list_executions(run_id="r1")
    assert got_ex.error == f"ValueError: {ESCAPED if postgres else TEXT}"
    assert [a.error for a in got_ex.attempts] == [f"ValueError: {TEXT}"]  # JSON text: exact


def test_text_without_nul_is_stored_as_it_is(store: Store) -> None:
    tricky = "a \\x00 literal, a \\u0000 literal, \\\\ and \u2400"
    store.commit([Commit("t1", runs=[run("r1", "t1", error=tricky, metadata={"k": tricky})])])
    got = store.get_run("r1")
    assert got is not None and got.error == tricky and got.metadata == {"k": tricky}


def test_escape_nul_reaches_every_string() -> None:
    assert escape_nul({"a\x00": ["\x00", ("t",), {"b": "c\x00d"}], "n": 1}) == {
        "a\\x00": ["\\x00", ("t",), {"b": "c\\x00d"}],
        "n": 1,
    }


@pytest.mark.postgres
def test_postgres_refuses_an_id_holding_nul_at_once(postgres_url: str, postgres_schema: str):
    from threadloom.checkpoint.postgres import PostgresStore

    store = PostgresStore(postgres_url, schema=postgres_schema, max_retries=8)
    store.setup()
    try:
        for commits in ([step("t\x00", 0)], [step("t1", 0), step("t\x00", 0)]):  # 1, pipelined
            with pytest.raises(StoreError, match="NUL") as info:
                store.commit(commits)
            assert not isinstance(info.value, StoreUnavailableError)  # never retried
        assert store.get_checkpoint("t1") is None  # the batch was one transaction
        store.commit([step("t1", 0)])  # the store works on
        assert store.get_checkpoint("t1") is not None
    finally:
        store.close()
