"""The benchmark workloads: graph definitions written once, and their registrations.

Every graph is built by a function of an :class:`~harness.Engine` (``StateGraph``, ``START``,
``END``, ``Send``, ``Command`` and ``engine.module(...)`` from either package), so both engines
run literally the same code.

Adding a workload (the extension point)
---------------------------------------
Write a function that takes an :class:`Engine` and returns a :class:`Trial`, and register it
with :func:`workload`. Everything not done inside ``Trial.run`` (building and compiling the
graph, opening a database, filling a thread for a ``get_state`` test) is untimed::

    @workload("my_sqlite_loop", op="node execution", ops_per_sample=2 * LOOP_STEPS,
              default=False)
    def my_sqlite_loop(engine: Engine) -> Trial:
        \"\"\"Seed loop on a SQLite file, durability sync.\"\"\"
        tmp = tempfile.TemporaryDirectory()
        db = Path(tmp.name) / "bench.db"
        conn = open_sqlite(db)
        graph = seed_loop_graph(engine, LOOP_STEPS).compile(
            checkpointer=sqlite_saver(engine, conn))
        threads = thread_ids()
        return Trial(
            run=lambda: invoke(graph, LOOP_INPUT, thread_id=next(threads), durability="sync"),
            check=check_seed_loop,
            metrics=lambda: {"db_bytes": sqlite_size(db)},
            close=lambda: (conn.close(), tmp.cleanup()),
        )

(The registered ``seed_loop_<store>_<durability>`` workloads are the full version: they also
read every saved run back, so an engine that skips persisting fails instead of looking fast.)

``ops_per_sample`` is how many operations one ``run()`` performs (node executions, invokes,
compiles, ``get_state`` calls ...), so the report can give time per operation and operations
per second; a throughput test with N caller threads does its N callers inside ``run()``.
``metrics()`` is called once after timing for figures that are not times (file sizes, row
counts). Engine-specific construction (how a saver is opened) belongs in a helper such as
:func:`sqlite_saver`, the one place to adapt when threadloom's API differs from LangGraph's.
``default=False`` keeps a slow or provisional workload out of the default run; name it with
``--workloads`` to run it, or put it in a group (``groups=("durable",)``) and name the group.

Targets: ``target=`` bounds the time ratio threadloom / LangGraph from above; with
``higher_is_better=True`` (throughput) the ratio is ops/s over ops/s and ``target`` is a lower
bound; ``target_metric="db_bytes"`` applies ``target`` to the ratio of that ``metrics()``
figure instead; ``target_us_per_op=`` is an absolute bound on threadloom's µs per op. A slow
workload can cap its samples with ``max_reps=`` and skip the warm-up with ``warmup=False``;
``Trial.before_sample`` (untimed) runs before every sample, e.g. to give each a fresh
database (``append_storage_sqlite_sync``). :func:`prepared` wraps a builder in an
:class:`ExitStack` that becomes ``Trial.close`` (and is closed at once if building fails).

A sample that overruns ``--sample-timeout`` is interrupted in the main thread; worker threads
it started may still be running (:func:`invoke_concurrently` tells its callers to stop after
their current invoke), so treat the figures after a timeout with suspicion.
"""

from __future__ import annotations

import itertools
import operator
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Annotated, Any, TypedDict

from _pg_savers import (
    PG_DSN,
    THROUGHPUT_CALLERS,
    fresh_pg_database,
    pg_size,
    postgres_saver,
    postgres_saver_for_threads,
)
from harness import REFERENCE, Engine, Trial, invoke, thread_ids, workload

# --------------------------------------------------------------------------------------------
# Graph definitions: written once, built on whichever engine is passed in
# --------------------------------------------------------------------------------------------


class LoopState(TypedDict):
    step: int
    done: bool


class FanoutState(TypedDict):
    items: Annotated[list[str], operator.add]
    joined: int


class CounterState(TypedDict):
    x: int


REDUCER_FIELDS = [f"f{i}" for i in range(20)]
# 20 computed keys, so the functional form (which mypy cannot check).
_REDUCER_FIELD_TYPES = {name: Annotated[list[int], operator.add] for name in REDUCER_FIELDS}
ReducersState = TypedDict("ReducersState", {"step": int, **_REDUCER_FIELD_TYPES})  # type: ignore[misc]


