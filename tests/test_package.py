"""The package's shape: what importing it costs, and what it exports."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import threadloom
import threadloom.checkpoint
import threadloom.circuit
import threadloom.errors
import threadloom.func
import threadloom.graph
import threadloom.logging
import threadloom.types

HEAVY = ("fastapi", "uvicorn", "starlette", "psycopg", "psycopg_pool", "redis", "httpx",
         "pydantic", "opentelemetry", "cryptography")


def test_core_and_a_sqlite_run_import_no_web_or_database_driver(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from typing import TypedDict
        import threadloom
        from threadloom.graph import StateGraph, START, END
        from threadloom.checkpoint.sqlite import SqliteSaver

        class S(TypedDict):
            n: int

        b = StateGraph(S)
        b.add_node("inc", lambda s: {{"n": s["n"] + 1}})
        b.add_edge(START, "inc")
        b.add_edge("inc", END)
        with SqliteSaver.from_conn_string({str(tmp_path / "t.db")!r}) as saver:
            out = b.compile(checkpointer=saver).invoke({{"n": 1}}, {{"thread_id": "t"}})
            assert out == {{"n": 2}}
        heavy = {HEAVY!r}
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_pinned():
    assert sorted(threadloom.__all__) == sorted([
        "END", "START", "CircuitBreaker", "Command", "CompiledGraph", "Interrupt",
        "RetryPolicy", "Send", "StateGraph", "ThreadloomError", "__version__", "interrupt",
    ])
    assert sorted(threadloom.circuit.__all__) == ["CircuitBreaker", "CircuitState"]
    assert sorted(threadloom.graph.__all__) == sorted(
        ["END", "START", "CompiledGraph", "CompiledStateGraph", "StateGraph"]
    )
    assert sorted(threadloom.func.__all__) == sorted(
        ["TaskFunction", "TaskFuture", "entrypoint", "task"]
    )
    assert {"open_store", "Store", "Commit", "CheckpointRecord", "RunRecord",
            "ExecutionRecord", "Lease"} <= set(threadloom.checkpoint.__all__)
    assert {"Send", "Command", "interrupt", "RetryPolicy", "StateSnapshot", "Durability",
            "RunInfo", "ExecutionInfo"} <= set(threadloom.types.__all__)
    assert sorted(threadloom.logging.__all__) == sorted(
        ["FIELDS", "JsonFormatter", "RunLogCapture", "TextFormatter", "capture_run_logs",
         "configure", "flush_pending"]
    )
    for module in (threadloom, threadloom.circuit, threadloom.graph, threadloom.func,
                   threadloom.checkpoint, threadloom.types, threadloom.errors,
                   threadloom.logging):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_every_error_has_a_stable_code_and_one_root():
    errors = [getattr(threadloom.errors, n) for n in threadloom.errors.__all__]
    codes = {}
    for cls in errors:
        if issubclass(cls, threadloom.errors.ThreadloomError):
            assert cls.code not in codes, f"{cls.__name__} reuses {cls.code}"
            codes[cls.code] = cls
        else:  # control-flow signals must not be catchable as Exception
            assert not issubclass(cls, Exception), cls
    assert codes["invalid_config"] is threadloom.errors.InvalidConfigError
    assert issubclass(threadloom.errors.InvalidConfigError, ValueError)
    assert issubclass(threadloom.errors.GraphRecursionError, RecursionError)
