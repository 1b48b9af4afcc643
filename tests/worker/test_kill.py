"""A worker SIGKILLed mid-run (issue 12): another worker process, on another host id (so
the reclaim does not go through the same-host shortcut), continues the run, and under ``sync``
durability no completed step runs again. On SQLite the claim and the thread lease lapse (a
2 s run lease); on Postgres the dead process's session lock vanishes with it, so the other
worker takes the run before the dead one's claim would lapse (a run lease of ten minutes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from threadloom.checkpoint import open_store
from threadloom.checkpoint.base import RunRecord
from threadloom.checkpoint.queue import QueuedRun, RuntimeStore

CHILD = Path(__file__).with_name("kill_child.py")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kill.db'}"
        return
    from tests.engine.conftest import _postgres_url  # the engine tests' Postgres probe

    url, reason = _postgres_url()
    if url is None:
        pytest.skip(reason)
    schema = f"tl_kill_{uuid.uuid4().hex[:10]}"
    yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def start_worker(db_url: str, log: Path, host: str, run_lease: float) -> subprocess.Popen[str]:
    env = {**os.environ, "THREADLOOM_HOST_ID": host,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    child = subprocess.Popen([sys.executable, str(CHILD), db_url, str(log), str(run_lease)],
                             env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def lines(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    return [(int(a), int(b)) for a, b in (line.split() for line in log.read_text().splitlines())]


def until(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("the condition did not become true in time")


def test_a_killed_workers_run_completes_on_another_worker_without_rerunning_steps(
        db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    assert isinstance(store, RuntimeStore)
    log = tmp_path / "executions.log"
    postgres = db_url.startswith("postgresql")
    run_lease = 600.0 if postgres else 2.0
    first = start_worker(db_url, log, "host-a", run_lease)
    second = None
    try:
        run_id, steps = "r-kill", 8
        payload = {"input": {"done": [], "n": steps, "delay": 0.3},
                   "stream_mode": ["values"], "durability": "sync"}
        store.enqueue(RunRecord(run_id, "t-kill", "steps", "pending"),
                      QueuedRun("default", run_id, "t-kill", "steps",
                                json.dumps(payload).encode()))
        until(lambda: len(lines(log)) >= 3)
        second = start_worker(db_url, log, "host-b", run_lease)
        held = store.get_queued("default", run_id)
        assert held is not None and held.claim_expires is not None
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        started_before_kill = len(lines(log))

        until(lambda: (row := store.get_queued("default", run_id)) is not None
              and row.status == "done", timeout=90)

        record = store.get_run(run_id)
        assert record is not None and record.status == "succeeded"
        executions = lines(log)
        counts = Counter(index for index, _ in executions)
        assert sorted(counts) == list(range(steps))
        # only the step in flight when the worker died may have run twice
        in_flight = started_before_kill - 1
        assert all(counts[i] == 1 for i in range(steps) if i != in_flight), counts
        assert counts[in_flight] <= 2
        assert {pid for _, pid in executions} == {first.pid, second.pid}
        row = store.get_queued("default", run_id)
        assert row is not None and row.attempts == 2
        if postgres:  # taken over (claim and thread lease) before the claim could lapse
            assert row.finished_at is not None and row.finished_at < held.claim_expires
    finally:
        for child in (first, second):
            if child is None:
                continue
            if child.poll() is None:
                child.terminate()
                child.wait(30)
            if child.stdout is not None:
                child.stdout.close()
        store.close()
