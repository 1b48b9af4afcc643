"""Child process of the Postgres chaos test: several threads, each running several runs in
turn on its own thread id, ``sync`` durability, retrying through store outages.

    python chaos_child.py URL PROCESS_INDEX THREADS RUNS STEPS REPORT.json

A run that fails because the database went away is invoked again with the same run id and
input, which resumes it (or returns its recorded output if it had in fact finished). The
report lists, per run, how many attempts it took.
"""

from __future__ import annotations

import json
import operator
import sys
import threading
import time
from typing import Annotated, Any, TypedDict

from threadloom.checkpoint import open_store
from threadloom.errors import ThreadloomError
from threadloom.graph import END, START, StateGraph

STEP_SECONDS = 0.05
RUN_DEADLINE = 180.0


class State(TypedDict):
    n: int
    trail: Annotated[list, operator.add]


def build(steps: int) -> Any:
    def step(state: State) -> dict[str, Any]:
        time.sleep(STEP_SECONDS)
        return {"n": state["n"] + 1, "trail": [state["n"]]}

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda s: END if s["n"] >= steps else "step",
                                  ["step", END])
    return builder


def main() -> None:
    url, index, threads, runs, steps, report = sys.argv[1:7]
    store = open_store(url)
    graph = build(int(steps)).compile(checkpointer=store, durability="sync", lease_ttl=2.0,
                                      name="chaos")
    results: dict[str, Any] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        thread_id = f"p{index}-t{t}"
        for r in range(int(runs)):
            run_id = f"{thread_id}-r{r}"
            attempts = 0
            deadline = time.monotonic() + RUN_DEADLINE
            while True:
                attempts += 1
                try:
                    out = graph.invoke({"n": 0, "trail": []},
                                       {"thread_id": thread_id, "run_id": run_id,
                                        "recursion_limit": 1000}, wait=True)
                    break
                except ThreadloomError as exc:
                    if time.monotonic() > deadline:
                        with lock:
                            results[run_id] = {"error": f"{type(exc).__name__}: {exc}"}
                        return
                    time.sleep(0.2)
            with lock:
                results[run_id] = {"attempts": attempts, "trail_len": len(out["trail"])}

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(int(threads))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    store.close()
    with open(report, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
