"""Rows of the SQL backends as protocol records (SQLite and Postgres share the column
order), and the compact JSON both use for small structured columns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from json.encoder import encode_basestring as quote
from typing import Any

from threadloom.checkpoint.base import (
    Attempt,
    CheckpointRecord,
    ExecutionRecord,
    Lease,
    RunRecord,
    ThreadRecord,
)

__all__ = [
    "INDEXED",
    "FEW_PREFIXED",
    "STEP_STATUSES",
    "TIMED_OUT",
    "UNFINISHED",
    "channels_json",
    "NUL_ESCAPE",
    "checkpoint_record",
    "dumps",
    "escape_nul",
    "keyset_where",
    "prefix_bound",
    "execution_record",
    "execution_rows",
    "loads",
    "nul_free_execution_row",
    "nul_free_run_row",
    "names_json",
    "run_record",
    "run_rows",
    "thread_record",
    "where_clause",
]

UNFINISHED = "status <> 'SUCCEEDED'"
"""The condition of the partial executions-by-status index before migration 6 (SQLite) / 5
(Postgres), kept for the migrations that created it."""

STEP_STATUSES = ("SUCCEEDED", "RUNNING")
"""The statuses every step writes: a node's execution is recorded ``RUNNING`` in the commit
that schedules it and ``SUCCEEDED`` in the next. Neither is in the by-status index (an entry
would cost index writes in every commit); the index holds what an operator looks for
(failed, interrupted, pending, cancelled executions), and a query for a step status is
served by the run or thread index instead."""

INDEXED = "status NOT IN ('SUCCEEDED', 'RUNNING')"
"""The condition of both SQL stores' partial executions-by-status index."""


def where_clause(
    *clauses: tuple[str, Any], status: str | None = None
) -> tuple[str, tuple[Any, ...]]:
    """``" WHERE a = ? AND ..."`` for the clauses whose value is not ``None``, and their
    values. ``status``: an execution status filtered on; unless it is one of
    :data:`STEP_STATUSES`, the clause also states :data:`INDEXED`, which neither SQLite nor a
    generic Postgres plan infers from ``status = ?``, so that they use the partial index."""
    used = [(sql, value) for sql, value in clauses if value is not None]
    if not used:
        return "", ()
    where = " WHERE " + " AND ".join(sql for sql, _ in used)
    if status is not None and status not in STEP_STATUSES:
        where += " AND " + INDEXED
    return where, tuple(v for _, v in used)

TIMED_OUT = (
    "(substr(error, 1, 17) = 'NodeTimeoutError:' OR substr(error, 1, 16) = 'RunTimeoutError:')"
)
"""The condition of a failure by a run or node timeout (how ``error_text`` records those
errors): the statuses table tells ``TIMEDOUT`` from ``ERRORED`` by it."""


FEW_PREFIXED = 5_000
"""A run id prefix that matches fewer rows than this in a namespace is read through the run
id index and sorted by time (up to about 20 ms on SQLite); a commoner one is read from the
by-time index, where matches are met at once unless they sit together far from the page's
start (see docs/decisions.md, "Seed 001 routes")."""


