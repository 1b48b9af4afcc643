"""A worker process for the kill tests: ``python kill_child.py DB_URL LOG_FILE [RUN_LEASE]``.

Serves graph ``steps``: ``n`` steps of node ``step``, each appending ``<index>`` to LOG_FILE
(a side effect outside the store, so the test can count executions) and then working for
``delay`` seconds. Stops gracefully on SIGTERM; the test SIGKILLs it.
"""

from __future__ import annotations

import operator
import os
import signal
import sys
import threading
import time
from typing import Annotated, Any, TypedDict

from threadloom.checkpoint import open_store
from threadloom.graph import END, StateGraph
from threadloom.worker import Worker


class State(TypedDict):
    done: Annotated[list[int], operator.add]
    n: int
    delay: float


def main(db_url: str, log_file: str, run_lease: float) -> None:
    def step(state: State) -> dict[str, Any]:
        index = len(state["done"])
        with open(log_file, "a") as log:
            log.write(f"{index} {os.getpid()}\n")
            log.flush()
            os.fsync(log.fileno())
        time.sleep(state["delay"])
        return {"done": [index]}

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.set_entry_point("step")
    builder.add_conditional_edges("step", lambda s: END if len(s["done"]) >= s["n"] else "step",
                                  {"step": "step", END: END})
    store = open_store(db_url)
    graphs = {"steps": builder.compile(checkpointer=store, name="steps")}
    worker = Worker(store, graphs, concurrency=2, heartbeat=0.5, run_lease=run_lease)
    signal.signal(signal.SIGTERM,
                  lambda *_: threading.Thread(target=worker.stop, args=(5.0,)).start())
    print("ready", flush=True)
    worker.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 2.0)
