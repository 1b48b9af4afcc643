"""Chaos: Postgres restarts several times while many runs execute (issue 4).

Several processes, each with several threads, run graphs in ``sync`` durability on Postgres
while the server is restarted three times. Afterwards every run must have completed (the
workers resume a run by invoking its run id again), no completed step may be lost or applied
twice (each run appends its step numbers to a reducer list, so a lost or doubled step shows),
and no thread's lineage may fork (its checkpoints form one chain).

Needs the right to restart the cluster (root, as in CI); skips otherwise, unless
``THREADLOOM_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

PROCESSES = 3
THREADS = 4
RUNS = 4
STEPS = 25
RESTARTS = 3
CHILD = Path(__file__).with_name("chaos_child.py")
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        reason = "restarting Postgres needs pg_ctlcluster and root"
        if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"THREADLOOM_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _restart(cluster: list[str]) -> None:
    subprocess.run([*cluster, "restart", "-m", "fast"], check=True, capture_output=True,
                   timeout=120)


def _wait_ready(deadline: float) -> None:
    while time.monotonic() < deadline:
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("Postgres did not come back")


def _postgres_url() -> str:
    url = os.environ.get("THREADLOOM_TEST_POSTGRES_URL") or DEFAULT_URL
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"THREADLOOM_REQUIRE_SERVICES=1 but Postgres is unreachable: {exc}")
        pytest.skip(f"no Postgres at {url}: {exc}")
    return url


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_runs_survive_postgres_restarts(tmp_path: Path) -> None:
    postgres_url = _postgres_url()
    cluster = _cluster()
    schema = f"tl_chaos_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}?schema={schema}"
    from threadloom.checkpoint import open_store

    open_store(url).close()  # migrate once, before the workers start
    reports = [tmp_path / f"report-{i}.json" for i in range(PROCESSES)]
    children = [
        subprocess.Popen([sys.executable, str(CHILD), url, str(i), str(THREADS), str(RUNS),
                          str(STEPS), str(reports[i])])
        for i in range(PROCESSES)
    ]
    try:
        restarted_at = []
        for _ in range(RESTARTS):
            time.sleep(1.2)
            _restart(cluster)
            restarted_at.append(time.time())
            _wait_ready(time.monotonic() + 60)
        for child in children:
            assert child.wait(timeout=600) == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        _wait_ready(time.monotonic() + 60)

    results: dict[str, dict] = {}
    for report in reports:
        results.update(json.loads(report.read_text()))
    errors = {k: v for k, v in results.items() if "error" in v}
    assert errors == {}
    assert len(results) == PROCESSES * THREADS * RUNS

    store = open_store(url)
    try:
        for p in range(PROCESSES):
            for t in range(THREADS):
                thread_id = f"p{p}-t{t}"
                _check_thread(store, thread_id)
        # the restarts really hit runs in flight (whether the store's own retries or the
        # worker's re-invocation carried them through)
        runs = store.list_runs(limit=1000)
        hit = [r.run_id for r in runs if r.ended_at is not None
               and any(r.created_at < when < r.ended_at for when in restarted_at)]
        assert hit, "no restart landed while a run was in flight"
    finally:
        store.close()
        _drop_schema(postgres_url, schema)


def _check_thread(store, thread_id: str) -> None:
    from threadloom.checkpoint.serde import JsonPlusSerializer

    serde = JsonPlusSerializer()
    runs = store.list_runs(thread_id=thread_id, limit=100)
    assert sorted(r.run_id for r in runs) == [f"{thread_id}-r{r}" for r in range(RUNS)]
    assert {r.status for r in runs} == {"succeeded"}, [(r.run_id, r.status, r.error)
                                                       for r in runs]
    for run in runs:
        # no step lost, none applied twice: each run appended 0..STEPS-1 exactly once
        assert serde.loads(run.output)["trail"][-STEPS:] == list(range(STEPS))
        succeeded = [e for e in store.list_executions(run_id=run.run_id)
                     if e.status == "SUCCEEDED"]
        assert len(succeeded) == STEPS
        assert len({e.id for e in succeeded}) == STEPS
    final = max(runs, key=lambda r: r.created_at)
    assert serde.loads(final.output)["trail"] == list(range(STEPS)) * RUNS
    # one lineage: every checkpoint follows the one before it
    chain = list(reversed(store.list_checkpoints(thread_id, "")))
    assert [c.parent_seq for c in chain[1:]] == [c.seq for c in chain[:-1]]
    assert len(chain) == RUNS * (STEPS + 1)
