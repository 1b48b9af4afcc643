"""Seed 002 (Execution Thread): a chatbot whose thread "user-1" is kept by a MemorySaver.

Only the import lines differ from the seed (``langgraph`` -> ``threadloom``); the invocations
sit under ``if __name__ == "__main__":``. The state has no reducer, so the second invoke's
input replaces the messages of the first. Expected output::

    {'messages': ['Hello', 'Bot: I received -> Hello']}
    {'messages': ['How are you?', 'Bot: I received -> How are you?']}
"""

from typing import TypedDict

from threadloom.checkpoint.memory import MemorySaver
from threadloom.graph import END, StateGraph


class State(TypedDict):
    messages: list

def chatbot(state: State):
    new_msg = f"Bot: I received -> {state['messages'][-1]}"
    return {"messages": state["messages"] + [new_msg]}



builder = StateGraph(State)

builder.add_node("chat", chatbot)
builder.set_entry_point("chat")
builder.add_edge("chat", END)

memory = MemorySaver()
graph = builder.compile(checkpointer=memory)


if __name__ == "__main__":
    config = {"configurable": {"thread_id": "user-1"}}

    out1 = graph.invoke({"messages": ["Hello"]}, config)
    print(out1)

    out2 = graph.invoke({"messages": ["How are you?"]}, config)
    print(out2)
