"""Seed 004 (Cloud Runtime) as a runtime graph: planner -> worker -> controller, three rounds.

The seed's worker fails at random (30%) to simulate a cloud failure, and the seed's loop
re-invokes the graph until it succeeds. Here the node's ``RetryPolicy`` does that: a failed
attempt is recorded and retried after a short backoff, up to 8 attempts (a run fails only if
8 attempts in a row fail: about 1 in 15,000 at 30%). ``THREADLOOM_SEED004_FAIL_RATE`` sets the
failure rate (``0``: never fail). Input ``{"step": 0}``; output
``{"step": 3, "result": "Processed step 3"}``.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any, TypedDict

from threadloom.graph import END, StateGraph
from threadloom.types import RetryPolicy

__all__ = ["State", "builder", "graph"]

log = logging.getLogger(__name__)

WORK_SECONDS = 0.1  # the seed sleeps 0.5 s; shorter keeps the demo quick


class TransientFailure(RuntimeError):
    """The simulated cloud failure."""


class State(TypedDict, total=False):
    step: int
    result: str


def planner(state: State) -> dict[str, Any]:
    """Plan the next round."""
    step = state.get("step", 0) + 1
    log.info("planning round %d of 3", step)
    return {"step": step}


def worker(state: State) -> dict[str, Any]:
    """Do the round's work; fails now and then, like a call to a flaky service."""
    time.sleep(WORK_SECONDS)
    if random.random() < float(os.environ.get("THREADLOOM_SEED004_FAIL_RATE", "0.3")):
        raise TransientFailure("Transient failure")
    result = f"Processed step {state.get('step', 0)}"
    log.info("round %d worked: %s", state.get("step", 0), result)
    return {"result": result}


def controller(state: State) -> str:
    """Another round until three are done."""
    return END if state.get("step", 0) >= 3 else "planner"


builder = StateGraph(State)
builder.add_node("planner", planner)
builder.add_node("worker", worker, retry_policy=RetryPolicy(
    initial_interval=0.05, backoff_factor=2.0, max_interval=1.0, max_attempts=8,
    retry_on=TransientFailure))
builder.add_node("controller", lambda state: {})
builder.set_entry_point("planner")
builder.add_edge("planner", "worker")
builder.add_edge("worker", "controller")
builder.add_conditional_edges("controller", controller, {"planner": "planner", END: END})

graph = builder.compile(name="cloud")
