"""Seed 000 (Run ID) as a runtime graph: ``increment`` / ``check`` until ``step >= 3``.

Six node executions per run; the workload of the runtime's benchmark. Input ``{"step": 0}``
(``done`` starts false); output ``{"step": 3, "done": True}``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from threadloom.graph import END, StateGraph

__all__ = ["State", "builder", "graph"]


class State(TypedDict, total=False):
    step: int
    done: bool


def increment(state: State) -> dict[str, Any]:
    """Count one step."""
    return {"step": state.get("step", 0) + 1}


def check(state: State) -> dict[str, Any]:
    """Done once three steps are counted."""
    return {"done": state.get("step", 0) >= 3}


def _route(state: State) -> str:
    return END if state.get("done") else "increment"


builder = StateGraph(State)
builder.add_node("increment", increment)
builder.add_node("check", check)
builder.set_entry_point("increment")
builder.add_edge("increment", "check")
builder.add_conditional_edges("check", _route, {"increment": "increment", END: END})

graph = builder.compile(name="seed_loop")
