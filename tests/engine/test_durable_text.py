"""Text the user controls reaches the store unharmed: a node's error whose message holds a
NUL character is raised unchanged and recorded on every backend (Postgres text cannot hold
NUL: there it is stored as the four characters ``\\x00``), and so is run metadata holding one.

Every test runs on each backend x durability mode (see ``conftest.py``)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.graph import END, START, StateGraph
from threadloom.types import RetryPolicy

MESSAGE = "bad\x00byte"


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _readable(stored: str | None, written: str, backend: str) -> bool:
    """Whether ``stored`` is ``written`` as the backend keeps it."""
    return stored == (written.replace("\x00", "\\x00") if backend == "postgres" else written)


def test_a_node_error_holding_nul_is_raised_unchanged_and_recorded(
    compile_graph, store, backend, calls, thread
):
    broken = {"b"}

    def a(state: State) -> dict[str, Any]:
        calls.hit("a")
        return {"log": ["a"]}

    def b(state: State) -> dict[str, Any]:
        calls.hit("b")
        if "b" in broken:
            raise ValueError(MESSAGE)
        return {"log": ["b"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001,
                                                      jitter=False))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    graph = compile_graph(builder)
    config = {**thread, "run_id": "run-nul"}

    with pytest.raises(ValueError) as info:
        graph.invoke({"log": []}, config)
    assert type(info.value) is ValueError and info.value.args == (MESSAGE,)

    run = store.get_run("run-nul")
    assert run is not None and run.status == "failed"
    assert _readable(run.error, f"ValueError: {MESSAGE}", backend), run.error
    failed = [e for e in store.list_executions(run_id="run-nul") if e.status == "FAILED"]
    for ex in failed:  # exit durability records none
        assert ex.node == "b" and _readable(ex.error, f"ValueError: {MESSAGE}", backend)
        # attempts are JSON text on every backend, which holds NUL escaped: kept exactly
        assert [at.error for at in ex.attempts] == [f"ValueError: {MESSAGE}"] * len(ex.attempts)

    broken.clear()  # the cause is fixed: the run continues from its failure
    assert graph.invoke(None, config) == {"log": ["a", "b"]}
    assert calls["a"] == 1
    done = store.get_run("run-nul")
    assert done is not None and done.status == "succeeded" and done.error is None


def test_run_metadata_holding_nul_is_stored(compile_graph, store, backend, thread):
    builder = StateGraph(State)
    builder.add_node("a", lambda state: {"log": ["a"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", END)
    graph = compile_graph(builder)
    metadata = {"note": MESSAGE, f"key{MESSAGE}": [MESSAGE, 1]}

    assert graph.invoke({"log": []}, {**thread, "run_id": "run-meta", "metadata": metadata}) == {
        "log": ["a"]
    }
    run = store.get_run("run-meta")
    assert run is not None and run.status == "succeeded"
    if backend == "postgres":
        escaped = "bad\\x00byte"
        metadata = {"note": escaped, f"key{escaped}": [escaped, 1]}
    assert {k: v for k, v in run.metadata.items() if k in metadata} == metadata
