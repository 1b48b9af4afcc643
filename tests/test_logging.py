"""threadloom.logging: the five run fields on every record (engine and user code, in sync
nodes on worker threads, async nodes, ``@task`` on threads and on asyncio, ``None`` outside a
run), the JSON and text formats, and the capture that keeps a run's records with it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

import threadloom.logging as tlog
from threadloom.checkpoint.memory import InMemorySaver
from threadloom.checkpoint.sqlite import SqliteStore
from threadloom.func import task
from threadloom.graph import StateGraph
from threadloom.types import RetryPolicy

app = logging.getLogger("myapp.nodes")


def _concat(a: list[str], b: list[str]) -> list[str]:
    return a + b


class State(TypedDict, total=False):
    seen: Annotated[list[str], _concat]


class Records(logging.Handler):
    """Keeps every record it is handed (thread-safe: Handler.handle holds a lock)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self, logger: str | None = None) -> list[tuple[Any, ...]]:
        return [
            (r.getMessage(), r.run_id, r.thread_id, r.graph, r.node, r.attempt)  # type: ignore[attr-defined]
            for r in self.records if logger is None or r.name.startswith(logger)
        ]


@pytest.fixture
def records() -> Iterator[Records]:
    """Every record of the process at DEBUG and above, while the test runs."""
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _fields_outside(record: logging.LogRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in tlog.FIELDS)


def test_records_outside_a_run_carry_none(records: Records) -> None:
    app.warning("outside")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "made directly", None, None)
    made = logging.getLogRecordFactory()("x", logging.INFO, __file__, 1, "m", None, None)
    assert _fields_outside(records.records[-1]) == (None,) * 5
    assert _fields_outside(made) == (None,) * 5
    assert not hasattr(record, "run_id")  # only the factory stamps, as logging documents


def test_the_factory_is_installed_once_and_chains_the_previous_one() -> None:
    factory = logging.getLogRecordFactory()
    assert getattr(factory, "threadloom", False)
    tlog._install_factory()
    assert logging.getLogRecordFactory() is factory

    seen: list[str] = []
    previous = factory

    def outer(*args: Any, **kwargs: Any) -> logging.LogRecord:
        seen.append("outer")
        return previous(*args, **kwargs)

    logging.setLogRecordFactory(outer)
    try:
        record = logging.getLogger("chain").makeRecord("chain", logging.INFO, "f", 1, "m",
                                                        None, None)
        assert seen == ["outer"] and record.run_id is None  # type: ignore[attr-defined]
    finally:
        logging.setLogRecordFactory(factory)


def _sync_graph() -> Any:
    attempts = {"flaky": 0}

    def first(state: State) -> State:
        app.info("in first")
        return {"seen": ["first"]}

    def flaky(state: State) -> State:
        attempts["flaky"] += 1
        app.info("flaky attempt")
        if attempts["flaky"] == 1:
            raise ConnectionError("try again")
        return {"seen": ["flaky"]}

    def other(state: State) -> State:  # runs beside flaky: on the pool's worker thread
        app.info("in other on %s", threading.current_thread().name)
        return {"seen": ["other"]}

    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("flaky", flaky,
                     retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001,
                                              retry_on=ConnectionError))
    builder.add_node("other", other)
    builder.add_edge("__start__", "first")
    builder.add_edge("first", "flaky")
    builder.add_edge("first", "other")
    return builder.compile(name="sync_graph")


def test_sync_nodes_on_worker_threads_and_retries(records: Records) -> None:
    graph = _sync_graph()
    graph.invoke({"seen": []}, {"run_id": "run-sync", "thread_id": "th-1"})
    user = records.fields("myapp")
    assert ("in first", "run-sync", "th-1", "sync_graph", "first", 1) in user
    assert ("flaky attempt", "run-sync", "th-1", "sync_graph", "flaky", 1) in user
    assert ("flaky attempt", "run-sync", "th-1", "sync_graph", "flaky", 2) in user
    other = [f for f in user if f[0].startswith("in other")]
    assert [f[1:] for f in other] == [("run-sync", "th-1", "sync_graph", "other", 1)]
    engine = {r.getMessage(): r for r in records.records if r.name.startswith("threadloom")}
    started = engine["run started (graph sync_graph)"]
    assert _fields_outside(started) == ("run-sync", "th-1", "sync_graph", None, None)
    retry = next(r for m, r in engine.items() if m.startswith("node flaky failed on attempt 1"))
    assert retry.levelno == logging.WARNING
    assert (retry.node, retry.attempt) == ("flaky", 1)  # type: ignore[attr-defined]
    ended = next(r for m, r in engine.items() if m.startswith("run succeeded"))
    assert ended.run_id == "run-sync"  # type: ignore[attr-defined]
    app.info("after")
    assert _fields_outside(records.records[-1]) == (None,) * 5


