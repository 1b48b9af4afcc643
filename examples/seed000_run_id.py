"""Seed 000 (Run ID): the increment/check loop, invoked with an explicit run id and thread id.

Only the import lines differ from the seed (``langgraph`` -> ``threadloom``); the invocation
sits under ``if __name__ == "__main__":``. Expected output::

    [NODE] increment | step=0
    [NODE] check | step=1
    [NODE] increment | step=1
    [NODE] check | step=2
    [NODE] increment | step=2
    [NODE] check | step=3

    Final Result: {'step': 3, 'done': True}
"""

from typing import TypedDict

from threadloom.graph import END, StateGraph


class State(TypedDict):
    step: int
    done: bool

def increment(state: State):
    print(f"[NODE] increment | step={state['step']}")
    return {"step": state["step"] + 1}

def check(state: State):
    print(f"[NODE] check | step={state['step']}")
    return {"done": state["step"] >= 3}

builder = StateGraph(State)
builder.add_node("increment", increment)
builder.add_node("check", check)

builder.set_entry_point("increment")
builder.add_edge("increment", "check")

builder.add_conditional_edges(
    "check",
    lambda s: END if s["done"] else "increment",
    {"increment": "increment", END: END}
)

graph = builder.compile()


if __name__ == "__main__":
    config = {
        "run_id": "demo-run-001",
        "thread_id": "user-session-42"
    }

    result = graph.invoke({"step": 0, "done": False}, config=config)
    print("\nFinal Result:", result)
