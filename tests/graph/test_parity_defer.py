"""Parity: ``add_node(..., defer=True)`` holds a triggered node back until the run has
nothing else to do. Each graph is built the same way on threadloom and on LangGraph 1.2.22
(installed for these tests) and both must run it identically: the same nodes in the same
steps, the same output."""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest

import threadloom.graph
import threadloom.types
from threadloom.checkpoint.memory import InMemorySaver as ThreadloomSaver
from threadloom.checkpoint.sqlite import SqliteSaver

langgraph_graph = pytest.importorskip("langgraph.graph")
langgraph_types = pytest.importorskip("langgraph.types")
langgraph_memory = pytest.importorskip("langgraph.checkpoint.memory")

THREADLOOM = SimpleNamespace(graph=threadloom.graph, types=threadloom.types)
LANGGRAPH = SimpleNamespace(graph=langgraph_graph, types=langgraph_types)


class State(TypedDict):
    log: Annotated[list, operator.add]


@dataclass
class Recipe:
    """A graph as data, buildable on either library. Each node appends its name to ``log``.

    ``routes``: node -> (names, number of ``Send`` packets to ``send_to``) chosen by a
    conditional edge (returned as a list).
    """

    nodes: list[str]
    deferred: set[str] = field(default_factory=set)
    edges: list[tuple[str, str]] = field(default_factory=list)
    joins: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    routes: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    send_to: str = ""
    goto: dict[str, str] = field(default_factory=dict)  # node -> Command(goto=...)

    def build(self, lib: SimpleNamespace) -> Any:
        builder = lib.graph.StateGraph(State)
        for name in self.nodes:
            builder.add_node(name, self._node(lib, name), defer=name in self.deferred)
        for start, end in self.edges:
            builder.add_edge(lib.graph.START if start == "START" else start,
                             lib.graph.END if end == "END" else end)
        for starts, end in self.joins:
            builder.add_edge(list(starts), end)
        for source, (names, sends) in self.routes.items():
            builder.add_conditional_edges(source, self._path(lib, names, sends))
        return builder

    def _node(self, lib: SimpleNamespace, name: str) -> Any:
        if name in self.goto:
            target = self.goto[name]
            return lambda state: lib.types.Command(update={"log": [name]}, goto=target)
        return lambda state: {"log": [name]}

    def _path(self, lib: SimpleNamespace, names: tuple[str, ...], sends: int) -> Any:
        send_to = self.send_to
        return lambda state: [*names, *(lib.types.Send(send_to, {"log": [f"send{i}"]})
                                        for i in range(sends))]


def trace(recipe: Recipe, lib: SimpleNamespace) -> tuple[list[list[str]], Any]:
    """The nodes that ran, step by step (from the ``debug`` stream), and the output."""
    graph = recipe.build(lib).compile()
    steps: dict[int, list[str]] = {}
    for event in graph.stream({"log": []}, stream_mode="debug"):
        if event["type"] == "task":
            steps.setdefault(event["step"], []).append(event["payload"]["name"])
    return [sorted(names) for _, names in sorted(steps.items())], graph.invoke({"log": []})


def assert_same(recipe: Recipe) -> list[list[str]]:
    ours = trace(recipe, THREADLOOM)
    theirs = trace(recipe, LANGGRAPH)
    assert ours == theirs
    return ours[0]


def chain(*names: str) -> list[tuple[str, str]]:
    return list(zip(names, names[1:], strict=False))


def test_a_deferred_join_waits_for_the_longer_branch() -> None:
    recipe = Recipe(["a", "b1", "b2", "c", "join"], {"join"},
                    [*chain("START", "a", "b1", "b2", "join", "END"), ("a", "c"), ("c", "join")])
    steps = assert_same(recipe)
    assert steps == [["a"], ["b1", "c"], ["b2"], ["join"]]  # once, after b2


def test_without_defer_the_join_runs_after_each_branch() -> None:
    recipe = Recipe(["a", "b1", "b2", "c", "join"], set(),
                    [*chain("START", "a", "b1", "b2", "join"), ("a", "c"), ("c", "join")])
    assert assert_same(recipe) == [["a"], ["b1", "c"], ["b2", "join"], ["join"]]