async def test_async_nodes_and_tasks_on_asyncio(records: Records) -> None:
    @task
    async def fetch(item: str) -> str:
        await asyncio.sleep(0)
        app.info("fetching %s", item)
        return item

    async def gather(state: State) -> State:
        app.info("in gather")
        got = [await fetch(x) for x in ("a", "b")]
        return {"seen": got}

    async def after(state: State) -> State:
        app.info("in after")
        return {"seen": ["after"]}

    builder = StateGraph(State)
    builder.add_node("gather", gather)
    builder.add_node("after", after)
    builder.add_edge("__start__", "gather")
    builder.add_edge("gather", "after")
    graph = builder.compile(name="async_graph")
    await graph.ainvoke({"seen": []}, {"run_id": "run-async", "thread_id": "th-2"})
    user = records.fields("myapp")
    assert ("in gather", "run-async", "th-2", "async_graph", "gather", 1) in user
    assert ("fetching a", "run-async", "th-2", "async_graph", "gather", 1) in user
    assert ("fetching b", "run-async", "th-2", "async_graph", "gather", 1) in user
    assert ("in after", "run-async", "th-2", "async_graph", "after", 1) in user


def test_task_attempts_on_threads(records: Records) -> None:
    calls = {"n": 0}

    @task(retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001,
                                   retry_on=ConnectionError))
    def charge(amount: int) -> int:
        calls["n"] += 1
        app.info("charging on %s", threading.current_thread().name)
        if calls["n"] < 2:
            raise ConnectionError("flaky card")
        return amount

    def pay(state: State) -> State:
        app.info("in pay")
        return {"seen": [str(charge(3).result())]}

    builder = StateGraph(State)
    builder.add_node("pay", pay)
    builder.add_edge("__start__", "pay")
    graph = builder.compile(checkpointer=InMemorySaver(), name="tasks")
    graph.invoke({"seen": []}, {"run_id": "run-task", "thread_id": "th-3"})
    charging = [f[1:] for f in records.fields("myapp") if f[0].startswith("charging")]
    assert charging == [("run-task", "th-3", "tasks", "pay", 1),
                        ("run-task", "th-3", "tasks", "pay", 2)]
    main = threading.current_thread().name
    assert all(not r.getMessage().endswith(main) for r in records.records
               if r.getMessage().startswith("charging"))
    retry = [r for r in records.records if r.getMessage().startswith("task charge failed")]
    assert [r.attempt for r in retry] == [1]  # type: ignore[attr-defined]


def test_failures_and_interrupts_are_logged(records: Records) -> None:
    from threadloom.types import interrupt

    def ask(state: State) -> State:
        return {"seen": [interrupt("ok?")]}

    def boom(state: State) -> State:
        raise ValueError("broken")

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge("__start__", "ask")
    graph = builder.compile(checkpointer=InMemorySaver())
    graph.invoke({"seen": []}, {"run_id": "run-int", "thread_id": "th-4"})
    bad = StateGraph(State)
    bad.add_node("boom", boom)
    bad.add_edge("__start__", "boom")
    with pytest.raises(ValueError):
        bad.compile().invoke({"seen": []}, {"run_id": "run-bad"})
    by_run = {(r.run_id, r.levelname, r.getMessage().split(" ")[1])  # type: ignore[attr-defined]
              for r in records.records if r.name.startswith("threadloom.engine")}
    assert ("run-int", "INFO", "interrupted") in by_run
    assert ("run-bad", "ERROR", "failed") in by_run  # the run
    assert ("run-bad", "ERROR", "boom") in by_run  # the node, with its traceback
    node = next(r for r in records.records if r.getMessage().startswith("node boom failed"))
    assert node.exc_info is not None and node.node == "boom"  # type: ignore[attr-defined]