def seed_loop_graph(ng: Engine, steps: int) -> Any:
    """Seed 000's graph: ``increment`` and ``check`` alternate until ``step >= steps``."""

    def increment(state: LoopState) -> dict[str, Any]:
        return {"step": state["step"] + 1}

    def check(state: LoopState) -> dict[str, Any]:
        return {"done": state["step"] >= steps}

    def route(state: LoopState) -> str:
        return ng.END if state["done"] else "increment"

    builder = ng.StateGraph(LoopState)
    builder.add_node("increment", increment)
    builder.add_node("check", check)
    builder.set_entry_point("increment")
    builder.add_edge("increment", "check")
    builder.add_conditional_edges("check", route, {"increment": "increment", ng.END: ng.END})
    return builder


def fanout_graph(ng: Engine, width: int) -> Any:
    """``split`` -> ``width`` parallel workers -> ``join`` (waits for all of them)."""

    def split(state: FanoutState) -> dict[str, Any]:
        return {"joined": 0}

    def make_worker(label: str) -> Callable[[FanoutState], dict[str, Any]]:
        def work(state: FanoutState) -> dict[str, Any]:
            return {"items": [label]}

        return work

    def join(state: FanoutState) -> dict[str, Any]:
        return {"joined": len(state["items"])}

    workers = [f"w{i}" for i in range(width)]
    builder = ng.StateGraph(FanoutState)
    builder.add_node("split", split)
    for name in workers:
        builder.add_node(name, make_worker(name))
        builder.add_edge("split", name)
    builder.add_node("join", join)
    builder.add_edge(ng.START, "split")
    builder.add_edge(workers, "join")
    builder.add_edge("join", ng.END)
    return builder


def sequence_graph(ng: Engine, length: int) -> Any:
    """A chain ``n0 -> n1 -> ... -> n{length-1}``, each node incrementing ``x``."""

    def bump(state: CounterState) -> dict[str, Any]:
        return {"x": state["x"] + 1}

    names = [f"n{i}" for i in range(length)]
    builder = ng.StateGraph(CounterState)
    for name in names:
        builder.add_node(name, bump)
    builder.add_edge(ng.START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], ng.END)
    return builder


def reducers_graph(ng: Engine, steps: int) -> Any:
    """One node looping ``steps`` times, appending to field ``f{step % 20}`` each time."""

    def append(state: dict[str, Any]) -> dict[str, Any]:
        step = state["step"]
        return {"step": step + 1, REDUCER_FIELDS[step % len(REDUCER_FIELDS)]: [step]}

    def route(state: dict[str, Any]) -> str:
        return ng.END if state["step"] >= steps else "append"

    builder = ng.StateGraph(ReducersState)
    builder.add_node("append", append)
    builder.add_edge(ng.START, "append")
    builder.add_conditional_edges("append", route, {"append": "append", ng.END: ng.END})
    return builder


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------

LOOP_STEPS = 1000
LOOP_INPUT = {"step": 0, "done": False}
FANOUT_WIDTH = 10
FANOUT_INVOKES = 200
SEQUENCE_LENGTH = 100
SEQUENCE_INVOKES = 10
COMPILES_PER_SAMPLE = 10
REDUCER_STEPS = 500


def check_seed_loop(result: Any) -> None:
    assert result == {"step": LOOP_STEPS, "done": True}, f"unexpected final state {result!r}"


@workload(
    "seed_loop",
    op="node execution",
    ops_per_sample=2 * LOOP_STEPS,
    target=1 / 5,
    invokes_per_sample=1,
)
def seed_loop(engine: Engine) -> Trial:
    """Seed 000's increment/check loop, 1000 rounds = 2000 node executions, no checkpointer.

    One sample is one invoke. Measures the per-step cost of the engine itself: choosing the
    next task, running it, applying its write, routing through a conditional edge.
    """
    graph = seed_loop_graph(engine, LOOP_STEPS).compile()
    return Trial(run=lambda: invoke(graph, LOOP_INPUT), check=check_seed_loop)


@workload(
    "fanout",
    op="node execution",
    ops_per_sample=FANOUT_INVOKES * (FANOUT_WIDTH + 2),
    target=1 / 3,
    invokes_per_sample=FANOUT_INVOKES,
)
def fanout(engine: Engine) -> Trial:
    """split -> 10 parallel workers (each appends to a list reducer) -> join; 200 invokes.

    One sample is 200 invokes of 12 node executions each. Measures parallel branches: starting
    10 tasks in one superstep, merging their writes, and a join that waits for all of them.
    """
    graph = fanout_graph(engine, FANOUT_WIDTH).compile()
    expected_items = sorted(f"w{i}" for i in range(FANOUT_WIDTH))

    def run() -> Any:
        result = None
        for _ in range(FANOUT_INVOKES):
            result = invoke(graph, {"items": [], "joined": 0})
        return result

    def check(result: Any) -> None:
        assert result["joined"] == FANOUT_WIDTH, f"join saw {result['joined']} items"
        assert sorted(result["items"]) == expected_items, f"items {result['items']!r}"

    return Trial(run=run, check=check)


