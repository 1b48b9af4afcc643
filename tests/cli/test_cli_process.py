"""``threadloom dev`` / ``serve`` / ``worker`` as real processes, and the command's errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from tests.checkpoint.conftest import redis_url  # noqa: F401 - a fixture
from threadloom.checkpoint import open_store
from threadloom.cli import main
from threadloom.server.auth import key_id_of
from threadloom.testing.process import process_env, start_dev, start_serve, start_worker

KEY = "tl_test_key_0123456789abcdef"


def threadloom(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    """``python -m threadloom ARGS`` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "threadloom", *args], capture_output=True,
                          text=True, cwd=cwd, env=process_env(env), timeout=120)


def test_dev_prints_the_urls_and_a_key_serves_and_exits_0_on_sigterm(tmp_path):
    db = f"sqlite:///{tmp_path}/dev.db"
    with start_dev(db, cwd=tmp_path) as dev:
        out = dev.stdout()
        assert f"API:       {dev.url}\n" in out
        assert f"docs:      {dev.url}/docs\n" in out
        assert f"dashboard: {dev.url}/dashboard  (sign in with the API key)\n" in out
        assert dev.api_key and dev.api_key.startswith("tl_")
        assert "seed_loop, chat, fetch, cloud, review (the built-in seed graphs" in out
        assert dev.request("GET", "/ok") == (200, {"ok": True})
        with urllib.request.urlopen(f"{dev.url}/", timeout=30) as page:  # no key needed
            assert page.url == f"{dev.url}/dashboard" and b"API key" in page.read()
        status, ready = dev.request("GET", "/ready")
        assert status == 200 and ready["workers"] >= 1
        assert dev.stop() == 0, dev.output()
        assert "Traceback" not in dev.stderr()
    assert (tmp_path / "dev.db.key").read_text().strip() == dev.api_key
    with start_dev(db, cwd=tmp_path) as again:  # the saved key again, not a new one
        assert again.api_key == dev.api_key
        assert again.stop() == 0


def test_dev_registers_THREADLOOM_API_KEY_and_runs_the_seed_loop(tmp_path):
    db = f"sqlite:///{tmp_path}/dev.db"
    with start_dev(db, cwd=tmp_path, env={"THREADLOOM_API_KEY": KEY}) as dev:
        assert dev.api_key == KEY
        assert not (tmp_path / "dev.db.key").exists()
        status, assistants = dev.request("POST", "/assistants/search", {})
        assert status == 200, assistants
        assert sorted(a["graph_id"] for a in assistants) == [
            "chat", "cloud", "fetch", "review", "seed_loop"]
        status, out = dev.request("POST", "/threads/t-1/runs/wait", {
            "assistant_id": "seed_loop", "input": {"step": 0}, "if_not_exists": "create"})
        assert (status, out) == (200, {"step": 3, "done": True}), dev.output()
        assert dev.request("POST", "/assistants/search", {},
                           headers={"X-API-Key": "tl_wrong_key_0123456789"})[0] == 401
        status, paused = dev.request("POST", "/threads/r-1/runs/wait", {
            "assistant_id": "review", "input": {"topic": "refund"}, "if_not_exists": "create"})
        assert status == 200 and paused["__interrupt__"][0]["value"]["question"]
        listed = threadloom("runs", "ls", "--graph", "review", "--json", "--db", db)
        [paused_run] = json.loads(listed.stdout)
        resumed = threadloom("runs", "resume", paused_run["run_id"], "--value", "true",
                             "--db", db)
        assert resumed.returncode == 0, resumed.stderr
        status, done = dev.request("GET", f"/threads/r-1/runs/{resumed.stdout.split()[-1]}/join")
        assert (status, done["published"]) == (200, True), dev.output()
        store = open_store(db)
        try:  # a slot per client of a busy laptop: dev's worker runs their waits itself
            [worker] = store.list_workers()
            assert worker.info["concurrency"] == 32
        finally:
            store.close()
        assert dev.stop() == 0
    store = open_store(db)
    try:
        assert store.get_key(key_id_of(KEY)).role == "admin"
    finally:
        store.close()


