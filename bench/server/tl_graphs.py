"""The seed 000 loop for threadloom (the candidate side of server_bench.py), a 1-node graph
for the queue drain, and the graphs of the latency workloads (cancel, reclaim)."""

import time
from typing import TypedDict

from threadloom.func import task
from threadloom.graph import END, StateGraph


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


class One(TypedDict):
    n: int


def bump(state: One) -> dict:
    return {"n": state["n"] + 1}


one = StateGraph(One)
one.add_node("bump", bump)
one.set_entry_point("bump")
one.add_edge("bump", END)
one_node = one.compile()


# -- latency workloads -------------------------------------------------------------------------


class Slow(TypedDict):
    log: list


@task
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def waits(state: Slow) -> dict:
    """Waits on a slow @task (the cancel workload cancels it while it waits)."""
    return {"log": [*state["log"], sleepy(30.0).result()]}


tasked = StateGraph(Slow)
tasked.add_node("waits", waits)
tasked.set_entry_point("waits")
tasked.add_edge("waits", END)
tasked_wait = tasked.compile()


def _stepper(name: str, seconds: float):
    def node(state: Slow) -> dict:
        time.sleep(seconds)
        return {"log": [*state["log"], name]}

    return node


# the reclaim workload kills the worker while it runs "slow"; the other worker continues from
# "first"'s checkpoint (sync durability), re-runs "slow" and commits it
steps = StateGraph(Slow)
steps.add_node("first", _stepper("first", 0.0))
steps.add_node("slow", _stepper("slow", 1.0))
steps.add_node("last", _stepper("last", 0.0))
steps.set_entry_point("first")
steps.add_edge("first", "slow")
steps.add_edge("slow", "last")
steps.add_edge("last", END)
slow_steps = steps.compile()
