"""Re-encode the values earlier versions stored with pickle, so they read without it.

threadloom used to pickle every value JSON could not hold; the default serializer now refuses
pickled values unread (:class:`~threadloom.errors.PickleNotAllowedError`, see
:mod:`threadloom.checkpoint.serde`). :func:`rewrite_values` (``threadloom migrate
--rewrite-values``) finds every pickled value of a SQLite or Postgres store and writes it again
in the new format, in place, in transactions of ``batch`` rows.

The columns that hold serialized values are :data:`VALUE_COLUMNS`: checkpoint metadata and
frontier, channel blobs, pending writes, run input and output, execution inputs and outputs.
The runtime's own tables hold JSON the runtime wrote itself, never a serialized value (queued
runs' payloads are the API request's JSON; run events are JSON; thread metadata is JSON), so
there is nothing in them to rewrite.

Rewriting unpickles each value: run it on a store you trust (the one your earlier version
wrote), before starting processes that no longer read pickle. A value of a type the new format
does not take (a class from a module not allowed, a type outside the allowlist) stops the
rewrite with :class:`~threadloom.errors.TypeNotAllowedError` or
:class:`~threadloom.errors.SerializationError` naming the row; the batches before it are
committed, that batch is not, and nothing is lost: allow the module (or change the type) and
run it again.

Encrypted values hide their format: given the store's
:class:`~threadloom.checkpoint.crypto.EncryptedSerializer` (the command uses
``THREADLOOM_ENCRYPTION_KEY``), every sealed value is opened at its location, and those that
hold a pickle are sealed again, in the new format, with the current key. Without a key they
are left as they are and counted (their envelope authenticates them: a row written by someone
without the key does not open, so it cannot carry a pickle in).

Example:
    >>> report = rewrite_values(store, serde=JsonPlusSerializer(allowed_modules=["my_app"]))
    >>> report.total
    42
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from threadloom.checkpoint.base import Store
from threadloom.checkpoint.serde import ENCRYPTED_TAGS, JsonPlusSerializer, Serializer
from threadloom.errors import (
    InvalidConfigError,
    PickleNotAllowedError,
    SerializationError,
    StoreError,
    ThreadloomError,
)

__all__ = ["VALUE_COLUMNS", "RewriteReport", "rewrite_values"]

VALUE_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("checkpoints", ("metadata", "frontier")),
    ("blobs", ("data",)),
    ("writes", ("data",)),
    ("runs", ("input", "output")),
    ("executions", ("inputs", "outputs")),
)
"""Every table and column of a store that holds values made by a serializer."""

_PICKLE = b"p"


@dataclass(slots=True)
class RewriteReport:
    """What :func:`rewrite_values` did.

    Attributes:
        rewritten: ``"table.column"`` -> pickled values re-encoded there.
        encrypted: values left sealed because no key was given (not opened, so not
            counted as pickled).
    """

    rewritten: dict[str, int] = field(default_factory=dict)
    encrypted: int = 0

    @property
    def total(self) -> int:
        """Values re-encoded in all."""
        return sum(self.rewritten.values())


class _Dialect(Protocol):
    """How one backend lists a table's key, runs a transaction and spells two statements."""

    def key(self, table: str) -> list[str]: ...

    def transaction(self, fn: Callable[[Any], Any]) -> Any: ...

    def select_tagged(self, table: str, column: str, key: Sequence[str], tags: int,
                      limit: int | None) -> str: ...

    def update(self, table: str, column: str, key: Sequence[str]) -> str: ...

    def select_sealed(self, table: str, column: str, columns: Sequence[str],
                      key: Sequence[str], batch: int, after: bool) -> str: ...


class _Sqlite:
    def __init__(self, store: Any) -> None:
        self.store = store

    def key(self, table: str) -> list[str]:
        rows = self.store._run(
            lambda c: c.execute(f"PRAGMA table_info({table})").fetchall(), False)
        return [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]

    def transaction(self, fn: Callable[[Any], Any]) -> Any:
        return self.store._run(fn, True)

    def select_tagged(self, table: str, column: str, key: Sequence[str], tags: int,
                      limit: int | None) -> str:
        where = " OR ".join(["substr({c}, 1, 1) = ?"] * tags).format(c=column)
        end = f" LIMIT {limit}" if limit else ""
        return f"SELECT {', '.join(key)}, {column} FROM {table} WHERE {where}{end}"

    def update(self, table: str, column: str, key: Sequence[str]) -> str:
        match = " AND ".join(f"{k} = ?" for k in key)
        return f"UPDATE {table} SET {column} = ? WHERE {match}"

    def select_sealed(self, table: str, column: str, columns: Sequence[str],
                      key: Sequence[str], batch: int, after: bool) -> str:
        tagged = " OR ".join([f"substr({column}, 1, 1) = ?"] * len(ENCRYPTED_TAGS))
        cursor = (f" AND ({', '.join(key)}) > ({', '.join('?' * len(key))})"
                  if after else "")
        return (f"SELECT {', '.join(columns)}, {column} FROM {table} WHERE ({tagged}){cursor}"
                f" ORDER BY {', '.join(key)} LIMIT {batch}")


