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


def _raw_files(path) -> bytes:
    """The raw bytes of the SQLite database and of its write-ahead log, as they are on disk
    (no checkpoint first: what sits only in the log must be scanned too)."""
    raw = b""
    for name in (str(path), f"{path}-wal", f"{path}-journal"):
        if os.path.exists(name):
            with open(name, "rb") as f:
                raw += f.read()
    return raw


def _assert_no_plaintext(raw: bytes) -> None:
    assert raw
    assert SECRET.encode() not in raw
    assert SECRET.upper().encode() not in raw
    assert b"please review" not in raw


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
        # scanned before anything is read back: a value stored in clear must be found in the
        # files, not only by failing to decrypt
        _assert_no_plaintext(_raw_files(path))
        assert graph.get_state(config).values["note"] == SECRET.upper()
        assert graph.get_run("r1").output["note"] == SECRET.upper()
    _assert_no_plaintext(_raw_files(path))


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


# -- values are bound to their row -----------------------------------------------------------


class _Backend:
    """A store of one backend, reopened at will, and raw SQL on its tables."""

    def __init__(self, kind: str, tmp_path, postgres_url: str | None, schema: str | None):
        self.kind = kind
        self.path = str(tmp_path / "bound.db")
        self.url = postgres_url
        self.schema = schema

    def open(self):
        if self.kind == "sqlite":
            store = SqliteSaver(self.path)
        else:
            from threadloom.checkpoint.postgres import PostgresStore

            store = PostgresStore(self.url, schema=self.schema)
        store.setup()
        return store

    def table(self, name: str) -> str:
        return name if self.kind == "sqlite" else f'"{self.schema}".{name}'

    def sql(self, statement: str) -> int:
        """Run ``statement`` (with ``{blobs}``-style table names) and commit; rows changed."""
        statement = statement.format(**{t: self.table(t) for t in (
            "blobs", "writes", "runs", "executions", "checkpoints")})
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            try:
                changed = conn.execute(statement).rowcount
                conn.commit()
            finally:
                conn.close()
            return changed
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(statement).rowcount


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path):
    if request.param == "sqlite":
        return _Backend("sqlite", tmp_path, None, None)
    url = request.getfixturevalue("postgres_url")
    return _Backend("postgres", tmp_path, url, request.getfixturevalue("postgres_schema"))


def _two_paused_threads(backend, serde):
    """Threads ``a`` (run ``ra``) and ``b`` (run ``rb``) of the same graph, each paused at its
    review with its own note; then the run ``ra2`` finishes on thread ``c``."""
    store = backend.open()
    try:
        graph = _graph().compile(checkpointer=store, serde=serde, durability="sync")
        graph.invoke({"note": "alpha", "log": []}, {"thread_id": "a", "run_id": "ra"})
        graph.invoke({"note": "bravo", "log": []}, {"thread_id": "b", "run_id": "rb"})
    finally:
        store.close()


def _read(backend, serde, call):
    store = backend.open()
    try:
        return call(_graph().compile(checkpointer=store, serde=serde, durability="sync"))
    finally:
        store.close()


def test_a_channel_blob_copied_to_another_thread_does_not_decrypt(backend):
    serde = EncryptedSerializer(_key())
    _two_paused_threads(backend, serde)
    assert _read(backend, serde, lambda g: g.get_state({"thread_id": "b"}).values["note"]) \
        == "BRAVO"
    moved = backend.sql(
        "UPDATE {blobs} SET data = (SELECT o.data FROM {blobs} o WHERE o.thread_id = 'a' AND "
        "o.channel = {blobs}.channel AND o.version = {blobs}.version) "
        "WHERE thread_id = 'b' AND channel = 'note'")
    assert moved >= 1
    with pytest.raises(DecryptionError, match="another row"):
        _read(backend, serde, lambda g: g.get_state({"thread_id": "b"}))


def test_a_blob_copied_to_another_version_of_its_channel_does_not_decrypt(backend):
    serde = EncryptedSerializer(_key())
    _two_paused_threads(backend, serde)
    # the note's first value (the input) written over its latest one, in the same thread
    moved = backend.sql(
        "UPDATE {blobs} SET data = (SELECT o.data FROM {blobs} o WHERE o.thread_id = 'a' AND "
        "o.channel = 'note' ORDER BY o.version LIMIT 1) WHERE thread_id = 'a' AND "
        "channel = 'note' AND version = (SELECT max(version) FROM {blobs} m "
        "WHERE m.thread_id = 'a' AND m.channel = 'note')")
    assert moved == 1
    with pytest.raises(DecryptionError):
        _read(backend, serde, lambda g: g.get_state({"thread_id": "a"}))


def test_a_pending_write_copied_to_another_thread_does_not_decrypt(backend):
    serde = EncryptedSerializer(_key())
    _two_paused_threads(backend, serde)
    pending = _read(backend, serde, lambda g: g.get_state({"thread_id": "b"}).interrupts)
    assert [i.value for i in pending] == [{"please review": "BRAVO"}]
    moved = backend.sql(
        "UPDATE {writes} SET data = (SELECT o.data FROM {writes} o WHERE o.thread_id = 'a' AND "
        "o.channel = '__interrupt__') WHERE thread_id = 'b' AND channel = '__interrupt__'")
    assert moved == 1
    with pytest.raises(DecryptionError):
        _read(backend, serde, lambda g: g.get_state({"thread_id": "b"}))


