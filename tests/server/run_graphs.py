"""Graphs the runs tests add to the server's (see :mod:`_worker_app`): ``ticker`` runs as
many steps as asked, each as long as asked, writing a ``custom`` chunk per step."""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, TypedDict

from threadloom.checkpoint.base import Store
from threadloom.config import get_stream_writer
from threadloom.graph import END, StateGraph
from threadloom.graph.compiled import CompiledGraph


class TickState(TypedDict):
    ticks: Annotated[list[int], operator.add]
    n: int
    delay: float


def tick(state: TickState) -> dict[str, Any]:
    """One step: a ``custom`` chunk, ``delay`` seconds of work, one more tick."""
    count = len(state["ticks"])
    get_stream_writer()({"tick": count})
    time.sleep(state.get("delay") or 0.0)
    return {"ticks": [count]}


def ticker() -> StateGraph:
    """``tick`` until there are ``n`` ticks."""
    builder = StateGraph(TickState)
    builder.add_node("tick", tick)
    builder.set_entry_point("tick")
    builder.add_conditional_edges(
        "tick", lambda s: END if len(s["ticks"]) >= s["n"] else "tick", {"tick": "tick", END: END}
    )
    return builder


def run_graphs(store: Store) -> dict[str, CompiledGraph]:
    """The extra graphs, compiled with ``store``."""
    return {"ticker": ticker().compile(checkpointer=store, name="ticker")}
