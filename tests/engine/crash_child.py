"""The worker process that ``test_crash.py`` runs, kills with SIGKILL, and runs again.

Usage::

    python crash_child.py DB LOG --graph linear|fanout --durability sync|async|exit
        --run-id R --thread-id T --how start|resume|continue|reinvoke|reinvoke-run-id
        [--lease-ttl SECONDS] [--schema S] [--slow-commits SECONDS] [--report REPORT.json]

It builds a graph on the SQLite file ``DB`` (or, when ``DB`` is a ``postgresql://`` URL, on
that database's schema ``S``) and runs it once. Every node and every ``@task``
appends one line to ``LOG`` (opened, written, flushed and fsynced per line, so a line written
before a SIGKILL is on disk): ``node:<name>:<counter>`` (the counter is how many nodes the
state's trail held when the node started) and ``task:<name>:<arg>``. A node or task that
finished also writes ``done:<name>``, which the kill points below wait on.

The graphs (state: ``trail``, the nodes that ran, and ``fetched``, the tasks' results):

* ``linear``: ``n1 -> n2 -> n3 -> n4 -> n5``; ``n3`` calls the task ``fetch`` twice
  (``"a"`` and ``"b"``) in parallel and waits for both;
* ``fanout``: ``n1 -> n2 -> {n3, n3x} -> n4 -> n5``: ``n3`` and ``n3x`` run in one superstep.

Where it dies (besides the engine's own ``THREADLOOM_FAULTS`` points):

* ``CRASH_KILL=node:<name>``: the node kills the process when it starts (after its line);
  ``node:<name>:after`` once its tasks returned; ``node:<name>:after-sibling`` once the other
  node of its superstep finished (and, under ``sync``/``async``, its result is in the store);
* ``CRASH_KILL=task:<name>:<arg>``: the task call kills the process once the *other* call of
  ``n3`` finished (and, under ``sync``/``async``, was recorded in the store).

The kill happens once only: it first creates the file ``CRASH_MARKER``, and does not kill
when that file exists, so a resumed process never kills itself again.

``CRASH_HANG=node:<name>``: the node blocks forever when it starts (after its line and
``hang:<name>``), holding the run's lease, until the test kills the process.

``--how`` says how the run is started or continued, none of them waiting for a busy lease
beyond what ``resume`` does by itself: ``start`` (``invoke(input)`` with the run id and
thread id), ``resume`` (``graph.resume(run_id=R)``, as in seed 000), ``continue``
(``invoke(None, {"thread_id": T})``), ``reinvoke`` (seed 004: the same input again on the
thread, no run id), ``reinvoke-run-id`` (the same input again with the same run id).
``--lease-ttl`` is the graph's ``lease_ttl``.
``--report`` writes, as JSON, what the store holds before
the run (``before``) and after it (``after``): state values, next nodes, recorded results of
the pending tasks, the run record and the run's executions.

``--slow-commits S``: the store sleeps ``S`` seconds before each commit made by the async
background writer (a slow database), to see whether the run outruns its writer.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

from threadloom.checkpoint import open_store
from threadloom.checkpoint.sqlite import SqliteSaver
from threadloom.func import task
from threadloom.graph import END, START, StateGraph

INPUT = {"trail": [], "fetched": []}
WAIT_LIMIT = 10.0


class State(TypedDict):
    trail: Annotated[list[str], operator.add]
    fetched: Annotated[list[str], operator.add]


class Child:
    """One process's view: its log, its kill point and its store."""

    def __init__(self, log: Path, durability: str, run_id: str, thread_id: str) -> None:
        self.log = log
        self.durability = durability
        self.run_id = run_id
        self.thread_id = thread_id
        self.kill = os.environ.get("CRASH_KILL", "")
        self.hang = os.environ.get("CRASH_HANG", "")
        marker = os.environ.get("CRASH_MARKER")
        self.marker = Path(marker) if marker else None
        self.lock = threading.Lock()
        self.graph: Any = None

    def write(self, line: str) -> None:
        with self.lock:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def lines(self) -> list[str]:
        with self.lock:
            return self.log.read_text().splitlines() if self.log.exists() else []

    def maybe_kill(self, point: str, wait: Callable[[], bool] | None = None) -> None:
        """Kill this process at ``point`` if ``CRASH_KILL`` names it (the first time only),
        once ``wait()`` holds."""
        if self.kill != point or self.marker is None or self.marker.exists():
            return
        if wait is not None:
            _wait_until(wait)
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT, 0o644)
        os.fsync(fd)
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def done(self, name: str) -> bool:
        return f"done:{name}" in self.lines()

    def task_recorded(self, arg: str) -> bool:
        """The ``fetch(arg)`` call is finished and (``sync``/``async``) in the store."""
        if not self.done(f"fetch:{arg}"):
            return False
        if self.durability == "exit":
            return True
        return any(
            e.node == "fetch" and e.status == "SUCCEEDED" and e.inputs == [arg]
            for e in self.graph.list_executions(self.run_id)
        )

    def node_recorded(self, name: str) -> bool:
        """Node ``name`` is finished and (``sync``/``async``) its result is in the store."""
        if not self.done(name):
            return False
        if self.durability != "async":
            # sync writes a parallel step only with its checkpoint: nothing to wait for.
            return True
        state = self.graph.get_state({"thread_id": self.thread_id})
        return any(t.name == name and t.result is not None for t in state.tasks)


