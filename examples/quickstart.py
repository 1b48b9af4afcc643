"""Quick start: seed 000's graph, made durable on the embedded default store (SQLite).

Run it twice: the first run records run ``demo-run-001`` on thread ``user-session-42`` in
``threadloom.db``; the second finds the run already succeeded and returns its recorded
output without running a node again (run ids are idempotency keys).

    python examples/quickstart.py [path/to/threadloom.db]
"""

import sys
from typing import TypedDict

from threadloom.checkpoint.sqlite import SqliteSaver
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
    {"increment": "increment", END: END},
)


def main(path: str) -> None:
    with SqliteSaver.from_conn_string(path) as saver:
        graph = builder.compile(checkpointer=saver, durability="sync", name="seed000")
        config = {"run_id": "demo-run-001", "thread_id": "user-session-42"}
        result = graph.invoke({"step": 0, "done": False}, config=config)
        print("\nFinal Result:", result)

        run = graph.get_run("demo-run-001")
        assert run is not None
        print(f"run {run.run_id}: {run.status}, {run.steps} checkpoints, "
              f"{run.executions} node executions")
        for execution in graph.list_executions(run.run_id):
            print(f"  step {execution.step}: {execution.node:<9} {execution.status} "
                  f"-> {execution.outputs}")
        state = graph.get_state(config)
        print("thread state:", state.values, "| next:", state.next)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "threadloom.db")