def test_no_record_is_made_below_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(args[0])
        return factory(*args, **kwargs)

    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    logging.setLogRecordFactory(counting)
    try:
        _sync_graph().invoke({"seen": []})
    finally:
        logging.setLogRecordFactory(factory)
    assert made == ["threadloom.engine._runner"]  # only flaky's retry is at WARNING


# -- formats --------------------------------------------------------------------------------


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
               for name in tlog.UVICORN_LOGGERS}
    try:
        yield
    finally:
        if tlog._configured is not None:
            root.removeHandler(tlog._configured)
            tlog._configured = None
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (kept, propagate) in uvicorn.items():
            logging.getLogger(name).handlers[:] = kept
            logging.getLogger(name).propagate = propagate


def test_json_format_one_object_per_line(restore_root: None) -> None:
    stream = io.StringIO()
    tlog.configure(json=True, level="INFO", stream=stream)
    _sync_graph().invoke({"seen": []}, {"run_id": "run-json", "thread_id": "th-j"})
    app.debug("not shown")
    logging.getLogger("uvicorn.error").info("uvicorn says hi")
    try:
        raise KeyError("missing")
    except KeyError:
        app.exception("outside with a traceback")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(set(item) >= {"time", "level", "logger", "message", *tlog.FIELDS}
               for item in lines)
    flaky = [i for i in lines if i["message"] == "flaky attempt"]
    assert [(i["run_id"], i["thread_id"], i["graph"], i["node"], i["attempt"], i["level"])
            for i in flaky] == [("run-json", "th-j", "sync_graph", "flaky", 1, "INFO"),
                                ("run-json", "th-j", "sync_graph", "flaky", 2, "INFO")]
    assert flaky[0]["logger"] == "myapp.nodes" and flaky[0]["time"].endswith("Z")
    assert not any(i["message"] == "not shown" for i in lines)
    assert any(i["logger"] == "uvicorn.error" for i in lines)
    last = lines[-1]
    assert last["run_id"] is None and "KeyError: 'missing'" in last["exc"]


def test_text_format_names_the_run(restore_root: None) -> None:
    stream = io.StringIO()
    tlog.configure(level="warning", stream=stream)
    tlog.configure(level="INFO", stream=stream)  # replaces its own handler: one line each
    _sync_graph().invoke({"seen": []}, {"run_id": "run-text"})
    lines = stream.getvalue().splitlines()
    flaky = [line for line in lines if line.endswith("flaky attempt")]
    assert len(flaky) == 2
    assert "myapp.nodes: [run=run-text node=flaky attempt=2] flaky attempt" in flaky[1]
    with pytest.raises(ValueError):
        tlog.configure(level="LOUD")


# -- capture --------------------------------------------------------------------------------


def test_capture_keeps_a_runs_records_with_it(tmp_path: Path, records: Records) -> None:
    store = SqliteStore(str(tmp_path / "logs.db"))
    store.setup()
    capture = tlog.capture_run_logs(store, level="INFO", max_records=50, max_message=40)
    try:
        builder = StateGraph(State)

        def chatty(state: State) -> State:
            app.debug("too low to keep")
            app.info("x" * 100)
            try:
                raise RuntimeError("inside")
            except RuntimeError:
                app.exception("caught")
            return {"seen": ["chatty"]}

        builder.add_node("chatty", chatty)
        builder.add_edge("__start__", "chatty")
        graph = builder.compile(checkpointer=store, name="cap")
        graph.invoke({"seen": []}, {"run_id": "run-cap", "thread_id": "th-cap"})
        app.info("outside any run")  # not kept anywhere
        logs = store.page_run_logs("run-cap")
        assert [(item.seq, item.logger, item.level) for item in logs] == [
            (1, "threadloom.engine._loop", "INFO"),
            (2, "myapp.nodes", "INFO"),
            (3, "myapp.nodes", "ERROR"),
            (4, "threadloom.engine._loop", "INFO"),
        ]
        assert logs[0].message == "run started (graph cap)" and logs[0].node is None
        assert logs[1].message == "x" * 40  # cut to max_message
        assert (logs[1].node, logs[1].attempt, logs[1].step) == ("chatty", 1, 1)
        assert logs[2].exc is not None and "RuntimeError: inside" in logs[2].exc
        assert logs[3].message.startswith("run succeeded")
        assert all(item.thread_id == "th-cap" for item in logs)
    finally:
        capture.close()
        store.close()


