"""Retention on every backend: prune, delete runs, delete a thread, export and import."""

from __future__ import annotations

import json
import operator
import os
import uuid
from typing import Annotated, TypedDict

import pytest

from threadloom.checkpoint.crypto import EncryptedSerializer
from threadloom.checkpoint.memory import InMemorySaver
from threadloom.checkpoint.retention import delete_runs_before, export_thread, import_thread
from threadloom.checkpoint.sqlite import SqliteSaver
from threadloom.errors import CheckpointConflictError, InvalidConfigError
from threadloom.graph import END, START, StateGraph
from threadloom.types import interrupt

from .conftest import admin


class State(TypedDict):
    n: int
    log: Annotated[list, operator.add]


def _builder(pause_at: int | None = None):
    def step(state):
        if pause_at is not None and state["n"] == pause_at:
            interrupt("pause")
        return {"n": state["n"] + 1, "log": [f"item-{state['n']:03d}-" + "x" * 40]}

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda s: END if s["n"] >= 12 else "step",
                                  ["step", END])
    return builder


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_store(request, tmp_path):
    """Makes fresh stores of one backend (Postgres: a fresh schema each, dropped after)."""
    made = []
    schemas = []
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None

    def make():
        if request.param == "memory":
            store = InMemorySaver()
        elif request.param == "sqlite":
            store = SqliteSaver(str(tmp_path / f"r{len(made)}.db"))
        else:
            from threadloom.checkpoint.postgres import PostgresStore

            schema = f"tl_test_{uuid.uuid4().hex[:16]}"
            schemas.append(schema)
            store = PostgresStore(url, schema=schema)
        store.setup()
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    for schema in schemas:
        admin(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_prune_keeps_latest_checkpoints_and_their_delta_chains(make_store):
    store = make_store()
    graph = _builder().compile(checkpointer=store, durability="sync")
    graph.invoke({"n": 0, "log": []}, {"thread_id": "t"})
    before = graph.get_state({"thread_id": "t"}).values
    assert len(store.list_checkpoints("t")) == 13
    assert store.prune_checkpoints("t", keep=3) == 10
    kept = store.list_checkpoints("t")
    assert len(kept) == 3
    assert graph.get_state({"thread_id": "t"}).values == before
    history = list(graph.get_state_history({"thread_id": "t"}))
    assert [len(s.values["log"]) for s in history] == [12, 11, 10]
    # the thread goes on from the pruned state
    after = graph.invoke({"n": 0, "log": ["again"]}, {"thread_id": "t"})
    assert after["log"][:12] == before["log"] and after["log"][12] == "again"
    assert store.prune_checkpoints("t", keep=100) == 0
    with pytest.raises(ValueError):
        store.prune_checkpoints("t", keep=0)


def test_delete_runs_older_than_a_date_keeps_unfinished_ones(make_store):
    store = make_store()
    graph = _builder(pause_at=3).compile(checkpointer=store, durability="sync")
    graph.invoke({"n": 0, "log": []}, {"thread_id": "paused", "run_id": "r-paused"})
    done = _builder().compile(checkpointer=store, durability="sync")
    done.invoke({"n": 5, "log": []}, {"thread_id": "done", "run_id": "r-done"})
    done.invoke({"n": 5, "log": []}, {"thread_id": "later", "run_id": "r-later"})
    first = store.get_run("r-paused").created_at
    assert delete_runs_before(store, first) == 0  # nothing was created before the first run
    cutoff = store.get_run("r-later").created_at
    assert store.delete_runs(created_before=cutoff) == 1  # r-done; r-paused is unfinished
    assert store.get_run("r-done") is None
    assert store.get_run("r-later") is not None
    assert store.list_executions(run_id="r-done") == []
    assert store.get_run("r-paused") is not None
    assert store.list_executions(run_id="r-paused")


def test_delete_thread_removes_only_that_thread(make_store):
    store = make_store()
    graph = _builder().compile(checkpointer=store, durability="sync")
    graph.invoke({"n": 0, "log": []}, {"thread_id": "a", "run_id": "ra"})
    graph.invoke({"n": 0, "log": []}, {"thread_id": "b", "run_id": "rb"})
    store.delete_thread("a")
    assert store.list_checkpoints("a") == []
    assert store.get_run("ra") is None and store.list_executions(run_id="ra") == []
    assert graph.get_state({"thread_id": "b"}).values["n"] == 12


@pytest.mark.parametrize("target_kind", ["memory", "sqlite"])
def test_export_then_import_into_another_store_round_trips(make_store, tmp_path, target_kind):
    source = make_store()  # every backend exports; memory and SQLite receive
    graph = _builder(pause_at=7).compile(checkpointer=source, durability="sync")
    graph.invoke({"n": 0, "log": []}, {"thread_id": "t", "run_id": "r1"})
    source.prune_checkpoints("t", keep=4)  # orphaned chain bases must travel too
    data = json.loads(json.dumps(export_thread(source, "t")))

    target = InMemorySaver() if target_kind == "memory" else SqliteSaver(
        str(tmp_path / "target.db"))
    target.setup()
    assert import_thread(target, data) == "t"
    moved = _builder(pause_at=7).compile(checkpointer=target, durability="sync")
    snap_a = graph.get_state({"thread_id": "t"})
    snap_b = moved.get_state({"thread_id": "t"})
    assert snap_b.values == snap_a.values and snap_b.next == snap_a.next
    assert [i.value for i in snap_b.interrupts] == ["pause"]
    assert [s.values for s in moved.get_state_history({"thread_id": "t"})] == [
        s.values for s in graph.get_state_history({"thread_id": "t"})]
    assert moved.get_run("r1").status == "interrupted"
    assert len(moved.list_executions("r1")) == len(graph.list_executions("r1"))
    # the imported thread can be resumed where it paused
    from threadloom.types import Command

    assert moved.invoke(Command(resume="go"), {"thread_id": "t"})["n"] == 12
    with pytest.raises(CheckpointConflictError):
        import_thread(target, data)
    target.close()


def test_export_of_an_encrypted_thread_stays_encrypted(make_store):
    store = make_store()
    graph = _builder().compile(checkpointer=store, serde=EncryptedSerializer(os.urandom(32)))
    graph.invoke({"n": 0, "log": []}, {"thread_id": "t"})
    text = json.dumps(export_thread(store, "t"))
    assert "item-000" not in text


def test_bad_exports_are_rejected(make_store):
    store = make_store()
    with pytest.raises(InvalidConfigError):
        import_thread(store, {"format": "something-else"})
    with pytest.raises(InvalidConfigError):
        export_thread(store, "nope")


# -- importing under a new thread id ---------------------------------------------------------


class Calls:
    def __init__(self) -> None:
        self.charged = 0


def _paying(calls: Calls):
    """``pay`` charges through a recorded ``@task``, then asks for confirmation."""
    from threadloom.func import task

    @task
    def charge(amount: int) -> str:
        calls.charged += 1
        return f"receipt-{amount}"

    def pay(state):
        receipt = charge(state["n"]).result()
        answer = interrupt({"confirm": receipt})
        return {"n": state["n"] + 1, "log": [f"{receipt}:{answer}"]}

    builder = StateGraph(State)
    builder.add_node("pay", pay)
    builder.add_edge(START, "pay")
    builder.add_edge("pay", END)
    return builder


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize("into", ["same", "other"])
def test_a_thread_imported_under_a_new_id_resumes_as_the_original_would(make_store, durability,
                                                                        into):
    from threadloom.types import Command

    calls = Calls()
    source = make_store()
    graph = _paying(calls).compile(checkpointer=source, durability=durability)
    out = graph.invoke({"n": 5, "log": []}, {"thread_id": "t", "run_id": "r1"})
    assert out["__interrupt__"][0].value == {"confirm": "receipt-5"}
    assert calls.charged == 1
    data = json.loads(json.dumps(export_thread(source, "t")))

    if into == "same":  # the original is gone, its copy lives on under another id
        source.delete_thread("t")
        target = source
    else:
        target = make_store()
    assert import_thread(target, data, thread_id="t2") == "t2"
    moved = _paying(calls).compile(checkpointer=target, durability=durability)
    snap = moved.get_state({"thread_id": "t2"})
    assert [i.value for i in snap.interrupts] == [{"confirm": "receipt-5"}]
    assert [t.interrupts for t in snap.tasks] == [snap.interrupts]
    final = moved.invoke(Command(resume="yes"), {"thread_id": "t2"})
    assert final["log"] == ["receipt-5:yes"]
    assert calls.charged == 1  # the recorded charge was not made again
    # the paused execution's record was the one completed: ids were derived for the new id
    executions = moved.list_executions("r1")
    assert sorted((e.node, e.status) for e in executions) == [
        ("charge", "SUCCEEDED"), ("pay", "SUCCEEDED")]
    assert all(e.thread_id == "t2" for e in executions)
    (charge,) = [e for e in executions if e.node == "charge"]
    (pay,) = [e for e in executions if e.node == "pay"]
    assert charge.parents == (pay.id,)


def test_an_interrupt_of_an_imported_thread_is_answered_by_its_id(make_store):
    from threadloom.types import Command

    calls = Calls()
    source = make_store()
    graph = _paying(calls).compile(checkpointer=source, durability="sync")
    graph.invoke({"n": 1, "log": []}, {"thread_id": "t"})
    target = make_store()
    import_thread(target, export_thread(source, "t"), thread_id="copy")
    moved = _paying(calls).compile(checkpointer=target, durability="sync")
    (pending,) = moved.get_state({"thread_id": "copy"}).interrupts
    final = moved.invoke(Command(resume={pending.id: "by id"}), {"thread_id": "copy"})
    assert final["log"] == ["receipt-1:by id"]
    assert calls.charged == 1


def test_an_encrypted_thread_imported_under_a_new_id_is_sealed_for_its_new_rows(make_store):
    from threadloom.checkpoint.crypto import EncryptedSerializer
    from threadloom.errors import DecryptionError
    from threadloom.types import Command

    serde = EncryptedSerializer(os.urandom(32))
    calls = Calls()
    source = make_store()
    graph = _paying(calls).compile(checkpointer=source, serde=serde, durability="sync")
    graph.invoke({"n": 3, "log": []}, {"thread_id": "t", "run_id": "r1"})
    data = export_thread(source, "t")
    target = make_store()
    with pytest.raises(DecryptionError, match="serde=EncryptedSerializer"):
        import_thread(target, data, thread_id="t2")
    assert target.get_thread("t2") is None  # nothing was written
    import_thread(target, data, thread_id="t2", serde=serde)
    assert "receipt-3" not in json.dumps(export_thread(target, "t2"))
    moved = _paying(calls).compile(checkpointer=target, serde=serde, durability="sync")
    assert moved.get_state({"thread_id": "t2"}).interrupts[0].value == {"confirm": "receipt-3"}
    assert moved.invoke(Command(resume="ok"), {"thread_id": "t2"})["log"] == ["receipt-3:ok"]
    assert moved.get_run("r1").input == {"n": 3, "log": []}
    assert calls.charged == 1
    # under its own id an encrypted export needs no key: the values stay where they were
    third = make_store()
    assert import_thread(third, data) == "t"


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_send_tasks_of_an_imported_encrypted_thread_keep_their_recorded_calls(make_store,
                                                                              durability):
    from threadloom.checkpoint.crypto import EncryptedSerializer
    from threadloom.func import task
    from threadloom.types import Command, Send

    charged: list[int] = []

    @task
    def charge(amount: int) -> int:
        charged.append(amount)
        return amount * 10

    def pay(arg):
        receipt = charge(arg["n"]).result()
        if arg["n"] == 2:
            interrupt("large amount?")
        return {"log": [receipt]}

    builder = StateGraph(State)
    builder.add_node("pay", pay)
    builder.add_conditional_edges(START, lambda s: [Send("pay", {"n": i}) for i in (1, 2, 3)],
                                  ["pay"])
    builder.add_edge("pay", END)
    serde = EncryptedSerializer(os.urandom(32))
    source = make_store()
    builder.compile(checkpointer=source, serde=serde, durability=durability).invoke(
        {"n": 0, "log": []}, {"thread_id": "t", "run_id": "r1"})
    assert sorted(charged) == [1, 2, 3]
    target = make_store()
    import_thread(target, export_thread(source, "t"), thread_id="t2", serde=serde)
    moved = builder.compile(checkpointer=target, serde=serde, durability=durability)
    assert sorted(moved.invoke(Command(resume="yes"), {"thread_id": "t2"})["log"]) == [10, 20, 30]
    assert sorted(charged) == [1, 2, 3]
    assert sorted((e.node, e.status) for e in moved.list_executions("r1")) == [
        ("charge", "SUCCEEDED")] * 3 + [("pay", "SUCCEEDED")] * 3


def test_an_import_under_a_new_id_reseals_with_the_current_key(make_store):
    from threadloom.checkpoint.crypto import EncryptedSerializer

    old, new = os.urandom(32), os.urandom(32)
    source = make_store()
    _builder().compile(checkpointer=source, serde=EncryptedSerializer(old)).invoke(
        {"n": 0, "log": []}, {"thread_id": "t", "run_id": "r1"})
    target = make_store()
    import_thread(target, export_thread(source, "t"), thread_id="t2",
                  serde=EncryptedSerializer(new, old))
    only_new = _builder().compile(checkpointer=target, serde=EncryptedSerializer(new))
    assert only_new.get_state({"thread_id": "t2"}).values["n"] == 12
    assert only_new.get_run("r1").output["n"] == 12
    assert all(e.outputs is not None for e in only_new.list_executions("r1"))


def _with_subgraph(calls: dict[str, int]):
    """p1 -> sub (s1 -> s2, which asks) -> p2; ``calls`` counts the node runs."""

    class Log(TypedDict):
        log: Annotated[list, operator.add]

    def node(name, asks=False):
        def run(state):
            calls[name] = calls.get(name, 0) + 1
            return {"log": [f"{name}:{interrupt('ok?')}" if asks else name]}

        return run

    sub = StateGraph(Log)
    sub.add_node("s1", node("s1"))
    sub.add_node("s2", node("s2", asks=True))
    sub.add_edge(START, "s1")
    sub.add_edge("s1", "s2")
    top = StateGraph(Log)
    top.add_node("p1", node("p1"))
    top.add_node("sub", sub.compile())
    top.add_node("p2", node("p2"))
    top.add_edge(START, "p1")
    top.add_edge("p1", "sub")
    top.add_edge("sub", "p2")
    return top


def test_a_subgraphs_checkpoints_travel_with_its_thread(make_store):
    from threadloom.types import Command

    calls: dict[str, int] = {}
    source = make_store()
    graph = _with_subgraph(calls).compile(checkpointer=source, durability="sync")
    config = {"thread_id": "t", "namespace": "tenant-a"}
    graph.invoke({"log": []}, config)
    subgraph_ns = [ns for ns in source.list_checkpoint_namespaces("t", namespace="tenant-a")
                   if ns]
    assert len(subgraph_ns) == 1
    data = json.loads(json.dumps(export_thread(source, "t", namespace="tenant-a")))
    assert [s["checkpoint_ns"] for s in data["subgraphs"]] == subgraph_ns

    target = InMemorySaver()
    import_thread(target, data)  # its own id and namespace: an exact copy
    assert target.list_checkpoint_namespaces("t", namespace="tenant-a") == [""] + subgraph_ns
    moved = _with_subgraph(calls).compile(checkpointer=target, durability="sync")
    (task,) = moved.get_state(config, subgraphs=True).tasks
    assert task.state is not None and task.state.values == {"log": ["p1", "s1"]}
    before = dict(calls)
    out = moved.invoke(Command(resume="yes"), config)
    assert calls["s1"] == before["s1"]  # resumed inside the subgraph: s1 did not run again
    assert out == graph.invoke(Command(resume="yes"), config)  # as the original resumes
    assert "s2:yes" in out["log"]

    copy = InMemorySaver()  # under a new id the subgraph's checkpoints are left out
    import_thread(copy, data, thread_id="t-copy")
    assert copy.list_checkpoint_namespaces("t-copy", namespace="tenant-a") == [""]
