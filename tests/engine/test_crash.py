"""Crash tests: a real worker process is killed with SIGKILL mid-run, a fresh process resumes
the run, and the tests check exactly which nodes and ``@task`` calls ran again (design §4).

The worker is ``crash_child.py`` (see its docstring): a graph ``n1 -> ... -> n5`` on a SQLite
file whose node ``n3`` calls the task ``fetch`` twice in parallel (``"a"``, ``"b"``), or the
``fanout`` variant where ``n3`` and ``n3x`` run in one superstep. Every node and task call
appends a line to a per-process log, fsynced, so a line written before the SIGKILL survives it.
The worker dies inside a node, inside a task, or at one of the engine's named fault points
(``THREADLOOM_FAULTS``). Its lease would last two minutes, but the recovering process starts
at once and never waits for it (design §4, recovery right after a crash): the worker was on
this host and its process is gone, so the lease is taken over at once. ``invoke`` does not
wait for a busy lease at all, and ``resume`` waits at most the recovering graph's
``lease_ttl`` (2 s): without the takeover every recovery here fails.

What each mode promises after a crash (design §4), and what is asserted:

* ``sync``: no committed step runs again; only the step in flight does; a task whose result
  was recorded is not run again. Asserted exactly.
* ``async``: at most the last step runs again; recorded task results are not run again.
  Asserted: the recovering process runs exactly what the store did not hold at the crash
  (every mode gets this check). The "at most the last step" bound is asserted where it is
  deterministic; it is known not to hold (see ``test_async_writer_falls_behind_the_run``).
* ``exit``: nothing of the run is stored until it ends, so the run restarts from the previous
  run's end: everything of it runs again.

In every mode the final state is right, the run record ends ``succeeded``, and each node and
task call of the run has exactly one ``SUCCEEDED`` execution record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.crash

CHILD = Path(__file__).with_name("crash_child.py")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"  # as conftest.py
ROOT = Path(__file__).resolve().parents[2]
CRASHED_LEASE_TTL = 120.0  # the killed worker's lease: never lapses during a test
RECOVERY_LEASE_TTL = 2.0  # the recovering process's: bounds how long resume() waits
RUN_ID = "run-crashed"
PREVIOUS_RUN_ID = "run-previous"
THREAD_ID = "thread-crash"
STEPS = {
    "linear": (("n1",), ("n2",), ("n3",), ("n4",), ("n5",)),
    "fanout": (("n1",), ("n2",), ("n3", "n3x"), ("n4",), ("n5",)),
}
# Hits of before_step_commit / after_step_commit: 1 is the input checkpoint, 2 is n1's step,
# so 4 is n3's step (n3 and n3x in the fanout graph).
N3_STEP = 4


@dataclass
class Outcome:
    """What the killed process and the recovering one ran, and what the store held."""

    graph: str
    previous: bool
    killed_nodes: list[str]
    killed_tasks: list[str]
    nodes: list[str]
    tasks: list[str]
    before: dict[str, Any]
    after: dict[str, Any]
    result: Any

    @property
    def all_nodes(self) -> list[str]:
        return [n for step in STEPS[self.graph] for n in step]

    @property
    def rerun_nodes(self) -> set[str]:
        """Nodes that ran in both processes."""
        return set(self.killed_nodes) & set(self.nodes)

    @property
    def rerun_tasks(self) -> set[str]:
        """Task calls (by argument) that ran in both processes."""
        return set(self.killed_tasks) & set(self.tasks)

    def in_flight_and_previous(self) -> set[str]:
        """The nodes of the last step the killed process started, and of the step before."""
        steps = STEPS[self.graph]
        last = max(i for i, step in enumerate(steps) if set(step) & set(self.killed_nodes))
        return set(steps[last]) | (set(steps[last - 1]) if last else set())


def _ran(log: Path) -> tuple[list[str], list[str]]:
    """The nodes and the task arguments a process's log shows, in order."""
    nodes: list[str] = []
    tasks: list[str] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, name, *detail = line.split(":")
        if kind == "node":
            nodes.append(name)
        elif kind == "task":
            assert name == "fetch", line
            tasks.append(detail[0])
    return nodes, tasks


Database = tuple[str, str] | None
"""Where the worker keeps its store: ``None`` for a SQLite file in ``tmp_path``, or a
Postgres URL and schema."""