def test_the_runtime_leaves_a_runs_last_records_to_the_writer(tmp_path: Path,
                                                              records: Records) -> None:
    """With ``flush_at_run_end=False`` the run's own thread writes nothing to ``run_logs``
    (the background writer does), and ``flush_pending`` makes every record readable."""
    store = SqliteStore(str(tmp_path / "logs.db"))
    store.setup()
    writers: list[str] = []
    append = store.append_run_logs

    def recording(logs: Any, **options: Any) -> int:
        writers.append(threading.current_thread().name)
        return append(logs, **options)

    store.append_run_logs = recording  # type: ignore[method-assign]
    capture = tlog.capture_run_logs(store, flush_interval=3600, flush_at_run_end=False)
    try:
        builder = StateGraph(State)
        builder.add_node("talk", lambda state: app.info("said") or {"seen": ["talk"]})
        builder.add_edge("__start__", "talk")
        graph = builder.compile(checkpointer=store, name="quiet")
        graph.invoke({"seen": []}, {"run_id": "run-q", "thread_id": "th-q"})
        assert threading.current_thread().name not in writers
        tlog.flush_pending(store)
        assert [item.message for item in store.page_run_logs("run-q")][1] == "said"
        assert [item.message for item in store.page_run_logs("run-q")][-1].startswith(
            "run succeeded")
    finally:
        capture.close()
        store.close()


def test_capture_is_bounded_per_run_and_flushed_in_the_background(
        records: Records) -> None:
    store = InMemorySaver()
    capture = tlog.capture_run_logs(store, max_records=5, flush_interval=0.01)
    try:
        flushed = threading.Event()

        def loud(state: State) -> State:
            for i in range(20):
                app.info("line %d", i)
            # the background flusher writes while the run still goes on
            for _ in range(500):
                if store.page_run_logs("run-loud"):
                    flushed.set()
                    break
                threading.Event().wait(0.01)
            return {"seen": ["loud"]}

        builder = StateGraph(State)
        builder.add_node("loud", loud)
        builder.add_edge("__start__", "loud")
        builder.compile(checkpointer=store).invoke({"seen": []}, {"run_id": "run-loud"})
        assert flushed.is_set()
        messages = [item.message for item in store.page_run_logs("run-loud")]
        assert messages == ["run started (graph graph)", "line 0", "line 1", "line 2",
                            "line 3"]
        # another run on the same store has its own bound
        builder.compile(checkpointer=store).invoke({"seen": []}, {"run_id": "run-2"})
        assert len(store.page_run_logs("run-2")) == 5
    finally:
        capture.close()
    assert tlog._captures.get(store) is None


def test_capture_only_keeps_runs_of_its_store(records: Records) -> None:
    kept, other = InMemorySaver(), InMemorySaver()
    capture = tlog.capture_run_logs(kept)
    try:
        def node(state: State) -> State:
            app.info("hello")
            return {"seen": ["x"]}

        builder = StateGraph(State)
        builder.add_node("node", node)
        builder.add_edge("__start__", "node")
        builder.compile(checkpointer=other).invoke({"seen": []}, {"run_id": "elsewhere"})
        builder.compile().invoke({"seen": []}, {"run_id": "no-store"})
        builder.compile(checkpointer=kept).invoke({"seen": []}, {"run_id": "here"})
        assert other.page_run_logs("elsewhere") == []
        assert kept.page_run_logs("elsewhere") == []
        assert kept.page_run_logs("no-store") == []
        assert "hello" in [item.message for item in kept.page_run_logs("here")]
    finally:
        capture.close()


def test_a_failing_store_does_not_fail_the_run(records: Records) -> None:
    store = InMemorySaver()
    capture = tlog.capture_run_logs(store)

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError("disk full")

    store.append_run_logs = refuse  # type: ignore[method-assign]
    try:
        def node(state: State) -> State:
            app.info("hello")
            return {"seen": ["x"]}

        builder = StateGraph(State)
        builder.add_node("node", node)
        builder.add_edge("__start__", "node")
        out = builder.compile(checkpointer=store).invoke({"seen": []}, {"run_id": "r"})
        assert out == {"seen": ["x"]}
        warned = [r.getMessage() for r in records.records if r.name == "threadloom.logging"]
        assert warned and "disk full" in warned[0]
    finally:
        capture.close()