def test_a_deferred_node_triggered_from_start_waits_for_the_other_start_node() -> None:
    recipe = Recipe(["a", "d"], {"d"}, [("START", "a"), ("START", "d")])
    assert assert_same(recipe) == [["a"], ["d"]]


def test_a_graph_of_only_a_deferred_node_runs_it() -> None:
    assert assert_same(Recipe(["d"], {"d"}, [("START", "d")])) == [["d"]]


def test_several_deferred_nodes_run_together_then_their_successors() -> None:
    recipe = Recipe(["a", "b", "d1", "d2", "e"], {"d1", "d2"},
                    [("START", "a"), ("a", "b"), ("a", "d1"), ("a", "d2"), ("d1", "e")])
    assert assert_same(recipe) == [["a"], ["b"], ["d1", "d2"], ["e"]]


def test_a_deferred_chain_releases_one_deferred_node_at_a_time() -> None:
    recipe = Recipe(["a", "b", "c", "d", "e"], {"d", "e"},
                    [("START", "a"), ("a", "d"), ("a", "b"), ("b", "e"), ("d", "c"),
                     ("b", "c")])
    assert_same(recipe)


def test_send_packets_do_not_hold_a_deferred_node_back() -> None:
    recipe = Recipe(["a", "w", "join"], {"join"}, [("START", "a"), ("a", "join"),
                                                   ("w", "join")],
                    routes={"a": ((), 2)}, send_to="w")
    assert assert_same(recipe) == [["a"], ["join", "w", "w"], ["join"]]


def test_a_send_to_a_deferred_node_runs_at_once() -> None:
    recipe = Recipe(["a", "d"], {"d"}, [("START", "a")], routes={"a": ((), 2)}, send_to="d")
    assert assert_same(recipe) == [["a"], ["d", "d"]]


def test_a_deferred_join_edge_target_waits_until_nothing_else_is_due() -> None:
    recipe = Recipe(["a", "b1", "b2", "c", "c2", "c3", "join"], {"join"},
                    [("START", "a"), ("a", "b1"), ("b1", "b2"), ("a", "c"), ("b1", "c2"),
                     ("c2", "c3")], joins=[(("b2", "c"), "join")])
    assert assert_same(recipe)[-1] == ["join"]


def test_a_join_with_a_deferred_source() -> None:
    recipe = Recipe(["a", "b", "c", "j"], {"b", "j"}, [("START", "a"), ("a", "b"), ("a", "c")],
                    joins=[(("b", "c"), "j")])
    assert assert_same(recipe) == [["a"], ["c"], ["b"], ["j"]]


def test_a_command_goto_to_a_deferred_node_is_deferred() -> None:
    recipe = Recipe(["a", "b", "b2", "d"], {"d"}, [("START", "a"), ("START", "b"),
                                                   ("b", "b2")], goto={"a": "d"})
    assert assert_same(recipe) == [["a", "b"], ["b2"], ["d"]]


def test_a_deferred_node_in_a_loop() -> None:
    def build(lib: SimpleNamespace) -> Any:
        builder = lib.graph.StateGraph(State)
        for name in ("a", "b", "c"):
            builder.add_node(name, lambda state, n=name: {"log": [n]})
        builder.add_node("d", lambda state: {"log": ["d"]}, defer=True)
        builder.add_edge(lib.graph.START, "a")
        builder.add_edge("a", "b")
        builder.add_edge("a", "d")
        builder.add_edge("b", "c")
        builder.add_conditional_edges(
            "d", lambda state: "a" if len(state["log"]) < 8 else lib.graph.END
        )
        return builder.compile().invoke({"log": []})

    assert build(THREADLOOM) == build(LANGGRAPH) == {"log": ["a", "b", "c", "d"] * 2}


