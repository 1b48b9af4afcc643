"""``threadloom migrate``, ``keys``, ``runs`` and ``threads`` on a SQLite store, in-process."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from threadloom._tracing import derived_traceparent, trace_id
from threadloom.checkpoint import open_store
from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.queue import QueuedRun
from threadloom.cli import main
from threadloom.graph import END, START, StateGraph
from threadloom.server.auth import authenticate, key_id_of
from threadloom.types import Command
from threadloom.worker.registry import load_graphs


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    assert main(["migrate", "--db", url]) == 0
    return url


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_migrate_creates_the_database_and_is_idempotent(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/new.db"
    assert run_cli(capsys, "migrate", "--db", url)[:2] == (0, f"{url}: the schema is up to date\n")
    assert (tmp_path / "new.db").exists()
    assert run_cli(capsys, "migrate", "--db", url)[0] == 0


def test_a_missing_database_is_an_error_not_a_new_empty_one(tmp_path, capsys):
    code, out, err = run_cli(capsys, "runs", "ls", "--db", f"sqlite:///{tmp_path}/nope.db")
    assert code == 1 and out == ""
    assert err.startswith("threadloom: error: no database at ") and "nope.db" in err
    assert not (tmp_path / "nope.db").exists()


def test_the_db_comes_from_the_environment_when_no_flag_names_it(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("THREADLOOM_DB", url)
    assert run_cli(capsys, "migrate")[:2] == (0, f"{url}: the schema is up to date\n")


def test_keys_create_prints_the_key_last_and_it_authenticates(db, capsys):
    code, out, _ = run_cli(capsys, "keys", "create", "--namespace", "acme", "--role",
                           "operator", "--name", "ci", "--db", db)
    assert code == 0
    key = out.split()[-1]
    assert key.startswith("tl_") and out.rstrip().endswith(key) and out.count(key) == 1
    store = open_store(db)
    try:
        principal = authenticate(store, key, None)
        assert principal is not None
        assert (principal.role, principal.namespace) == ("operator", "acme")
    finally:
        store.close()
    code, out, _ = run_cli(capsys, "keys", "ls", "--db", db)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["KEY", "ID", "NAMESPACE", "ROLE"]
    assert row.split()[:4] == [key_id_of(key), "acme", "operator", "ci"]
    assert key not in out
    code, out, _ = run_cli(capsys, "keys", "ls", "--json", "--namespace", "other", "--db", db)
    assert (code, json.loads(out)) == (0, [])


def test_keys_revoke_stops_the_key_and_an_unknown_id_fails(db, capsys):
    key = run_cli(capsys, "keys", "create", "--role", "admin", "--db", db)[1].split()[-1]
    key_id = key_id_of(key)
    assert run_cli(capsys, "keys", "revoke", key_id, "--db", db)[:2] == (
        0, f"Revoked key {key_id}.\n")
    store = open_store(db)
    try:
        assert authenticate(store, key, None) is None
    finally:
        store.close()
    assert run_cli(capsys, "keys", "ls", "--db", db)[1] == "(no keys)\n"
    listed = json.loads(run_cli(capsys, "keys", "ls", "--show-revoked", "--json", "--db", db)[1])
    assert [k["key_id"] for k in listed] == [key_id] and listed[0]["revoked_at"]
    code, out, err = run_cli(capsys, "keys", "revoke", "k-nope", "--db", db)
    assert (code, out) == (1, "")
    assert err == "threadloom: error: no key 'k-nope' (see `threadloom keys ls`)\n"


def test_keys_create_refuses_a_bad_namespace_in_one_line(db, capsys):
    code, out, err = run_cli(capsys, "keys", "create", "--namespace", "a/b", "--role", "viewer",
                             "--db", db)
    assert (code, out) == (1, "")
    assert err.startswith("threadloom: error: invalid namespace 'a/b'") and err.count("\n") == 1


def _failing_builder() -> StateGraph:
    def boom(state: dict) -> dict:
        raise ValueError("the model said no")

    builder = StateGraph(dict)
    builder.add_node("boom", boom)
    builder.add_edge(START, "boom")
    builder.add_edge("boom", END)
    return builder


@pytest.fixture
def history(db):
    """Runs made with the library on the CLI's database: a finished loop, a paused review,
    a failed run, and a queued run no worker took yet."""
    store = open_store(db)
    graphs = load_graphs(None, store)
    graphs["seed_loop"].invoke({"step": 0}, {"thread_id": "loop-t", "run_id": "loop-r"})
    graphs["review"].invoke({"topic": "refund"}, {"thread_id": "review-t",
                                                  "run_id": "review-r"})
    failing = _failing_builder().compile(checkpointer=store, name="failing")
    with pytest.raises(ValueError):
        failing.invoke({"x": 1}, {"thread_id": "fail-t", "run_id": "fail-r"})
    now = time.time()
    store.enqueue(RunRecord("queued-r", "queued-t", "seed_loop", "pending", created_at=now,
                            updated_at=now),
                  QueuedRun("default", "queued-r", "queued-t", "seed_loop",
                            json.dumps({"input": {"step": 0}}).encode()))
    store.close()
    return db


def test_runs_ls_is_a_table_and_json(history, capsys):
    code, out, _ = run_cli(capsys, "runs", "ls", "--db", history)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "ID", "THREAD", "GRAPH", "STATUS", "CREATED", "(UTC)",
                                "TOOK", "STEPS", "ERROR"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"loop-r", "review-r", "fail-r", "queued-r"}
    assert rows["loop-r"][1:4] == ["loop-t", "seed_loop", "succeeded"]
    assert rows["review-r"][3] == "interrupted"
    assert rows["fail-r"][3:4] == ["failed"]
    assert lines[[r.split()[0] for r in lines].index("fail-r")].endswith(
        "ValueError: the model said no")
    listed = json.loads(run_cli(capsys, "runs", "ls", "--status", "failed", "--json",
                                "--db", history)[1])
    assert [r["run_id"] for r in listed] == ["fail-r"]
    assert listed[0]["error"] and listed[0]["created_at"].endswith("Z")
    assert run_cli(capsys, "runs", "ls", "--thread", "nope", "--db", history)[1] == "(no runs)\n"
    assert run_cli(capsys, "runs", "ls", "--namespace", "other", "--db", history)[1] == \
        "(no runs)\n"


def test_runs_show_lists_the_node_executions(history, capsys):
    code, out, _ = run_cli(capsys, "runs", "show", "loop-r", "--db", history)
    assert code == 0
    assert "status:" in out and "succeeded" in out
    assert 'output:        {"step": 3, "done": true}' in out
    nodes = [line.split()[1] for line in out.splitlines() if line.split()[:1] and
             line.split()[0].isdigit()]
    assert nodes == ["increment", "check"] * 3
    shown = json.loads(run_cli(capsys, "runs", "show", "loop-r", "--json", "--db", history)[1])
    assert shown["output"] == {"step": 3, "done": True} and len(shown["executions"]) == 6
    assert "Next:" not in out
    code, out, _ = run_cli(capsys, "runs", "show", "review-r", "--db", history)
    assert out.endswith("\nNext: threadloom runs resume review-r --value JSON\n")
    code, out, err = run_cli(capsys, "runs", "show", "nope", "--db", history)
    assert (code, out, err) == (1, "", "threadloom: error: no run 'nope' in namespace "
                                       "'default'\n")


def test_runs_show_prints_the_run_statistics_and_trace(history, capsys):
    shown = json.loads(run_cli(capsys, "runs", "show", "loop-r", "--json", "--db", history)[1])
    stats = shown["stats"]
    assert {n: v["count"] for n, v in stats["nodes"].items()} == {"increment": 3, "check": 3}
    assert stats["retries"] == 0 and stats["bytes_written"] > 0
    assert shown["trace_id"] == trace_id("loop-r", None)
    out = run_cli(capsys, "runs", "show", "loop-r", "--db", history)[1]
    assert f"trace:         {shown['trace_id']}" in out
    assert f"bytes written: {stats['bytes_written']}" in out


def test_runs_cancel_and_retry_go_through_the_queue(history, capsys):
    assert run_cli(capsys, "runs", "cancel", "queued-r", "--db", history)[:2] == (
        0, "Run queued-r: cancelled (it was still queued).\n")
    code, out, _ = run_cli(capsys, "runs", "cancel", "loop-r", "--db", history)
    assert (code, out) == (1, "Run loop-r: not cancelled: the run already finished.\n")
    code, _, err = run_cli(capsys, "runs", "retry", "loop-r", "--db", history)
    assert code == 1 and "run loop-r is succeeded; only a run that is failed or cancelled" in err
    assert run_cli(capsys, "runs", "retry", "fail-r", "--db", history)[0] == 0
    store = open_store(history)
    try:
        assert store.get_run("fail-r").status == "pending"
        queued = store.get_queued("default", "fail-r")
        assert queued.status == "queued" and json.loads(queued.payload)["resume"] is True
        assert store.get_run("queued-r").status == "cancelled"
    finally:
        store.close()


def test_runs_resume_answers_the_interrupt_in_a_new_run_on_the_thread(history, capsys):
    code, out, _ = run_cli(capsys, "runs", "resume", "review-r", "--value",
                           '{"approved": true}', "--db", history)
    assert code == 0 and out.startswith("Run review-r continues in a new run on thread review-t")
    new_id = out.split()[-1]
    code, _, err = run_cli(capsys, "runs", "resume", "loop-r", "--db", history)
    assert code == 1 and "run loop-r is succeeded; only a run that is interrupted" in err
    code, _, err = run_cli(capsys, "runs", "resume", "review-r", "--value", "{nope", "--db",
                           history)
    assert code == 1 and err.startswith("threadloom: error: --value is not JSON")
    store = open_store(history)
    try:
        record = store.get_run(new_id)
        assert (record.thread_id, record.graph, record.status) == ("review-t", "review",
                                                                   "pending")
        assert record.metadata["resumes"] == "review-r"
        assert record.traceparent == derived_traceparent("review-r")  # the same trace
        payload = json.loads(store.get_queued("default", new_id).payload)
        assert payload["command"] == {"resume": {"approved": True}}
        assert payload["input"] is None and not payload["resume"]
        graph = load_graphs(None, store)["review"]  # what a worker then does with it
        answer = Command(resume=payload["command"]["resume"])
        assert graph.invoke(answer, {"thread_id": "review-t", "run_id": new_id})["published"]
    finally:
        store.close()
    code, _, err = run_cli(capsys, "runs", "resume", "review-r", "--db", history)
    assert code == 0  # the thread is free again: another resume is queued, not refused


def test_threads_ls_show_and_export(history, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "threads", "ls", "--db", history)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["loop-t"][1:4] == ["idle", "seed_loop", "loop-r"]
    assert rows["review-t"][1] == "interrupted"
    assert rows["fail-t"][1] == "error"
    code, out, _ = run_cli(capsys, "threads", "show", "review-t", "--db", history)
    assert code == 0 and "status:" in out and "next review" in out and "review-r" in out
    target = tmp_path / "loop.json"
    code, out, err = run_cli(capsys, "threads", "export", "loop-t", "--out", str(target),
                             "--db", history)
    assert (code, out) == (0, "")
    exported = json.loads(target.read_text())
    assert exported["thread"]["thread_id"] == "loop-t" and len(exported["checkpoints"]) >= 7
    assert json.loads(run_cli(capsys, "threads", "export", "loop-t", "--db",
                              history)[1]) == exported
    code, _, err = run_cli(capsys, "threads", "show", "nope", "--db", history)
    assert code == 1 and err == "threadloom: error: no thread 'nope' in namespace 'default'\n"


def test_keys_and_commands_never_print_a_database_password(capsys):
    from threadloom.cli._output import mask_url

    assert mask_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("sqlite:///./a.db") == "sqlite:///./a.db"


def test_the_dev_key_file_is_private(tmp_path):
    from threadloom.cli._runtime import _dev_key

    url = f"sqlite:///{tmp_path}/dev.db"
    store = open_store(url)
    try:
        key, origin = _dev_key(store, url)
        path = tmp_path / "dev.db.key"
        assert origin == f"saved in {path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert _dev_key(store, url) == (key, origin)  # the same key at the next start
        store.revoke_key(key_id_of(key))
        fresh, _ = _dev_key(store, url)  # a revoked key is replaced
        assert fresh != key and path.read_text().strip() == fresh
    finally:
        store.close()
