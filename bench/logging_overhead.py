"""The engine's per-node cost with run-scoped logging (issue 14), side by side in one run.

    .venv/bin/python bench/logging_overhead.py [--rounds 7] [--base DIR]

Each round runs one child process per mode, in turn (so load on the machine hits every mode
alike), timing the seed loop (1000 rounds = 2000 node executions, no checkpointer) and the
same loop on SQLite with ``durability="sync"`` (200 rounds); the report is each mode's median
over the rounds of its best invoke, in µs per node execution, and its ratio to ``warning``
(and the best round's, ``best_*``: on a machine shared with other work, the least disturbed
figure).
Modes:

* ``warning``: logging at WARNING (the default), threadloom's record factory installed, as
  every process that imports threadloom has it;
* ``no_factory``: the same, with the record factory taken out again (logging as without
  threadloom), target: ``warning`` within 3% of it;
* ``info_capture``: INFO records printed as JSON (to ``/dev/null``) and each run's records
  kept with it in the SQLite store (``capture_run_logs``), as the runtime runs;
* ``base`` (with ``--base DIR``): a checkout of the package from before run-scoped logging
  (``git archive <commit> threadloom | tar -x -C DIR``).

It also prints the cost of one record made inside a run (``logger.info`` that passes the
level, to a handler that drops it) with and without the factory (what the factory adds to
each record that is made), and of setting and resetting a run's fields (what every run
pays; nothing is set per node).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import SEED_LOOP  # noqa: E402

CHILD = r"""
import json, logging, os, sys, tempfile, time
from typing import TypedDict
mode = sys.argv[1]
from threadloom.graph import StateGraph, END
if mode == "no_factory":
    logging.setLogRecordFactory(logging.LogRecord)

""" + SEED_LOOP + r"""
from threadloom.checkpoint.sqlite import SqliteSaver
d = tempfile.mkdtemp()
saver = SqliteSaver(os.path.join(d, "b.db")); saver.setup()
capture = None
if mode == "info_capture":
    import threadloom.logging as tl
    tl.configure(json=True, level="INFO", stream=open(os.devnull, "w"))
    capture = tl.capture_run_logs(saver)
out = {}
g = build(1000).compile()
out["seed_loop"] = best(lambda: g.invoke({"step": 0, "done": False}), 5) / 2000 * 1e6
gs = build(200).compile(checkpointer=saver, durability="sync")
n = [0]
def durable():
    n[0] += 1
    gs.invoke({"step": 0, "done": False}, {"configurable": {"thread_id": f"t{n[0]}"}})
out["seed_loop_sqlite_sync"] = best(durable, 3) / 400 * 1e6
if capture is not None:
    capture.close()
    out["kept_per_run"] = len(saver.page_run_logs(
        saver.list_runs(thread_id="t1")[0].run_id, limit=1000))
print(json.dumps(out))
"""

RECORD = r"""
import json, logging, time
import threadloom.logging as tl
from threadloom import _context
ours = logging.getLogRecordFactory()
log = logging.getLogger("bench.app")
log.propagate = False
log.addHandler(logging.NullHandler())
log.setLevel(logging.INFO)
token = tl.enter_run("run-1", "thread-1", "graph", "default", None)
_context.task_scope(_context.TaskScope({}, "node", 1, "task-1"))
N = 20_000
times = {"with_factory": [], "without_factory": []}
for _ in range(15):  # the two factories in turn, in one process: load hits both alike
    for mode in times:
        logging.setLogRecordFactory(ours if mode == "with_factory" else logging.LogRecord)
        t = time.perf_counter()
        for i in range(N):
            log.info("record %d", i)
        times[mode].append((time.perf_counter() - t) / N * 1e6)
logging.setLogRecordFactory(ours)
out = {mode: min(values) for mode, values in times.items()}
tl.exit_run(token)
best = None
for _ in range(5):  # what a run pays: the run's fields set and reset around it
    t = time.perf_counter()
    for i in range(100_000):
        tl.exit_run(tl.enter_run("run-1", "thread-1", "graph", "default", None))
    took = (time.perf_counter() - t) / 100_000 * 1e6
    best = took if best is None else min(best, took)
out["run_enter_exit"] = best
print(json.dumps(out))
"""


def _child(code: str, mode: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code, mode], env={**os.environ, **env},
                          capture_output=True, text=True, check=True, cwd="/")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--base", help="a copy of the package from before run-scoped logging "
                                       "(its parent dir)")
    args = parser.parse_args()
    repo = str(Path(__file__).resolve().parent.parent)
    modes = {m: {"PYTHONPATH": repo} for m in ("warning", "no_factory", "info_capture")}
    if args.base:
        modes["base"] = {"PYTHONPATH": args.base}
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode, env in modes.items():
            results[mode].append(_child(CHILD, mode if mode != "base" else "warning", env))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    report: dict[str, object] = {}
    for workload in ("seed_loop", "seed_loop_sqlite_sync"):
        med = {m: statistics.median(x[workload] for x in rs) for m, rs in results.items()}
        low = {m: min(x[workload] for x in rs) for m, rs in results.items()}
        report[workload] = {m: {"us_per_node": round(v, 2),
                                "vs_warning": round(v / med["warning"], 3),
                                "best_us_per_node": round(low[m], 2),
                                "best_vs_warning": round(low[m] / low["warning"], 3)}
                            for m, v in med.items()}
    report["records_kept_per_sqlite_run"] = results["info_capture"][0]["kept_per_run"]
    micro = _child(RECORD, "warning", {"PYTHONPATH": repo})
    report["one_record_in_a_run_us"] = {
        "with_factory": round(micro["with_factory"], 3),
        "without_factory": round(micro["without_factory"], 3),
    }
    report["run_fields_set_and_reset_us"] = round(micro["run_enter_exit"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