def _command(tmp_path: Path, log: str, durability: str, graph: str, how: str, run_id: str,
             env: dict[str, str], *, report: Path | None = None, slow: float = 0.0,
             lease_ttl: float = RECOVERY_LEASE_TTL, db: Database = None
             ) -> tuple[list[str], dict[str, str]]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("THREADLOOM_FAULTS", "CRASH_KILL", "CRASH_MARKER", "CRASH_HANG",
                            "THREADLOOM_HOST_ID")}
    environ.update(env)
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    cmd = [
        sys.executable, str(CHILD), str(tmp_path / "threadloom.sqlite") if db is None else db[0],
        str(tmp_path / log), "--graph", graph, "--durability", durability, "--run-id", run_id,
        "--thread-id", THREAD_ID, "--how", how, "--lease-ttl", str(lease_ttl),
        "--slow-commits", str(slow),
    ]
    if db is not None:
        cmd += ["--schema", db[1]]
    if report is not None:
        cmd += ["--report", str(report)]
    return cmd, environ


def _child(tmp_path: Path, log: str, durability: str, graph: str, how: str, run_id: str,
           env: dict[str, str], *, report: Path | None = None, slow: float = 0.0,
           lease_ttl: float = RECOVERY_LEASE_TTL, db: Database = None
           ) -> subprocess.CompletedProcess[str]:
    cmd, environ = _command(tmp_path, log, durability, graph, how, run_id, env, report=report,
                            slow=slow, lease_ttl=lease_ttl, db=db)
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=tmp_path,
                          timeout=60)


def crash_and_recover(tmp_path: Path, durability: str, *, kill: str | None = None,
                      faults: str | None = None, how: str = "resume", graph: str = "linear",
                      previous: bool = False, slow: float = 0.0, db: Database = None
                      ) -> Outcome:
    """Run the graph in a worker that is SIGKILLed at ``kill`` (see ``crash_child.py``) or at
    the fault point ``faults``, then continue the run (``how``) at once in a fresh process.

    With ``previous``, one run of the graph completes on the thread first. ``slow`` makes the
    killed worker's background-writer commits that many seconds slower. ``db``: the store
    (default: a SQLite file).
    """
    if previous:
        done = _child(tmp_path, "previous.log", durability, graph, "start", PREVIOUS_RUN_ID, {},
                      db=db)
        assert done.returncode == 0, done.stderr
    env = {"CRASH_MARKER": str(tmp_path / "killed.marker")}
    if kill is not None:
        env["CRASH_KILL"] = kill
    crash_env = dict(env)
    if faults is not None:
        crash_env["THREADLOOM_FAULTS"] = faults
    first = _child(tmp_path, "killed.log", durability, graph, "start", RUN_ID, crash_env,
                   slow=slow, lease_ttl=CRASHED_LEASE_TTL, db=db)
    assert first.returncode == -signal.SIGKILL, (
        f"the worker was not killed (exit code {first.returncode}):\n{first.stderr}"
    )
    # The recovering process keeps CRASH_KILL: the marker file is what stops it killing itself.
    report = tmp_path / "report.json"
    second = _child(tmp_path, "recovered.log", durability, graph, how, RUN_ID, env,
                    report=report, db=db)
    assert second.returncode == 0, second.stderr
    return _outcome(tmp_path, graph, previous, report)


def _outcome(tmp_path: Path, graph: str, previous: bool, report: Path) -> Outcome:
    """What the killed and the recovering process ran and reported, checked."""
    data = json.loads(report.read_text())
    killed_nodes, killed_tasks = _ran(tmp_path / "killed.log")
    nodes, tasks = _ran(tmp_path / "recovered.log")
    out = Outcome(graph, previous, killed_nodes, killed_tasks, nodes, tasks, data["before"],
                  data["after"], data["result"])
    check_recovered(out)
    return out


def check_recovered(out: Outcome) -> None:
    """What holds in every mode: right final state, the run succeeded with consistent
    execution records, and the recovering process ran exactly what the store lacked."""
    nodes = out.all_nodes
    runs = 2 if out.previous else 1
    expected = {"trail": nodes * runs, "fetched": ["got-a", "got-b"] * runs}
    assert out.after["values"] == expected
    assert out.result == expected

    run = out.after["run"]
    assert run["status"] == "succeeded", run
    if out.before["run"] is not None:
        assert run["run_id"] == RUN_ID, "the recorded run was not continued"
    succeeded = [e for e in out.after["executions"] if e["status"] == "SUCCEEDED"]
    duplicates = [i for i, n in Counter(e["id"] for e in succeeded).items() if n > 1]
    assert duplicates == []
    assert Counter(e["node"] for e in succeeded) == Counter({**dict.fromkeys(nodes, 1),
                                                             "fetch": 2})
    assert sorted(e["inputs"] for e in succeeded if e["node"] == "fetch") == [["a"], ["b"]]
    assert run["executions"] == len(nodes)

    # No node or task ran twice in one process.
    assert len(out.killed_nodes) == len(set(out.killed_nodes))
    assert len(out.nodes) == len(set(out.nodes))
    assert len(out.tasks) == len(set(out.tasks))
    # The recovering process ran exactly what the store did not hold when it started: the
    # nodes of steps not committed (less those whose result was recorded), and the task calls
    # of a replayed n3 whose results were not recorded.
    committed = out.before["values"].get("trail", [])[len(nodes) * (runs - 1):]
    recorded = set(out.before["task_results"])
    assert sorted(out.nodes) == sorted(n for n in nodes if n not in committed
                                       and n not in recorded)
    recorded_tasks = {e["inputs"][0] for e in out.before["executions"]
                      if e["node"] == "fetch" and e["status"] == "SUCCEEDED"}
    expected_tasks = sorted({"a", "b"} - recorded_tasks) if "n3" in out.nodes else []
    assert sorted(out.tasks) == expected_tasks