@workload(
    "sequence_100",
    op="node execution",
    ops_per_sample=SEQUENCE_INVOKES * SEQUENCE_LENGTH,
    target=1 / 5,
    invokes_per_sample=SEQUENCE_INVOKES,
)
def sequence_100(engine: Engine) -> Trial:
    """A 100-node chain n0 -> ... -> n99, each incrementing x; 10 invokes per sample.

    Measures per-step cost on a wide graph: an engine that looks at every node or channel on
    every step pays for the 99 that are idle.
    """
    graph = sequence_graph(engine, SEQUENCE_LENGTH).compile()

    def run() -> Any:
        result = None
        for _ in range(SEQUENCE_INVOKES):
            result = invoke(graph, {"x": 0})
        return result

    def check(result: Any) -> None:
        assert result == {"x": SEQUENCE_LENGTH}, f"unexpected final state {result!r}"

    return Trial(run=run, check=check)


@workload("sequence_100_compile", op="compile", ops_per_sample=COMPILES_PER_SAMPLE, target=1.0)
def sequence_100_compile(engine: Engine) -> Trial:
    """Builder construction + compile() of the 100-node chain; 10 compiles per sample.

    The target is only "faster than LangGraph": ratio below 1.
    """

    def run() -> Any:
        graph = None
        for _ in range(COMPILES_PER_SAMPLE):
            graph = sequence_graph(engine, SEQUENCE_LENGTH).compile()
        return graph

    def check(graph: Any) -> None:
        assert invoke(graph, {"x": 0}) == {"x": SEQUENCE_LENGTH}, "compiled graph is wrong"

    return Trial(run=run, check=check)


@workload("reducers_20", op="node execution", ops_per_sample=REDUCER_STEPS, invokes_per_sample=1)
def reducers_20(engine: Engine) -> Trial:
    """20 list-reducer fields; one node loops 500 times, appending to field step % 20.

    Measures reducer application and state size: each step writes one of 20 reducer channels
    plus a plain counter, and routes through a conditional edge.
    """
    graph = reducers_graph(engine, REDUCER_STEPS).compile()
    initial: dict[str, Any] = {"step": 0, **{name: [] for name in REDUCER_FIELDS}}
    per_field = REDUCER_STEPS // len(REDUCER_FIELDS)

    def check(result: Any) -> None:
        assert result["step"] == REDUCER_STEPS, f"step {result['step']}"
        for i, name in enumerate(REDUCER_FIELDS):
            expected = list(range(i, REDUCER_STEPS, len(REDUCER_FIELDS)))
            assert len(expected) == per_field
            assert result[name] == expected, f"{name} = {result[name]!r}"

    return Trial(run=lambda: invoke(graph, initial), check=check)


# --- with a checkpointer (opt-in, group "durable") -------------------------------------------
#
# Every workload below reads what it saved back (for SQLite and Postgres through another
# connection), so an engine that skips persisting fails instead of looking fast.

DURABLE = ("durable",)
SAVER_TARGETS = {"memory": 1 / 5, "sqlite": 1 / 3, "postgres": 1 / 3}

APPEND_STEPS = 2000
APPEND_ITEM_BYTES = 100
HISTORY_THREAD = "history-2000"
GET_STATE_CALLS = 200
THROUGHPUT_INVOKES = 1000


class AppendState(TypedDict):
    items: Annotated[list[str], operator.add]
    count: int


def append_item(k: int) -> str:
    """The ``k``-th item: exactly ``APPEND_ITEM_BYTES`` ASCII characters, unique per step."""
    return f"{k:08d}".ljust(APPEND_ITEM_BYTES, "x")


def append_graph(ng: Engine, steps: int) -> Any:
    """One node looping ``steps`` times, appending one item to ``items`` and counting."""

    def append(state: AppendState) -> dict[str, Any]:
        count = state["count"]
        return {"items": [append_item(count)], "count": count + 1}

    def route(state: AppendState) -> str:
        return ng.END if state["count"] >= steps else "append"

    builder = ng.StateGraph(AppendState)
    builder.add_node("append", append)
    builder.add_edge(ng.START, "append")
    builder.add_conditional_edges("append", route, {"append": "append", ng.END: ng.END})
    return builder


