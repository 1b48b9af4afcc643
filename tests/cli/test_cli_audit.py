"""``threadloom audit`` on a SQLite store, in-process: the log of what the API and the
commands changed, as a table or JSON, a page at a time; never a key."""

from __future__ import annotations

import json

import pytest

from threadloom.checkpoint import open_store
from threadloom.checkpoint.queue import AuditEvent, RuntimeStore
from threadloom.cli import main
from threadloom.server.auth import key_id_of


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    assert main(["migrate", "--db", url]) == 0
    return url


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_audit_lists_what_the_commands_changed(db, capsys):
    key = run_cli(capsys, "keys", "create", "--namespace", "acme", "--role", "operator",
                  "--db", db)[1].split()[-1]
    assert run_cli(capsys, "keys", "revoke", key_id_of(key), "--db", db)[0] == 0
    code, out, _ = run_cli(capsys, "audit", "--namespace", "acme", "--db", db)
    assert code == 0
    header, revoked, created = out.splitlines()
    assert header.split() == ["TIME", "(UTC)", "ACTION", "TARGET", "OUTCOME", "KEY", "ID",
                              "ROLE", "RUN", "ID", "THREAD", "ID"]
    assert revoked.split()[2:6] == ["key.revoke", key_id_of(key), "ok", "(cli)"]
    assert created.split()[2:6] == ["key.create", key_id_of(key), "ok", "(cli)"]
    assert key not in out
    assert run_cli(capsys, "audit", "--db", db)[1] == (
        "(no audit events in namespace 'default')\n")


def test_audit_pages_and_json(db, capsys):
    store = open_store(db)
    assert isinstance(store, RuntimeStore)
    try:
        for i in range(5):
            store.append_audit(AuditEvent("default", "thread.create", f"t{i}", key_id="k1",
                                          role="operator", thread_id=f"t{i}"))
    finally:
        store.close()
    code, out, _ = run_cli(capsys, "audit", "--limit", "2", "--json", "--db", db)
    page = json.loads(out)
    assert code == 0 and page["namespace"] == "default" and page["count"] == 2
    assert [e["target"] for e in page["events"]] == ["t4", "t3"]
    assert page["events"][0]["at"].endswith("Z") and page["events"][0]["key_id"] == "k1"
    targets = [e["target"] for e in page["events"]]
    while page["next_cursor"]:
        page = json.loads(run_cli(capsys, "audit", "--limit", "2", "--json", "--cursor",
                                  page["next_cursor"], "--db", db)[1])
        targets += [e["target"] for e in page["events"]]
    assert targets == ["t4", "t3", "t2", "t1", "t0"]
    code, out, _ = run_cli(capsys, "audit", "--limit", "4", "--db", db)
    assert code == 0 and out.splitlines()[-1].startswith(
        "more: threadloom audit --namespace default --cursor a")
    code, out, err = run_cli(capsys, "audit", "--cursor", "nope", "--db", db)
    assert (code, out) == (1, "")
    assert err.startswith("threadloom: error: --cursor 'nope' is not a cursor")


def test_audit_has_help_with_examples_and_is_listed(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["audit", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith("usage: threadloom audit") and "example" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "    audit " in capsys.readouterr().out
