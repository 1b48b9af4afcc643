"""Seed 003 (Durable Execution): a node that makes its API requests through ``@task``.

The seed's ``call_api`` node and ``_make_request`` task are kept as they are; the imports say
``threadloom`` instead of ``langgraph``, and two pieces of scaffolding the seed leaves out are
added: the ``State`` it refers to, and a local stand-in for ``requests`` so the example never
touches the network. The graph is compiled with an ``InMemorySaver`` and invoked on a thread,
then inspected with ``get_state`` as in the seed's "Manual State Recovery". Expected output::

    {'urls': ['https://example.com/a', 'https://example.com/b'], 'results': [...]}
    Current node: ()
    Current values: {...same as above...}
"""

from types import SimpleNamespace
from typing import TypedDict

from threadloom.checkpoint.memory import InMemorySaver
from threadloom.func import task
from threadloom.graph import END, START, StateGraph


class State(TypedDict):
    urls: list[str]
    results: list[str]


def _fake_get(url: str) -> SimpleNamespace:
    """Stand-in for ``requests.get``: a response whose text is made from the URL."""
    return SimpleNamespace(text=f"<html><body>Fetched {url}</body></html>")


requests = SimpleNamespace(get=_fake_get)


@task
def _make_request(url: str):
    """Make an API request."""
    return requests.get(url).text[:100]

def call_api(state: State):
    """Node that makes API requests."""
    # Create tasks
    requests = [_make_request(url) for url in state['urls']]

    # Wait for results
    results = [request.result() for request in requests]

    return {"results": results}

builder = StateGraph(State)
builder.add_node("call_api", call_api)
builder.add_edge(START, "call_api")
builder.add_edge("call_api", END)

# Create checkpointer
checkpointer = InMemorySaver()

# Compile graph with checkpointer
graph = builder.compile(checkpointer=checkpointer)


if __name__ == "__main__":
    config = {"configurable": {"thread_id": "conversation-123"}}
    result = graph.invoke({"urls": ["https://example.com/a", "https://example.com/b"]}, config)
    print(result)

    # Get current state
    state = graph.get_state(config)

    # Inspect state
    print(f"Current node: {state.next}")
    print(f"Current values: {state.values}")
