"""Worker liveness on Postgres (issue 12, reclaim within 5 s): a worker's process vouches for
itself with a session lock on its direct ``LISTEN`` connection; once the session is gone,
``expire_dead_claims`` ends its claims and frees its thread leases before their ttl, and the
old holder's commits are refused. Behind a transaction pooler the lock is not trusted: claims
lapse by their ttl only.

Processes are played by stores: closing a store (or killing its listening session on the
server) is what a SIGKILL does to the process's sessions. The end-to-end kill test is
``tests/worker/test_kill.py``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from threadloom.checkpoint.base import Commit, RunRecord
from threadloom.checkpoint.queue import QueuedRun, WorkerRecord
from threadloom.errors import LeaseLostError

try:
    from threadloom.checkpoint._postgres_listen import LIVENESS_CLASS
    from threadloom.checkpoint.postgres import PostgresStore
except ImportError:  # the postgres extra is not installed
    PostgresStore = None  # type: ignore[assignment,misc]

pytestmark = pytest.mark.slow

NS = "default"
HOUR = 3600.0
WAIT = 20.0
PROCESS_A = "host-a pid 101 start 1.2.3"  # how process A's lease owners start


@pytest.fixture
def make_pg(postgres_url: str, postgres_schema: str) -> Iterator[Any]:
    """``make_pg(**options)``: a set-up store on this test's schema, closed after the test."""
    if PostgresStore is None:
        pytest.skip("the postgres extra is not installed")
    made: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("schema", postgres_schema)
        options.setdefault("max_size", 2)
        store = PostgresStore(options.pop("dsn", postgres_url), **options)
        made.append(store)
        store.setup()
        return store

    yield make
    for store in made:
        store.close()


def put(store: Any, run_id: str, thread_id: str) -> None:
    store.enqueue(RunRecord(run_id, thread_id, "g", "pending"),
                  QueuedRun(NS, run_id, thread_id, "g", b"{}"))


def live(store: Any, worker_id: str, process: str = PROCESS_A) -> threading.Event:
    """Make ``store``'s process vouch for ``worker_id`` and record it in a heartbeat; the
    event is set when the store loses its liveness session."""
    lost = threading.Event()
    store.hold_liveness(worker_id, process, lost.set)
    assert store._bus.wait_liveness(WAIT) is not None
    store.renew_claims(worker_id, [], HOUR)  # the heartbeat names the lock
    return lost


def start_run(store: Any, worker_id: str, run_id: str, thread_id: str) -> tuple[Any, Any]:
    """Claim the run (for an hour) and take its thread's lease as process A's engine would."""
    put(store, run_id, thread_id)
    [claim] = store.claim_runs(worker_id, limit=1, ttl=HOUR)
    lease = store.acquire_lease(thread_id, f"{PROCESS_A} n0nce run {run_id}", HOUR)
    return claim, lease


def test_a_dead_workers_claim_is_reclaimable_before_it_lapses(make_pg: Any) -> None:
    a, b = make_pg(), make_pg()
    live(a, "wa")
    claim, lease = start_run(a, "wa", "r1", "t1")

    assert b.expire_dead_claims() == 0  # alive: nothing to take
    assert b.claim_runs("wb", limit=1, ttl=HOUR) == []
    assert "session" in next(w for w in b.list_workers() if w.worker_id == "wa").info

    a.close()  # the process dies: its sessions end, and the lock with them
    assert b.expire_dead_claims() == 1
    [taken] = b.claim_runs("wb", limit=1, ttl=HOUR)
    assert (taken.run_id, taken.attempts, taken.worker) == ("r1", 2, "wb")
    assert taken.claim_token > claim.claim_token
    thread = b.get_thread("t1")
    assert thread is not None and thread.lease is None  # released for the next holder
    new = b.acquire_lease("t1", "host-b pid 7 start - x run r1", HOUR)
    assert new.token > lease.token
    # found dead once: not looked at again
    assert "session" not in next(w for w in b.list_workers() if w.worker_id == "wa").info
    assert b.expire_dead_claims() == 0


def test_only_the_dead_processs_own_leases_are_freed(make_pg: Any) -> None:
    a, b = make_pg(), make_pg()
    live(a, "wa")
    put(a, "r1", "t1")
    a.claim_runs("wa", limit=1, ttl=HOUR)
    other = b.acquire_lease("t1", "host-c pid 9 start - x run r0", HOUR)  # not A's
    a.close()
    assert b.expire_dead_claims() == 1
    thread = b.get_thread("t1")
    assert thread is not None and thread.lease is not None
    assert thread.lease.token == other.token  # its holder was not A: it lapses by its ttl


def test_a_worker_that_lost_its_session_cannot_commit(make_pg: Any, postgres_url: str) -> None:
    """Split brain: A's process lives on, but its liveness session broke; once another
    worker has taken A's run, A's commits are refused and its claim is lost."""
    import psycopg

    a, b = make_pg(), make_pg()
    lost = live(a, "wa")
    claim, lease = start_run(a, "wa", "r1", "t1")
    key = a._bus.live_key
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype ="
                      " 'advisory' AND classid = %s::oid AND objid = %s::oid AND objsubid = 2",
                      (LIVENESS_CLASS, key))
    assert lost.wait(WAIT)  # A is told: its worker hands its runs back

    assert b.expire_dead_claims() == 1
    [taken] = b.claim_runs("wb", limit=1, ttl=HOUR)
    assert taken.run_id == "r1"
    b.acquire_lease("t1", "host-b pid 7 start - x run r1", HOUR)
    with pytest.raises(LeaseLostError):
        a.commit([Commit("t1", lease_token=lease.token,
                         runs=[RunRecord("r1", "t1", "g", "running")])])
    [state] = a.renew_claims("wa", [claim], HOUR)
    assert state.lost
    assert not a.finish_claim(claim)

    # A's session is back, with a new lock its next heartbeat names: alive again
    assert a._bus.wait_liveness(WAIT) not in (None, key)
    a.worker_heartbeat(WorkerRecord("wa", 1.0, 1.0))
    assert "session" in next(w for w in b.list_workers() if w.worker_id == "wa").info
    assert b.expire_dead_claims() == 0


def test_behind_a_transaction_pooler_claims_lapse_by_their_ttl_only(
    make_pg: Any, pgbouncer_url: str, postgres_url: str
) -> None:
    pooled = make_pg(dsn=pgbouncer_url, prepare_threshold=None)  # LISTEN through the pooler
    pooled.hold_liveness("wp", PROCESS_A, lambda: None)
    assert pooled._bus.wait_liveness(WAIT) is None  # not trusted: no lock
    pooled.renew_claims("wp", [], HOUR)
    assert "session" not in next(w for w in pooled.list_workers() if w.worker_id == "wp").info
    start_run(pooled, "wp", "r1", "t1")

    b = make_pg()
    pooled.close()
    assert b.expire_dead_claims() == 0
    assert b.claim_runs("wb", limit=1, ttl=HOUR) == []  # until the claim's ttl

    # a pooled store whose LISTEN goes straight to the server does vouch
    direct = make_pg(dsn=pgbouncer_url, prepare_threshold=None, listen_url=postgres_url)
    live(direct, "wd")
