"""The Postgres store when connections are lost: asynchronous commits, answers lost after a
commit, dead pooled connections, a forked child, and a server restart mid-run.

Every test gets a fresh schema, dropped afterwards (see ``conftest.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest

try:
    import psycopg

    from threadloom.checkpoint.postgres import PostgresStore
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip(f"the postgres extra is not installed: {exc}", allow_module_level=True)

from threadloom.checkpoint.base import Commit, Store
from threadloom.errors import CheckpointConflictError, StoreUnavailableError, ThreadloomError
from threadloom.testing.conformance import step

from ._postgres_support import MakeStore, _query, _with_query
from .conftest import unavailable

# -- lost connections -------------------------------------------------------------------------


@pytest.mark.parametrize("flush", [True, False])
def test_an_unflushed_commit_commits_asynchronously(make_store: MakeStore, flush: bool) -> None:
    """``Commit.flush=False``: the transaction commits with ``synchronous_commit = off``
    (checked inside it, where the setting is still in force); a flushed one does not."""
    store = make_store()
    store.setup()
    relaxed: list[bool] = []
    build = store._sql.commit

    def spy(c: Commit, now: float, relax: bool = False) -> Any:
        relaxed.append(relax)
        return build(c, now, relax)

    store._sql.commit = spy  # type: ignore[method-assign]
    first, second = step("t1", 0), step("t1", 1)
    first.flush = second.flush = flush
    store.commit([first, second])
    assert relaxed == [not flush, False]  # one statement of the transaction sets it
    conn = store._connections.get()
    try:
        default = conn.execute("SHOW synchronous_commit").fetchone()
        with conn.transaction():
            psycopg.RawCursor(conn).execute(*build(step("t1", 2), time.time(), not flush))
            inside = conn.execute("SHOW synchronous_commit").fetchone()
        after = conn.execute("SHOW synchronous_commit").fetchone()
    finally:
        store._connections.put(conn)
    assert default is not None and inside is not None and after == default
    assert inside[0] == ("off" if not flush else default[0])
    assert [c.seq for c in store.list_checkpoints("t1")] == [2, 1, 0]


@pytest.mark.parametrize("flush", [True, False])
def test_only_a_flushed_commit_polls_for_its_answer(make_store: MakeStore, flush: bool) -> None:
    """A flushed commit's caller waits for it (``sync``), so its answer is polled for; an
    unflushed one is a background writer's, which must leave the CPU to the run."""
    store = make_store()
    store.setup()
    spins: list[bool] = []
    execute = store._runner.execute

    def spy(conn: Any, sql: bytes, params: Any, *, spin: bool = False) -> None:
        spins.append(spin)
        execute(conn, sql, params, spin=spin)

    store._runner.execute = spy  # type: ignore[method-assign]
    c = step("t1", 0)
    c.flush = flush
    store.commit([c])
    assert spins == [flush]
    assert store.get_checkpoint("t1") is not None


def test_dead_pooled_connections_are_replaced(make_store: MakeStore, postgres_url: str) -> None:
    app = f"tl-kill-{uuid.uuid4().hex[:8]}"
    store = make_store(_with_query(postgres_url, f"application_name={app}"), min_size=3)
    store.setup()
    store.commit([step("t1", 0)])
    store._connections.pool().wait(timeout=10)
    killed = _query(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (app,),
    )
    assert len(killed) >= 3
    latest = store.get_checkpoint("t1")  # a dead connection, a retry, a new connection
    assert latest is not None and latest.seq == 0
    store.commit([step("t1", 1, expected=0)])
    assert [c.seq for c in store.list_checkpoints("t1")] == [1, 0]


def test_a_commit_whose_answer_was_lost_is_found_applied(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    store.setup()
    sent: list[int] = []
    original = PostgresStore._execute_commit

    def commit_then_lose_the_answer(
        self: PostgresStore, conn: psycopg.Connection[Any], statements: Any, flushed: bool
    ) -> None:
        sent.append(1)
        original(self, conn, statements, flushed)  # the server commits and answers...
        if len(sent) in (1, 3):
            conn.close()  # ...and the answer is lost with the connection
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresStore, "_execute_commit", commit_then_lose_the_answer)
    lease = store.acquire_lease("t1", "w", 60)
    store.commit([step("t1", 0, token=lease.token, expected=None)])  # replayed: found applied
    assert len(sent) == 2
    assert [c.seq for c in store.list_checkpoints("t1")] == [0]
    store.commit([step("t1", 1, token=lease.token, expected=0), step("t1", 2, expected=1)])
    assert len(sent) == 4  # a batch of two, the same way
    assert [c.seq for c in store.list_checkpoints("t1")] == [2, 1, 0]
    assert len(store.list_executions(thread_id="t1")) == 3


