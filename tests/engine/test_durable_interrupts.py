"""Interrupts (design §4): ``interrupt()`` pauses a run and surfaces its value, the pause is
durable, ``Command(resume=...)`` or ``graph.resume(run_id, value=...)`` continues it;
``interrupt_before`` / ``interrupt_after`` at compile time, per invoke, or in the config.

Every test runs on each backend x durability mode (see ``conftest.py``)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.errors import InvalidConfigError
from threadloom.func import entrypoint, task
from threadloom.graph import END, START, StateGraph
from threadloom.types import Command, Interrupt, Send, interrupt


class State(TypedDict):
    topic: str
    log: Annotated[list[str], operator.add]


def review_graph(calls: Any) -> StateGraph:
    """``draft -> review -> publish``; ``review`` asks a human with ``interrupt()``."""

    def draft(state: State) -> dict[str, Any]:
        calls.hit("draft")
        return {"log": [f"draft:{state['topic']}"]}

    def review(state: State) -> dict[str, Any]:
        calls.hit("review")
        verdict = interrupt({"question": "publish?", "draft": state["log"][-1]})
        calls.hit("review-resumed")
        return {"log": [f"review:{verdict}"]}

    def publish(state: State) -> dict[str, Any]:
        calls.hit("publish")
        return {"log": ["published"]}

    builder = StateGraph(State)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder


def test_interrupt_returns_its_value_and_get_state_shows_it_pending(
    compile_graph, calls, thread
):
    graph = compile_graph(review_graph(calls))

    out = graph.invoke({"topic": "cats", "log": []}, {**thread, "run_id": "r1"})

    (pending,) = out.pop("__interrupt__")
    assert out == {"topic": "cats", "log": ["draft:cats"]}
    assert isinstance(pending, Interrupt)
    assert pending.value == {"question": "publish?", "draft": "draft:cats"}
    assert pending.id
    snapshot = graph.get_state(thread)
    assert snapshot.interrupts == (pending,)
    assert snapshot.next == ("review",)
    (due,) = snapshot.tasks
    assert (due.name, due.interrupts) == ("review", (pending,))
    assert graph.get_run("r1").status == "interrupted"
    statuses = {e.node: e.status for e in graph.list_executions("r1")}
    assert statuses == {"draft": "SUCCEEDED", "review": "INTERRUPTED"}
    assert calls.snapshot() == {"draft": 1, "review": 1}


def test_resume_with_command_continues_the_paused_node(compile_graph, calls, thread):
    graph = compile_graph(review_graph(calls))
    graph.invoke({"topic": "cats", "log": []}, thread)

    out = graph.invoke(Command(resume="yes"), thread)

    assert out == {"topic": "cats", "log": ["draft:cats", "review:yes", "published"]}
    assert calls.snapshot() == {"draft": 1, "review": 2, "review-resumed": 1, "publish": 1}
    snapshot = graph.get_state(thread)
    assert (snapshot.next, snapshot.interrupts) == ((), ())
    (run,) = graph.list_runs()
    assert run.status == "succeeded"


def test_graph_resume_with_a_value_answers_the_interrupt(compile_graph, calls, thread):
    graph = compile_graph(review_graph(calls))
    graph.invoke({"topic": "cats", "log": []}, {**thread, "run_id": "needs-review"})

    out = graph.resume("needs-review", value="approved")

    assert out["log"] == ["draft:cats", "review:approved", "published"]
    run = graph.get_run("needs-review")
    assert (run.status, run.output) == ("succeeded", out)
    assert {e.node: e.status for e in graph.list_executions("needs-review")} == {
        "draft": "SUCCEEDED", "review": "SUCCEEDED", "publish": "SUCCEEDED"}


def test_a_pending_interrupt_survives_a_restart(reopen_store, durability, calls, thread):
    first = review_graph(calls).compile(checkpointer=reopen_store(), durability=durability)
    paused = first.invoke({"topic": "cats", "log": []}, {**thread, "run_id": "r1"})

    # a new graph on a new store object, as a restarted process would have
    restarted = review_graph(calls).compile(checkpointer=reopen_store(), durability=durability)

    assert restarted.get_state(thread).interrupts == tuple(paused["__interrupt__"])
    out = restarted.resume("r1", value="ok")
    assert out["log"] == ["draft:cats", "review:ok", "published"]
    assert calls["draft"] == 1


def test_two_interrupts_in_one_node_are_resumed_in_turn(compile_graph, calls, thread):
    def form(state: State) -> dict[str, Any]:
        calls.hit("form")
        name = interrupt("name?")
        age = interrupt("age?")
        return {"log": [f"{name}:{age}"]}

    builder = StateGraph(State)
    builder.add_node("form", form)
    builder.add_edge(START, "form")
    graph = compile_graph(builder)

    first = graph.invoke({"topic": "t", "log": []}, {**thread, "run_id": "form-run"})
    second = graph.invoke(Command(resume="ada"), thread)
    third = graph.resume("form-run", value=36)

    assert [i.value for i in first["__interrupt__"]] == ["name?"]
    assert [i.value for i in second["__interrupt__"]] == ["age?"]
    assert first["__interrupt__"][0].id != second["__interrupt__"][0].id
    assert third == {"topic": "t", "log": ["ada:36"]}
    assert calls["form"] == 3
    assert [r.status for r in graph.list_runs()] == ["succeeded"]


def parallel_askers(calls: Any, names: tuple[str, ...] = ("p", "q", "r")) -> StateGraph:
    """Nodes ``p``, ``q``, ``r`` run in one step; each interrupts with its own name."""

    def make(name: str) -> Any:
        def ask(state: State) -> dict[str, Any]:
            calls.hit(name)
            answer = interrupt(name)
            return {"log": [f"{name}={answer}"]}

        return ask

    builder = StateGraph(State)
    for name in names:
        builder.add_node(name, make(name))
        builder.add_edge(START, name)
    return builder


def test_parallel_interrupts_are_resumed_together_by_interrupt_id(compile_graph, calls, thread):
    graph = compile_graph(parallel_askers(calls))

    out = graph.invoke({"topic": "t", "log": []}, thread)
    pending = out["__interrupt__"]
    assert sorted(i.value for i in pending) == ["p", "q", "r"]
    assert set(graph.get_state(thread).interrupts) == set(pending)

    done = graph.invoke(Command(resume={i.id: i.value.upper() for i in pending}), thread)

    assert done == {"topic": "t", "log": ["p=P", "q=Q", "r=R"]}
    assert calls.snapshot() == {"p": 2, "q": 2, "r": 2}
    assert graph.get_state(thread).interrupts == ()


def test_parallel_interrupts_can_be_resumed_one_part_at_a_time(compile_graph, calls, thread):
    graph = compile_graph(parallel_askers(calls))
    pending = {i.value: i for i in graph.invoke({"topic": "t", "log": []}, thread)["__interrupt__"]}

    with pytest.raises(InvalidConfigError, match="several interrupts"):
        graph.invoke(Command(resume="same for all"), thread)
    partial = graph.invoke(Command(resume={pending["p"].id: 1, pending["q"].id: 2}), thread)

    assert partial["__interrupt__"] == [pending["r"]]
    assert graph.get_state(thread).interrupts == (pending["r"],)
    done = graph.invoke(Command(resume=3), thread)
    assert done["log"] == ["p=1", "q=2", "r=3"]
    # p and q finished on the partial resume and were not run a third time
    assert calls.snapshot() == {"p": 2, "q": 2, "r": 3}


def test_interrupts_raised_by_send_tasks_are_resumed_by_id(compile_graph, calls, thread):
    def ask(arg: dict[str, int]) -> dict[str, Any]:
        calls.hit(f"ask{arg['i']}")
        return {"log": [f"{arg['i']}:{interrupt(arg['i'])}"]}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_conditional_edges(START, lambda s: [Send("ask", {"i": i}) for i in (1, 2, 3)])
    graph = compile_graph(builder)

    pending = graph.invoke({"topic": "t", "log": []}, thread)["__interrupt__"]
    assert sorted(i.value for i in pending) == [1, 2, 3]
    assert len({i.id for i in pending}) == 3

    out = graph.invoke(Command(resume={i.id: i.value * 100 for i in pending}), thread)

    assert out["log"] == ["1:100", "2:200", "3:300"]
    assert calls.snapshot() == {"ask1": 2, "ask2": 2, "ask3": 2}


def test_a_completed_sibling_of_an_interrupted_node_is_not_run_again(
    compile_graph, calls, thread
):
    def sibling(state: State) -> dict[str, Any]:
        calls.hit("sibling")
        return {"log": ["sibling"]}

    builder = parallel_askers(calls, names=("p",))
    builder.add_node("sibling", sibling)
    builder.add_edge(START, "sibling")
    graph = compile_graph(builder)

    graph.invoke({"topic": "t", "log": []}, {**thread, "run_id": "r"})
    snapshot = graph.get_state(thread)
    done_task = next(t for t in snapshot.tasks if t.name == "sibling")
    assert done_task.result == {"log": ["sibling"]}
    out = graph.resume("r", value="yes")

    assert out["log"] == ["p=yes", "sibling"]
    assert calls.snapshot() == {"p": 2, "sibling": 1}


def test_resuming_a_thread_with_no_pending_interrupt_is_an_error(compile_graph, calls, thread):
    """Stricter than LangGraph 1.2.22, which ignores the resume value and returns the
    state."""
    graph = compile_graph(review_graph(calls))
    graph.invoke({"topic": "cats", "log": []}, thread)
    graph.invoke(Command(resume="yes"), thread)

    with pytest.raises(InvalidConfigError, match="no pending interrupt"):
        graph.invoke(Command(resume="again"), thread)


@pytest.mark.parametrize("where", ["compile", "invoke-kwarg", "config"])
@pytest.mark.parametrize("kind", ["before", "after"])
def test_breakpoints_pause_before_or_after_a_node(compile_graph, calls, thread, where, kind):
    option = {f"interrupt_{kind}": ["review"]}

    def review(state: State) -> dict[str, Any]:
        calls.hit("review")
        return {"log": ["reviewed"]}

    builder = StateGraph(State)
    builder.add_node("draft", lambda s: {"log": ["draft"]})
    builder.add_node("review", review)
    builder.add_node("publish", lambda s: {"log": ["published"]})
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    graph = compile_graph(builder, **(option if where == "compile" else {}))
    config = {**thread, **option} if where == "config" else dict(thread)
    kwargs = option if where == "invoke-kwarg" else {}

    paused = graph.invoke({"topic": "t", "log": []}, config, **kwargs)

    if kind == "before":
        assert paused == {"topic": "t", "log": ["draft"]}
        assert graph.get_state(thread).next == ("review",)
        assert calls["review"] == 0
    else:
        assert paused == {"topic": "t", "log": ["draft", "reviewed"]}
        assert graph.get_state(thread).next == ("publish",)
        assert calls["review"] == 1
    assert "__interrupt__" not in paused
    assert graph.get_state(thread).interrupts == ()
    assert graph.list_runs()[0].status == "interrupted"

    # resuming with the same options does not stop at the same breakpoint again
    out = graph.invoke(None, config, **kwargs)
    assert out == {"topic": "t", "log": ["draft", "reviewed", "published"]}
    assert calls["review"] == 1
    assert [r.status for r in graph.list_runs()] == ["succeeded"]


def test_interrupt_before_every_node_with_star(compile_graph, calls, thread):
    def make(name: str) -> Any:
        def node(state: State) -> dict[str, Any]:
            calls.hit(name)
            return {"log": [name]}

        return node

    builder = StateGraph(State)
    for name in ("one", "two", "three"):
        builder.add_node(name, make(name))
    builder.add_edge(START, "one")
    builder.add_edge("one", "two")
    builder.add_edge("two", "three")
    graph = compile_graph(builder, interrupt_before="*")

    graph.invoke({"topic": "t", "log": []}, thread)
    stops = [graph.get_state(thread).next]
    for _ in range(5):
        if not stops[-1]:
            break
        graph.invoke(None, thread)
        stops.append(graph.get_state(thread).next)

    assert stops == [("one",), ("two",), ("three",), ()]
    assert graph.get_state(thread).values["log"] == ["one", "two", "three"]
    assert calls.snapshot() == {"one": 1, "two": 1, "three": 1}


def test_interrupt_inside_an_entrypoint_pauses_and_resumes_it(store, durability, calls, thread):
    @task
    def write_draft(topic: str) -> str:
        calls.hit("write_draft")
        return f"a draft about {topic}"

    @entrypoint(checkpointer=store)
    def workflow(topic: str) -> dict[str, Any]:
        calls.hit("workflow")
        draft = write_draft(topic).result()
        approved = interrupt({"draft": draft})
        return {"draft": draft, "approved": approved}

    paused = workflow.invoke("cats", {**thread, "run_id": "wf"}, durability=durability)

    (pending,) = paused["__interrupt__"]
    assert pending.value == {"draft": "a draft about cats"}
    assert workflow.get_state(thread).interrupts == (pending,)
    assert workflow.get_run("wf").status == "interrupted"

    out = workflow.invoke(Command(resume=True), thread, durability=durability)

    assert out == {"draft": "a draft about cats", "approved": True}
    # the workflow function replays from its start; the recorded task is not run again
    assert calls.snapshot() == {"workflow": 2, "write_draft": 1}
    assert workflow.get_run("wf").status == "succeeded"
