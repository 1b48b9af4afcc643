"""``threadloom migrate``, ``keys``, ``runs``, ``threads`` and ``audit``: one-shot commands on a
store. What they change is logged in the audit log with no key id (``key_id`` ``None``: the
command line, with the database's own credentials)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from threadloom._tracing import derived_traceparent, trace_id
from threadloom.checkpoint import open_store
from threadloom.checkpoint.base import RunRecord, Store, ThreadRecord
from threadloom.checkpoint.queue import ApiKey, AuditEvent, QueuedRun, RuntimeStore
from threadloom.cli._output import duration, emit_json, fields, iso, mask_url, table, when
from threadloom.errors import InvalidConfigError, RunConflictError, RunNotFoundError

__all__ = ["DEFAULT_DB", "open_runtime_store", "store_url"]

DEFAULT_DB = "sqlite:///./threadloom.db"
DB_ENV = "THREADLOOM_DB"

# an engine run status -> the thread status it gives (runtime.md, "Statuses")
_THREAD_STATUS = {"pending": "busy", "running": "busy", "interrupted": "interrupted",
                  "succeeded": "idle", "failed": "error", "cancelled": "idle"}


def store_url(flag: str | None, from_file: str | None = None) -> str:
    """The store URL: ``--db``, else ``THREADLOOM_DB``, else the config file's ``db``, else
    ``sqlite:///./threadloom.db``."""
    return flag or os.environ.get(DB_ENV) or from_file or DEFAULT_DB


def _sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (``None`` for other stores and in-memory SQLite)."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep:
        return None
    rest = rest.partition("?")[0]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:])


def open_runtime_store(url: str, *, must_exist: bool = False,
                       connections: int | None = None) -> RuntimeStore:
    """Open (and migrate) the store at ``url``; it must be one the runtime can run on.
    ``connections``: the Postgres pool's size, unless the URL gives one (``pool_max``): a
    worker's runs each hold a connection while they commit, beside its event pump, writer
    and heartbeat.

    Raises:
        InvalidConfigError: ``must_exist`` and there is no SQLite file at the path, or the
            store has no run queue.
    """
    path = _sqlite_file(url)
    if must_exist and path is not None and not path.exists():
        raise InvalidConfigError(
            f"no database at {path}: pass --db URL (or set {DB_ENV}), or create it with "
            "`threadloom dev` or `threadloom migrate --db URL`")
    options: dict[str, Any] = {}
    if connections is not None and url.lower().startswith(("postgres://", "postgresql://")):
        given = {k for k, _ in parse_qsl(urlsplit(url).query)}
        if not given & {"pool_max", "max_size"}:
            options["max_size"] = connections
    store = open_store(url, **options)
    if not isinstance(store, RuntimeStore):
        store.close()
        raise InvalidConfigError(
            f"the store at {mask_url(url)} has no run queue; the runtime needs a "
            "sqlite:/// or postgresql:// store")
    return store


@contextmanager
def _opened(args: argparse.Namespace, *, must_exist: bool = True) -> Iterator[RuntimeStore]:
    store = open_runtime_store(store_url(args.db), must_exist=must_exist)
    try:
        yield store
    finally:
        store.close()


# -- migrate ------------------------------------------------------------------------------


def migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the store's schema; with ``--rewrite-values``, also re-encode the
    values stored with pickle (:func:`threadloom.checkpoint.rewrite.rewrite_values`)."""
    if not args.rewrite_values:
        url = store_url(args.db)
        open_store(url).close()  # opening a store applies its migrations
        print(f"{mask_url(url)}: the schema is up to date")
        return 0
    from threadloom.checkpoint.crypto import serializer_from_env
    from threadloom.checkpoint.rewrite import rewrite_values
    from threadloom.worker.registry import load_graphs, read_config

    path = args.config or ("threadloom.toml" if Path("threadloom.toml").exists() else None)
    config = read_config(path) if path is not None else None
    url = store_url(args.db, config.db if config is not None else None)
    store = open_store(url)
    try:
        if config is not None:  # registers [serde] allowed_modules and the graphs' modules
            load_graphs(config, store)
        report = rewrite_values(store, serde=serializer_from_env())  # with the env's keys
    finally:
        store.close()
    print(f"{mask_url(url)}: the schema is up to date")
    done = ", ".join(f"{where} {n}" for where, n in report.rewritten.items() if n)
    print(f"rewrote {report.total} pickled value{'s' if report.total != 1 else ''}"
          + (f" ({done})" if done else ""))
    if report.encrypted:
        print(f"left {report.encrypted} encrypted value{'s' if report.encrypted != 1 else ''} "
              "sealed (not opened): set THREADLOOM_ENCRYPTION_KEY to rewrite the pickles "
              "inside them too")
    return 0


# -- keys ---------------------------------------------------------------------------------


def keys_create(args: argparse.Namespace) -> int:
    """Make a key and print it, once, as the last word of the output."""
    from threadloom.server.auth import create_key

    with _opened(args, must_exist=False) as store:
        record, key = create_key(store, args.namespace, args.role, name=args.name,
                                 audit=AuditEvent(args.namespace, "key.create", ""))
    print(f"Created {record.role} key {record.key_id} for namespace {record.namespace!r}.")
    print("It is shown only this once; keep it somewhere safe. Send it as header X-API-Key:")
    print(key)
    return 0


def _key_row(key: ApiKey) -> dict[str, Any]:
    return {"key_id": key.key_id, "namespace": key.namespace, "role": key.role,
            "name": key.name, "created_at": key.created_at, "last_used_at": key.last_used_at,
            "revoked_at": key.revoked_at}


def keys_ls(args: argparse.Namespace) -> int:
    """List keys (never the keys themselves: they are stored hashed)."""
    with _opened(args) as store:
        keys = store.list_keys(args.namespace)
    if not args.show_revoked:
        keys = [k for k in keys if k.revoked_at is None]
    rows = [_key_row(k) for k in keys]
    if args.json:
        emit_json([{**r, **{t: iso(r[t]) for t in ("created_at", "last_used_at", "revoked_at")}}
                   for r in rows])
        return 0
    for row in rows:
        row["created"] = when(row["created_at"])
        row["used"] = when(row["last_used_at"])
        row["revoked"] = when(row["revoked_at"])
    columns = [("KEY ID", "key_id"), ("NAMESPACE", "namespace"), ("ROLE", "role"),
               ("NAME", "name"), ("CREATED (UTC)", "created"), ("LAST USED", "used")]
    if args.show_revoked:
        columns.append(("REVOKED", "revoked"))
    table(rows, columns, empty="(no keys)")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key by its id; it stops working at once."""
    with _opened(args) as store:
        found = store.get_key(args.key_id)
        event = AuditEvent(found.namespace if found else "", "key.revoke", args.key_id)
        if not store.revoke_key(args.key_id, audit=event):
            raise InvalidConfigError(f"no key {args.key_id!r} (see `threadloom keys ls`)")
    print(f"Revoked key {args.key_id}.")
    return 0


# -- audit --------------------------------------------------------------------------------


def audit_ls(args: argparse.Namespace) -> int:
    """Print a namespace's audit log, newest first, a page at a time."""
    with _opened(args) as store:
        try:
            events, next_cursor = store.list_audit(args.namespace, limit=args.limit,
                                                   cursor=args.cursor)
        except ValueError:
            raise InvalidConfigError(f"--cursor {args.cursor!r} is not a cursor of this log "
                                     "(use the one the previous page printed)") from None
    if args.json:
        emit_json({"namespace": args.namespace, "count": len(events),
                   "events": [{**e.as_json(), "at": iso(e.at)} for e in events],
                   "next_cursor": next_cursor})
        return 0
    rows = [{**e.as_json(), "time": when(e.at), "who": e.key_id or "(cli)"} for e in events]
    table(rows, [("TIME (UTC)", "time"), ("ACTION", "action"), ("TARGET", "target"),
                 ("OUTCOME", "outcome"), ("KEY ID", "who"), ("ROLE", "role"),
                 ("RUN ID", "run_id"), ("THREAD ID", "thread_id")],
          empty=f"(no audit events in namespace {args.namespace!r})")
    if next_cursor is not None:
        print(f"more: threadloom audit --namespace {args.namespace} --cursor {next_cursor}")
    return 0


# -- runs ---------------------------------------------------------------------------------


def _decode(data: bytes | None, namespace: str, thread_id: str, run_id: str,
            field: str) -> Any:
    if data is None:
        return None
    from threadloom.checkpoint.crypto import run_location, serializer_from_env

    serde: Any = serializer_from_env()
    try:
        if getattr(serde, "binds_location", False) is True:
            return serde.loads_at(data, run_location(namespace, thread_id, run_id, field))
        return serde.loads(data)
    except Exception as exc:  # a value the CLI cannot read (a class of the user's code...)
        return f"<{len(data)} bytes: {type(exc).__name__}>"


