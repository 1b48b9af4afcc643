"""The example graph baked into the image: seed 000's loop (increment, check, until step 3).

Named in ``threadloom.toml`` as ``graphs:builder``; the server and the workers compile the
builder against their own store. Replace this folder with your own app (deploy/README.md).
"""

from __future__ import annotations

from typing import TypedDict

from threadloom.graph import END, StateGraph


class State(TypedDict):
    step: int
    done: bool


def increment(state: State) -> dict[str, int]:
    return {"step": state["step"] + 1}


def check(state: State) -> dict[str, bool]:
    return {"done": state["step"] >= 3}


def route(state: State) -> str:
    return END if state["done"] else "increment"


builder = StateGraph(State)
builder.add_node("increment", increment)
builder.add_node("check", check)
builder.set_entry_point("increment")
builder.add_edge("increment", "check")
builder.add_conditional_edges("check", route, {"increment": "increment", END: END})
