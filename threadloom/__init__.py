"""threadloom: durable, stateful graph workflows.

Build a graph with :class:`threadloom.graph.StateGraph`, compile it (optionally with a
checkpointer from :mod:`threadloom.checkpoint`), and run it with ``invoke``/``stream``.
Importing threadloom never imports a web framework or a database driver.
"""

from threadloom.circuit import CircuitBreaker
from threadloom.errors import ThreadloomError
from threadloom.graph import END, START, CompiledGraph, StateGraph
from threadloom.types import Command, Interrupt, RetryPolicy, Send, interrupt

__version__ = "0.1.0"

__all__ = [
    "END",
    "START",
    "CircuitBreaker",
    "Command",
    "CompiledGraph",
    "Interrupt",
    "RetryPolicy",
    "Send",
    "StateGraph",
    "ThreadloomError",
    "__version__",
    "interrupt",
]
