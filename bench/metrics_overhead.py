"""The engine's per-node cost with Prometheus metrics on, off, and before they existed.

    bench/.venv/bin/python bench/metrics_overhead.py [--rounds 7] [--base DIR]

Each round runs one child process per mode, in turn (so load on the machine hits every mode
alike), timing the seed loop (1000 rounds = 2000 node executions, no checkpointer) and the
same loop on SQLite with ``durability="sync"`` (200 rounds); the report is each mode's
median over the rounds of its best invoke, in µs per node execution, and its ratio to
``off``. Modes:

* ``on``: prometheus-client importable (the library records its metrics);
* ``off``: ``THREADLOOM_METRICS=0`` (every hook is a ``None`` test, as without the package);
* ``missing``: prometheus-client not importable (a ``PYTHONPATH`` shim whose import fails);
* ``base`` (with ``--base DIR``): a checkout of the package from before the metrics
  (``git archive <commit> threadloom | tar -x -C DIR``), i.e. "today".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import SEED_LOOP  # noqa: E402

CHILD = r"""
import json, sys, tempfile, time, os
from typing import TypedDict
from threadloom.graph import StateGraph, END

""" + SEED_LOOP + r"""
out = {}
g = build(1000).compile()
out["seed_loop"] = best(lambda: g.invoke({"step": 0, "done": False}), 5) / 2000 * 1e6
from threadloom.checkpoint.sqlite import SqliteSaver
d = tempfile.mkdtemp()
saver = SqliteSaver(os.path.join(d, "b.db")); saver.setup()
gs = build(200).compile(checkpointer=saver, durability="sync")
n = [0]
def durable():
    n[0] += 1
    gs.invoke({"step": 0, "done": False}, {"configurable": {"thread_id": f"t{n[0]}"}})
out["seed_loop_sqlite_sync"] = best(durable, 3) / 400 * 1e6
import threadloom
if os.path.exists(os.path.join(threadloom.__path__[0], "_metrics.py")):
    import threadloom._metrics as m
    out["metrics"] = m.available()
else:
    out["metrics"] = None  # a package from before the metrics
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--base", help="a pre-metrics copy of the package (its parent dir)")
    args = parser.parse_args()
    shim = Path(tempfile.mkdtemp()) / "prometheus_client"
    shim.mkdir()
    (shim / "__init__.py").write_text("raise ImportError('prometheus_client is hidden')\n")
    repo = str(Path(__file__).resolve().parent.parent)
    modes = {"on": {"PYTHONPATH": repo}, "off": {"PYTHONPATH": repo, "THREADLOOM_METRICS": "0"},
             "missing": {"PYTHONPATH": f"{shim.parent}{os.pathsep}{repo}"}}
    if args.base:
        modes["base"] = {"PYTHONPATH": args.base}
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode, env in modes.items():
            done = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env},
                                  capture_output=True, text=True, check=True, cwd="/")
            results[mode].append(json.loads(done.stdout))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    report = {}
    for workload in ("seed_loop", "seed_loop_sqlite_sync"):
        med = {m: statistics.median(x[workload] for x in rs) for m, rs in results.items()}
        report[workload] = {m: {"us_per_node": round(v, 2),
                                "vs_off": round(v / med["off"], 3)} for m, v in med.items()}
    report["metrics_available"] = {m: rs[0]["metrics"] for m, rs in results.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