def _how(durability: str, how: str) -> str:
    """``async`` may lose even the run record in a crash (see ``ASYNC_LAG``), and then
    ``resume(run_id)`` / ``invoke(None, thread)`` have nothing to continue; re-invoking with
    the same input and run id works either way, so ``async`` tests use that."""
    return "reinvoke-run-id" if durability == "async" else how


def _assert_async_bound(out: Outcome) -> None:
    """Design §4, ``async``: at most the last step re-runs."""
    assert out.rerun_nodes <= out.in_flight_and_previous()


SYNC_ASYNC = pytest.mark.parametrize("durability", ["sync", "async"])


# -- linear graph ---------------------------------------------------------------------------


@SYNC_ASYNC
def test_kill_inside_a_node(tmp_path: Path, durability: str) -> None:
    out = crash_and_recover(tmp_path, durability, kill="node:n3", how=_how(durability, "resume"))
    assert out.killed_nodes == ["n1", "n2", "n3"]
    assert "n3" in out.rerun_nodes
    assert sorted(out.tasks) == ["a", "b"]  # n3 died before calling them
    if durability == "sync":
        assert out.nodes == ["n3", "n4", "n5"]


@SYNC_ASYNC
def test_kill_inside_a_node_after_its_tasks_returned(tmp_path: Path, durability: str) -> None:
    out = crash_and_recover(tmp_path, durability, kill="node:n3:after",
                            how=_how(durability, "continue"))
    assert sorted(out.killed_tasks) == ["a", "b"]
    assert "n3" in out.rerun_nodes
    if durability == "sync":
        assert out.nodes == ["n3", "n4", "n5"]
        assert out.tasks == []  # recorded when they returned


@SYNC_ASYNC
def test_kill_inside_a_task_after_the_other_was_recorded(tmp_path: Path,
                                                         durability: str) -> None:
    # fetch("b") dies once fetch("a") is finished and its result is in the store, so the
    # writes queued before it (n1's and n2's steps) are there too, also under async.
    # Seed 004 style: the same input invoked again resumes the dead run.
    out = crash_and_recover(tmp_path, durability, kill="task:fetch:b", how="reinvoke")
    assert sorted(out.killed_tasks) == ["a", "b"]
    assert out.nodes == ["n3", "n4", "n5"]
    assert out.rerun_tasks == {"b"}
    assert out.tasks == ["b"]
    _assert_async_bound(out)


@SYNC_ASYNC
def test_kill_between_a_steps_writes_and_its_commit(tmp_path: Path, durability: str) -> None:
    out = crash_and_recover(tmp_path, durability, faults=f"before_step_commit@{N3_STEP}",
                            how=_how(durability, "resume"))
    assert out.killed_nodes == ["n1", "n2", "n3"]
    assert "n3" in out.rerun_nodes
    if durability == "sync":
        assert out.nodes == ["n3", "n4", "n5"]
        assert out.tasks == []  # n3 replays with its recorded task results


@SYNC_ASYNC
def test_kill_right_after_a_steps_commit(tmp_path: Path, durability: str) -> None:
    # A previous run completed on the thread; the same input invoked again (seed 004) resumes
    # the dead run, not the finished one.
    out = crash_and_recover(tmp_path, durability, faults=f"after_step_commit@{N3_STEP}",
                            how=_how(durability, "reinvoke"), previous=True)
    assert out.killed_nodes == ["n1", "n2", "n3"]
    if durability == "sync":
        assert out.nodes == ["n4", "n5"]
        assert out.rerun_nodes == set()
        assert out.tasks == []


