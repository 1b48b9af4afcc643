"""Encryption at rest: no plaintext in the raw database, clear errors, key rotation."""

from __future__ import annotations

import base64
import operator
import os
import sqlite3
from typing import Annotated, TypedDict

import pytest

from threadloom.checkpoint.crypto import EncryptedSerializer, serializer_from_env
from threadloom.checkpoint.memory import InMemorySaver
from threadloom.checkpoint.serde import JsonPlusSerializer
from threadloom.checkpoint.sqlite import SqliteSaver
from threadloom.errors import DecryptionError, InvalidConfigError
from threadloom.graph import END, START, StateGraph
from threadloom.types import interrupt

SECRET = "patient-4471-diagnosis-zebra"


class State(TypedDict):
    note: str
    log: Annotated[list, operator.add]


def _graph():
    def write(state):
        return {"note": state["note"].upper(), "log": [state["note"]]}

    def review(state):
        answer = interrupt({"please review": state["note"]})
        return {"log": [f"{answer}:{SECRET}"]}

    builder = StateGraph(State)
    builder.add_node("write", write)
    builder.add_node("review", review)
    builder.add_edge(START, "write")
    builder.add_edge("write", "review")
    builder.add_edge("review", END)
    return builder


def _key() -> bytes:
    return os.urandom(32)


def _raw_dump(path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_raw_sqlite_file_holds_no_plaintext_of_the_state(tmp_path, durability):
    from threadloom.types import Command

    path = tmp_path / "enc.db"
    serde = EncryptedSerializer(_key())
    with SqliteSaver.from_conn_string(str(path)) as saver:
        graph = _graph().compile(checkpointer=saver, serde=serde, durability=durability)
        config = {"thread_id": "t", "run_id": "r1"}
        out = graph.invoke({"note": SECRET, "log": []}, config)
        assert out["__interrupt__"][0].value == {"please review": SECRET.upper()}
        final = graph.invoke(Command(resume="ok"), config)
        assert final["log"] == [SECRET, f"ok:{SECRET}"]
        assert graph.get_state(config).values["note"] == SECRET.upper()
        assert graph.get_run("r1").output["note"] == SECRET.upper()
    raw = _raw_dump(path)
    assert SECRET.encode() not in raw
    assert SECRET.upper().encode() not in raw
    assert b"please review" not in raw


def test_memory_store_keeps_only_sealed_values():
    saver = InMemorySaver()
    serde = EncryptedSerializer(_key())
    graph = _graph().compile(checkpointer=saver, serde=serde)
    graph.invoke({"note": SECRET, "log": []}, {"thread_id": "t"})
    record = saver.get_checkpoint("t")
    blobs = saver.get_blobs("t", "", {k: (base, ver) for k, (ver, base) in
                                      record.channels.items()})
    assert blobs and all(b.data[:1] == b"E" for b in blobs)  # envelope version 2
    assert all(SECRET.encode() not in b.data for b in blobs)


def test_wrong_key_is_a_clear_error_not_garbage(tmp_path):
    path = str(tmp_path / "enc.db")
    with SqliteSaver.from_conn_string(path) as saver:
        _graph().compile(checkpointer=saver, serde=EncryptedSerializer(_key())).invoke(
            {"note": SECRET, "log": []}, {"thread_id": "t"})
    with SqliteSaver.from_conn_string(path) as saver:
        other = _graph().compile(checkpointer=saver, serde=EncryptedSerializer(_key()))
        with pytest.raises(DecryptionError, match="not configured"):
            other.get_state({"thread_id": "t"})


def test_altered_data_is_detected():
    serde = EncryptedSerializer(_key())
    sealed = bytearray(serde.dumps({"x": 1}))
    sealed[-1] ^= 0x01
    with pytest.raises(DecryptionError, match="altered"):
        serde.loads(bytes(sealed))


def test_plaintext_is_refused_unless_allowed():
    plain = JsonPlusSerializer().dumps({"x": 1})
    with pytest.raises(DecryptionError, match="unencrypted"):
        EncryptedSerializer(_key()).loads(plain)
    assert EncryptedSerializer(_key(), allow_plaintext=True).loads(plain) == {"x": 1}


def test_key_rotation_reads_old_values_and_writes_with_the_new_key(tmp_path):
    old, new = _key(), _key()
    path = str(tmp_path / "rot.db")
    with SqliteSaver.from_conn_string(path) as saver:
        _graph().compile(checkpointer=saver, serde=EncryptedSerializer(old)).invoke(
            {"note": "first", "log": []}, {"thread_id": "t"})
    rotated = EncryptedSerializer(new, old)
    with SqliteSaver.from_conn_string(path) as saver:
        graph = _graph().compile(checkpointer=saver, serde=rotated)
        assert graph.get_state({"thread_id": "t"}).values["note"] == "FIRST"
        graph.invoke({"note": "second", "log": []}, {"thread_id": "t2"})
    # the new thread is readable with the new key alone; the old one needs the old key
    with SqliteSaver.from_conn_string(path) as saver:
        only_new = _graph().compile(checkpointer=saver, serde=EncryptedSerializer(new))
        assert only_new.get_state({"thread_id": "t2"}).values["note"] == "SECOND"
        with pytest.raises(DecryptionError):
            only_new.get_state({"thread_id": "t"})


def test_key_from_environment():
    key = _key()
    env = {"THREADLOOM_ENCRYPTION_KEY": base64.b64encode(key).decode()}
    serde = serializer_from_env(env)
    assert isinstance(serde, EncryptedSerializer)
    assert EncryptedSerializer(key).loads(serde.dumps([1, 2])) == [1, 2]
    assert isinstance(serializer_from_env({}), JsonPlusSerializer)
    with pytest.raises(InvalidConfigError, match="32 bytes"):
        serializer_from_env({"THREADLOOM_ENCRYPTION_KEY": base64.b64encode(b"short").decode()})


@pytest.mark.postgres
def test_raw_postgres_tables_hold_no_plaintext_of_the_state(postgres_url, postgres_schema):
    import psycopg

    from threadloom.checkpoint.postgres import PostgresStore
    from threadloom.types import Command

    store = PostgresStore(postgres_url, schema=postgres_schema)
    store.setup()
    try:
        graph = _graph().compile(checkpointer=store, serde=EncryptedSerializer(_key()),
                                 durability="sync")
        config = {"thread_id": "t", "run_id": "r1"}
        graph.invoke({"note": SECRET, "log": []}, config)
        graph.invoke(Command(resume="ok"), config)
        assert graph.get_state(config).values["note"] == SECRET.upper()
    finally:
        store.close()
    with psycopg.connect(postgres_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (postgres_schema,))]
        dump = b""
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{postgres_schema}"."{table}"'):
                dump += repr(row).encode()
    assert tables and dump
    assert SECRET.encode() not in dump and SECRET.upper().encode() not in dump
