"""Seed 003 (Durable Execution) as a runtime graph: side effects in ``@task`` calls.

The ``call_api`` node fetches each URL through a task, so a run resumed after a crash reuses
the fetches recorded before it instead of making them again. The fetch is a stand-in that
never touches the network. Input ``{"urls": ["https://example.com/a"]}``; output adds
``results``, one text per URL.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from threadloom.func import task
from threadloom.graph import END, START, StateGraph

__all__ = ["State", "builder", "fetch", "graph"]

log = logging.getLogger(__name__)


class State(TypedDict, total=False):
    urls: list[str]
    results: list[str]


@task
def fetch(url: str) -> str:
    """Fetch a URL (a fake: the page's text is made from the URL)."""
    return f"<html><body>Fetched {url}</body></html>"[:100]


def call_api(state: State) -> dict[str, Any]:
    """Fetch every URL in parallel tasks and collect the texts in order."""
    urls = state.get("urls", [])
    log.info("fetching %d URL(s): %s", len(urls), ", ".join(urls))
    results = [future.result() for future in [fetch(url) for url in urls]]
    log.info("fetched %d page(s), %d characters", len(results), sum(map(len, results)))
    return {"results": results}


builder = StateGraph(State)
builder.add_node("call_api", call_api)
builder.add_edge(START, "call_api")
builder.add_edge("call_api", END)

graph = builder.compile(name="fetch", durability="sync")