class _Postgres:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.schema: str = store._sql.schema  # quoted

    def key(self, table: str) -> list[str]:
        sql = (
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)"
        )
        name = f"{self.schema}.{table}"
        rows = self.store._run(lambda c: c.execute(sql, (name,)).fetchall(), "rewrite")
        return [r[0] for r in rows]

    def transaction(self, fn: Callable[[Any], Any]) -> Any:
        def run(conn: Any) -> Any:
            with conn.transaction():
                return fn(conn)

        return self.store._run(run, "rewrite")

    def select_tagged(self, table: str, column: str, key: Sequence[str], tags: int,
                      limit: int | None) -> str:
        where = " OR ".join([f"substring({column} from 1 for 1) = %s"] * tags)
        end = f" LIMIT {limit}" if limit else ""
        return f"SELECT {', '.join(key)}, {column} FROM {self.schema}.{table} WHERE {where}{end}"

    def update(self, table: str, column: str, key: Sequence[str]) -> str:
        match = " AND ".join(f"{k} = %s" for k in key)
        return f"UPDATE {self.schema}.{table} SET {column} = %s WHERE {match}"

    def select_sealed(self, table: str, column: str, columns: Sequence[str],
                      key: Sequence[str], batch: int, after: bool) -> str:
        tagged = " OR ".join([f"substring({column} from 1 for 1) = %s"] * len(ENCRYPTED_TAGS))
        cursor = (f" AND ({', '.join(key)}) > ({', '.join(['%s'] * len(key))})"
                  if after else "")
        return (f"SELECT {', '.join(columns)}, {column} FROM {self.schema}.{table}"
                f" WHERE ({tagged}){cursor} ORDER BY {', '.join(key)} LIMIT {batch}")


def _dialect(store: Store) -> _Dialect:
    from threadloom.checkpoint.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return _Sqlite(store)
    try:
        from threadloom.checkpoint.postgres import PostgresStore
    except ImportError:  # pragma: no cover - without the postgres extra
        PostgresStore = None  # type: ignore[assignment,misc]  # noqa: N806
    if PostgresStore is not None and isinstance(store, PostgresStore):
        return _Postgres(store)
    raise InvalidConfigError(
        f"rewrite_values works on SQLite and Postgres stores, not on {type(store).__name__} "
        "(an in-memory store is not kept between versions)")


def rewrite_values(store: Store, *, serde: Serializer | None = None,
                   batch: int = 500) -> RewriteReport:
    """Re-encode every pickled value of ``store`` (see the module docstring).

    Args:
        store: a SQLite or Postgres store (its schema is migrated first).
        serde: the store's serializer: a :class:`JsonPlusSerializer`, whose
            ``allowed_modules`` decide which classes may be stored (default: one with the
            modules :func:`~threadloom.checkpoint.serde.allow_modules` registered), or an
            :class:`~threadloom.checkpoint.crypto.EncryptedSerializer` around one, whose keys
            open the sealed values so that pickles inside them are rewritten (and sealed
            again, with the current key) too. No pickle is written, whatever ``allow_pickle``
            says.
        batch: rows per transaction.

    Raises:
        TypeNotAllowedError: a value holds a class from a module that is not allowed.
        SerializationError: a value holds a type the new format does not take.
        DecryptionError: a sealed value does not open with the keys given.
        InvalidConfigError: ``store`` is not a SQLite or Postgres store.
    """
    from threadloom.checkpoint.crypto import EncryptedSerializer

    inner = serde.inner if isinstance(serde, EncryptedSerializer) else serde
    modules = inner.allowed_modules if isinstance(inner, JsonPlusSerializer) else frozenset()
    reader = JsonPlusSerializer(allowed_modules=modules, allow_pickle=True)
    writer = JsonPlusSerializer(allowed_modules=modules)
    sealed: tuple[Any, Any] | None = None
    if isinstance(serde, EncryptedSerializer):
        opener, sealer = copy.copy(serde), copy.copy(serde)  # the same keys, other inners
        opener.inner, sealer.inner = reader, writer
        sealed = (opener, sealer)
    dialect = _dialect(store)
    store.setup()
    report = RewriteReport()
    for table, columns in VALUE_COLUMNS:
        key = dialect.key(table)
        if not key:
            raise StoreError(f"table {table} has no primary key; is this a threadloom store?")
        for column in columns:
            where = f"{table}.{column}"
            done = _rewrite_column(dialect, table, column, key, reader, writer, batch)
            if sealed is not None:
                done += _reseal_column(dialect, table, column, key, *sealed, batch)
            else:
                report.encrypted += _count_sealed(dialect, table, column, key)
            report.rewritten[where] = done
    return report


