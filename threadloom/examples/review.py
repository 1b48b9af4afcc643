"""A human review: the graph drafts a reply and waits for a person to approve it.

``review`` calls ``interrupt()``, so a run stops as ``interrupted`` with the draft as the
interrupt's value (what the dashboard's review inbox lists). Resume it with
``Command(resume=True)`` to approve, ``Command(resume=False)`` to reject, or
``Command(resume={"approved": False, "note": "..."})``. Input ``{"topic": "refund"}``; output
after approval ``{"topic": ..., "draft": ..., "approved": True, "published": True}``.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from threadloom.graph import END, START, StateGraph
from threadloom.types import interrupt

__all__ = ["State", "builder", "graph"]

log = logging.getLogger(__name__)


class State(TypedDict, total=False):
    topic: str
    draft: str
    approved: bool
    note: str
    published: bool


def draft(state: State) -> dict[str, Any]:
    """Write the draft a person will review."""
    text = f"Dear customer, about your {state.get('topic', 'request')}: ..."
    log.info("drafted a reply about %r for review", state.get("topic", "request"))
    return {"draft": text}


def review(state: State) -> dict[str, Any]:
    """Wait for a person's decision (``True``/``False`` or ``{"approved", "note"}``)."""
    decision = interrupt({"draft": state.get("draft", ""), "question": "Approve this reply?"})
    log.info("the reviewer answered %r", decision)
    if isinstance(decision, dict):
        return {"approved": bool(decision.get("approved")), "note": str(decision.get("note", ""))}
    return {"approved": bool(decision)}


def publish(state: State) -> dict[str, Any]:
    """Send the reply if it was approved."""
    approved = bool(state.get("approved"))
    log.info("reply %s", "published" if approved else "not published: rejected")
    return {"published": approved}


builder = StateGraph(State)
builder.add_node("draft", draft)
builder.add_node("review", review)
builder.add_node("publish", publish)
builder.add_edge(START, "draft")
builder.add_edge("draft", "review")
builder.add_edge("review", "publish")
builder.add_edge("publish", END)

graph = builder.compile(name="review")
