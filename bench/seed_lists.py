"""Seed 001's lists at scale: a page of 100 under every filter, with 1,000,000 executions in
a namespace, on SQLite and on Postgres; and what the indexes they use cost the ``sync``
seed loop.

    .venv/bin/python bench/seed_lists.py                      # both stores, then the loop
    .venv/bin/python bench/seed_lists.py --stores sqlite --executions 200000
    .venv/bin/python bench/seed_lists.py --only loop --loop-pairs 10

The JSON report goes to stdout, progress to stderr.

Pages. The namespace ``bench`` gets ``--executions`` executions (10 per run, one thread per
run) and their runs, and the namespace ``other`` a tenth as many, written directly with SQL
(``generate_series`` / a recursive CTE), so filling takes seconds. Statuses as a busy
deployment has them: nearly every execution succeeded; 0.5% failed (2 in 5 by a timeout),
0.5% each pending, interrupted and cancelled; the latest 1,000 runs are still going, each
with one execution running (every fourth of those between two attempts). Each page is read
through the store's public methods (``page_executions`` / ``page_runs``, as the routes do),
warmed once, then timed ``--reps`` times: the report gives the median and the worst, in ms.

The loop. The seed loop (``bench/workloads.py``'s graph, 1,000 steps, 2,000 executions) runs
on a SQLite file with ``durability="sync"`` on two stores in turn (ABBA order, a fresh
thread per sample): one with the schema as it is, one with the seed list migration undone
(no by-time index, the old by-status index). The ratio of their medians is what the
migration costs a step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from threadloom.checkpoint._sqlite_sql import EXEC_COLS, RUN_COLS  # noqa: E402
from threadloom.checkpoint.base import Store  # noqa: E402

PG_URL = os.environ.get("THREADLOOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
NS = "bench"
BASE = 1_700_000_000.0
PER_RUN = 10
RUNNING_RUNS = 1000


def log(message: str) -> None:
    print(f"seed_lists: {message}", file=sys.stderr, flush=True)


# -- filling ---------------------------------------------------------------------------------
#
# Execution i (0-based) of a namespace: run i // 10, created at BASE + i / 100 s; statuses by
# i % 1000 as the module docstring says. One expression per column, written once for both
# dialects ({i} is the row number, {n} the count; || concatenates in both).


def _exec_select(i: str, n: str, run: str, hexid: str) -> str:
    status = (
        f"CASE WHEN {i} >= {n} - {RUNNING_RUNS * PER_RUN} AND {i} % 10 = 9 THEN 'RUNNING'"
        f" WHEN {i} % 1000 < 5 THEN 'FAILED' WHEN {i} % 1000 < 10 THEN 'PENDING'"
        f" WHEN {i} % 1000 < 15 THEN 'INTERRUPTED' WHEN {i} % 1000 < 20 THEN 'CANCELLED'"
        " ELSE 'SUCCEEDED' END"
    )
    error = (
        f"CASE WHEN {i} % 1000 < 2 THEN 'NodeTimeoutError: node ''work'' timed out after 5s'"
        f" WHEN {i} % 1000 < 5 THEN 'ValueError: boom' END"
    )
    attempts = (
        f"CASE WHEN {i} >= {n} - {RUNNING_RUNS * PER_RUN} AND {i} % 40 = 39"
        " THEN '[[1,1.0,2.0,\"ValueError: once\"]]' ELSE '[]' END"
    )
    return (
        f"SELECT {hexid}, {run}, {run}, 'g' || ({i} / {PER_RUN} % 3), 'node' || ({i} % 10),"
        f" {i} % 10, {status}, %(ns)s, 1, NULL, NULL, {error}, '[]', {attempts}, {i} % 10,"
        f" {BASE} + {i} / 100.0, {BASE} + {i} / 100.0, {BASE} + {i} / 100.0 + 0.005"
    )


def _run_select(i: str, n: str, run: str) -> str:
    status = (
        f"CASE WHEN {i} >= {n} - {RUNNING_RUNS} THEN 'running'"
        f" WHEN {i} % 100 = 0 THEN 'failed' WHEN {i} % 100 < 3 THEN 'failed'"
        f" WHEN {i} % 100 = 3 THEN 'cancelled' WHEN {i} % 100 = 4 THEN 'interrupted'"
        " ELSE 'succeeded' END"
    )
    error = (
        f"CASE WHEN {i} >= {n} - {RUNNING_RUNS} THEN NULL"
        f" WHEN {i} % 100 = 0 THEN 'RunTimeoutError: run timed out after 60s'"
        f" WHEN {i} % 100 < 3 THEN 'ValueError: boom' END"
    )
    created = f"{BASE} + {i} * {PER_RUN} / 100.0"
    return (
        f"SELECT {run}, {run}, 'g' || ({i} % 3), {status}, %(ns)s, NULL, NULL, {error}, 'sync',"
        f" {created}, {created} + 0.1, {created}, {created} + 0.1, 10, 10, NULL, '{{}}',"
        " NULL, '{}'"  # traceparent, stats
    )


def fill_sqlite(store: Any, namespace: str, count: int) -> None:
    runs = count // PER_RUN
    ex = _exec_select("i", str(count), "printf('run-%07d', i / 10)", "printf('%032x', i)")
    rn = _run_select("i", str(runs), "printf('run-%07d', i)")
    conn = store._thread_conn()
    conn.execute("BEGIN")
    conn.execute(
        f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {count - 1})"
        f" INSERT INTO executions ({EXEC_COLS}) {ex.replace('%(ns)s', '?')} FROM s",
        (namespace,))
    conn.execute(
        f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {runs - 1})"
        f" INSERT INTO runs ({RUN_COLS}) {rn.replace('%(ns)s', '?')} FROM s", (namespace,))
    conn.execute("COMMIT")


def fill_postgres(store: Any, namespace: str, count: int) -> None:
    import psycopg

    schema = store._sql.schema
    runs = count // PER_RUN
    ex = _exec_select("i", str(count), "'run-' || lpad((i / 10)::text, 7, '0')",
                      "lpad(to_hex(i), 32, '0')")
    rn = _run_select("i", str(runs), "'run-' || lpad(i::text, 7, '0')")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        ex, rn = ex.replace(" % ", " %% "), rn.replace(" % ", " %% ").replace("'{}'", "'{}'::jsonb")
        conn.execute(f"INSERT INTO executions ({EXEC_COLS}) {ex}"
                     f" FROM generate_series(0, {count - 1}) AS i", {"ns": namespace})
        conn.execute(f"INSERT INTO runs ({RUN_COLS}) {rn}"
                     f" FROM generate_series(0, {runs - 1}) AS i", {"ns": namespace})
        conn.execute("ANALYZE executions")
        conn.execute("ANALYZE runs")


# -- pages -----------------------------------------------------------------------------------


def queries(count: int) -> dict[str, Callable[[Store], list[Any]]]:
    """Every filter of the seed routes, as the routes call the store (a page of 100)."""
    runs = count // PER_RUN
    mid = BASE + count / 200  # the middle of the namespace's time range
    middle_run = f"run-{runs // 2:07d}"
    e = {"namespace": NS, "limit": 101}
    r = {"namespace": NS, "limit": 101}
    q: dict[str, Callable[[Store], list[Any]]] = {
        "states: newest": lambda s: s.page_executions(descending=True, **e),
        "states: oldest": lambda s: s.page_executions(**e),
        "states: cursor in the middle": lambda s: s.page_executions(
            descending=True, after=(mid, "f" * 32), **e),
        "states: since (last hour)": lambda s: s.page_executions(
            descending=True, created_after=BASE + count / 100 - 3600, **e),
        "states: since+until (a day in the middle)": lambda s: s.page_executions(
            descending=True, created_after=mid - 43200, created_before=mid + 43200, **e),
        "states: one run": lambda s: s.page_executions(run_id=middle_run, **e),
        "states: run_id_prefix all": lambda s: s.page_executions(
            descending=True, run_id_prefix="run-", **e),
        "states: run_id_prefix 10%": lambda s: s.page_executions(
            descending=True, run_id_prefix=middle_run[:7], **e),
        "states: run_id_prefix 1%": lambda s: s.page_executions(
            descending=True, run_id_prefix=middle_run[:8], **e),
        "states: run_id_prefix 0.1%": lambda s: s.page_executions(
            descending=True, run_id_prefix=middle_run[:9], **e),
        "states: run_id_prefix one run": lambda s: s.page_executions(
            descending=True, run_id_prefix=middle_run, **e),
        "states: run_id_prefix none": lambda s: s.page_executions(
            descending=True, run_id_prefix="zzz", **e),
    }
    for name, status, timed_out in [
        ("SUCCESS", "SUCCEEDED", None), ("ERRORED", "FAILED", False),
        ("TIMEDOUT", "FAILED", True), ("CREATED", "PENDING", None),
        ("INTERRUPTED", "INTERRUPTED", None), ("CANCELLED", "CANCELLED", None),
        ("QUEUED/RETRY_CREATED", "RUNNING", None),
    ]:
        q[f"states: status {name}"] = (
            lambda s, st=status, to=timed_out: s.page_executions(
                descending=True, status=st, timed_out=to, **e))
    q["states: status ERRORED + since+until"] = lambda s: s.page_executions(
        descending=True, status="FAILED", timed_out=False, created_after=mid - 43200,
        created_before=mid + 43200, **e)
    q["states: status ERRORED + prefix 10%"] = lambda s: s.page_executions(
        descending=True, status="FAILED", timed_out=False, run_id_prefix=middle_run[:7], **e)
    q["runs: newest"] = lambda s: s.page_runs(**r)
    q["runs: cursor in the middle"] = lambda s: s.page_runs(after=(mid, middle_run), **r)
    q["runs: since+until"] = lambda s: s.page_runs(
        created_after=mid - 43200, created_before=mid + 43200, **r)
    q["runs: graph"] = lambda s: s.page_runs(graph="g1", **r)
    q["runs: run_id_prefix all"] = lambda s: s.page_runs(run_id_prefix="run-", **r)
    q["runs: run_id_prefix 10%"] = lambda s: s.page_runs(run_id_prefix=middle_run[:7], **r)
    q["runs: run_id_prefix 1%"] = lambda s: s.page_runs(run_id_prefix=middle_run[:8], **r)
    q["runs: run_id_prefix 0.1%"] = lambda s: s.page_runs(run_id_prefix=middle_run[:9], **r)
    q["runs: run_id_prefix none"] = lambda s: s.page_runs(run_id_prefix="zzz", **r)
    for name, status, timed_out in [
        ("SUCCESS", "succeeded", None), ("ERRORED", "failed", False),
        ("TIMEDOUT", "failed", True), ("RUNNING", "running", None),
        ("CANCELLED", "cancelled", None), ("INTERRUPTED", "interrupted", None),
        ("CREATED", "pending", None),
    ]:
        q[f"runs: status {name}"] = (
            lambda s, st=status, to=timed_out: s.page_runs(status=st, timed_out=to, **r))
    q["runs: status ERRORED + graph"] = lambda s: s.page_runs(
        status="failed", timed_out=False, graph="g2", **r)
    return q


def time_pages(store: Store, count: int, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, query in queries(count).items():
        items = len(query(store))  # warm
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            query(store)
            samples.append((time.perf_counter() - start) * 1000)
        out[name] = {"median_ms": round(statistics.median(samples), 2),
                     "max_ms": round(max(samples), 2), "items": min(items, 100)}
        log(f"  {name}: {out[name]['median_ms']} ms ({items} items)")
    return out


def bench_sqlite(count: int, reps: int, workdir: Path) -> dict[str, Any]:
    from threadloom.checkpoint.sqlite import SqliteStore

    path = workdir / "lists.db"
    store = SqliteStore(path)
    store.setup()
    start = time.perf_counter()
    fill_sqlite(store, NS, count)
    fill_sqlite(store, "other", max(count // 10, PER_RUN))
    filled = time.perf_counter() - start
    log(f"sqlite: filled {count} executions in {filled:.1f} s")
    pages = time_pages(store, count, reps)
    size = path.stat().st_size
    store.close()
    return {"fill_s": round(filled, 1), "db_bytes": size, "pages": pages}


def bench_postgres(count: int, reps: int) -> dict[str, Any]:
    import psycopg

    from threadloom.checkpoint.postgres import PostgresStore

    schema = f"bench_lists_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(PG_URL, schema=schema)
    try:
        store.setup()
        start = time.perf_counter()
        fill_postgres(store, NS, count)
        fill_postgres(store, "other", max(count // 10, PER_RUN))
        filled = time.perf_counter() - start
        log(f"postgres: filled {count} executions in {filled:.1f} s")
        return {"fill_s": round(filled, 1), "pages": time_pages(store, count, reps)}
    finally:
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the seed loop -----------------------------------------------------------------------------

UNDO_SQLITE = (
    "DROP INDEX executions_namespace_created",
    "DROP INDEX executions_namespace_status",
    "CREATE INDEX executions_namespace_status ON executions (namespace, status)"
    " WHERE status NOT IN ('SUCCEEDED', 'RUNNING')",
)
"""The seed list migration undone: the SQLite schema as it was before it."""


UNDO_POSTGRES = (
    "DROP INDEX {s}.executions_namespace_created",
    "DROP INDEX {s}.executions_namespace_status",
    "CREATE INDEX executions_namespace_status ON {s}.executions (namespace, status)"
    " WHERE status NOT IN ('SUCCEEDED', 'RUNNING')",
)
"""The seed list migration undone on Postgres."""


def _postgres_loop_store(variant: str, schemas: list[str]) -> Any:
    import psycopg

    from threadloom.checkpoint.postgres import PostgresStore

    schema = f"bench_loop_{variant}_{uuid.uuid4().hex[:8]}"
    schemas.append(schema)
    store = PostgresStore(PG_URL, schema=schema)
    store.setup()
    if variant == "without":
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for statement in UNDO_POSTGRES:
                conn.execute(statement.format(s=store._sql.schema))
    return store


def bench_loop(pairs: int, workdir: Path, store: str = "sqlite") -> dict[str, Any]:
    """The sync seed loop on ``store`` with and without the seed list migration's
    indexes."""
    from workloads import LOOP_STEPS, open_sqlite, seed_loop_graph

    from threadloom.checkpoint.sqlite import SqliteSaver
    from threadloom.graph import END, StateGraph

    engine = types.SimpleNamespace(StateGraph=StateGraph, END=END)
    graphs = {}
    schemas: list[str] = []
    for variant in ("with", "without"):
        if store == "postgres":
            saver: Any = _postgres_loop_store(variant, schemas)
        else:
            conn = open_sqlite(workdir / f"loop-{variant}.db")
            saver = SqliteSaver(conn)
            saver.setup()
            if variant == "without":
                for statement in UNDO_SQLITE:
                    conn.execute(statement)
                conn.commit()
        graphs[variant] = seed_loop_graph(engine, LOOP_STEPS).compile(checkpointer=saver)
    try:
        return _time_loop(graphs, pairs, workdir, store)
    finally:
        if schemas:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _time_loop(graphs: dict[str, Any], pairs: int, workdir: Path,
               store: str) -> dict[str, Any]:
    from harness import invoke
    from workloads import LOOP_INPUT, LOOP_STEPS, check_seed_loop

    samples: dict[str, list[float]] = {"with": [], "without": []}
    counter = iter(range(10**9))
    for variant in ("with", "without"):  # warm up
        check_seed_loop(invoke(graphs[variant], LOOP_INPUT, thread_id=f"warm-{variant}",
                               durability="sync"))
    for pair in range(pairs):
        order = ("with", "without") if pair % 2 == 0 else ("without", "with")
        for variant in order:
            thread = f"t-{next(counter)}"
            start = time.perf_counter()
            result = invoke(graphs[variant], LOOP_INPUT, thread_id=thread, durability="sync")
            samples[variant].append(time.perf_counter() - start)
            check_seed_loop(result)
        log(f"loop pair {pair + 1}/{pairs}: with {samples['with'][-1]:.3f} s, "
            f"without {samples['without'][-1]:.3f} s")
    frames = ({v: wal_frames(v, workdir) for v in ("with", "without")}
              if store == "sqlite" else None)
    per_step = {v: statistics.median(s) / (2 * LOOP_STEPS) * 1e6 for v, s in samples.items()}
    ratios = [a / b for a, b in zip(samples["with"], samples["without"], strict=True)]
    where = ("SQLite file (WAL, synchronous=FULL)" if store == "sqlite"
             else "Postgres (a schema per variant)")
    report = {
        "workload": f"seed loop, {LOOP_STEPS} steps, {where}, durability sync",
        "pairs": pairs,
        "us_per_execution_with": round(per_step["with"], 1),
        "us_per_execution_without": round(per_step["without"], 1),
        "ratio_median": round(statistics.median(samples["with"])
                              / statistics.median(samples["without"]), 3),
        "ratio_paired": round(statistics.median(ratios), 3),
        "ratio_min": round(min(samples["with"]) / min(samples["without"]), 3),
    }
    if frames is not None:
        report.update({
            "wal_frames_per_step_with": frames["with"],
            "wal_frames_per_step_without": frames["without"],
            "wal_frames_ratio": round(frames["with"] / frames["without"], 3),
        })
    return report


def wal_frames(variant: str, workdir: Path) -> float:
    """Pages written to the WAL per step of one seed loop run (checkpoints off): what a
    step costs the disk, unmoved by the machine's noise."""
    from harness import invoke
    from workloads import LOOP_INPUT, LOOP_STEPS, open_sqlite, seed_loop_graph

    from threadloom.checkpoint.sqlite import SqliteSaver
    from threadloom.graph import END, StateGraph

    path = workdir / f"frames-{variant}.db"
    conn = open_sqlite(path)
    saver = SqliteSaver(conn)
    saver.setup()
    if variant == "without":
        for statement in UNDO_SQLITE:
            conn.execute(statement)
        conn.commit()
    graph = seed_loop_graph(types.SimpleNamespace(StateGraph=StateGraph, END=END),
                            LOOP_STEPS).compile(checkpointer=saver)
    invoke(graph, LOOP_INPUT, thread_id="warm", durability="sync")  # the tables' first pages
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    invoke(graph, LOOP_INPUT, thread_id="counted", durability="sync")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    wal = Path(f"{path}-wal").stat().st_size
    conn.close()
    return round((wal - 32) / (page + 24) / LOOP_STEPS, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--loop-pairs", type=int, default=8)
    parser.add_argument("--only", choices=("pages", "loop"))
    parser.add_argument("--loop-stores", default="sqlite",
                        help="stores of the seed loop comparison: sqlite, postgres or both")
    args = parser.parse_args()
    report: dict[str, Any] = {"executions": args.executions, "loadavg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="seed-lists-") as tmp:
        workdir = Path(tmp)
        if args.only != "loop":
            stores = [s.strip() for s in args.stores.split(",") if s.strip()]
            if "sqlite" in stores:
                report["sqlite"] = bench_sqlite(args.executions, args.reps, workdir)
            if "postgres" in stores:
                report["postgres"] = bench_postgres(args.executions, args.reps)
        if args.only != "pages":
            for store in (s.strip() for s in args.loop_stores.split(",") if s.strip()):
                report[f"seed_loop_{store}_sync"] = bench_loop(args.loop_pairs, workdir, store)
    report["loadavg_1m_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
