"""Parity: ``Send`` fan-out and ``Command(update, goto)``.

Every expected value here is LangGraph 1.2.22's observed behaviour for the same graph (each
case was run under LangGraph first). Observed ordering rule: within a step, the writes of
nodes triggered by edges are applied first, in node-name order, then those of ``Send``
tasks, in the order the sends were made (senders in node-name order, each sender's sends in
its own order) -- whatever the destination node's name.

Some nodes that are only reached through ``Command.goto`` are declared on their source node
(``-> Command[Literal[...]]`` or ``destinations=``); neither threadloom nor LangGraph needs
it, but ``compile(strict=True)`` and the drawing use it.
"""

import asyncio
import operator
from typing import Annotated, Any, Literal, TypedDict

from threadloom.graph import END, START, StateGraph
from threadloom.types import Command, Send


class Log(TypedDict):
    log: Annotated[list, operator.add]


class Cmd(TypedDict):
    log: Annotated[list, operator.add]
    x: int


def log(name: str):
    """A node that appends its own name to ``log``."""
    return lambda state: {"log": [name]}


def worker(arg: Any) -> dict[str, Any]:
    """A node run by ``Send``: logs the argument it was sent."""
    return {"log": [f"w:{arg}"]}


# --- Send -------------------------------------------------------------------------------


def test_send_fan_out_gives_each_task_its_own_input_and_keeps_send_order() -> None:
    class State(TypedDict):
        items: list
        results: Annotated[list, operator.add]

    seen: list[Any] = []

    def work(arg: dict[str, Any]) -> dict[str, Any]:
        seen.append(arg)
        return {"results": [arg["item"] * 10]}

    builder = StateGraph(State)
    builder.add_node("work", work)
    builder.add_conditional_edges(
        START, lambda state: [Send("work", {"item": x}) for x in state["items"]]
    )
    result = builder.compile().invoke({"items": [3, 1, 2]})
    assert result == {"items": [3, 1, 2], "results": [30, 10, 20]}
    assert sorted(seen, key=lambda arg: arg["item"]) == [{"item": 1}, {"item": 2}, {"item": 3}]


def test_send_input_may_hold_keys_that_are_not_in_the_graph_state() -> None:
    class State(TypedDict):
        subject: str
        out: Annotated[list, operator.add]

    class WorkerInput(TypedDict):
        subject: str
        idx: int

    seen: list[Any] = []

    def work(arg: WorkerInput) -> dict[str, Any]:
        seen.append(arg)
        return {"out": [f"{arg['subject']}#{arg['idx']}"]}

    builder = StateGraph(State)
    builder.add_node("work", work)
    builder.add_conditional_edges(
        START,
        lambda state: [
            Send("work", {"subject": state["subject"] + str(i), "idx": i}) for i in range(3)
        ],
    )
    assert builder.compile().invoke({"subject": "s"}) == {
        "subject": "s",
        "out": ["s0#0", "s1#1", "s2#2"],
    }
    assert sorted(seen, key=lambda arg: arg["idx"]) == [
        {"subject": "s0", "idx": 0},
        {"subject": "s1", "idx": 1},
        {"subject": "s2", "idx": 2},
    ]


def test_edge_triggered_writes_come_before_send_writes_in_the_same_step() -> None:
    builder = StateGraph(Log)
    builder.add_node("start", log("start"))
    builder.add_node("zz", log("zz"))
    builder.add_node("aa", log("aa"))
    builder.add_node("w", worker)
    builder.add_edge(START, "start")
    builder.add_conditional_edges(
        "start", lambda state: [Send("w", "s1"), "zz", Send("w", "s0"), "aa"]
    )
    assert builder.compile().invoke({}) == {"log": ["start", "aa", "zz", "w:s1", "w:s0"]}


def test_sends_to_different_nodes_keep_send_order_not_name_order() -> None:
    builder = StateGraph(Log)
    builder.add_node("start", log("start"))
    builder.add_node("b", worker)
    builder.add_node("a", worker)
    builder.add_edge(START, "start")
    builder.add_conditional_edges(
        "start", lambda state: [Send("b", "1"), Send("a", "2"), Send("b", "3")]
    )
    assert builder.compile().invoke({}) == {"log": ["start", "w:1", "w:2", "w:3"]}


def test_sends_from_two_senders_follow_the_senders_name_order() -> None:
    builder = StateGraph(Log)
    builder.add_node("b", log("b"))
    builder.add_node("a", log("a"))
    builder.add_node("w", worker)
    builder.add_edge(START, "b")
    builder.add_edge(START, "a")
    builder.add_conditional_edges("b", lambda state: [Send("w", "b1"), Send("w", "b2")])
    builder.add_conditional_edges("a", lambda state: [Send("w", "a1")])
    assert builder.compile().invoke({}) == {"log": ["a", "b", "w:a1", "w:b1", "w:b2"]}


def test_send_from_start_runs_alongside_a_start_edge() -> None:
    builder = StateGraph(Log)
    builder.add_node("w", worker)
    builder.add_node("r", log("r"))
    builder.add_edge(START, "r")
    builder.add_conditional_edges(START, lambda state: [Send("w", "x")])
    assert builder.compile().invoke({}) == {"log": ["r", "w:x"]}


