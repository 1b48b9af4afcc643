"""Seed 002 (Execution Thread) as a runtime graph: a chatbot whose thread remembers.

``messages`` has a reducer (``operator.add``), so each run on a thread appends to what the
earlier runs said. Input ``{"messages": ["Hello"]}``; output on a new thread
``{"messages": ["Hello", "Bot: I received -> Hello"]}``.
"""

from __future__ import annotations

import logging
import operator
from typing import Annotated, Any, TypedDict

from threadloom.graph import END, StateGraph

__all__ = ["State", "builder", "graph"]

log = logging.getLogger(__name__)


class State(TypedDict):
    messages: Annotated[list[Any], operator.add]


def chatbot(state: State) -> dict[str, Any]:
    """Answer the last message."""
    last = state["messages"][-1] if state["messages"] else ""
    log.info("answering %r (message %d of the thread)", last, len(state["messages"]))
    return {"messages": [f"Bot: I received -> {last}"]}


builder = StateGraph(State)
builder.add_node("chat", chatbot)
builder.set_entry_point("chat")
builder.add_edge("chat", END)

graph = builder.compile(name="chat")