def prefix_bound(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (in code point order,
    which is both SQL stores' order of ids); ``None`` when there is none (``prefix`` is
    empty or ends with the last code point)."""
    if not prefix or ord(prefix[-1]) == 0x10FFFF:
        return None
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def keyset_where(
    mark: str,
    key: str,
    *,
    namespace: str,
    run_id: str | None = None,
    run_id_prefix: str | None = None,
    status: str | None = None,
    timed_out: bool | None = None,
    graph: str | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
    after: tuple[float, str] | None = None,
    descending: bool = False,
    execution_status: bool = True,
) -> tuple[str, str, list[Any]]:
    """The ``WHERE`` and ``ORDER BY`` clauses of a keyset page over ``(created_at, key)``
    (``key``: ``id`` or ``run_id``), and their parameters; ``mark`` is the placeholder
    (``?`` or ``%s``). ``execution_status``: ``status`` is an execution status, and the
    clause states :data:`INDEXED` for the partial index when it is not a step status."""
    clauses: list[tuple[str, Any]] = [
        (f"namespace = {mark}", namespace),
        (f"run_id = {mark}", run_id),
        (f"status = {mark}", status),
        (f"graph = {mark}", graph),
        (f"created_at >= {mark}", created_after),
        (f"created_at < {mark}", created_before),
    ]
    if run_id_prefix:
        clauses.append((f"run_id >= {mark}", run_id_prefix))
        clauses.append((f"run_id < {mark}", prefix_bound(run_id_prefix)))
    used = [(sql, value) for sql, value in clauses if value is not None]
    parts = [sql for sql, _ in used]
    params: list[Any] = [value for _, value in used]
    if execution_status and status is not None and status not in STEP_STATUSES:
        parts.append(INDEXED)
    if timed_out is not None:
        parts.append(TIMED_OUT if timed_out else f"(error IS NULL OR NOT {TIMED_OUT})")
    if after is not None:
        # the plain bound lets an index on created_at alone start the scan at the cursor
        parts.append(f"created_at {'<=' if descending else '>='} {mark}")
        parts.append(f"(created_at, {key}) {'<' if descending else '>'} ({mark}, {mark})")
        params.extend((after[0], *after))
    direction = " DESC" if descending else ""
    order = f" ORDER BY created_at{direction}, {key}{direction}"
    return " WHERE " + " AND ".join(parts), order, params


dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
loads = json.JSONDecoder().decode


def channels_json(channels: dict[str, tuple[int, int]]) -> str:
    """``{"channel":[version,base]}``, built directly (several times faster than ``dumps``)."""
    return (
        "{" + ",".join([f"{quote(ch)}:[{vb[0]:d},{vb[1]:d}]" for ch, vb in channels.items()]) + "}"
    )


def names_json(names: Sequence[str]) -> str:
    """A JSON list of strings, built directly."""
    return "[" + ",".join(map(quote, names)) + "]"


def checkpoint_record(thread_id: str, checkpoint_ns: str, row: Sequence[Any]) -> CheckpointRecord:
    """The checkpoint of a row selected with the backend's ``CP_COLS``."""
    seq, parent, run_id, step, source, created_at, channels, nxt, metadata, frontier = row
    return CheckpointRecord(
        thread_id, checkpoint_ns, seq, parent, run_id, step, source, created_at,
        {ch: (vb[0], vb[1]) for ch, vb in loads(channels).items()}, tuple(loads(nxt)),
        metadata, frontier,
    )  # fmt: skip


def run_record(row: Sequence[Any], metadata_is_text: bool = True) -> RunRecord:
    """The run of a row selected with ``RUN_COLS`` (the dataclass's field order); metadata
    and stats are JSON text in SQLite, already decoded (jsonb) in Postgres."""
    run = RunRecord(*row)
    if metadata_is_text:
        run.metadata = loads(row[16])
        run.stats = loads(row[18])
    return run


def execution_record(row: Sequence[Any]) -> ExecutionRecord:
    """The execution of a row selected with ``EXEC_COLS`` (the dataclass's field order)."""
    ex = ExecutionRecord(*row[:12])
    ex.parents = tuple(loads(row[12]))
    ex.attempts = tuple(Attempt(*a) for a in loads(row[13]))
    ex.checkpoint_seq, ex.created_at, ex.started_at, ex.ended_at = row[14:]
    return ex


def thread_record(row: Sequence[Any], metadata_is_text: bool = True) -> ThreadRecord:
    """The thread of a row selected with ``THREAD_COLS``, its lease if one is held."""
    thread_id, namespace, created_at, updated_at, metadata, owner, token, expires_at = row
    return ThreadRecord(
        thread_id=thread_id,
        namespace=namespace,
        created_at=created_at,
        updated_at=updated_at,
        metadata=loads(metadata) if metadata_is_text else metadata,
        lease=Lease(thread_id, owner, token, expires_at, namespace)
        if owner is not None
        else None,
    )


def run_rows(runs: Iterable[RunRecord], namespace: str) -> list[tuple[Any, ...]]:
    """Parameter rows of ``runs`` in ``run_record`` column order (metadata as JSON text),
    recorded in ``namespace`` (their commit's).

    Raises:
        TypeError, ValueError: some metadata is not JSON-serializable.
    """
    return [
        (
            r.run_id, r.thread_id, r.graph, r.status, namespace, r.input, r.output, r.error,
            r.durability, r.created_at, r.updated_at, r.started_at, r.ended_at, r.steps,
            r.executions, r.resumed_from, dumps(r.metadata) if r.metadata else "{}",
            r.traceparent, dumps(r.stats) if r.stats else "{}",
        )
        for r in runs
    ]  # fmt: skip


def execution_rows(
    executions: Iterable[ExecutionRecord], thread_id: str, namespace: str
) -> list[tuple[Any, ...]]:
    """Parameter rows of ``executions`` in ``execution_record`` column order, recorded on
    ``thread_id`` in ``namespace`` (their commit's)."""
    return [
        (
            e.id, e.run_id, thread_id, e.graph, e.node, e.step, e.status, namespace,
            e.attempt, e.inputs, e.outputs, e.error, names_json(e.parents),
            dumps([(a.number, a.started_at, a.ended_at, a.error) for a in e.attempts])
            if e.attempts else "[]",
            e.checkpoint_seq, e.created_at, e.started_at, e.ended_at,
        )
        for e in executions
    ]  # fmt: skip


# Postgres text and jsonb cannot hold NUL (U+0000), which SQLite and the memory store keep.
# The text a store records about what happened (run and execution errors) and the strings
# of run metadata are written there with each NUL as the four characters ``\x00``, as
# ``repr`` shows it, so that a node failing with a NUL in its message is recorded as failed
# instead of its failure record being refused. Lossy only for text that already held
# ``\x00`` literally. Ids and names are not escaped (an escaped id could equal another one).
NUL_ESCAPE = "\\x00"


def escape_nul(value: Any) -> Any:
    """``value`` with NUL in every string (and dict key) written as :data:`NUL_ESCAPE`."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_ESCAPE)
    if isinstance(value, dict):
        return {escape_nul(k): escape_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_nul(v) for v in value]
    return value


def nul_free_run_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A :func:`run_rows` row whose error and metadata hold no NUL (the row itself when
    neither does, the usual case; ``\\u0000`` is how the JSON text spells NUL)."""
    error, metadata = row[7], row[16]
    if (error is None or "\x00" not in error) and "\\u0000" not in metadata:
        return row
    return (*row[:7], escape_nul(error), *row[8:16], dumps(escape_nul(loads(metadata))),
            *row[17:])


def nul_free_execution_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An :func:`execution_rows` row whose error holds no NUL (the attempts' errors are
    JSON text, in which NUL is already escaped)."""
    error = row[11]
    if error is None or "\x00" not in error:
        return row
    return (*row[:11], escape_nul(error), *row[12:])
