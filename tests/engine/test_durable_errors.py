"""Coded errors for bad addresses and arguments (issue 11 item 7): a checkpoint id that is
malformed or names no checkpoint fails the same way from ``invoke``, ``update_state`` and
``get_state``; ``prune_checkpoints(keep=0)`` is refused; ``update_state`` with a key the state
does not have drops it (as LangGraph 1.2 does) and says so in the log.

Each test runs on every backend (see ``conftest.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypedDict

import pytest

from threadloom.errors import CheckpointNotFoundError, InvalidConfigError
from threadloom.graph import START, CompiledGraph, StateGraph


class State(TypedDict):
    x: int


def one_node(store: Any) -> CompiledGraph:
    builder = StateGraph(State)
    builder.add_node("inc", lambda s: {"x": s["x"] + 1})
    builder.add_edge(START, "inc")
    return builder.compile(checkpointer=store)


CALLS: dict[str, Callable[[CompiledGraph, dict[str, Any]], Any]] = {
    "invoke": lambda graph, config: graph.invoke(None, config),
    "update_state": lambda graph, config: graph.update_state(config, {"x": 5}),
    "get_state": lambda graph, config: graph.get_state(config),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("checkpoint_id", ["7fffffffffffffff", "0000000000000063"])
def test_a_checkpoint_id_naming_no_checkpoint_raises_checkpoint_not_found(
    store, thread, call, checkpoint_id
):
    graph = one_node(store)
    graph.invoke({"x": 0}, thread)
    before = list(graph.get_state_history(thread))

    with pytest.raises(CheckpointNotFoundError) as caught:
        CALLS[call](graph, {"configurable": {**thread, "checkpoint_id": checkpoint_id}})

    assert caught.value.code == "checkpoint_not_found"
    assert isinstance(caught.value, KeyError)
    assert checkpoint_id in str(caught.value)
    assert [s.config for s in graph.get_state_history(thread)] == [s.config for s in before]
    graph.invoke({"x": 10}, thread)  # the thread's lease was let go


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("checkpoint_id", [
    "ffffffffffffffff", "-000000000000001", "xyz", "FFFFFFFFFFFFFFFF", " 00000000000001 ",
    "+000000000000001", 12,
])
def test_a_malformed_checkpoint_id_raises_invalid_config(store, thread, call, checkpoint_id):
    graph = one_node(store)
    graph.invoke({"x": 0}, thread)

    with pytest.raises(InvalidConfigError) as caught:
        CALLS[call](graph, {"configurable": {**thread, "checkpoint_id": checkpoint_id}})

    assert caught.value.code == "invalid_config"
    assert repr(checkpoint_id) in str(caught.value)


def test_a_checkpoint_id_from_a_snapshot_still_addresses_it(store, thread):
    graph = one_node(store)
    graph.invoke({"x": 0}, thread)
    first = list(graph.get_state_history(thread))[-1]

    assert graph.get_state(first.config).values == first.values
    graph.update_state(first.config, {"x": 7})
    assert graph.get_state(thread).values == {"x": 7}


@pytest.mark.parametrize("keep", [0, -1, True, 1.5, "2"])
def test_prune_checkpoints_with_keep_below_one_or_not_an_int_raises_invalid_config(
    store, thread, keep
):
    graph = one_node(store)
    graph.invoke({"x": 0}, thread)
    count = len(list(graph.get_state_history(thread)))

    with pytest.raises(InvalidConfigError) as caught:
        store.prune_checkpoints(thread["thread_id"], keep=keep)

    assert caught.value.code == "invalid_config"
    assert len(list(graph.get_state_history(thread))) == count


def test_update_state_drops_a_key_the_state_lacks_and_logs_it(store, thread, caplog):
    """LangGraph 1.2 writes the checkpoint and drops the key without a word."""
    graph = one_node(store)
    graph.invoke({"x": 0}, thread)

    with caplog.at_level(logging.WARNING, logger="threadloom.graph"):
        graph.update_state(thread, {"x": 3, "bogus": 1, "typo_x": 2})

    assert graph.get_state(thread).values == {"x": 3}
    (record,) = [r for r in caplog.records if r.name == "threadloom.graph"]
    assert record.levelno == logging.WARNING
    assert "'bogus'" in record.getMessage() and "'typo_x'" in record.getMessage()
    assert thread["thread_id"] in record.getMessage()


def test_update_state_with_known_keys_logs_nothing(store, thread, caplog):
    graph = one_node(store)
    graph.invoke({"x": 0}, thread)

    with caplog.at_level(logging.WARNING, logger="threadloom.graph"):
        graph.update_state(thread, {"x": 3})

    assert [r for r in caplog.records if r.name == "threadloom.graph"] == []
