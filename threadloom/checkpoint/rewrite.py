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
run it again. Encrypted values are left as they are and counted: their envelope authenticates
them, so a row written by someone without the key does not open.

Example:
    >>> report = rewrite_values(store, serde=JsonPlusSerializer(allowed_modules=["my_app"]))
    >>> report.total
    42
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from threadloom.checkpoint.base import Store
from threadloom.checkpoint.serde import ENCRYPTED_TAGS, JsonPlusSerializer
from threadloom.errors import InvalidConfigError, SerializationError, StoreError

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
        encrypted: values left sealed (not opened, not counted as pickled).
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


def rewrite_values(store: Store, *, serde: JsonPlusSerializer | None = None,
                   batch: int = 500) -> RewriteReport:
    """Re-encode every pickled value of ``store`` with ``serde`` (see the module docstring).

    Args:
        store: a SQLite or Postgres store (its schema is migrated first).
        serde: the serializer of the new values, whose ``allowed_modules`` decide which
            classes may be stored (default: ``JsonPlusSerializer()``, with the modules
            :func:`~threadloom.checkpoint.serde.allow_modules` registered). It never writes
            pickle, whatever its ``allow_pickle``.
        batch: rows per transaction.

    Raises:
        TypeNotAllowedError: a value holds a class from a module that is not allowed.
        SerializationError: a value holds a type the new format does not take.
        InvalidConfigError: ``store`` is not a SQLite or Postgres store.
    """
    modules = serde.allowed_modules if serde is not None else frozenset[str]()
    reader = JsonPlusSerializer(allowed_modules=modules, allow_pickle=True)
    writer = JsonPlusSerializer(allowed_modules=modules)
    dialect = _dialect(store)
    store.setup()
    report = RewriteReport()
    for table, columns in VALUE_COLUMNS:
        key = dialect.key(table)
        if not key:
            raise StoreError(f"table {table} has no primary key; is this a threadloom store?")
        for column in columns:
            where = f"{table}.{column}"
            report.rewritten[where] = _rewrite_column(
                dialect, table, column, key, reader, writer, batch)
            report.encrypted += _count_sealed(dialect, table, column, key)
    return report


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
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(key, ids, strict=True))
                raise type(exc)(f"cannot rewrite {table}.{column} of the row {shown}: {exc}") \
                    from exc
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
