"""Seed 000 (Run ID) as a runtime graph: ``increment`` / ``check`` until ``step >= 3``.

Six node executions per run; the workload of the runtime's benchmark. Input ``{"step": 0}``
(``done`` starts false); output ``{"step": 3, "done": True}``.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from threadloom.graph import END, StateGraph

__all__ = ["State", "builder", "graph"]

log = logging.getLogger(__name__)


class State(TypedDict, total=False):
    step: int
    done: bool


def increment(state: State) -> dict[str, Any]:
    """Count one step."""
    step = state.get("step", 0) + 1
    log.info("step %d -> %d", step - 1, step)
    return {"step": step}


def check(state: State) -> dict[str, Any]:
    """Done once three steps are counted."""
    done = state.get("step", 0) >= 3
    log.info("step %d: %s", state.get("step", 0), "done" if done else "one more round")
    return {"done": done}


def _route(state: State) -> str:
    return END if state.get("done") else "increment"


builder = StateGraph(State)
builder.add_node("increment", increment)
builder.add_node("check", check)
builder.set_entry_point("increment")
builder.add_edge("increment", "check")
builder.add_conditional_edges("check", _route, {"increment": "increment", END: END})

graph = builder.compile(name="seed_loop")