def _run_row(run: RunRecord) -> dict[str, Any]:
    return {"run_id": run.run_id, "thread_id": run.thread_id, "graph": run.graph,
            "status": run.status, "namespace": run.namespace, "created_at": run.created_at,
            "updated_at": run.updated_at, "started_at": run.started_at,
            "ended_at": run.ended_at, "steps": run.steps, "executions": run.executions,
            "durability": run.durability, "error": run.error, "metadata": run.metadata}


def _jsonable_times(row: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if k.endswith("_at") and isinstance(v, float | int) else v
            for k, v in row.items()}


def runs_ls(args: argparse.Namespace) -> int:
    """List runs, newest first."""
    with _opened(args) as store:
        runs = store.list_runs(namespace=args.namespace, thread_id=args.thread,
                               status=args.status, graph=args.graph, limit=args.limit,
                               offset=args.offset)
    rows = [_run_row(r) for r in runs]
    if args.json:
        emit_json([_jsonable_times(r) for r in rows])
        return 0
    for row in rows:
        row["created"] = when(row["created_at"])
        row["took"] = duration(row["started_at"], row["ended_at"])
    table(rows, [("RUN ID", "run_id"), ("THREAD", "thread_id"), ("GRAPH", "graph"),
                 ("STATUS", "status"), ("CREATED (UTC)", "created"), ("TOOK", "took"),
                 ("STEPS", "steps"), ("ERROR", "error")], empty="(no runs)")
    return 0


def _get_run(store: Store, namespace: str, run_id: str) -> RunRecord:
    run = store.get_run(run_id, namespace=namespace)
    if run is None or run.namespace != namespace:
        raise RunNotFoundError(f"no run {run_id!r} in namespace {namespace!r}")
    return run


def runs_show(args: argparse.Namespace) -> int:
    """One run: its record, its queue row, and its node executions."""
    with _opened(args) as store:
        run = _get_run(store, args.namespace, args.run_id)
        queued = store.get_queued(args.namespace, args.run_id)
        executions = store.list_executions(run_id=run.run_id, namespace=args.namespace)
        output = _decode(run.output, run.namespace, run.thread_id, run.run_id, "output")
        given = _decode(run.input, run.namespace, run.thread_id, run.run_id, "input")
    steps: list[dict[str, Any]] = [{"id": e.id, "node": e.node, "step": e.step, "status": e.status,
              "attempt": e.attempt, "started_at": e.started_at, "ended_at": e.ended_at,
              "error": e.error} for e in executions]
    queue = None if queued is None else {
        "status": queued.status, "attempts": queued.attempts, "worker": queued.worker,
        "available_at": queued.available_at, "claim_expires": queued.claim_expires,
        "timeout": queued.timeout}
    trace = trace_id(run.run_id, run.traceparent)
    if args.json:
        emit_json({**_jsonable_times(_run_row(run)), "input": given, "output": output,
                   "queue": None if queue is None else _jsonable_times(queue),
                   "stats": run.stats, "trace_id": trace,
                   "executions": [_jsonable_times(s) for s in steps]})
        return 0
    stats = run.stats
    wait = stats.get("queue_wait_ms")
    fields([("run", run.run_id), ("thread", run.thread_id), ("graph", run.graph),
            ("namespace", run.namespace), ("status", run.status),
            ("created (UTC)", when(run.created_at)), ("started", when(run.started_at)),
            ("ended", when(run.ended_at)), ("took", duration(run.started_at, run.ended_at)),
            ("steps", run.steps), ("durability", run.durability), ("error", run.error),
            ("queue", None if queue is None else
             f"{queue['status']}, attempts {queue['attempts']}, worker {queue['worker'] or '-'}"),
            ("queue wait", None if wait is None else f"{wait:.1f} ms"),
            ("retries", stats.get("retries", 0)),
            ("bytes written", stats.get("bytes_written", 0)),
            ("trace", trace),
            ("input", _short_json(given)), ("output", _short_json(output))])
    print()
    for s in steps:
        s["took"] = duration(s["started_at"], s["ended_at"])
    table(steps, [("STEP", "step"), ("NODE", "node"), ("STATUS", "status"),
                  ("ATTEMPT", "attempt"), ("TOOK", "took"), ("ERROR", "error")],
          empty="(no node executions recorded)")
    hints = {"interrupted": f"threadloom runs resume {run.run_id} --value JSON",
             "failed": f"threadloom runs retry {run.run_id}",
             "cancelled": f"threadloom runs retry {run.run_id}"}
    if run.status in hints:
        print(f"\nNext: {hints[run.status]}")
    return 0


