"""A value the store cannot take (a socket, a lambda, a structure nested too deeply) fails the
run with a ``SerializationError`` that names the field, on every backend and durability mode,
never with a raw ``TypeError`` / ``PicklingError`` / ``RecursionError``."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import pytest

from threadloom.checkpoint.crypto import EncryptedSerializer
from threadloom.checkpoint.serde import JsonPlusSerializer
from threadloom.errors import SerializationError, ThreadloomError
from threadloom.func import entrypoint, task
from threadloom.graph import END, START, CompiledGraph, StateGraph


class State(TypedDict, total=False):
    x: Any
    y: int


def _deep(depth: int = 10_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(params=["socket", "lambda", "deep"])
def bad(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Makes a value no serializer can store."""
    sockets: list[socket.socket] = []

    def make() -> Any:
        if request.param == "socket":
            sockets.append(socket.socket())
            return sockets[-1]
        if request.param == "lambda":
            return lambda: None
        return _deep()

    yield make
    for s in sockets:
        s.close()


def _builder(node: Callable[[State], Any], last: bool = False) -> StateGraph:
    """``ok`` -> ``bad`` (-> ``after``, unless ``bad`` is ``last``)."""
    builder = StateGraph(State)
    builder.add_node("ok", lambda s: {"y": 1})
    builder.add_node("bad", node)
    builder.add_edge(START, "ok")
    builder.add_edge("ok", "bad")
    if last:
        builder.add_edge("bad", END)
    else:
        builder.add_node("after", lambda s: {"y": 3})
        builder.add_edge("bad", "after")
        builder.add_edge("after", END)
    return builder


def test_a_node_output_that_cannot_be_stored_names_the_node(compile_graph, thread, bad):
    graph: CompiledGraph = compile_graph(_builder(lambda s: {"y": 2, "x": bad()}))
    with pytest.raises(SerializationError, match=r"output of node 'bad' \(key 'x'\)") as caught:
        graph.invoke({"y": 0}, thread)
    assert caught.value.code == "serialization_failed"
    assert isinstance(caught.value, ThreadloomError)


def test_a_last_node_output_that_cannot_be_stored_names_the_state_key(compile_graph, thread,
                                                                      bad):
    graph: CompiledGraph = compile_graph(_builder(lambda s: {"x": bad()}, last=True))
    with pytest.raises(SerializationError, match=r"'x'"):
        graph.invoke({"y": 0}, thread)


def test_a_run_input_that_cannot_be_stored_names_the_input(compile_graph, thread, bad):
    graph: CompiledGraph = compile_graph(_builder(lambda s: {"y": 2}))
    with pytest.raises(SerializationError, match=r"run's input \(key 'x'\)"):
        graph.invoke({"x": bad(), "y": 0}, thread)


def test_a_task_result_that_cannot_be_stored_names_the_task(store, durability, thread, bad):
    @task
    def fetch() -> Any:
        return bad()

    @entrypoint(checkpointer=store)
    def flow(n: int) -> int:
        fetch().result()
        return n

    with pytest.raises(SerializationError, match="task 'fetch'"):
        flow.invoke(1, {**thread, "durability": durability})


def test_the_encrypting_serializer_names_the_field_too(store, thread, bad):
    import os

    graph = _builder(lambda s: {"x": bad()}).compile(
        checkpointer=store, serde=EncryptedSerializer(os.urandom(32)), durability="sync")
    with pytest.raises(SerializationError, match="output of node 'bad'"):
        graph.invoke({"y": 0}, thread)


def test_the_serializer_itself_raises_a_coded_error(bad):
    serde = JsonPlusSerializer()
    with pytest.raises(SerializationError, match="cannot serialize"):
        serde.dumps(bad())
    with pytest.raises(SerializationError, match=r"allow_pickle=True"):
        JsonPlusSerializer(allow_pickle=False).dumps(object())
