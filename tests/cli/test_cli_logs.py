"""The runtime's logs as a deployment sees them: ``threadloom dev --log-format json`` prints
one JSON object per line (uvicorn's records too) with the run fields, and the worker keeps
each run's records with the run for ``GET .../logs`` and ``threadloom runs logs``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from threadloom.testing.process import process_env, start_dev

KEY = "tl_test_key_0123456789abcdef"

GRAPHS = textwrap.dedent('''
    import logging
    from typing import TypedDict

    from threadloom.func import task
    from threadloom.graph import StateGraph

    log = logging.getLogger("myapp")

    class S(TypedDict, total=False):
        name: str
        greeting: str

    @task
    def shout(name: str) -> str:
        log.info("shouting %s", name)
        return name.upper()

    def greet(state: S) -> S:
        log.info("hello from the node")
        log.debug("debug is below the level")
        return {"greeting": "hi " + shout(state["name"]).result()}

    builder = StateGraph(S)
    builder.add_node("greet", greet)
    builder.set_entry_point("greet")
    graph = builder.compile()
''')


def _setup(tmp_path: Path, logs: str = "") -> str:
    (tmp_path / "greeting_graphs.py").write_text(GRAPHS)
    (tmp_path / "threadloom.toml").write_text(
        '[graphs]\ngreet = "greeting_graphs:graph"\n' + logs)
    return f"sqlite:///{tmp_path}/logs.db"


def test_dev_logs_json_and_keeps_each_runs_records(tmp_path: Path) -> None:
    db = _setup(tmp_path, '[logs]\nmax_message = 200\n')
    with start_dev(db, cwd=tmp_path, env={"THREADLOOM_API_KEY": KEY},
                   extra=["--log-format", "json", "--log-level", "info"]) as dev:
        status, out = dev.request("POST", "/threads/g-1/runs/wait", {
            "assistant_id": "greet", "input": {"name": "ada"}, "if_not_exists": "create",
            "run_id": "greet-run-1"})
        assert (status, out) == (200, {"name": "ada", "greeting": "hi ADA"}), dev.output()
        status, page = dev.request("GET", "/threads/g-1/runs/greet-run-1/logs")
        assert status == 200, page
        assert dev.stop() == 0, dev.output()
        stderr = dev.stderr()
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    assert any(item["logger"].startswith("uvicorn") for item in lines)
    node = [item for item in lines if item["message"] == "hello from the node"]
    assert [(i["run_id"], i["thread_id"], i["graph"], i["node"], i["attempt"]) for i in node] \
        == [("greet-run-1", "g-1", "greet", "greet", 1)]
    assert not any(item["message"] == "debug is below the level" for item in lines)
    kept = [(item["logger"], item["message"], item["node"]) for item in page["logs"]]
    assert ("myapp", "hello from the node", "greet") in kept
    assert ("myapp", "shouting ada", "greet") in kept
    # a worker's first claim of a run is logged at DEBUG: the engine's start line opens it
    assert kept[:1] == [("threadloom.engine._loop", "run started (graph greet)", None)]
    assert page["next_cursor"] is None

    printed = subprocess.run(
        [sys.executable, "-m", "threadloom", "runs", "logs", "greet-run-1", "--db", db],
        capture_output=True, text=True, env=process_env(), timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert "myapp [greet #1]: hello from the node" in printed.stdout


def test_capture_can_be_switched_off_and_text_is_the_default(tmp_path: Path) -> None:
    db = _setup(tmp_path, '[logs]\ncapture = false\nlevel = "warning"\n')
    with start_dev(db, cwd=tmp_path, env={"THREADLOOM_API_KEY": KEY},
                   extra=["--log-level", "INFO"]) as dev:  # the flag wins over the file
        status, _ = dev.request("POST", "/threads/g-2/runs/wait", {
            "assistant_id": "greet", "input": {"name": "bo"}, "if_not_exists": "create",
            "run_id": "greet-run-2"})
        assert status == 200
        status, page = dev.request("GET", "/threads/g-2/runs/greet-run-2/logs")
        assert (status, page["logs"]) == (200, [])
        assert dev.stop() == 0
        stderr = dev.stderr()
    assert "myapp: [run=greet-run-2 node=greet attempt=1] hello from the node" in stderr


def test_dev_without_a_config_keeps_the_seed_graphs_logs(tmp_path: Path) -> None:
    """No ``threadloom.toml``: the seed graphs, with capture on (the ``[logs]`` defaults), so
    a newcomer's first run has its nodes' records in the dashboard's run detail."""
    assert not (tmp_path / "threadloom.toml").exists()
    with start_dev(f"sqlite:///{tmp_path}/seeds.db", cwd=tmp_path,
                   env={"THREADLOOM_API_KEY": KEY}) as dev:
        status, out = dev.request("POST", "/threads/s-1/runs/wait", {
            "assistant_id": "seed_loop", "input": {"step": 0}, "if_not_exists": "create",
            "run_id": "seed-run-1"})
        assert (status, out) == (200, {"step": 3, "done": True}), dev.output()
        status, page = dev.request("GET", "/threads/s-1/runs/seed-run-1/logs")
        assert dev.stop() == 0, dev.output()
    assert status == 200, page
    nodes = [(item["node"], item["message"]) for item in page["logs"]
             if item["logger"] == "threadloom.examples.loop"]
    assert nodes[:2] == [("increment", "step 0 -> 1"), ("check", "step 1: one more round")]
    assert len(nodes) == 6


def test_a_bad_logs_section_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = _setup(tmp_path, '[logs]\nformat = "xml"\n')
    done = subprocess.run([sys.executable, "-m", "threadloom", "dev", "--port", "0", "--db", db],
                          capture_output=True, text=True, cwd=tmp_path, env=process_env(),
                          timeout=120)
    assert done.returncode == 1
    assert '[logs] format must be "text" or "json"' in done.stderr


def test_runs_logs_follow_prints_until_the_run_ends(tmp_path: Path, capsys) -> None:
    import threading

    from threadloom.checkpoint import open_store
    from threadloom.checkpoint.base import Commit, RunLog
    from threadloom.cli import main
    from threadloom.testing.conformance import run

    db = f"sqlite:///{tmp_path}/follow.db"
    store = open_store(db)

    def log(message: str) -> RunLog:
        return RunLog(run_id="r-f", thread_id="t-f", at=1_700_000_000.0, level="INFO",
                      logger="app", message=message, node="n", attempt=1)

    try:
        store.commit([Commit("t-f", runs=[run("r-f", "t-f", status="running")])])
        store.append_run_logs([log("first")])
        done: list[int] = []
        follower = threading.Thread(target=lambda: done.append(main(
            ["runs", "logs", "r-f", "--follow", "--interval", "0.02", "--db", db])))
        follower.start()
        store.append_run_logs([log("second")])
        store.append_run_logs([log("last")])
        store.commit([Commit("t-f", runs=[run("r-f", "t-f", status="succeeded")])])
        follower.join(30)
        assert done == [0] and not follower.is_alive()
    finally:
        store.close()
    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["first", "second", "last"]