def test_a_key_made_by_the_cli_while_the_server_runs_works_at_once(tmp_path):
    db = f"sqlite:///{tmp_path}/dev.db"
    with start_dev(db, cwd=tmp_path) as dev:
        made = threadloom("keys", "create", "--role", "viewer", "--db", db, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        viewer = made.stdout.split()[-1]
        status, _ = dev.request("POST", "/assistants/search", {},
                                headers={"X-API-Key": viewer})
        assert status == 200
        revoked = threadloom("keys", "revoke", key_id_of(viewer), "--db", db, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        assert dev.request("POST", "/assistants/search", {},
                           headers={"X-API-Key": viewer})[0] == 401
        assert dev.stop() == 0


def test_serve_and_worker_share_a_config_file(tmp_path):
    (tmp_path / "my_graphs.py").write_text(textwrap.dedent("""
        from typing import TypedDict
        from threadloom.graph import StateGraph, START, END

        class S(TypedDict):
            n: int

        def make():
            b = StateGraph(S)
            b.add_node("double", lambda s: {"n": s["n"] * 2})
            b.add_edge(START, "double")
            b.add_edge("double", END)
            return b
    """))
    config = tmp_path / "threadloom.toml"
    config.write_text('db = "sqlite:///./app.db"\n[graphs]\ndoubler = "my_graphs:make"\n')
    env = {"THREADLOOM_API_KEY": KEY}
    with start_worker("sqlite:///./app.db", config=config, env=env, cwd=tmp_path) as worker, \
            start_serve("sqlite:///./app.db", config=config, env=env, cwd=tmp_path) as api:
        assert "threadloom serve: " in api.stdout()
        assert "from SQLite" in api.stderr()  # the warning
        status, out = api.request("POST", "/threads/w-1/runs/wait", {
            "assistant_id": "doubler", "input": {"n": 21}, "if_not_exists": "create"})
        assert (status, out) == (200, {"n": 42}), api.output() + worker.output()
        assert api.stop() == 0 and worker.stop() == 0, api.output() + worker.output()


@pytest.mark.parametrize(("files", "args", "expected"), [
    ({}, ["dev", "--config", "missing.toml"], "missing.toml: config file not found"),
    ({"threadloom.toml": '[graphs]\ng = "no_such_mod_q:graph"\n'}, ["dev"],
     "graph 'g': no module named 'no_such_mod_q'"),
    ({"threadloom.toml": '[graphs]\ng = "m:nope"\n', "m.py": "x = 1\n"}, ["serve"],
     "graph 'g': m has no attribute 'nope'"),
    ({"threadloom.toml": '[graphs]\ng = "m:x"\n', "m.py": "x = 1\n"}, ["worker"],
     "graph 'g' (m:x): a int is not a graph"),
    ({}, ["serve"], "no threadloom.toml in "),
])
def test_config_mistakes_exit_1_with_one_line(tmp_path, files, args, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = threadloom(*args, "--db", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("threadloom: error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr


def test_python_m_threadloom_help_lists_every_command():
    done = threadloom("--help")
    assert done.returncode == 0
    for command in ("dev", "serve", "worker", "migrate", "keys", "runs", "threads"):
        assert f"    {command} " in done.stdout
    assert "threadloom dev " in done.stdout  # the first step, in the epilog


@pytest.mark.parametrize("args", [
    ["dev"], ["serve"], ["worker"], ["migrate"], ["keys", "create"], ["keys", "ls"],
    ["keys", "revoke"], ["runs", "ls"], ["runs", "show"], ["runs", "cancel"],
    ["runs", "resume"], ["runs", "retry"], ["threads", "ls"], ["threads", "show"],
    ["threads", "export"]])
def test_every_command_has_help_with_examples(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith(f"usage: threadloom {' '.join(args)}") and "example" in out


@pytest.mark.parametrize("args", [
    ["keys", "create", "--role", "boss"], ["dev", "--port", "http"], ["bogus"],
    ["runs", "ls", "--limit", "0"], ["runs", "show"]])
def test_usage_errors_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "usage: threadloom" in capsys.readouterr().err


@pytest.mark.parametrize("args", [[], ["keys"], ["runs"], ["threads"]])
def test_a_command_group_alone_prints_its_help_and_exits_2(args, capsys):
    assert main(args) == 2
    assert "usage: threadloom" in "".join(capsys.readouterr())


@pytest.mark.parametrize("given", ["flag", "env"])
def test_an_unreachable_redis_is_one_line_and_exit_1(tmp_path, given):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    flags = ["--redis", url] if given == "flag" else []
    env = {"THREADLOOM_REDIS_URL": url} if given == "env" else None
    done = threadloom("dev", "--port", "0", "--db", f"sqlite:///{tmp_path}/x.db", *flags,
                      cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("threadloom: error:")]
    assert len(errors) == 1 and f"cannot reach Redis at {url}: " in errors[0], done.stderr


def test_serve_and_worker_carry_their_signals_over_redis(tmp_path, redis_url):  # noqa: F811
    config = tmp_path / "threadloom.toml"
    config.write_text('[graphs]\nloop = "threadloom.examples.loop:graph"\n')
    env = {"THREADLOOM_API_KEY": KEY, "THREADLOOM_REDIS_URL": redis_url}
    db = f"sqlite:///{tmp_path}/app.db"
    with start_worker(db, config=config, env=env, cwd=tmp_path) as worker, \
            start_serve(db, config=config, env=env, cwd=tmp_path) as api:
        status, out = api.request("POST", "/threads/x-1/runs/wait", {
            "assistant_id": "loop", "input": {"step": 0}, "if_not_exists": "create"})
        assert (status, out) == (200, {"step": 3, "done": True}), api.output() + worker.output()
        for process in (api, worker):
            assert "signals travel over Redis at redis://" in process.stderr(), process.output()
        assert api.stop() == 0 and worker.stop() == 0, api.output() + worker.output()


def test_a_busy_port_is_one_line_and_exit_1(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = threadloom("dev", "--port", str(port), "--db", f"sqlite:///{tmp_path}/x.db",
                          cwd=tmp_path)
    assert done.returncode == 1
    assert f"threadloom: error: cannot listen on 127.0.0.1:{port}: " in done.stderr
    assert "Traceback" not in done.stderr


def test_runs_ls_json_through_python_m(tmp_path):
    db = f"sqlite:///{tmp_path}/x.db"
    assert threadloom("migrate", "--db", db).returncode == 0
    listed = threadloom("runs", "ls", "--json", "--db", db)
    assert (listed.returncode, json.loads(listed.stdout)) == (0, [])


def test_the_command_and_the_registry_import_no_web_framework_until_a_server_starts():
    script = (
        "import sys, threadloom.cli._parser, threadloom.cli._admin, threadloom.cli._runtime, "
        "threadloom.worker.registry, threadloom.examples.cloud\n"
        "heavy = ('fastapi', 'uvicorn', 'starlette', 'httpx', 'psycopg', 'pydantic')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=process_env(), check=True)
    assert done.stdout.strip() == "[]"


def test_a_worker_registers_itself_and_leaves_on_sigint_with_exit_0(tmp_path):
    import signal

    (tmp_path / "threadloom.toml").write_text(
        '[graphs]\nloop = "threadloom.examples.loop:graph"\n[worker]\nconcurrency = 2\n')
    db = f"sqlite:///{tmp_path}/w.db"
    with start_worker(db, cwd=tmp_path, env={"THREADLOOM_HOST_ID": "machine-a"}) as worker:
        assert "graphs loop, concurrency 2" in worker.stdout()
        store = open_store(db)
        try:
            assert len(store.list_workers()) == 1
            import os

            os.kill(worker.pid, signal.SIGINT)
            assert worker.wait() == 0, worker.output()
            assert "stopping" in worker.stderr()
            assert store.list_workers() == []
        finally:
            store.close()


@pytest.fixture
def postgres_db():
    """A fresh schema on the test Postgres server, as a store URL; dropped afterwards."""
    import os
    import uuid

    url = os.environ.get("THREADLOOM_TEST_POSTGRES_URL",
                         "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        reason = f"no Postgres at {url}: {exc}"
        if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"tl_cli_{uuid.uuid4().hex[:12]}"
    yield f"{url}?schema={schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.slow
@pytest.mark.postgres
def test_dev_on_postgres_migrates_serves_and_runs(postgres_db, tmp_path):
    assert threadloom("migrate", "--db", postgres_db).returncode == 0
    with start_dev(postgres_db, cwd=tmp_path) as dev:
        assert "new for this start" in dev.stdout()  # no key file beside a Postgres database
        status, out = dev.request("POST", "/threads/pg-1/runs/wait", {
            "assistant_id": "seed_loop", "input": {"step": 0}, "if_not_exists": "create"})
        assert (status, out) == (200, {"step": 3, "done": True}), dev.output()
        assert dev.stop() == 0, dev.output()
    listed = threadloom("runs", "ls", "--json", "--db", postgres_db)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["succeeded"]


SLOW_GRAPHS = """
import os, time
from typing import TypedDict
from threadloom.graph import StateGraph, START, END

class S(TypedDict, total=False):
    seconds: float
    done: bool

def slow(state):
    with open(os.environ["MARKS"], "a") as f:
        f.write("slow\\n")
    time.sleep(state["seconds"])
    return {}

def finish(state):
    with open(os.environ["MARKS"], "a") as f:
        f.write("finish\\n")
    return {"done": True}

builder = StateGraph(S)
builder.add_node("slow", slow)
builder.add_node("finish", finish)
builder.add_edge(START, "slow")
builder.add_edge("slow", "finish")
builder.add_edge("finish", END)
graph = builder.compile(durability="sync")
"""


@pytest.mark.parametrize("grace", ["30", "0.1"])
def test_sigterm_during_a_run_finishes_it_or_hands_it_back_and_exits_0(tmp_path, grace):
    import time

    (tmp_path / "slow_graphs.py").write_text(SLOW_GRAPHS)
    (tmp_path / "threadloom.toml").write_text('[graphs]\nslow = "slow_graphs:graph"\n')
    marks = tmp_path / "marks.txt"
    env = {"THREADLOOM_API_KEY": KEY, "MARKS": str(marks)}
    db = f"sqlite:///{tmp_path}/dev.db"
    with start_dev(db, cwd=tmp_path, env=env, extra=["--shutdown-timeout", grace]) as dev:
        status, run = dev.request("POST", "/threads/s-1/runs", {
            "assistant_id": "slow", "input": {"seconds": 1.5}, "if_not_exists": "create"})
        assert status == 200, run
        deadline = time.monotonic() + 30
        while not (marks.exists() and "slow" in marks.read_text()):
            assert time.monotonic() < deadline, dev.output()
            time.sleep(0.02)
        assert dev.stop() == 0, dev.output()
    store = open_store(db)
    try:
        record = store.get_run(run["run_id"])
        if grace == "30":  # finished within the grace period
            assert record.status == "succeeded"
        else:  # handed back after its current step: queued again, the step kept
            assert record.status != "succeeded"
            assert store.get_queued("default", run["run_id"]).status == "queued"
    finally:
        store.close()
    if grace == "0.1":  # the next start continues it; the finished step does not run again
        with start_dev(db, cwd=tmp_path, env=env) as dev:
            status, out = dev.request("GET", f"/threads/s-1/runs/{run['run_id']}/join")
            assert (status, out["done"]) == (200, True), dev.output()
            assert dev.stop() == 0
    assert marks.read_text().split() == ["slow", "finish"]


def test_the_console_script_points_at_main():
    import importlib
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["threadloom"]
    module, _, attr = target.partition(":")
    assert getattr(importlib.import_module(module), attr) is main
