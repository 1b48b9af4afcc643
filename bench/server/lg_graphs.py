"""The seed 000 loop for LangGraph's dev server (the reference side of server_bench.py)."""

from typing import TypedDict

from langgraph.graph import END, StateGraph


class State(TypedDict):
    step: int
    done: bool


def increment(state: State) -> dict:
    return {"step": state["step"] + 1}


def check(state: State) -> dict:
    return {"done": state["step"] >= 3}


def _route(state: State) -> str:
    return END if state["done"] else "increment"


builder = StateGraph(State)
builder.add_node("increment", increment)
builder.add_node("check", check)
builder.set_entry_point("increment")
builder.add_edge("increment", "check")
builder.add_conditional_edges("check", _route, {"increment": "increment", END: END})
seed_loop = builder.compile()