def _location(table: str, column: str, row: dict[str, Any]) -> bytes:
    """Where the value of ``table.column`` in ``row`` is stored, as the engine binds it."""
    from threadloom.checkpoint import crypto

    ns, thread = row["namespace"], row["thread_id"]
    if table == "checkpoints":
        return crypto.checkpoint_location(ns, thread, row["checkpoint_ns"], row["seq"], column)
    if table == "blobs":
        return crypto.blob_location(ns, thread, row["checkpoint_ns"], row["channel"],
                                    row["version"])
    if table == "writes":
        return crypto.write_location(ns, thread, row["checkpoint_ns"], row["seq"],
                                     row["task_id"], row["channel"], row["idx"])
    if table == "runs":
        return crypto.run_location(ns, thread, row["run_id"], column)
    return crypto.execution_location(ns, thread, row["run_id"], row["id"], column)


_LOCATED_BY: dict[str, tuple[str, ...]] = {
    "checkpoints": ("namespace", "thread_id", "checkpoint_ns", "seq"),
    "blobs": ("namespace", "thread_id", "checkpoint_ns", "channel", "version"),
    "writes": ("namespace", "thread_id", "checkpoint_ns", "seq", "task_id", "channel", "idx"),
    "runs": ("namespace", "thread_id", "run_id"),
    "executions": ("namespace", "thread_id", "run_id", "id"),
}


def _reseal_column(dialect: _Dialect, table: str, column: str, key: list[str],
                   opener: Any, sealer: Any, batch: int) -> int:
    """Open every sealed value of ``table.column``; seal again, in the new format, those that
    hold a pickle. Walks the key in order (the rows that hold no pickle stay sealed as they
    are, so they keep matching)."""
    columns = list(dict.fromkeys([*key, *_LOCATED_BY[table]]))
    update = dialect.update(table, column, key)
    cursor: list[Any] = []
    done: int = 0

    def one_batch(conn: Any) -> tuple[int, int, list[Any]]:
        """Rows seen, rows rewritten, the key of the last row (kept outside: the store may
        run this again after a busy commit)."""
        sql = dialect.select_sealed(table, column, columns, key, batch, bool(cursor))
        rows = conn.execute(sql, (*ENCRYPTED_TAGS, *cursor)).fetchall()
        changes = []
        for found in rows:
            row = dict(zip(columns, found, strict=False))
            data, ids = bytes(found[-1]), [row[k] for k in key]
            where = _location(table, column, row)
            try:
                sealer.loads_at(data, where)
                continue  # no pickle inside
            except PickleNotAllowedError:
                pass
            except ThreadloomError as exc:
                raise _row_error(exc, table, column, key, ids) from exc
            try:
                fresh = sealer.dumps_at(opener.loads_at(data, where), where)
            except ThreadloomError as exc:
                raise _row_error(exc, table, column, key, ids) from exc
            changes.append((fresh, *ids))
        if changes:
            conn.cursor().executemany(update, changes)
        last = [dict(zip(columns, rows[-1], strict=False))[k] for k in key] if rows else []
        return len(rows), len(changes), last

    while True:
        result: tuple[int, int, list[Any]] = dialect.transaction(one_batch)
        seen, changed, last = result
        done += changed
        if seen < batch:
            return done
        cursor[:] = last


def _row_error(exc: ThreadloomError, table: str, column: str, key: list[str],
               ids: list[Any]) -> ThreadloomError:
    shown = ", ".join(f"{k}={v!r}" for k, v in zip(key, ids, strict=True))
    return type(exc)(f"cannot rewrite {table}.{column} of the row {shown}: {exc}")


def _count_sealed(dialect: _Dialect, table: str, column: str, key: list[str]) -> int:
    select = dialect.select_tagged(table, column, key, len(ENCRYPTED_TAGS), None)

    def count(conn: Any) -> int:
        return len(conn.execute(select, ENCRYPTED_TAGS).fetchall())

    found: int = dialect.transaction(count)
    return found


def _rewrite_column(dialect: _Dialect, table: str, column: str, key: list[str],
                    reader: JsonPlusSerializer, writer: JsonPlusSerializer, batch: int) -> int:
    select = dialect.select_tagged(table, column, key, 1, batch)
    update = dialect.update(table, column, key)

    def one_batch(conn: Any) -> int:
        rows = conn.execute(select, (_PICKLE,)).fetchall()
        changes = []
        for row in rows:
            *ids, data = row
            try:
                fresh = writer.dumps(reader.loads(bytes(data)))
            except SerializationError as exc:
                raise _row_error(exc, table, column, key, ids) from exc
            changes.append((fresh, *ids))
        if changes:
            conn.cursor().executemany(update, changes)
        return len(changes)

    done = 0
    while True:
        count: int = dialect.transaction(one_batch)
        done += count
        if count < batch:
            return done