@SYNC_ASYNC
def test_kill_right_after_a_task_result_is_recorded(tmp_path: Path, durability: str) -> None:
    out = crash_and_recover(tmp_path, durability, faults="after_task_record@1",
                            how=_how(durability, "resume"))
    # The worker died right after the first call to finish was recorded (the other may not
    # have started yet): that call is not run again.
    assert out.killed_tasks
    assert len(out.rerun_tasks) < len(out.killed_tasks)
    assert "n3" in out.rerun_nodes
    if durability == "sync":
        assert out.nodes == ["n3", "n4", "n5"]


def test_async_kill_before_a_background_commit(tmp_path: Path) -> None:
    # The background writer dies before its second transaction (the first holds at least the
    # run's input checkpoint); the main thread is wherever it got to. check_recovered asserts
    # the recovery ran exactly what was not written.
    crash_and_recover(tmp_path, "async", faults="before_writer_commit@2",
                      how="reinvoke-run-id")


def test_async_writer_falls_behind_the_run(tmp_path: Path) -> None:
    # Each background commit is 0.3 s slower (a slow database); the worker dies in the last
    # step, n5. Design §4: at most n5 (and n4, whose checkpoint may still be queued) re-run.
    out = crash_and_recover(tmp_path, "async", kill="node:n5", how="reinvoke-run-id",
                            slow=0.3)
    assert out.killed_nodes == ["n1", "n2", "n3", "n4", "n5"]
    _assert_async_bound(out)


def test_async_resume_by_run_id_after_three_steps(tmp_path: Path) -> None:
    # The same slow database; the worker dies in n3, after two steps were queued. Their
    # checkpoints and the run record should be written (or n2's still queued), so
    # resume(run_id) finds the run.
    crash_and_recover(tmp_path, "async", kill="node:n3", how="resume", slow=0.3)


# -- fan-out: two nodes in one superstep ------------------------------------------------------


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_fanout_kill_in_one_node_after_the_other_finished(tmp_path: Path,
                                                          durability: str) -> None:
    # n3x dies once n3 finished (and, under async, n3's result is in the store).
    how = "reinvoke-run-id" if durability == "exit" else "resume"
    out = crash_and_recover(tmp_path, durability, kill="node:n3x:after-sibling", how=how,
                            graph="fanout")
    assert sorted(out.killed_nodes) == ["n1", "n2", "n3", "n3x"]
    assert sorted(out.killed_tasks) == ["a", "b"]
    if durability == "sync":
        # The step in flight runs again (sync writes a step's results with its checkpoint),
        # but n3's tasks were recorded when they returned.
        assert sorted(out.nodes) == ["n3", "n3x", "n4", "n5"]
        assert out.tasks == []
    elif durability == "async":
        # Each finished node of a parallel step is written at once.
        assert out.nodes == ["n3x", "n4", "n5"]
        assert out.tasks == []
        _assert_async_bound(out)
    else:
        assert sorted(out.nodes) == sorted(out.all_nodes)
        assert sorted(out.tasks) == ["a", "b"]


@SYNC_ASYNC
def test_fanout_kill_between_a_steps_writes_and_its_commit(tmp_path: Path,
                                                            durability: str) -> None:
    out = crash_and_recover(tmp_path, durability, faults=f"before_step_commit@{N3_STEP}",
                            how=_how(durability, "continue"), graph="fanout")
    assert sorted(out.killed_nodes) == ["n1", "n2", "n3", "n3x"]
    if durability == "sync":
        assert sorted(out.nodes) == ["n3", "n3x", "n4", "n5"]
        assert out.tasks == []


# -- exit: the run restarts from the previous run's end ----------------------------------------


@pytest.mark.parametrize(("kill", "how"), [
    ("node:n3", "reinvoke-run-id"),
    ("task:fetch:b", "reinvoke"),
    ("node:n5", "reinvoke-run-id"),
])
def test_exit_restarts_from_the_previous_runs_end(tmp_path: Path, kill: str, how: str) -> None:
    out = crash_and_recover(tmp_path, "exit", kill=kill, how=how, previous=True)
    # Nothing of the killed run was stored: the thread is as the previous run left it.
    assert out.before["run"] is None
    assert out.before["values"] == {"trail": out.all_nodes, "fetched": ["got-a", "got-b"]}
    assert out.rerun_nodes == set(out.killed_nodes)
    assert out.nodes == out.all_nodes
    assert sorted(out.tasks) == ["a", "b"]


