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
``--workloads`` to run it. A sample that overruns ``--sample-timeout`` is interrupted in the
main thread; worker threads it started may still be running, so treat the figures after a
timeout with suspicion.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Annotated, Any, TypedDict

from harness import Engine, Trial, invoke, thread_ids, workload

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


# --- with a checkpointer (opt-in: not part of the default run yet) ---------------------------


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


def sqlite_size(path: Path) -> int:
    """Bytes of a SQLite database after folding its WAL into the main file."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _register_saver_loops() -> None:
    for store in ("memory", "sqlite"):
        for durability in ("async", "sync"):
            _register_saver_loop(store, durability)


def _register_saver_loop(store: str, durability: str) -> None:
    def prepare(engine: Engine) -> Trial:
        resources = ExitStack()  # closed by Trial.close, or here if preparing fails
        tmp = resources.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{engine.name}-"))
        db = Path(tmp) / "bench.db"

        def compile_graph() -> Any:
            if store == "memory":
                saver = memory_saver(engine)
            else:
                conn = open_sqlite(db)
                resources.callback(conn.close)
                saver = sqlite_saver(engine, conn)
            return seed_loop_graph(engine, LOOP_STEPS).compile(checkpointer=saver)

        try:
            graph = compile_graph()
        except BaseException:
            resources.close()
            raise
        threads = thread_ids()
        last_thread = ""
        runs = 0

        def run() -> Any:
            nonlocal runs, last_thread
            runs += 1
            last_thread = next(threads)
            return invoke(graph, LOOP_INPUT, thread_id=last_thread, durability=durability)

        def check(result: Any) -> None:
            check_seed_loop(result)
            # Proof that the run was saved: read it back, for SQLite through a new connection.
            reader = graph if store == "memory" else compile_graph()
            snapshot = reader.get_state({"configurable": {"thread_id": last_thread}})
            assert snapshot.values == result, f"saved state {snapshot.values!r} != result"

        def metrics() -> dict[str, Any]:
            if store != "sqlite" or not runs:
                return {}
            size = sqlite_size(db)
            return {"db_bytes": size, "runs": runs, "db_bytes_per_run": size // runs}

        return Trial(run=run, check=check, metrics=metrics, close=resources.close)

    prepare.__doc__ = (
        f"Seed loop (2000 node executions) with the {store} saver, durability {durability}; "
        "a fresh thread per sample, read back after each."
    )
    workload(
        f"seed_loop_{store}_{durability}",
        op="node execution",
        ops_per_sample=2 * LOOP_STEPS,
        default=False,
        invokes_per_sample=1,
    )(prepare)


_register_saver_loops()
