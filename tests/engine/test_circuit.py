"""Circuit breakers on nodes and tasks (design §4 "Failures"): consecutive failures open the
circuit, an open circuit fails calls at once without running them, and after
``reset_timeout`` one probe call decides. The clock is injected, so no test sleeps."""

from __future__ import annotations

import operator
import threading
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

from threadloom import CircuitBreaker
from threadloom.errors import CircuitOpenError, GraphValidationError, InvalidConfigError
from threadloom.func import task
from threadloom.graph import START, StateGraph
from threadloom.types import Command, RetryPolicy, interrupt


class Clock:
    """A manual monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class State(TypedDict, total=False):
    fail: bool
    log: Annotated[list[str], operator.add]


@pytest.fixture
def key() -> str:
    return f"dep-{uuid.uuid4().hex}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def flaky(calls: Any, name: str = "call") -> Callable[[State], dict[str, Any]]:
    def node(state: State) -> dict[str, Any]:
        calls.hit(name)
        if state.get("fail"):
            raise ConnectionError(f"{name} is down")
        return {"log": [name]}

    return node


def one_node(node: Any, breaker: CircuitBreaker, **options: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("node", node, circuit=breaker, **options)
    builder.add_edge(START, "node")
    return builder.compile()


# -- the breaker itself -------------------------------------------------------------------


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count(key, clock):
    breaker = CircuitBreaker(key, failure_threshold=3, reset_timeout=10, clock=clock)
    for _ in range(2):
        breaker.failed(breaker.admit())
    breaker.succeeded(breaker.admit())  # the count starts again
    for _ in range(2):
        breaker.failed(breaker.admit())
    assert breaker.state == "closed"
    breaker.failed(breaker.admit())
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError, match="is open") as info:
        breaker.admit()
    assert info.value.code == "circuit_open"


def test_after_the_reset_timeout_one_probe_decides(key, clock):
    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=10, clock=clock)
    breaker.failed(breaker.admit())
    clock.advance(9.5)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    clock.advance(0.5)
    assert breaker.state == "half_open"
    probe = breaker.admit()
    assert probe is True
    breaker.failed(probe)  # a failed probe opens the circuit again, for a new timeout
    assert breaker.state == "open"
    clock.advance(5)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    clock.advance(5)
    breaker.succeeded(breaker.admit())  # a successful probe closes it
    assert breaker.state == "closed"
    assert breaker.admit() is False


def test_half_open_lets_exactly_one_concurrent_caller_probe(key, clock):
    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=1, clock=clock)
    breaker.failed(breaker.admit())
    clock.advance(1)
    start = threading.Barrier(8, timeout=10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        start.wait()
        try:
            probe = breaker.admit()
        except CircuitOpenError:
            result = "refused"
        else:
            result = "probe" if probe else "closed"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["probe"] + ["refused"] * 7


def test_a_probe_that_ends_without_an_outcome_lets_the_next_call_probe(key, clock):
    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=1, clock=clock)
    breaker.failed(breaker.admit())
    clock.advance(1)
    breaker.abandoned(breaker.admit())  # e.g. the probe called interrupt()
    assert breaker.admit() is True


def test_breakers_of_one_key_share_their_state_and_must_agree(key, clock):
    first = CircuitBreaker(key, failure_threshold=1, reset_timeout=5, clock=clock)
    second = CircuitBreaker(key, failure_threshold=1, reset_timeout=5, clock=clock)
    first.failed(first.admit())
    assert second.state == "open"
    second.reset()
    assert first.state == "closed"
    with pytest.raises(InvalidConfigError, match="must agree"):
        CircuitBreaker(key, failure_threshold=2, reset_timeout=5, clock=clock)


@pytest.mark.parametrize("kwargs", [
    {"failure_threshold": 0}, {"failure_threshold": 1.5}, {"failure_threshold": True},
    {"reset_timeout": -1}, {"reset_timeout": float("nan")}, {"reset_timeout": "10"},
])
def test_bad_settings_are_rejected(key, kwargs):
    with pytest.raises(InvalidConfigError) as info:
        CircuitBreaker(key, **kwargs)
    assert info.value.code == "invalid_config"


def test_a_circuit_that_is_not_a_breaker_is_rejected():
    builder = StateGraph(State)
    with pytest.raises(GraphValidationError, match="CircuitBreaker"):
        builder.add_node("node", lambda s: s, circuit="payments")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="CircuitBreaker"):
        task(circuit="payments")(lambda: 1)  # type: ignore[arg-type]


# -- on nodes -----------------------------------------------------------------------------


def test_an_open_circuit_fails_the_node_at_once_without_running_it(key, clock, calls):
    breaker = CircuitBreaker(key, failure_threshold=2, reset_timeout=30, clock=clock)
    graph = one_node(flaky(calls), breaker)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            graph.invoke({"fail": True, "log": []})
    with pytest.raises(CircuitOpenError):
        graph.invoke({"fail": False, "log": []})
    assert calls["call"] == 2
    clock.advance(30)
    assert graph.invoke({"fail": False, "log": []}) == {"fail": False, "log": ["call"]}
    assert calls["call"] == 3
    assert breaker.state == "closed"


async def test_an_async_node_goes_through_its_circuit(key, clock, calls):
    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=30, clock=clock)

    async def node(state: State) -> dict[str, Any]:
        calls.hit("call")
        if state.get("fail"):
            raise ConnectionError("down")
        return {"log": ["call"]}

    graph = one_node(node, breaker)
    with pytest.raises(ConnectionError):
        await graph.ainvoke({"fail": True, "log": []})
    with pytest.raises(CircuitOpenError):
        await graph.ainvoke({"fail": False, "log": []})
    clock.advance(30)
    assert (await graph.ainvoke({"fail": False, "log": []}))["log"] == ["call"]
    assert calls["call"] == 2


def test_the_default_retry_policy_does_not_retry_an_open_circuit(key, clock, calls):
    breaker = CircuitBreaker(key, failure_threshold=2, reset_timeout=30, clock=clock)
    retry = RetryPolicy(max_attempts=5, initial_interval=0, jitter=False)
    graph = one_node(flaky(calls), breaker, retry_policy=retry)
    with pytest.raises(CircuitOpenError):
        graph.invoke({"fail": True, "log": []})
    assert calls["call"] == 2  # two failures opened it; the third attempt was refused, once


def test_a_retry_policy_naming_circuit_open_error_retries_into_the_probe(key, calls):
    ticks = iter(range(0, 1000, 10))  # every reading of the clock is 10s later
    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=30,
                             clock=lambda: float(next(ticks)))
    failing = [True]

    def node(_: State) -> dict[str, Any]:
        calls.hit("call")
        if failing.pop() if failing else False:
            raise ConnectionError("down")
        return {"log": ["call"]}

    retry = RetryPolicy(max_attempts=4, initial_interval=0, jitter=False,
                        retry_on=(ConnectionError, CircuitOpenError))
    graph = one_node(node, breaker, retry_policy=retry)
    # attempt 1 fails and opens the circuit (t=0); attempts 2 and 3 are refused (t=10, 20);
    # attempt 4 comes at t=30 and is the probe
    assert graph.invoke({"log": []}) == {"log": ["call"]}
    assert calls["call"] == 2
    assert breaker.state == "closed"


def test_two_nodes_with_one_key_trip_together(key, clock, calls):
    payments = CircuitBreaker(key, failure_threshold=2, reset_timeout=30, clock=clock)
    refunds = CircuitBreaker(key, failure_threshold=2, reset_timeout=30, clock=clock)
    charge = one_node(flaky(calls, "charge"), payments)
    refund = one_node(flaky(calls, "refund"), refunds)
    with pytest.raises(ConnectionError):
        charge.invoke({"fail": True, "log": []})
    with pytest.raises(ConnectionError):
        refund.invoke({"fail": True, "log": []})
    with pytest.raises(CircuitOpenError):
        refund.invoke({"fail": False, "log": []})
    with pytest.raises(CircuitOpenError):
        charge.invoke({"fail": False, "log": []})
    assert (calls["charge"], calls["refund"]) == (1, 1)


def test_half_open_runs_one_of_several_parallel_nodes_as_the_probe(key, calls):
    admits = threading.Semaphore(0)

    def counting_clock() -> float:
        admits.release()  # the breaker reads the clock once per refused or probing call
        return 0.0

    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=0, clock=counting_clock)
    breaker.failed(breaker.admit())  # open; with reset_timeout=0 the next call probes
    assert admits.acquire(timeout=10)  # the clock read of failed()

    def probe(state: State) -> dict[str, Any]:
        calls.hit("probe")
        for _ in range(3):  # every parallel node has asked to be admitted
            assert admits.acquire(timeout=10)
        return {"log": ["ran"]}

    builder = StateGraph(State)
    for name in ("a", "b", "c"):
        builder.add_node(name, probe, circuit=breaker)
        builder.add_edge(START, name)
    with pytest.raises(CircuitOpenError):
        builder.compile().invoke({"log": []})
    assert calls["probe"] == 1
    assert breaker.state == "closed"


def test_a_probe_node_that_interrupts_leaves_the_next_call_to_probe(key, clock, store, thread):
    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.failed(breaker.admit())
    clock.advance(5)

    def node(state: State) -> dict[str, Any]:
        return {"log": [interrupt("ok?")]}

    builder = StateGraph(State)
    builder.add_node("node", node, circuit=breaker)
    builder.add_edge(START, "node")
    graph = builder.compile(checkpointer=store)
    assert "__interrupt__" in graph.invoke({"log": []}, thread)
    assert breaker.state == "half_open"
    assert graph.invoke(Command(resume="yes"), thread)["log"] == ["yes"]
    assert breaker.state == "closed"


# -- on tasks -----------------------------------------------------------------------------


def test_an_open_circuit_fails_a_task_call_at_once(key, clock, calls):
    breaker = CircuitBreaker(key, failure_threshold=2, reset_timeout=30, clock=clock)

    @task(circuit=breaker)
    def fetch(fail: bool) -> str:
        calls.hit("fetch")
        if fail:
            raise ConnectionError("down")
        return "page"

    def node(state: State) -> dict[str, Any]:
        return {"log": [fetch(bool(state.get("fail"))).result()]}

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    graph = builder.compile()
    for _ in range(2):
        with pytest.raises(ConnectionError):
            graph.invoke({"fail": True, "log": []})
    with pytest.raises(CircuitOpenError):
        graph.invoke({"fail": False, "log": []})
    assert calls["fetch"] == 2
    clock.advance(30)
    assert graph.invoke({"fail": False, "log": []})["log"] == ["page"]


def test_a_recorded_task_result_on_replay_does_not_touch_the_breaker(
    key, clock, calls, compile_graph, thread
):
    breaker = CircuitBreaker(key, failure_threshold=1, reset_timeout=30, clock=clock)

    @task(circuit=breaker)
    def charge() -> str:
        calls.hit("charge")
        return "charged"

    def node(state: State) -> dict[str, Any]:
        receipt = charge().result()
        return {"log": [receipt, interrupt("confirm?")]}

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    graph = compile_graph(builder)
    assert "__interrupt__" in graph.invoke({"log": []}, thread)
    breaker.failed(breaker.admit())  # the dependency went down meanwhile
    assert breaker.state == "open"

    out = graph.invoke(Command(resume="yes"), thread)

    assert out["log"] == ["charged", "yes"]
    assert calls["charge"] == 1
    assert breaker.state == "open"  # neither refused nor probed