# -- recovery in the very next process (design §4), on every store that outlives a process ----


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Database:
    """The worker's store: a SQLite file, or a fresh Postgres schema (set up, dropped after)."""
    if request.param == "sqlite":
        return None
    store = request.getfixturevalue("postgres_database")()
    url = os.environ.get("THREADLOOM_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    return url, str(store.schema)


@pytest.mark.parametrize(("durability", "how"), [
    ("sync", "resume"), ("sync", "continue"), ("async", "resume"), ("async", "continue"),
    ("exit", "reinvoke-run-id"),
])
def test_the_next_process_recovers_at_once(tmp_path: Path, database: Database,
                                           durability: str, how: str) -> None:
    # fetch("b") dies once fetch("a") is recorded, so under async the run record and the
    # earlier steps are in the store too; under exit nothing of the run is, and the same
    # input with the same run id starts it again. In every case the dead worker's lease has
    # two minutes left and the next process does not wait for it.
    out = crash_and_recover(tmp_path, durability, kill="task:fetch:b", how=how, db=database)
    assert sorted(out.killed_tasks) == ["a", "b"]
    if durability == "exit":
        assert out.nodes == out.all_nodes
    else:
        assert out.nodes == ["n3", "n4", "n5"]
        assert out.tasks == ["b"]


def _wait_for_line(log: Path, line: str, proc: subprocess.Popen[str]) -> None:
    """Block until ``line`` is in ``log`` (the worker got there) or the worker exited."""
    tick = threading.Event()
    deadline = time.monotonic() + 30
    while line not in (log.read_text().splitlines() if log.exists() else []):
        assert proc.poll() is None, f"the worker exited early:\n{proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"the worker never wrote {line!r}"
        tick.wait(0.01)


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_a_live_workers_lease_is_not_taken(tmp_path: Path, database: Database,
                                           durability: str) -> None:
    # The worker blocks inside n3, alive and heartbeating: another process on this host must
    # not take its lease, with or without waiting. Once it is killed, the next one recovers.
    cmd, environ = _command(tmp_path, "killed.log", durability, "linear", "start", RUN_ID,
                            {"CRASH_HANG": "node:n3"}, lease_ttl=CRASHED_LEASE_TTL, db=database)
    with subprocess.Popen(cmd, env=environ, cwd=tmp_path, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as worker:
        try:
            _wait_for_line(tmp_path / "killed.log", "hang:n3", worker)
            busy = _child(tmp_path, "busy.log", durability, "linear", "continue", RUN_ID, {},
                          db=database)
            assert busy.returncode != 0
            assert "ThreadBusyError" in busy.stderr
            assert f"process {worker.pid} on this host" in busy.stderr
            assert not (tmp_path / "busy.log").exists()  # no node ran
            waited = _child(tmp_path, "busy.log", durability, "linear", "resume", RUN_ID, {},
                            db=database)
            assert waited.returncode != 0 and "ThreadBusyError" in waited.stderr
            assert f"Waited {RECOVERY_LEASE_TTL:g}s" in waited.stderr
        finally:
            worker.kill()
            worker.wait()
    report = tmp_path / "report.json"
    second = _child(tmp_path, "recovered.log", durability, "linear", "resume", RUN_ID, {},
                    report=report, db=database)
    assert second.returncode == 0, second.stderr
    out = _outcome(tmp_path, "linear", False, report)
    assert out.nodes == ["n3", "n4", "n5"]


def test_a_worker_on_another_host_is_waited_for(tmp_path: Path, database: Database) -> None:
    # The killed worker says it ran on host-b: nobody here can tell whether it lives, so its
    # lease (15 s) must lapse. invoke says so at once; resume waits for it (its own lease_ttl,
    # 30 s, bounds the wait) and then continues the run.
    env = {"CRASH_MARKER": str(tmp_path / "killed.marker"), "CRASH_KILL": "node:n3"}
    first = _child(tmp_path, "killed.log", "sync", "linear", "start", RUN_ID,
                   {**env, "THREADLOOM_HOST_ID": "host-b"}, lease_ttl=15.0, db=database)
    assert first.returncode == -signal.SIGKILL, first.stderr
    busy = _child(tmp_path, "busy.log", "sync", "linear", "continue", RUN_ID, env, db=database)
    assert busy.returncode != 0
    assert "ThreadBusyError" in busy.stderr and "on host 'host-b'" in busy.stderr
    assert "lapses at " in busy.stderr and "wait=True" in busy.stderr
    report = tmp_path / "report.json"
    second = _child(tmp_path, "recovered.log", "sync", "linear", "resume", RUN_ID, env,
                    report=report, lease_ttl=30.0, db=database)
    assert second.returncode == 0, second.stderr
    out = _outcome(tmp_path, "linear", False, report)
    assert out.nodes == ["n3", "n4", "n5"]
