"""Seed 004 (Cloud Runtime): planner -> worker -> controller loop with a retry-on-failure loop.

Only the import lines differ from the seed (``langgraph`` -> ``threadloom``), plus the
scaffolding: the run sits under ``if __name__ == "__main__":``, and the worker's failure rate
(0.3 in the seed, the default here) can be set with the environment variable
``THREADLOOM_SEED004_FAIL_RATE`` (``0`` disables the simulated failures, which makes the
output deterministic). With a fail rate of 0 the output is::

    (blank line)
    --- Cloud Runtime Execution ---
    (blank line)
    Planner running...
    Worker running...
    Controller checking...
    (... three rounds in all ...)

    --- Final State ---
    {'step': 3, 'result': 'Processed step 3'}
"""

import os
import random
import time
from typing import TypedDict

from threadloom.graph import END, StateGraph

FAIL_RATE = float(os.environ.get("THREADLOOM_SEED004_FAIL_RATE", "0.3"))

# 1️⃣ State definition (cloud-persistent)
class State(TypedDict):
    step: int
    result: str

# 2️⃣ Nodes (always return dict)
def planner(state):
    print("Planner running...")
    return {"step": state["step"] + 1}

def worker(state):
    print("Worker running...")
    time.sleep(0.5)
    if random.random() < FAIL_RATE:
        raise RuntimeError("Transient failure")   # simulate cloud failure
    return {"result": f"Processed step {state['step']}"}

# 3️⃣ Router (returns next node name)
def controller(state):
    print("Controller checking...")
    if state["step"] >= 3:
        return END
    return "planner"

# 4️⃣ Build graph
builder = StateGraph(State)
builder.add_node("planner", planner)
builder.add_node("worker", worker)
builder.add_node("controller", lambda s: {})  # controller node only updates state (none here)

builder.set_entry_point("planner")
builder.add_edge("planner", "worker")
builder.add_edge("worker", "controller")

builder.add_conditional_edges("controller", controller, {
    "planner": "planner",
    END: END
})

graph = builder.compile()


if __name__ == "__main__":
    # 5️⃣ Simulated Cloud Execution with Recovery
    thread_id = "user-session-001"
    state = {"step": 0, "result": ""}

    print("\n--- Cloud Runtime Execution ---\n")

    while True:
        try:
            state = graph.invoke(state, config={"thread_id": thread_id, "recursion_limit": 10})
            break
        except Exception as e:  # noqa: F841 - as in the seed
            print("⚠️ Failure detected, resuming from checkpoint...\n")
            time.sleep(1)

    print("\n--- Final State ---")
    print(state)