def test_a_run_output_copied_to_another_run_does_not_decrypt(backend):
    from threadloom.types import Command

    serde = EncryptedSerializer(_key())
    _two_paused_threads(backend, serde)

    def finish(graph):
        graph.invoke(Command(resume="ok"), {"thread_id": "a"})
        graph.invoke(Command(resume="ok"), {"thread_id": "b"})
        return graph.get_run("rb").output["note"]

    assert _read(backend, serde, finish) == "BRAVO"
    for column in ("output", "input"):
        moved = backend.sql(
            f"UPDATE {{runs}} SET {column} = (SELECT o.{column} FROM {{runs}} o "
            f"WHERE o.run_id = 'ra') WHERE run_id = 'rb'")
        assert moved == 1
    with pytest.raises(DecryptionError):
        _read(backend, serde, lambda g: g.get_run("rb"))


def test_an_execution_output_copied_to_another_execution_does_not_decrypt(backend):
    serde = EncryptedSerializer(_key())
    _two_paused_threads(backend, serde)
    outputs = _read(backend, serde, lambda g: [e.outputs for e in g.list_executions("rb")])
    assert {"note": "BRAVO", "log": ["bravo"]} in outputs
    moved = backend.sql(
        "UPDATE {executions} SET outputs = (SELECT o.outputs FROM {executions} o "
        "WHERE o.run_id = 'ra' AND o.node = 'write') WHERE run_id = 'rb' AND node = 'write'")
    assert moved == 1
    with pytest.raises(DecryptionError):
        _read(backend, serde, lambda g: g.list_executions("rb"))


class _VersionOneSerializer:
    """Writes what EncryptedSerializer wrote before values were bound to their row: the
    ``e`` envelope, sealed with the key id alone as associated data."""

    def __init__(self, key: bytes) -> None:
        import hashlib

        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aes = AESGCM(key)
        self._key_id = hashlib.sha256(key).digest()[:4]
        self._inner = JsonPlusSerializer()

    def dumps(self, value):
        nonce = os.urandom(12)
        sealed = self._aes.encrypt(nonce, self._inner.dumps(value), self._key_id)
        return b"e" + self._key_id + nonce + sealed

    def loads(self, data):
        assert data[:1] == b"e"
        return self._inner.loads(self._aes.decrypt(data[5:17], data[17:], self._key_id))


def test_values_sealed_before_binding_still_decrypt_and_the_run_goes_on(backend):
    from threadloom.types import Command

    key = _key()
    _two_paused_threads(backend, _VersionOneSerializer(key))
    serde = EncryptedSerializer(key)

    def resume(graph):
        snap = graph.get_state({"thread_id": "a"})
        assert snap.values["note"] == "ALPHA"
        assert [i.value for i in snap.interrupts] == [{"please review": "ALPHA"}]
        assert graph.get_run("ra").input == {"note": "alpha", "log": []}
        assert {"note": "ALPHA", "log": ["alpha"]} in [
            e.outputs for e in graph.list_executions("ra")]
        return graph.invoke(Command(resume="ok"), {"thread_id": "a"})

    assert _read(backend, serde, resume)["log"] == ["alpha", f"ok:{SECRET}"]
    assert _read(backend, serde, lambda g: g.get_run("ra").output["note"]) == "ALPHA"
    # once no version-1 value is left they can be refused
    strict = EncryptedSerializer(key, allow_unbound=False)
    with pytest.raises(DecryptionError, match="version 1"):
        _read(backend, strict, lambda g: g.get_state({"thread_id": "b"}))


def test_an_encrypted_store_opened_without_a_key_says_so(backend):
    _two_paused_threads(backend, EncryptedSerializer(_key()))
    for call in (lambda g: g.get_state({"thread_id": "a"}), lambda g: g.get_run("ra")):
        with pytest.raises(DecryptionError, match="encrypted.*no encryption key"):
            _read(backend, JsonPlusSerializer(), call)


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_subgraph_checkpoints_are_sealed_and_resume_inside_the_subgraph(tmp_path, durability):
    from collections import Counter

    from threadloom.func import task
    from threadloom.types import Command

    calls: Counter[str] = Counter()

    @task
    def lookup(note: str) -> str:
        calls["lookup"] += 1
        return f"{note}:{SECRET}"

    def s1(state):
        calls["s1"] += 1
        return {"log": [lookup(state["note"]).result()]}

    def s2(state):
        calls["s2"] += 1
        return {"log": [interrupt({"please review": state["note"]})]}

    sub = StateGraph(State)
    sub.add_node("s1", s1)
    sub.add_node("s2", s2)
    sub.add_edge(START, "s1")
    sub.add_edge("s1", "s2")
    builder = StateGraph(State)
    builder.add_node("sub", sub.compile())
    builder.add_edge(START, "sub")
    path = tmp_path / "sub.db"
    with SqliteSaver.from_conn_string(str(path)) as saver:
        graph = builder.compile(checkpointer=saver, serde=EncryptedSerializer(_key()),
                                durability=durability)
        config = {"thread_id": "t"}
        out = graph.invoke({"note": "n", "log": []}, config)
        assert out["__interrupt__"][0].value == {"please review": "n"}
        _assert_no_plaintext(_raw_files(path))
        final = graph.invoke(Command(resume="ok"), config)
        assert final["log"] == [f"n:{SECRET}", "ok"]
        assert calls == {"lookup": 1, "s1": 1, "s2": 2}