def test_a_source_that_runs_several_times_in_one_step_counts_once_for_a_join() -> None:
    # n1 runs twice in the second step (an edge and a Send) and completes the join with n2
    # once; its second run must not start the barrier's next round (found by the fuzzing
    # below, without any deferred node)
    recipe = Recipe(["n0", "n1", "n2", "n3", "n5", "n6"], set(),
                    [("START", "n0"), ("n0", "n1"), ("n0", "n2"), ("n0", "n6"), ("n1", "n2"),
                     ("n1", "n5"), ("n2", "n5"), ("n5", "n6")],
                    joins=[(("n0", "n2"), "n3"), (("n1", "n2"), "n3")],
                    routes={"n0": ((), 1)}, send_to="n1")
    steps = assert_same(recipe)
    assert sum(names.count("n3") for names in steps) == 1


@pytest.mark.parametrize("seed", range(60))
def test_random_graphs_with_deferred_nodes_run_as_on_langgraph(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(rng.randint(3, 9))]
    edges: list[tuple[str, str]] = [("START", names[0])]
    for j in range(1, len(names)):  # forward edges only (every run ends), none unreachable
        edges.append((rng.choice(["START", *names[:j]]) if rng.random() < 0.2
                      else rng.choice(names[:j]), names[j]))
    for _ in range(rng.randint(0, len(names))):
        i, j = sorted(rng.sample(range(len(names)), 2))
        edges.append((names[i], names[j]))
    joins = []
    for _ in range(rng.randint(0, 2)):
        if len(names) > 4:
            k = rng.randint(3, len(names) - 1)
            joins.append((tuple(sorted(rng.sample(names[:k], 2))), names[k]))
    routes: dict[str, tuple[tuple[str, ...], int]] = {}
    send_to = ""
    if rng.random() < 0.4:
        source = rng.choice(names[:-1])
        send_to = rng.choice(names[names.index(source) + 1:])
        routes[source] = ((), rng.randint(1, 3))
    deferred = {n for n in names[1:] if rng.random() < 0.35}
    assert_same(Recipe(names, deferred, sorted(set(edges)), joins, routes, send_to))


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_an_interrupt_keeps_a_waiting_deferred_node_for_the_resume(backend: str, tmp_path) -> None:
    recipe = Recipe(["a", "b1", "b2", "c", "join"], {"join"},
                    [*chain("START", "a", "b1", "b2", "join"), ("a", "c"), ("c", "join")])

    def run(lib: SimpleNamespace, saver: Any) -> tuple[Any, tuple[str, ...], Any]:
        graph = recipe.build(lib).compile(checkpointer=saver, interrupt_before=["b2"])
        config = {"configurable": {"thread_id": "t"}}
        paused = graph.invoke({"log": []}, config)
        next_nodes = graph.get_state(config).next
        return paused, next_nodes, graph.invoke(None, config)

    theirs = run(LANGGRAPH, langgraph_memory.InMemorySaver())
    if backend == "memory":
        ours = run(THREADLOOM, ThreadloomSaver())
    else:
        with SqliteSaver.from_conn_string(str(tmp_path / "t.db")) as saver:
            ours = run(THREADLOOM, saver)
    assert ours == theirs
    assert theirs[1] == ("b2",)  # the waiting join is not among the next nodes
    assert theirs[2] == {"log": ["a", "b1", "c", "b2", "join"]}


def test_update_state_keeps_a_waiting_deferred_node() -> None:
    recipe = Recipe(["a", "b", "b2", "c", "join"], {"join"},
                    [("START", "a"), ("a", "b"), ("b", "b2"), ("a", "c"), ("c", "join")])

    def run(lib: SimpleNamespace, saver: Any) -> tuple[Any, ...]:
        graph = recipe.build(lib).compile(checkpointer=saver, interrupt_before=["b2"])
        config = {"configurable": {"thread_id": "t"}}
        graph.invoke({"log": []}, config)
        graph.update_state(config, {"log": ["u"]}, as_node="b")
        return graph.get_state(config).next, graph.invoke(None, config)

    ours = run(THREADLOOM, ThreadloomSaver())
    assert ours == run(LANGGRAPH, langgraph_memory.InMemorySaver())
    assert ours[1] == {"log": ["a", "b", "c", "u", "b2", "join"]}