def _wait_until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("crash_child: the kill point's condition never held")
        time.sleep(0.005)


def build(child: Child, shape: str) -> StateGraph:
    """The graph ``shape`` (``linear`` or ``fanout``), logging into ``child``."""

    @task
    def fetch(arg: str) -> str:
        child.write(f"task:fetch:{arg}")
        other = "b" if arg == "a" else "a"
        child.maybe_kill(f"task:fetch:{arg}", lambda: child.task_recorded(other))
        child.write(f"done:fetch:{arg}")
        return f"got-{arg}"

    def node(name: str, calls_tasks: bool = False, sibling: str | None = None) -> Any:
        def run(state: State) -> dict[str, list[str]]:
            child.write(f"node:{name}:{len(state['trail'])}")
            if child.hang == f"node:{name}":
                child.write(f"hang:{name}")
                threading.Event().wait()  # until the test kills this process
            child.maybe_kill(f"node:{name}")
            fetched: list[str] = []
            if calls_tasks:
                futures = [fetch("a"), fetch("b")]
                fetched = [f.result() for f in futures]
                child.maybe_kill(f"node:{name}:after")
            if sibling is not None:
                child.maybe_kill(f"node:{name}:after-sibling",
                                 lambda: child.node_recorded(sibling))
            child.write(f"done:{name}")
            return {"trail": [name], "fetched": fetched}

        run.__name__ = name
        return run

    builder = StateGraph(State)
    if shape == "linear":
        for name in ("n1", "n2", "n4", "n5"):
            builder.add_node(name, node(name))
        builder.add_node("n3", node("n3", calls_tasks=True))
        builder.add_edge(START, "n1")
        builder.add_edge("n1", "n2")
        builder.add_edge("n2", "n3")
        builder.add_edge("n3", "n4")
    elif shape == "fanout":
        for name in ("n1", "n2", "n4", "n5"):
            builder.add_node(name, node(name))
        builder.add_node("n3", node("n3", calls_tasks=True, sibling="n3x"))
        builder.add_node("n3x", node("n3x", sibling="n3"))
        builder.add_edge(START, "n1")
        builder.add_edge("n1", "n2")
        builder.add_edge("n2", "n3")
        builder.add_edge("n2", "n3x")
        builder.add_edge(["n3", "n3x"], "n4")
    else:
        raise SystemExit(f"unknown graph shape {shape!r}")
    builder.add_edge("n4", "n5")
    builder.add_edge("n5", END)
    return builder


class SlowSaver(SqliteSaver):
    """A SQLite store whose background-writer commits take ``delay`` seconds longer."""

    delay = 0.0

    def commit(self, commits: Any) -> None:
        if threading.current_thread().name == "threadloom-writer":
            time.sleep(self.delay)
        super().commit(commits)


def report(graph: Any, run_id: str, thread_id: str) -> dict[str, Any]:
    """What the store holds about the thread and the run, as plain JSON data."""
    state = graph.get_state({"thread_id": thread_id})
    run = graph.get_run(run_id)
    executions = graph.list_executions(run_id) if run is not None else []
    return {
        "values": dict(state.values),
        "next": list(state.next),
        "task_results": sorted(t.name for t in state.tasks if t.result is not None),
        "run": None if run is None else {
            "run_id": run.run_id, "status": run.status, "steps": run.steps,
            "executions": run.executions, "error": run.error,
        },
        "executions": [
            {"id": e.id, "node": e.node, "status": e.status, "inputs": e.inputs,
             "step": e.step}
            for e in executions
        ],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("log")
    parser.add_argument("--graph", default="linear")
    parser.add_argument("--durability", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--thread-id", required=True)
    parser.add_argument("--how", default="start")
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    parser.add_argument("--schema")
    parser.add_argument("--slow-commits", type=float, default=0.0)
    parser.add_argument("--report")
    args = parser.parse_args(argv)

    child = Child(Path(args.log), args.durability, args.run_id, args.thread_id)
    saver: Any
    if args.db.startswith("postgresql://"):
        saver = open_store(args.db, schema=args.schema)
    else:
        saver_cls = SlowSaver if args.slow_commits else SqliteSaver
        SlowSaver.delay = args.slow_commits
        saver = saver_cls(args.db)
    graph = build(child, args.graph).compile(
        checkpointer=saver, durability=args.durability, lease_ttl=args.lease_ttl,
    )
    child.graph = graph
    out: dict[str, Any] = {}
    if args.report:
        out["before"] = report(graph, args.run_id, args.thread_id)

    thread = {"thread_id": args.thread_id}
    if args.how == "start":
        result = graph.invoke(INPUT, {**thread, "run_id": args.run_id})
    elif args.how == "resume":
        result = graph.resume(run_id=args.run_id)
    elif args.how == "continue":
        result = graph.invoke(None, thread)
    elif args.how == "reinvoke":
        result = graph.invoke(INPUT, thread)
    elif args.how == "reinvoke-run-id":
        result = graph.invoke(INPUT, {**thread, "run_id": args.run_id})
    else:
        raise SystemExit(f"unknown --how {args.how!r}")

    if args.report:
        runs = graph.list_runs(thread_id=args.thread_id, limit=1)
        latest = runs[0].run_id if runs else args.run_id
        out["after"] = report(graph, latest, args.thread_id)
        out["result"] = result
        Path(args.report).write_text(json.dumps(out))
    saver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
