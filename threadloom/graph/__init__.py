"""The graph builder: ``StateGraph``, ``START``, ``END`` and the compiled graph."""

from threadloom.engine._spec import END, START
from threadloom.graph.compiled import CompiledGraph
from threadloom.graph.state import StateGraph

CompiledStateGraph = CompiledGraph

__all__ = ["END", "START", "CompiledGraph", "CompiledStateGraph", "StateGraph"]
