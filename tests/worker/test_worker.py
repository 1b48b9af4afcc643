"""The worker against a real runtime store, in process: it claims queued runs, executes them,
records their events, reacts to cancellation and timeouts, and hands its runs back when it
stops (issue 12 items 2 and 3)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.worker.conftest import events_of, until
from threadloom.checkpoint.queue import RuntimeStore
from threadloom.errors import ThreadBusyError
from threadloom.graph import CompiledGraph
from threadloom.worker import Worker


@pytest.fixture
def worker(store: RuntimeStore, graphs: dict[str, CompiledGraph]) -> Any:
    w = Worker(store, graphs, concurrency=4, heartbeat=0.2, run_lease=2.0)
    w.start()
    yield w
    w.stop(timeout=1.0)


def test_a_queued_run_executes_and_records_its_events(worker, store, queue, wait_for, probe):
    run_id = queue("chain", {"log": ["in"]},
                   stream_mode=["values", "updates", "custom", "debug"])

    record = wait_for(run_id)

    assert record.status == "succeeded"
    events = events_of(store, run_id)
    assert events[0] == ("metadata", {"run_id": run_id, "attempt": 1})
    assert events[-1] == ("end", None)
    kinds = [name for name, _ in events]
    assert {"values", "updates", "custom", "debug"} <= set(kinds)
    assert [d for n, d in events if n == "updates"] == [
        {"a": {"log": ["a"]}}, {"b": {"log": ["b"]}}, {"c": {"log": ["c"]}}]
    assert [d for n, d in events if n == "custom"] == [{"node": n} for n in "abc"]
    assert [d for n, d in events if n == "values"][-1] == {"log": ["in", "a", "b", "c"]}
    assert [d["type"] for n, d in events if n == "debug"][:2] == ["task", "task_result"]
    assert [int(e.seq) for e in store.read_events("default", run_id)] == \
        list(range(1, len(events) + 1))


def test_values_are_recorded_even_when_only_updates_are_asked_for(worker, store, queue,
                                                                  wait_for):
    run_id = queue("chain", {"log": []}, stream_mode=["updates"])
    wait_for(run_id)
    kinds = {name for name, _ in events_of(store, run_id)}
    assert {"values", "updates"} <= kinds and "custom" not in kinds


def test_runs_of_one_thread_execute_in_order_on_its_state(worker, store, queue, wait_for):
    first = queue("chain", {"log": ["1"]}, thread_id="t-shared")
    second = queue("chain", {"log": ["2"]}, thread_id="t-shared")
    wait_for(second)
    assert wait_for(first).status == "succeeded"
    state = worker.graphs["chain"].get_state({"thread_id": "t-shared"})
    assert state.values["log"] == ["1", "a", "b", "c", "2", "a", "b", "c"]


def test_a_failing_run_records_an_error_event(worker, store, queue, wait_for):
    run_id = queue("failing", {"log": []})
    record = wait_for(run_id)
    assert record.status == "failed"
    events = events_of(store, run_id)
    assert ("error", {"error": "ValueError", "message": "boom"}) in events
    assert events[-1] == ("end", None)


def test_an_interrupted_run_ends_its_values_with_the_interrupt_and_resumes_by_command(
        worker, store, queue, wait_for, probe):
    first = queue("asking", {"log": []}, thread_id="t-ask")
    assert wait_for(first).status == "interrupted"
    values = [d for n, d in events_of(store, first) if n == "values"]
    [pending] = values[-1]["__interrupt__"]
    assert pending["value"] == "question?" and pending["id"]

    second = queue("asking", None, thread_id="t-ask", command={"resume": "yes"})
    assert wait_for(second).status == "succeeded"
    state = worker.graphs["asking"].get_state({"thread_id": "t-ask"})
    assert state.values["log"] == ["answer:yes"]


def test_interrupt_before_per_run_pauses_the_run(worker, store, queue, wait_for, probe):
    run_id = queue("chain", {"log": []}, thread_id="t-bp", interrupt_before=["b"])
    assert wait_for(run_id).status == "interrupted"
    assert probe.counts == {"a": 1}
    resumed = queue("chain", None, thread_id="t-bp")
    assert wait_for(resumed).status == "succeeded"
    assert probe.counts == {"a": 1, "b": 1, "c": 1}


def test_cancel_reaches_a_running_run_at_its_next_step(worker, store, queue, wait_for, probe):
    run_id = queue("hold", {"log": []})
    assert probe.started.wait(20)
    assert store.request_cancel("default", run_id) == "signalled"
    until(lambda: worker._running() and worker._running()[0].token.is_set())
    probe.release.set()
    record = wait_for(run_id)
    assert record.status == "cancelled"
    assert probe.counts["after"] == 0  # the next step never started
    assert events_of(store, run_id)[-1] == ("end", None)


def test_cancel_wakes_a_node_waiting_on_a_slow_task(worker, store, queue, wait_for, probe):
    run_id = queue("tasked", {"log": []})
    assert probe.started.wait(20)
    store.request_cancel("default", run_id)
    record = wait_for(run_id)  # while the task is still blocked
    assert not probe.release.is_set()
    assert record.status == "cancelled"


def test_cancel_with_rollback_deletes_the_run(worker, store, queue, wait_for, probe):
    run_id = queue("hold", {"log": []}, thread_id="t-rb")
    assert probe.started.wait(20)
    store.request_cancel("default", run_id, "rollback")
    until(lambda: worker._running() and worker._running()[0].token.is_set())
    probe.release.set()
    until(lambda: store.get_run(run_id) is None)
    assert store.read_events("default", run_id) == []
    assert worker.graphs["hold"].get_state({"thread_id": "t-rb"}).values == {}


def test_a_run_past_its_timeout_fails_with_run_timeout(worker, store, queue, wait_for, probe):
    run_id = queue("hold", {"log": []}, timeout=0.2)
    record = wait_for(run_id)
    probe.release.set()
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith("RunTimeoutError")
    assert ("error", "RunTimeoutError") in [
        (n, d["error"]) for n, d in events_of(store, run_id) if n == "error"]


def test_multitask_reject_refuses_a_run_on_a_busy_thread(worker, store, queue, probe):
    queue("hold", {"log": []}, thread_id="t-busy")
    assert probe.started.wait(20)
    with pytest.raises(ThreadBusyError):
        queue("chain", {"log": []}, thread_id="t-busy", strategy="reject")


def test_multitask_interrupt_cancels_the_active_run(worker, store, queue, wait_for, probe):
    first = queue("hold", {"log": []}, thread_id="t-int")
    assert probe.started.wait(20)
    second = queue("chain", {"log": ["2"]}, thread_id="t-int", strategy="interrupt")
    until(lambda: any(h.token.is_set() for h in worker._running()))
    probe.release.set()
    assert wait_for(second).status == "succeeded"
    assert wait_for(first).status == "cancelled"
    log = worker.graphs["chain"].get_state({"thread_id": "t-int"}).values["log"]
    assert log == ["hold", "2", "a", "b", "c"]  # the cancelled run kept its finished step


def test_multitask_rollback_deletes_the_active_run(worker, store, queue, wait_for, probe):
    first = queue("hold", {"log": ["1"]}, thread_id="t-roll")
    assert probe.started.wait(20)
    second = queue("chain", {"log": ["2"]}, thread_id="t-roll", strategy="rollback")
    until(lambda: any(h.token.is_set() for h in worker._running()))
    probe.release.set()
    assert wait_for(second).status == "succeeded"
    assert store.get_run(first) is None
    log = worker.graphs["chain"].get_state({"thread_id": "t-roll"}).values["log"]
    assert log == ["2", "a", "b", "c"]


def test_a_graceful_stop_hands_a_running_run_back_to_another_worker(
        store, graphs, queue, wait_for, probe):
    first = Worker(store, graphs, concurrency=2, heartbeat=0.2, run_lease=1.0).start()
    run_id = queue("hold", {"log": []})
    assert probe.started.wait(20)
    stopper = threading.Thread(target=first.stop, kwargs={"timeout": 0.1})
    stopper.start()
    until(lambda: first._running() and first._running()[0].token.is_set())
    probe.release.set()  # the node returns; the run stops before its next step
    stopper.join(30)
    row = store.get_queued("default", run_id)
    assert row is not None and row.status == "queued"
    handed_back = store.get_run(run_id)
    assert handed_back is not None and handed_back.status == "pending"  # queued: pending
    assert handed_back.started_at is not None and handed_back.ended_at is None
    assert store.list_workers() == [] or all(
        w.worker_id != first.worker_id for w in store.list_workers())

    with Worker(store, graphs, concurrency=2, heartbeat=0.2, run_lease=1.0):
        record = wait_for(run_id)
    assert record.status == "succeeded"
    assert probe.counts["hold"] == 1 and probe.counts["after"] == 1
    attempts = [d["attempt"] for n, d in events_of(store, run_id) if n == "metadata"]
    assert attempts == [1, 2]


@pytest.mark.slow
def test_a_worker_that_loses_its_liveness_session_hands_its_run_back(
        store, graphs, queue, wait_for, probe):
    """Postgres: the session lock that says the worker's process lives is gone (here its
    backend is terminated), so others may take its runs: it hands them back at once rather
    than run on until its claims (a minute here) lapse."""
    if type(store).__name__ != "PostgresStore":
        pytest.skip("liveness sessions are Postgres'")
    from threadloom.checkpoint._postgres_listen import LIVENESS_CLASS

    with Worker(store, graphs, concurrency=2, heartbeat=0.2, run_lease=60.0) as worker:
        key = store._bus.wait_liveness(20)
        assert key is not None
        run_id = queue("hold", {"log": []})
        assert probe.started.wait(20)
        store._run(lambda conn: conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s::oid AND objid = %s::oid AND objsubid = 2",
            (LIVENESS_CLASS, key)), "terminate")
        until(lambda: worker._running() and worker._running()[0].action == "handback")
        probe.release.set()  # the node returns; the run stops before its next step
        record = wait_for(run_id)  # handed back, claimed again (here), finished
    assert record.status == "succeeded"
    assert probe.counts["hold"] == 1 and probe.counts["after"] == 1
    attempts = [d["attempt"] for n, d in events_of(store, run_id) if n == "metadata"]
    assert attempts == [1, 2]


def test_a_delayed_run_starts_after_its_time(worker, store, queue, wait_for):
    at = time.time() + 0.3
    run_id = queue("chain", {"log": []}, available_at=at)
    record = wait_for(run_id)
    assert record.status == "succeeded"
    assert record.started_at is not None and record.started_at >= at


def test_only_graphs_the_worker_has_are_claimed(store, graphs, queue, probe):
    only_chain = {"chain": graphs["chain"]}
    with Worker(store, only_chain, heartbeat=0.2):
        other = queue("hold", {"log": []})
        mine = queue("chain", {"log": []})
        until(lambda: store.get_queued("default", mine).status == "done")
        assert store.get_queued("default", other).status == "queued"
    assert probe.counts["hold"] == 0


def test_the_worker_heartbeat_is_recorded_and_removed_on_stop(store, graphs):
    worker = Worker(store, graphs, heartbeat=0.1).start()
    until(lambda: any(w.worker_id == worker.worker_id for w in store.list_workers()))
    worker.stop()
    assert all(w.worker_id != worker.worker_id for w in store.list_workers())


def test_run_blocks_until_stop(store, graphs):
    worker = Worker(store, graphs, heartbeat=0.1)
    done = threading.Event()

    def run() -> None:
        worker.run()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    until(lambda: worker.state == "running")
    assert not done.is_set()
    worker.stop()
    assert done.wait(20)


@pytest.mark.parametrize("config", [{"recursion_limit": -1}, {"recursion_limit": "many"},
                                    {"configurable": "not an object"}])
def test_a_run_the_engine_refuses_before_it_starts_is_recorded_failed(worker, store, queue,
                                                                      wait_for, config):
    # the API checks run configs when it queues them; a row written by something else (an
    # older server, a script) must still end, not stay pending forever
    run_id = queue("chain", {"log": []}, config=config)
    record = wait_for(run_id)
    assert record.status == "failed" and record.ended_at is not None
    assert record.error
    events = events_of(store, run_id)
    assert [name for name, _ in events][-2:] == ["error", "end"]