def _short_json(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def runs_cancel(args: argparse.Namespace) -> int:
    """Cancel a queued or running run."""
    with _opened(args) as store:
        _get_run(store, args.namespace, args.run_id)
        outcome = store.request_cancel(args.namespace, args.run_id, args.action, audit=AuditEvent(
            args.namespace, "run.cancel", args.run_id, run_id=args.run_id))
    messages = {
        "cancelled": "cancelled (it was still queued)" if args.action == "interrupt"
        else "rolled back (it was still queued; everything it wrote is deleted)",
        "signalled": "cancellation requested; its worker stops it at the next step boundary",
        "finished": "not cancelled: the run already finished",
        "unknown": "not cancelled: no such run",
    }
    print(f"Run {args.run_id}: {messages[outcome]}.")
    return 0 if outcome in ("cancelled", "signalled") else 1


_BLANK_PAYLOAD: dict[str, Any] = {
    "input": None, "command": None, "config": {"configurable": {}}, "context": None,
    "metadata": {}, "stream_mode": ["values"], "stream_subgraphs": False,
    "interrupt_before": None, "interrupt_after": None, "durability": None,
    "checkpoint_id": None, "resume": True,
}


def _payload_of(store: RuntimeStore, namespace: str, run_id: str) -> dict[str, Any]:
    """The run's queued payload (what the API received), or a blank one."""
    payload = dict(_BLANK_PAYLOAD)
    queued = store.get_queued(namespace, run_id)
    if queued is not None:
        try:
            given = json.loads(queued.payload)
        except ValueError:
            given = None
        if isinstance(given, dict):
            payload.update(given)
    return payload


def _check_status(run: RunRecord, allowed: tuple[str, ...], verb: str) -> None:
    if run.status not in allowed:
        raise RunConflictError(f"run {run.run_id} is {run.status}; only a run that is "
                               f"{' or '.join(allowed)} can be {verb}")


def runs_retry(args: argparse.Namespace) -> int:
    """Queue a failed or cancelled run again: it continues from its last checkpoint."""
    with _opened(args) as store:
        run = _get_run(store, args.namespace, args.run_id)
        _check_status(run, ("failed", "cancelled"), "retried")
        payload = {**_payload_of(store, args.namespace, run.run_id), "resume": True}
        store.requeue(args.namespace, run.run_id, payload=json.dumps(payload).encode(),
                      audit=AuditEvent(args.namespace, "run.retry", run.run_id,
                                       run_id=run.run_id, thread_id=run.thread_id))
    print(f"Run {run.run_id} is queued again; a worker continues it from its last checkpoint.")
    return 0


def runs_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted run's thread in a new run, answering its interrupt() with
    ``--value`` (as LangGraph's server resumes: a run with ``command={"resume": ...}``)."""
    command = None
    if args.value is not None:
        try:
            command = {"resume": json.loads(args.value)}
        except ValueError as exc:
            raise InvalidConfigError(f"--value is not JSON: {exc}") from None
    with _opened(args) as store:
        run = _get_run(store, args.namespace, args.run_id)
        _check_status(run, ("interrupted",), "resumed")
        payload = {**_payload_of(store, args.namespace, run.run_id), "input": None,
                   "command": command, "resume": False, "checkpoint_id": None}
        new_id = str(uuid.uuid4())
        now = time.time()
        store.enqueue(
            RunRecord(new_id, run.thread_id, run.graph, "pending", namespace=args.namespace,
                      created_at=now, updated_at=now,
                      metadata={**run.metadata, "resumes": run.run_id},
                      # the run that answers the interrupt joins the interrupted run's trace
                      traceparent=run.traceparent or derived_traceparent(run.run_id)),
            QueuedRun(args.namespace, new_id, run.thread_id, run.graph,
                      json.dumps(payload).encode(), created_at=now),
            "reject",
            audit=AuditEvent(args.namespace, "run.resume", run.run_id, run_id=new_id,
                             thread_id=run.thread_id))
    print(f"Run {run.run_id} continues in a new run on thread {run.thread_id} (a worker "
          f"picks it up): {new_id}")
    return 0


# -- threads ------------------------------------------------------------------------------


def _thread_row(store: Store, thread: ThreadRecord) -> dict[str, Any]:
    latest = store.list_runs(thread_id=thread.thread_id, namespace=thread.namespace, limit=1)
    last = latest[0] if latest else None
    return {"thread_id": thread.thread_id, "namespace": thread.namespace,
            "status": _THREAD_STATUS.get(last.status, "idle") if last else "idle",
            "last_run": last.run_id if last else None, "graph": last.graph if last else None,
            "created_at": thread.created_at, "updated_at": thread.updated_at,
            "metadata": thread.metadata}


def threads_ls(args: argparse.Namespace) -> int:
    """List threads, most recently updated first."""
    with _opened(args) as store:
        threads = store.list_threads(namespace=args.namespace, limit=args.limit,
                                     offset=args.offset)
        rows = [_thread_row(store, t) for t in threads]
    if args.json:
        emit_json([_jsonable_times(r) for r in rows])
        return 0
    for row in rows:
        row["updated"] = when(row["updated_at"])
    table(rows, [("THREAD ID", "thread_id"), ("STATUS", "status"), ("GRAPH", "graph"),
                 ("LAST RUN", "last_run"), ("UPDATED (UTC)", "updated")],
          empty="(no threads)")
    return 0


def _get_thread(store: Store, namespace: str, thread_id: str) -> ThreadRecord:
    thread = store.get_thread(thread_id, namespace=namespace)
    if thread is None or thread.namespace != namespace:
        raise InvalidConfigError(f"no thread {thread_id!r} in namespace {namespace!r}")
    return thread


def threads_show(args: argparse.Namespace) -> int:
    """One thread: its record, its latest checkpoint and its runs."""
    with _opened(args) as store:
        thread = _get_thread(store, args.namespace, args.thread_id)
        row = _thread_row(store, thread)
        runs = store.list_runs(thread_id=thread.thread_id, namespace=thread.namespace,
                               limit=args.limit)
        latest = store.list_checkpoints(thread.thread_id, "", limit=1,
                                        namespace=thread.namespace)
    head = latest[0] if latest else None
    checkpoint: dict[str, Any] | None = None if head is None else {
        "checkpoint_id": head.checkpoint_id, "step": head.step, "next": list(head.next),
        "created_at": head.created_at}
    run_rows = [_run_row(r) for r in runs]
    if args.json:
        emit_json({**_jsonable_times(row),
                   "checkpoint": None if checkpoint is None else _jsonable_times(checkpoint),
                   "runs": [_jsonable_times(r) for r in run_rows]})
        return 0
    fields([("thread", thread.thread_id), ("namespace", thread.namespace),
            ("status", row["status"]), ("created (UTC)", when(thread.created_at)),
            ("updated", when(thread.updated_at)),
            ("metadata", json.dumps(thread.metadata, default=str) if thread.metadata else None),
            ("lease", None if thread.lease is None else
             f"{thread.lease.owner} until {when(thread.lease.expires_at)}"),
            ("checkpoint", None if checkpoint is None else
             f"{checkpoint['checkpoint_id']} (step {checkpoint['step']}, next "
             f"{', '.join(checkpoint['next']) or 'nothing: done'})")])
    print()
    for r in run_rows:
        r["created"] = when(r["created_at"])
    table(run_rows, [("RUN ID", "run_id"), ("GRAPH", "graph"), ("STATUS", "status"),
                     ("CREATED (UTC)", "created"), ("STEPS", "steps"), ("ERROR", "error")],
          empty="(no runs)")
    print(f"\nThe full history: threadloom threads export {thread.thread_id}")
    return 0


def threads_export(args: argparse.Namespace) -> int:
    """A thread's full history as JSON (threadloom.checkpoint.retention.export_thread)."""
    from threadloom.checkpoint.retention import export_thread

    with _opened(args) as store:
        _get_thread(store, args.namespace, args.thread_id)
        data = export_thread(store, args.thread_id, namespace=args.namespace)
    if args.out in (None, "-"):
        emit_json(data, indent=None)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            emit_json(data, out=f, indent=None)
        print(f"Wrote thread {args.thread_id} to {args.out}.", file=sys.stderr)
    return 0