def test_path_may_mix_sends_and_node_names() -> None:
    builder = StateGraph(Log)
    builder.add_node("start", log("start"))
    builder.add_node("a", worker)
    builder.add_node("b", log("b"))
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", lambda state: [Send("a", "p"), "b"])
    assert builder.compile().invoke({}) == {"log": ["start", "b", "w:p"]}


def test_edge_after_a_sent_node_triggers_its_target_once() -> None:
    builder = StateGraph(Log)
    builder.add_node("w", worker)
    builder.add_node("after", log("after"))
    builder.add_conditional_edges(START, lambda state: [Send("w", 1), Send("w", 2)])
    builder.add_edge("w", "after")
    assert builder.compile().invoke({}) == {"log": ["w:1", "w:2", "after"]}


# --- Command ----------------------------------------------------------------------------


def test_command_updates_state_and_goes_to_one_node() -> None:
    def a(state: Cmd) -> Command[Literal["b", "c"]]:
        return Command(update={"x": 1, "log": ["a"]}, goto="c")

    builder = StateGraph(Cmd)
    builder.add_node("a", a)
    builder.add_node("b", log("b"))
    builder.add_node("c", log("c"))
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["a", "c"], "x": 1}


def test_command_goto_a_list_runs_the_nodes_in_one_step_in_name_order() -> None:
    def a(state: Cmd) -> Command[Literal["b", "c"]]:
        return Command(update={"log": ["a"]}, goto=["c", "b"])

    builder = StateGraph(Cmd)
    builder.add_node("a", a)
    builder.add_node("b", log("b"))
    builder.add_node("c", log("c"))
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["a", "b", "c"]}


def test_command_goto_may_hold_a_send_with_its_own_input() -> None:
    seen: list[Any] = []

    def a(state: Cmd) -> Command:
        return Command(update={"log": ["a"]}, goto=[Send("c", {"log": ["sent"]}), "b"])

    def c(arg: Any) -> dict[str, Any]:
        seen.append(arg)
        return {"log": ["c"]}

    builder = StateGraph(Cmd)
    builder.add_node("a", a, destinations=("b", "c"))
    builder.add_node("b", log("b"))
    builder.add_node("c", c)
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["a", "b", "c"]}
    assert seen == [{"log": ["sent"]}]


def test_command_sends_keep_their_order() -> None:
    def cmd(state: Log) -> Command:
        return Command(goto=[Send("w", 2), Send("w", 1)], update={"log": ["cmd"]})

    builder = StateGraph(Log)
    builder.add_node("cmd", cmd, destinations=("w",))
    builder.add_node("w", worker)
    builder.add_edge(START, "cmd")
    assert builder.compile().invoke({}) == {"log": ["cmd", "w:2", "w:1"]}


def test_command_without_goto_follows_the_static_edges() -> None:
    builder = StateGraph(Cmd)
    builder.add_node("a", lambda state: Command(update={"log": ["a"]}))
    builder.add_node("b", log("b"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    assert builder.compile().invoke({}) == {"log": ["a", "b"]}


def test_command_goto_adds_to_the_static_edges() -> None:
    def a(state: Cmd) -> Command[Literal["c"]]:
        return Command(update={"log": ["a"]}, goto="c")

    builder = StateGraph(Cmd)
    builder.add_node("a", a)
    builder.add_node("b", log("b"))
    builder.add_node("c", log("c"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    assert builder.compile().invoke({}) == {"log": ["a", "b", "c"]}


def test_command_goto_end_stops() -> None:
    def a(state: Cmd) -> Command[Literal["b", "__end__"]]:
        return Command(update={"log": ["a"]}, goto=END)

    builder = StateGraph(Cmd)
    builder.add_node("a", a)
    builder.add_node("b", log("b"))
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["a"]}


def test_command_update_may_be_a_list_of_key_value_pairs() -> None:
    builder = StateGraph(Cmd)
    builder.add_node("a", lambda state: Command(update=[("log", ["t1"]), ("log", ["t2"])]))
    builder.add_edge(START, "a")
    assert builder.compile().invoke({}) == {"log": ["t1", "t2"]}


async def test_async_send_fan_out_keeps_send_order() -> None:
    async def work(arg: int) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"log": [arg * 10]}

    builder = StateGraph(Log)
    builder.add_node("work", work)
    builder.add_conditional_edges(START, lambda state: [Send("work", x) for x in [3, 1, 2]])
    assert await builder.compile().ainvoke({}) == {"log": [30, 10, 20]}


async def test_async_command_goto() -> None:
    async def a(state: Cmd) -> Command[Literal["b", "c"]]:
        return Command(update={"x": 1}, goto=["c", "b"])

    builder = StateGraph(Cmd)
    builder.add_node("a", a)
    builder.add_node("b", log("b"))
    builder.add_node("c", log("c"))
    builder.add_edge(START, "a")
    assert await builder.compile().ainvoke({}) == {"log": ["b", "c"], "x": 1}