def test_a_commit_lost_before_it_was_applied_is_retried(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    store.setup()
    sent: list[int] = []
    original = PostgresStore._execute_commit

    def lose_the_connection_first(
        self: PostgresStore, conn: psycopg.Connection[Any], statements: Any, flushed: bool
    ) -> None:
        sent.append(1)
        if len(sent) == 1:
            conn.close()  # nothing reaches the server
        original(self, conn, statements, flushed)

    monkeypatch.setattr(PostgresStore, "_execute_commit", lose_the_connection_first)
    lease = store.acquire_lease("t1", "w", 60)
    store.commit([step("t1", 0, token=lease.token, expected=None)])
    assert len(sent) == 2
    assert [c.seq for c in store.list_checkpoints("t1")] == [0]
    assert len(store.list_executions(thread_id="t1")) == 1


def test_a_replay_that_meets_another_writer_is_a_conflict(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    store.setup()
    other = make_store()
    sent: list[int] = []
    original = PostgresStore._execute_commit

    def lose_then_let_another_writer_in(
        self: PostgresStore, conn: psycopg.Connection[Any], statements: Any, flushed: bool
    ) -> None:
        sent.append(1)
        if len(sent) == 1:
            conn.close()  # not applied; meanwhile another writer takes checkpoint 0
            other.commit([step("t1", 0, run_id="run-other")])
        original(self, conn, statements, flushed)

    monkeypatch.setattr(PostgresStore, "_execute_commit", lose_then_let_another_writer_in)
    with pytest.raises(CheckpointConflictError):
        store.commit([step("t1", 0, expected=None)])
    latest = store.get_checkpoint("t1")
    assert latest is not None and latest.run_id == "run-other"


def _commit_in_child(store: PostgresStore) -> None:
    # the parent's pool, whose sessions are the parent's
    inherited = store._connections._pool is not None
    store.commit([step("child", 0, run_id="run-child")])
    store.close()
    sys.exit(3 if inherited else 0)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_opens_its_own_connections(make_store: MakeStore) -> None:
    import multiprocessing

    store = make_store(min_size=2)
    store.setup()
    store.commit([step("parent", 0)])
    child = multiprocessing.get_context("fork").Process(target=_commit_in_child, args=(store,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    store.commit([step("parent", 1, expected=0)])  # the parent's sessions are intact
    assert store.get_checkpoint("child") is not None
    latest = store.get_checkpoint("parent")
    assert latest is not None and latest.seq == 1


def _restart_command() -> list[str]:
    """The command that restarts the test cluster; skips (fails in CI) when it cannot."""
    ctl = shutil.which("pg_ctlcluster")
    if ctl is None or not os.path.isdir("/etc/postgresql"):
        unavailable("pg_ctlcluster is not available: cannot restart Postgres")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        unavailable("restarting Postgres needs root")
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        unavailable("no Postgres cluster under /etc/postgresql")
    return [ctl, "--skip-systemctl-redirect", versions[-1], "main", "restart"]


def _stored_steps(store: Store, thread_id: str, upto: int) -> dict[int, tuple[bool, ...]]:
    """For each step ``seq <= upto`` (as :func:`step` writes it): which of its parts are
    stored (checkpoint, blob, write, execution)."""
    checkpoints = {c.seq for c in store.list_checkpoints(thread_id)}
    blobs = {b.version for b in store.get_blobs(thread_id, "", {"value": (0, upto)})}
    executions = {e.id for e in store.list_executions(thread_id=thread_id, limit=None)}
    return {
        seq: (
            seq in checkpoints,
            seq in blobs,
            bool(store.get_writes(thread_id, "", seq)),
            f"{thread_id}:{seq}" in executions,
        )
        for seq in range(upto + 1)
    }


@pytest.mark.postgres
def test_a_server_restart_is_survived(make_store: MakeStore, postgres_url: str) -> None:
    command = _restart_command()
    store = make_store(max_retries=12)
    store.setup()
    lease = store.acquire_lease("r", "writer", 600)
    outcomes: dict[int, str] = {}
    done = threading.Event()
    stop = threading.Event()

    def writer() -> None:
        seq: int | None = 0
        while not stop.is_set():
            try:
                if seq is None:  # after an unavailable store: go on from what is stored
                    latest = store.get_checkpoint("r")
                    seq = latest.seq + 1 if latest is not None else 0
                head = seq - 1 if seq else None
                store.commit([step("r", seq, token=lease.token, expected=head)])
                outcomes[seq] = "ok"
                seq += 1
            except StoreUnavailableError:
                if seq is not None:
                    outcomes[seq] = "unavailable"  # applied or not: checked below
                seq = None
            except ThreadloomError as exc:
                outcomes[-1] = f"error: {exc!r}"
                break
            time.sleep(0.002)
        done.set()

    def started() -> float:
        rows = _query(postgres_url, "SELECT extract(epoch FROM pg_postmaster_start_time())")
        return float(rows[0][0])

    before = started()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while len(outcomes) < 5 and not done.is_set():
        time.sleep(0.01)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        stop.set()
        thread.join(60)
        unavailable(f"cannot restart Postgres: {result.stderr.strip() or result.stdout}")
    try:
        if started() == before:
            unavailable("the restarted cluster is not the one the tests use")
        settled = len(outcomes)
        deadline = time.monotonic() + 60
        while len(outcomes) < settled + 5 and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert all(o in ("ok", "unavailable") for o in outcomes.values()), outcomes
    assert sum(o == "ok" for o in outcomes.values()) >= 10  # writes went on after the restart
    parts = _stored_steps(store, "r", max(outcomes))
    for seq, stored in parts.items():
        assert all(stored) or not any(stored), (seq, stored)  # never half a step
        if outcomes.get(seq) == "ok":
            assert all(stored), (seq, stored)
    applied = [seq for seq, stored in parts.items() if all(stored)]
    assert applied == list(range(len(applied)))  # no gap: no commit was lost or doubled
    renewed = store.renew_lease(lease, 600)  # the lease survived too
    assert renewed.token == lease.token
