"""The graphs the server tests register: seed 000's loop, seed 002's chatbot, and a graph
that asks a human with ``interrupt()``.

``builders()`` gives fresh, uncompiled builders; :func:`compiled` binds them to a store, as
the server does with the graphs of ``threadloom.toml``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from threadloom.checkpoint.base import Store
from threadloom.graph import END, StateGraph
from threadloom.graph.compiled import CompiledGraph
from threadloom.types import interrupt


class LoopState(TypedDict):
    step: int
    done: bool


def increment(state: LoopState) -> dict[str, Any]:
    return {"step": state["step"] + 1}


def check(state: LoopState) -> dict[str, Any]:
    return {"done": state["step"] >= 3}


def seed_loop() -> StateGraph:
    """Seed 000: ``increment`` / ``check`` until ``step >= 3`` (6 node executions)."""
    builder = StateGraph(LoopState)
    builder.add_node("increment", increment)
    builder.add_node("check", check)
    builder.set_entry_point("increment")
    builder.add_edge("increment", "check")
    builder.add_conditional_edges(
        "check", lambda s: END if s["done"] else "increment", {"increment": "increment", END: END}
    )
    return builder


class ChatState(TypedDict):
    messages: list[str]


def chatbot(state: ChatState) -> dict[str, Any]:
    return {"messages": state["messages"] + [f"Bot: I received -> {state['messages'][-1]}"]}


def seed_chat() -> StateGraph:
    """Seed 002: a chatbot that answers the last message."""
    builder = StateGraph(ChatState)
    builder.add_node("chat", chatbot)
    builder.set_entry_point("chat")
    builder.add_edge("chat", END)
    return builder


class ReviewState(TypedDict):
    draft: str
    approved: bool


def write(state: ReviewState) -> dict[str, Any]:
    return {"draft": f"draft of {state['draft']}"}


def review(state: ReviewState) -> dict[str, Any]:
    answer = interrupt({"question": "approve?", "draft": state["draft"]})
    return {"approved": answer == "yes"}


def human_review() -> StateGraph:
    """``write`` then ``review``, which waits for a human's answer with ``interrupt()``."""
    builder = StateGraph(ReviewState)
    builder.add_node("write", write)
    builder.add_node("review", review)
    builder.set_entry_point("write")
    builder.add_edge("write", "review")
    builder.add_edge("review", END)
    return builder


BUILDERS = {"seed_loop": seed_loop, "seed_chat": seed_chat, "review": human_review}


def compiled(store: Store) -> dict[str, CompiledGraph]:
    """Every test graph, compiled with ``store`` as its checkpointer, by registered name."""
    return {name: build().compile(checkpointer=store, name=name)
            for name, build in BUILDERS.items()}


class SeedState(TypedDict, total=False):
    input1: str
    input2: int
    result: str
    attempts: int


def process_input(state: SeedState) -> dict[str, Any]:
    """Seed 001's ``node1``: answers its inputs."""
    return {"result": f"{state.get('input1')}:{state.get('input2')}"}


def record_result(state: SeedState) -> dict[str, Any]:
    return {"result": f"recorded {state.get('result')}"}


def seed001_graph() -> StateGraph:
    """Seed 001's ``test-graph``: ``node1`` then ``node2``."""
    builder = StateGraph(SeedState)
    builder.add_node("node1", process_input)
    builder.add_node("node2", record_result)
    builder.set_entry_point("node1")
    builder.add_edge("node1", "node2")
    builder.add_edge("node2", END)
    return builder


FLAKY = {"fail": True}
"""While ``fail`` is true, the ``flaky`` graph's node raises (in this process)."""


def shaky(state: SeedState) -> dict[str, Any]:
    if FLAKY["fail"]:
        raise ValueError("flaky node failed")
    return {"result": "steady"}


def flaky_graph() -> StateGraph:
    """``prepare`` then ``shaky``, which fails while ``FLAKY["fail"]``."""
    builder = StateGraph(SeedState)
    builder.add_node("prepare", record_result)
    builder.add_node("shaky", shaky)
    builder.set_entry_point("prepare")
    builder.add_edge("prepare", "shaky")
    builder.add_edge("shaky", END)
    return builder


def seed001_graphs(store: Store) -> dict[str, CompiledGraph]:
    """``test-graph`` and ``flaky``, compiled with ``store``."""
    return {name: build().compile(checkpointer=store, name=name)
            for name, build in (("test-graph", seed001_graph), ("flaky", flaky_graph))}
