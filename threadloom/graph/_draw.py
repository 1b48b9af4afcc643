"""Drawing a graph: its nodes and edges as Mermaid source or plain ASCII."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from threadloom.engine._spec import END, START

if TYPE_CHECKING:
    from threadloom.graph.state import StateGraph

__all__ = ["DrawableGraph", "Edge", "drawable"]


@dataclass(frozen=True, slots=True)
class Edge:
    """An edge: ``conditional`` edges are drawn dotted, with the path result as label."""

    source: str
    target: str
    conditional: bool = False
    label: str | None = None


@dataclass(slots=True)
class DrawableGraph:
    """A graph's nodes (START and END included) and edges, ready to draw."""

    nodes: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def draw_mermaid(self, highlight: str | None = None) -> str:
        """Mermaid flowchart source; ``highlight`` marks one node (e.g. the current one)."""
        lines = ["graph TD;"]
        for node in self.nodes:
            ident = _ident(node)
            if node in (START, END):
                lines.append(f"\t{ident}([{node}]):::{'first' if node == START else 'last'}")
            else:
                lines.append(f"\t{ident}({node})")
        for edge in self.edges:
            src, dst = _ident(edge.source), _ident(edge.target)
            if edge.conditional:
                label = f" {edge.label} " if edge.label is not None else ""
                arrow = f"-.{label}.->" if label else "-.->"
                lines.append(f"\t{src} {arrow} {dst};")
            else:
                lines.append(f"\t{src} --> {dst};")
        lines.append("\tclassDef default fill:#f2f0ff,line-height:1.2")
        lines.append("\tclassDef first fill-opacity:0")
        lines.append("\tclassDef last fill:#bfb6fc")
        if highlight is not None and highlight in self.nodes:
            lines.append("\tclassDef current fill:#ffd966,stroke:#b8860b,stroke-width:3px")
            lines.append(f"\tclass {_ident(highlight)} current")
        return "\n".join(lines) + "\n"

    def draw_ascii(self) -> str:
        """A plain-text drawing: nodes in layers from START, each with its out-edges."""
        layers = _layers(self.nodes, self.edges)
        width = max((len(n) for n in self.nodes), default=0) + 4
        out: list[str] = []
        for depth, layer in enumerate(layers):
            boxes = "  ".join(f"[{n}]".center(width) for n in layer)
            out.append(boxes.rstrip())
            edges = [e for e in self.edges if e.source in layer]
            for edge in edges:
                arrow = "-.->" if edge.conditional else "--->"
                label = f" ({edge.label})" if edge.label is not None else ""
                out.append(f"    {edge.source} {arrow} {edge.target}{label}")
            if depth < len(layers) - 1:
                out.append("")
        return "\n".join(out) + "\n"


def _ident(node: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in node)
    return safe or "_"


def _layers(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    depth: dict[str, int] = {START: 0}
    frontier = [START]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for edge in edges:
                if edge.source == node and edge.target not in depth:
                    depth[edge.target] = depth[node] + 1
                    nxt.append(edge.target)
        frontier = nxt
    bottom = max(depth.values(), default=0) + 1
    for node in nodes:
        depth.setdefault(node, bottom)
    if END in depth:
        depth[END] = max(depth.values()) + (0 if depth[END] > max(
            (v for k, v in depth.items() if k != END), default=0) else 1)
    layered: dict[int, list[str]] = {}
    for node in nodes:
        layered.setdefault(depth[node], []).append(node)
    return [layered[k] for k in sorted(layered)]


def drawable(builder: StateGraph) -> DrawableGraph:
    """The drawable form of a builder's definition: the edges of the nodes that can be
    reached from START (as LangGraph draws them; a node that nothing leads to is drawn
    alone), and an edge to END from each reached node that has no way out."""
    d = builder._def
    graph = DrawableGraph(nodes=[START, *d.nodes, END])
    edges: list[Edge] = [Edge(source, target) for source, target in d.edges]
    for branch in d.branches:
        if branch.path_map is not None:
            for key, target in branch.path_map.items():
                label = None if key == target else str(key)
                edges.append(Edge(branch.source, target, True, label))
        else:
            targets = branch.targets
            if targets is None:  # could go anywhere
                targets = tuple(n for n in [*d.nodes, END] if n != branch.source)
            edges.extend(Edge(branch.source, target, True) for target in targets)
    for node in d.nodes.values():
        for target in node.destinations or ():
            edges.append(Edge(node.name, target, True, node.labels.get(target)))
    reached = _reached(edges, d.joins)
    for sources, target in d.joins:
        if target in reached or target == END and all(s in reached for s in sources):
            edges.extend(Edge(source, target) for source in sources)
    graph.edges = [e for e in edges if e.source in reached]
    has_out = {e.source for e in graph.edges}
    for name in d.nodes:
        if name in reached and name not in has_out:
            graph.edges.append(Edge(name, END))
    return graph


def _reached(edges: list[Edge], joins: list[tuple[tuple[str, ...], str]]) -> set[str]:
    """The nodes reachable from START along ``edges`` and completed ``joins``."""
    out: dict[str, list[str]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge.target)
    return reachable(out, joins)


def reachable(out: Mapping[str, Iterable[str]],
              joins: Iterable[tuple[tuple[str, ...], str]]) -> set[str]:
    """The nodes reachable from START, following ``out`` (node -> the nodes it leads to) and
    every join (sources -> target) whose sources are all reached."""
    reached = {START}
    stack = [START]
    pending = list(joins)
    while stack:
        while stack:
            for target in out.get(stack.pop(), ()):
                if target not in reached:
                    reached.add(target)
                    stack.append(target)
        for join in list(pending):
            if all(source in reached for source in join[0]):
                pending.remove(join)
                if join[1] not in reached:
                    reached.add(join[1])
                    stack.append(join[1])
    return reached