def config_for(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def memory_saver(engine: Engine) -> Any:
    return engine.module("checkpoint.memory").InMemorySaver()


def open_sqlite(path: Path) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with ``synchronous=FULL``, for either engine."""
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def sqlite_saver(engine: Engine, conn: sqlite3.Connection) -> Any:
    """The engine's SQLite saver on an open connection (the caller closes it)."""
    return engine.module("checkpoint.sqlite").SqliteSaver(conn)


def sqlite_saver_for_threads(engine: Engine, db: Path, resources: ExitStack) -> Any:
    """The engine's SQLite saver as it is meant to be shared by concurrent callers.

    LangGraph's ``SqliteSaver`` only takes a connection (it serializes callers on a lock), so
    it gets :func:`open_sqlite`'s. threadloom's takes a path and opens one connection per
    thread, with the same PRAGMAs (WAL, ``synchronous=FULL``).
    """
    if engine.name == REFERENCE:
        conn = open_sqlite(db)
        resources.callback(conn.close)
        return sqlite_saver(engine, conn)
    saver = engine.module("checkpoint.sqlite").SqliteSaver(db, synchronous="FULL")
    resources.callback(saver.close)
    return saver


def sqlite_size(path: Path) -> int:
    """Bytes of a SQLite database after folding its WAL into the main file."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def prepared(build: Callable[[ExitStack], Trial]) -> Trial:
    """Run ``build`` with an :class:`ExitStack` that becomes the trial's ``close``; if
    ``build`` fails, what it opened so far is closed at once."""
    resources = ExitStack()
    try:
        trial = build(resources)
    except BaseException:
        resources.close()
        raise
    trial.close = resources.close
    return trial


def _register_saver_loops() -> None:
    for store in ("memory", "sqlite", "postgres"):
        for durability in ("async", "sync"):
            _register_saver_loop(store, durability)


def _register_saver_loop(store: str, durability: str) -> None:
    def build(engine: Engine, resources: ExitStack) -> Trial:
        tmp = resources.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{engine.name}-"))
        db = Path(tmp) / "bench.db"
        dsn = fresh_pg_database(engine, resources) if store == "postgres" else ""

        def compile_graph() -> Any:
            if store == "memory":
                saver = memory_saver(engine)
            elif store == "sqlite":
                conn = open_sqlite(db)
                resources.callback(conn.close)
                saver = sqlite_saver(engine, conn)
            else:
                saver = postgres_saver(engine, dsn, resources)
            return seed_loop_graph(engine, LOOP_STEPS).compile(checkpointer=saver)

        graph = compile_graph()
        reader: Any = graph if store == "memory" else None
        threads = thread_ids()
        last_thread = ""
        runs = 0

        def run() -> Any:
            nonlocal runs, last_thread
            runs += 1
            last_thread = next(threads)
            return invoke(graph, LOOP_INPUT, thread_id=last_thread, durability=durability)

        def check(result: Any) -> None:
            nonlocal reader
            check_seed_loop(result)
            # Proof that the run was saved: read it back through another connection.
            if reader is None:
                reader = compile_graph()
            snapshot = reader.get_state(config_for(last_thread))
            assert snapshot.values == result, f"saved state {snapshot.values!r} != result"

        def metrics() -> dict[str, Any]:
            if store == "memory" or not runs:
                return {}
            size = sqlite_size(db) if store == "sqlite" else pg_size(dsn)
            return {"db_bytes": size, "runs": runs, "db_bytes_per_run": size // runs}

        return Trial(run=run, check=check, metrics=metrics)

    def prepare(engine: Engine) -> Trial:
        return prepared(lambda resources: build(engine, resources))

    where = {
        "memory": "InMemorySaver",
        "sqlite": "SqliteSaver on a temporary file (WAL, synchronous=FULL)",
        "postgres": f"PostgresSaver on a fresh database per engine ({PG_DSN})",
    }[store]
    prepare.__doc__ = (
        f"Seed loop (2000 node executions) with the {where}, durability {durability}; "
        "a fresh thread per sample, read back after each."
    )
    workload(
        f"seed_loop_{store}_{durability}",
        op="node execution",
        ops_per_sample=2 * LOOP_STEPS,
        target=SAVER_TARGETS[store],
        default=False,
        invokes_per_sample=1,
        groups=DURABLE,
    )(prepare)


_register_saver_loops()


@workload(
    "append_storage_sqlite_sync",
    op="node execution",
    ops_per_sample=APPEND_STEPS,
    target=1 / 20,
    target_metric="db_bytes",
    default=False,
    invokes_per_sample=1,
    max_reps=2,
    warmup=False,
    groups=DURABLE,
)
def append_storage_sqlite_sync(engine: Engine) -> Trial:
    """2000 steps each appending one 100-byte string to an operator.add list (plus a counter),
    SqliteSaver (WAL, synchronous=FULL), durability sync; the target is on the file size.

    Each sample runs on a fresh database file, so ``metrics.db_bytes`` (after folding the WAL)
    is one run's storage; ``metric_ratios.db_bytes`` is the size ratio (target <= 1/20).
    LangGraph re-stores the whole list in every checkpoint (~209 MB, ~12 s), so at most 2
    samples and no warm-up. The time ratio is reported but has no target here.
    """
    root = Path(tempfile.mkdtemp(prefix=f"bench-{engine.name}-append-"))
    sample = ExitStack()
    counter = itertools.count()
    db = root / "none.db"
    graph: Any = None
    sizes: list[int] = []
    final = {
        "items": [append_item(k) for k in range(APPEND_STEPS)],
        "count": APPEND_STEPS,
    }

    def compile_graph(resources: ExitStack) -> Any:
        conn = open_sqlite(db)
        resources.callback(conn.close)
        return append_graph(engine, APPEND_STEPS).compile(checkpointer=sqlite_saver(engine, conn))

    def before_sample() -> None:
        nonlocal db, graph
        sample.close()  # the previous sample's connections, then its files
        for old in root.iterdir():
            shutil.rmtree(old)
        folder = root / f"sample-{next(counter)}"
        folder.mkdir()
        db = folder / "bench.db"
        graph = compile_graph(sample)

    def run() -> Any:
        return invoke(graph, {"items": [], "count": 0}, thread_id="append", durability="sync")

    def check(result: Any) -> None:
        assert result["count"] == APPEND_STEPS, f"count {result['count']}"
        assert result["items"] == final["items"], "items differ from the expected list"
        with ExitStack() as reading:
            snapshot = compile_graph(reading).get_state(config_for("append"))
            assert snapshot.values == final, "saved state differs from the result"
        sizes.append(sqlite_size(db))

    def metrics() -> dict[str, Any]:
        if not sizes:
            return {}
        return {
            "db_bytes": sizes[-1],
            "db_bytes_samples": sizes,
            "db_bytes_per_step": sizes[-1] // APPEND_STEPS,
            "payload_bytes": APPEND_STEPS * APPEND_ITEM_BYTES,
        }

    def close() -> None:
        sample.close()
        shutil.rmtree(root, ignore_errors=True)

    return Trial(run=run, check=check, metrics=metrics, close=close, before_sample=before_sample)


def seeded_history_thread(engine: Engine, resources: ExitStack) -> tuple[Any, dict[str, Any]]:
    """A SQLite-backed seed-loop graph whose thread ``HISTORY_THREAD`` holds one run of 1000
    rounds in durability sync (~2000 checkpoints); untimed. Returns the graph and config."""
    tmp = resources.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{engine.name}-"))
    conn = open_sqlite(Path(tmp) / "bench.db")
    resources.callback(conn.close)
    graph = seed_loop_graph(engine, LOOP_STEPS).compile(checkpointer=sqlite_saver(engine, conn))
    check_seed_loop(invoke(graph, LOOP_INPUT, thread_id=HISTORY_THREAD, durability="sync"))
    return graph, config_for(HISTORY_THREAD)


FINAL_LOOP_STATE = {"step": LOOP_STEPS, "done": True}


@workload(
    "get_state_2000",
    op="get_state call",
    ops_per_sample=GET_STATE_CALLS,
    target_us_per_op=5000.0,
    default=False,
    groups=DURABLE,
)
def get_state_2000(engine: Engine) -> Trial:
    """graph.get_state(config) on a SQLite thread holding ~2000 checkpoints (the seed loop,
    1000 rounds, durability sync, prepared untimed); 200 calls per sample.

    Target: threadloom under 5 ms per call (absolute); the ratio is reported too.
    """

    def build(resources: ExitStack) -> Trial:
        graph, config = seeded_history_thread(engine, resources)
        snapshots = sum(1 for _ in graph.get_state_history(config))

        def run() -> Any:
            snapshot = None
            for _ in range(GET_STATE_CALLS):
                snapshot = graph.get_state(config)
            return snapshot

        def check(snapshot: Any) -> None:
            assert snapshot.values == FINAL_LOOP_STATE, f"get_state gave {snapshot.values!r}"

        return Trial(run=run, check=check, metrics=lambda: {"snapshots": snapshots})

    return prepared(build)


@workload(
    "get_state_history_2000",
    op="full history",
    ops_per_sample=1,
    default=False,
    groups=DURABLE,
)
def get_state_history_2000(engine: Engine) -> Trial:
    """list(graph.get_state_history(config)) of that ~2000-checkpoint SQLite thread: one
    listing of every snapshot per sample.

    ``metrics.snapshots`` is how many each engine yields (LangGraph: 2002, the input
    checkpoint plus one per step).
    """

    def build(resources: ExitStack) -> Trial:
        graph, config = seeded_history_thread(engine, resources)
        counts: list[int] = []

        def run() -> Any:
            return list(graph.get_state_history(config))

        def check(history: Any) -> None:
            assert len(history) >= 2 * LOOP_STEPS, f"only {len(history)} snapshots"
            assert history[0].values == FINAL_LOOP_STATE, f"newest is {history[0].values!r}"
            counts.append(len(history))

        return Trial(run=run, check=check, metrics=lambda: {"snapshots": counts[-1]})

    return prepared(build)


def invoke_concurrently(graph: Any, invokes: int, callers: int, prefix: str) -> list[Any]:
    """``invokes`` invocations of ``graph`` (input ``{"x": 0}``, default durability), each on a
    fresh thread id ``<prefix>-<i>``, by ``callers`` threads taking indices from one shared
    counter. Returns the results in index order; re-raises the first caller's error."""
    counter = itertools.count()  # next() on it is atomic under the GIL
    results: list[Any] = [None] * invokes
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            while not errors:
                i = next(counter)
                if i >= invokes:
                    return
                results[i] = invoke(graph, {"x": 0}, thread_id=f"{prefix}-{i}")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    except BaseException as exc:  # e.g. the sample timeout: stop the callers, then re-raise
        errors.append(exc)
        raise
    if errors:
        raise errors[0]
    return results


def _register_throughput(store: str, target: float | None) -> None:
    def build(engine: Engine, resources: ExitStack) -> Trial:
        if store == "sqlite":
            tmp = resources.enter_context(
                tempfile.TemporaryDirectory(prefix=f"bench-{engine.name}-")
            )
            saver = sqlite_saver_for_threads(engine, Path(tmp) / "bench.db", resources)
        else:
            saver = postgres_saver_for_threads(
                engine, fresh_pg_database(engine, resources), resources
            )
        graph = sequence_graph(engine, 3).compile(checkpointer=saver)
        samples = itertools.count()
        prefix = ""

        def run() -> Any:
            nonlocal prefix
            prefix = f"tp{next(samples)}"
            return invoke_concurrently(graph, THROUGHPUT_INVOKES, THROUGHPUT_CALLERS, prefix)

        def check(results: Any) -> None:
            wrong = [r for r in results if r != {"x": 3}]
            assert not wrong, f"{len(wrong)} wrong results, e.g. {wrong[0]!r}"
            for i in (0, THROUGHPUT_INVOKES - 1):
                values = graph.get_state(config_for(f"{prefix}-{i}")).values
                assert values == {"x": 3}, f"saved state of {prefix}-{i} is {values!r}"

        return Trial(run=run, check=check)

    def prepare(engine: Engine) -> Trial:
        return prepared(lambda resources: build(engine, resources))

    where = "SqliteSaver (WAL, synchronous=FULL)" if store == "sqlite" else "PostgresSaver"
    prepare.__doc__ = (
        f"3-node chain, {where}, default durability: {THROUGHPUT_INVOKES} invokes on fresh "
        f"threads by {THROUGHPUT_CALLERS} concurrent caller threads; ratio = invokes/s "
        "threadloom / LangGraph (higher is better)."
    )
    workload(
        f"throughput_3node_{store}",
        op="invoke",
        ops_per_sample=THROUGHPUT_INVOKES,
        target=target,
        default=False,
        higher_is_better=True,
        groups=DURABLE,
    )(prepare)


_register_throughput("sqlite", None)
_register_throughput("postgres", 3.0)
