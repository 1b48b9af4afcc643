"""Recovery right after a crash (design §4): who holds a lease, and whether its process lives.

A lease owner records host, pid and process start time (``threadloom.engine._owner``). When
the holder is on this host and its process is gone (no such pid, a zombie, or a pid reused by
a process that started at another time), ``invoke(None, config)`` and ``resume(run_id)``
take the lease at once with a new fencing token, however far its expiry is. A live holder's
lease is never taken; a holder on another host can only lapse: ``invoke`` raises
``ThreadBusyError`` saying when, ``resume`` waits for it (at most ``lease_ttl``).

The holders here are real processes (a child that waits on its stdin, killed and reaped, or
killed and left a zombie), written into the store as the lease owner the way a run of that
process would write it. The crash tests (``test_crash.py``) do the same end to end with a
worker killed mid-run.
"""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest

from threadloom.engine._owner import (
    HOST_ENV,
    Owner,
    holder_state,
    host_id,
    parse_owner,
    process_stamp,
    this_process,
)
from threadloom.errors import LeaseLostError, ThreadBusyError
from threadloom.graph import END, START, StateGraph

LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="process start stamps come from /proc")
FAR = 3600.0  # a lease ttl that never lapses during a test


def _spawn() -> subprocess.Popen[bytes]:
    """A child process that lives until its stdin closes."""
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = _spawn()
    yield proc
    _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap ``proc`` (if it still runs) and close its pipe."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdin is not None:
        proc.stdin.close()


def _owner_of(pid: int, run_id: str = "run-dead", *, host: str | None = None,
              stamp: str | None = None) -> str:
    """The lease owner a run of process ``pid`` on this host would write."""
    if stamp is None:
        stamp = process_stamp(pid) or ""
    return str(Owner(host or host_id(), pid, stamp, "0badc0de", run_id))


def _reaped_pid() -> tuple[int, str]:
    """The pid and stamp of a process that ran and is gone (killed and reaped)."""
    proc = _spawn()
    stamp = process_stamp(proc.pid) or ""
    _end(proc)
    return proc.pid, stamp


# -- the owner record ------------------------------------------------------------------------


def test_owner_round_trips_through_its_string() -> None:
    owner = Owner("rack 7/host:a", 4242, "0a1b2c3d.4026531836.998", "cafe0123",
                  "run with spaces: and colons")
    text = str(owner)
    assert " pid 4242 " in text and text.endswith("run run with spaces: and colons")
    assert parse_owner(text) == owner
    assert parse_owner(str(Owner("h", 1, "", "n", "r"))) == Owner("h", 1, "", "n", "r")


@pytest.mark.parametrize("text", [
    "vm:1234:abcd1234:run-1",  # what threadloom wrote before owners had a start time
    "update_state:1700000000.0",
    "h pid x start - n run r",
    "",
])
def test_owner_strings_of_others_are_not_judged(text: str) -> None:
    assert parse_owner(text) is None
    assert holder_state(text) == "unknown"


def test_this_process_names_this_host_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOST_ENV, raising=False)
    owner = this_process("run-1")
    assert (owner.pid, owner.run_id) == (os.getpid(), "run-1")
    assert owner.host == host_id()
    assert this_process("run-1").nonce != owner.nonce
    monkeypatch.setenv(HOST_ENV, "worker-7")
    assert this_process("run-1").host == "worker-7"
    if LINUX:
        assert owner.stamp == process_stamp(os.getpid())


# -- liveness ---------------------------------------------------------------------------------


def test_a_live_process_on_this_host_is_alive(child: subprocess.Popen[bytes]) -> None:
    assert holder_state(_owner_of(child.pid)) == "alive"
    assert holder_state(str(this_process("run-1"))) == "alive"


def test_a_killed_process_is_gone() -> None:
    pid, stamp = _reaped_pid()
    assert holder_state(_owner_of(pid, stamp=stamp)) == "gone"


@linux_only
def test_a_zombie_is_gone(child: subprocess.Popen[bytes]) -> None:
    # SIGKILLed but not reaped by its parent yet: its /proc entry remains, state Z.
    owner = _owner_of(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, still unreaped
    assert holder_state(owner) == "gone"


@linux_only
def test_a_reused_pid_does_not_keep_a_dead_holder_alive(
    child: subprocess.Popen[bytes],
) -> None:
    # The recorded pid is a live process's, but that process started at another time: the
    # holder was an earlier process with the same pid.
    stamp = process_stamp(child.pid)
    assert stamp is not None
    boot, pidns, ticks = stamp.split(".")
    reused = f"{boot}.{pidns}.{int(ticks) - 1}"
    assert holder_state(_owner_of(child.pid, stamp=reused)) == "gone"
    assert holder_state(_owner_of(child.pid, stamp=stamp)) == "alive"


@linux_only
def test_a_holder_from_before_a_reboot_is_gone(child: subprocess.Popen[bytes]) -> None:
    _, pidns, ticks = (process_stamp(child.pid) or "..").split(".")
    assert holder_state(_owner_of(child.pid, stamp=f"00000000.{pidns}.{ticks}")) == "gone"


@linux_only
def test_a_holder_in_another_pid_namespace_is_not_judged() -> None:
    # Same host id (a container sharing the host's name, e.g. --network host), but its pids
    # are not ours to look up.
    pid, stamp = _reaped_pid()
    boot, _, ticks = stamp.split(".")
    assert holder_state(_owner_of(pid, stamp=f"{boot}.1.{ticks}")) == "unknown"


def test_a_holder_on_another_host_is_not_judged() -> None:
    pid, stamp = _reaped_pid()
    assert holder_state(_owner_of(pid, stamp=stamp, host="elsewhere")) == "unknown"


def test_without_a_stamp_a_pid_that_exists_is_alive(child: subprocess.Popen[bytes]) -> None:
    assert holder_state(_owner_of(child.pid, stamp="")) == "alive"
    pid, _ = _reaped_pid()
    assert holder_state(_owner_of(pid, stamp="")) == "gone"


# -- the engine: invoke(None, config) and resume(run_id) -------------------------------------


class State(TypedDict):
    trail: Annotated[list[str], operator.add]


def _graph(store: Any, fail: list[bool], **options: Any) -> Any:
    """``a -> b``; ``b`` raises while ``fail[0]`` is true, leaving an unfinished run."""

    def a(state: State) -> dict[str, list[str]]:
        return {"trail": ["a"]}

    def b(state: State) -> dict[str, list[str]]:
        if fail[0]:
            raise RuntimeError("b failed")
        return {"trail": ["b"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    options.setdefault("durability", "sync")
    return builder.compile(checkpointer=store, **options)


def _failed_run(store: Any, thread: dict[str, Any], **options: Any) -> tuple[Any, str]:
    """A graph whose run on ``thread`` failed in ``b`` (the cause now fixed), and its id."""
    fail = [True]
    graph = _graph(store, fail, **options)
    with pytest.raises(RuntimeError):
        graph.invoke({"trail": []}, {**thread, "run_id": "run-1"})
    fail[0] = False
    return graph, "run-1"


def _hold(store: Any, thread: dict[str, Any], owner: str, ttl: float = FAR) -> Any:
    """Write ``owner`` as the thread's lease holder, as its run would have."""
    return store.acquire_lease(thread["thread_id"], owner, ttl)


@pytest.mark.parametrize("how", ["invoke", "resume"])
def test_a_dead_holders_lease_is_taken_at_once(store: Any, thread: dict[str, Any],
                                               how: str) -> None:
    graph, run_id = _failed_run(store, thread)
    pid, stamp = _reaped_pid()
    dead = _hold(store, thread, _owner_of(pid, run_id, stamp=stamp))
    # No wait: without the takeover this raises ThreadBusyError (the lease has an hour left).
    if how == "invoke":
        out = graph.invoke(None, {**thread, "wait": False})
    else:
        out = graph.resume(run_id=run_id, config={"wait": False})
    assert out == {"trail": ["a", "b"]}
    assert graph.get_run(run_id).status == "succeeded"
    with pytest.raises(LeaseLostError):  # the dead holder's token is fenced out
        store.renew_lease(dead, FAR)


def test_a_reused_pid_does_not_block_recovery(store: Any, thread: dict[str, Any],
                                              child: subprocess.Popen[bytes]) -> None:
    if not LINUX:
        pytest.skip("process start stamps come from /proc")
    graph, run_id = _failed_run(store, thread)
    boot, pidns, ticks = (process_stamp(child.pid) or "..").split(".")
    _hold(store, thread, _owner_of(child.pid, run_id, stamp=f"{boot}.{pidns}.{int(ticks) - 1}"))
    assert graph.invoke(None, thread) == {"trail": ["a", "b"]}


def test_a_live_holders_lease_is_not_taken(store: Any, thread: dict[str, Any],
                                           child: subprocess.Popen[bytes]) -> None:
    graph, run_id = _failed_run(store, thread)
    held = _hold(store, thread, _owner_of(child.pid, run_id))
    with pytest.raises(ThreadBusyError) as info:
        graph.invoke(None, thread)
    message = str(info.value)
    assert f"process {child.pid} on this host" in message
    assert "wait=True" in message and "resume(" in message
    with pytest.raises(ThreadBusyError):
        graph.resume(run_id=run_id, config={"wait": False})
    assert store.get_thread(thread["thread_id"]).lease == held
    # Once that process is gone, the next call recovers at once.
    _end(child)
    assert graph.invoke(None, thread) == {"trail": ["a", "b"]}


def test_another_hosts_lease_makes_invoke_say_when_it_lapses(
    store: Any, thread: dict[str, Any],
) -> None:
    graph, run_id = _failed_run(store, thread)
    pid, stamp = _reaped_pid()  # gone, but on another host nobody here can tell
    held = _hold(store, thread, _owner_of(pid, run_id, stamp=stamp, host="host-b"), ttl=600)
    with pytest.raises(ThreadBusyError) as info:
        graph.invoke(None, thread)
    message = str(info.value)
    assert f"process {pid} on host 'host-b'" in message
    assert "lapses at " in message and " UTC (in " in message
    assert "wait=True" in message and "resume(" in message
    assert store.get_thread(thread["thread_id"]).lease == held


def test_resume_waits_for_another_hosts_lease_to_lapse(store: Any,
                                                       thread: dict[str, Any]) -> None:
    graph, run_id = _failed_run(store, thread, lease_ttl=30.0)
    _hold(store, thread, _owner_of(1, run_id, host="host-b", stamp=""), ttl=0.5)
    with pytest.raises(ThreadBusyError):
        graph.invoke(None, thread)  # invoke does not wait
    assert graph.resume(run_id=run_id) == {"trail": ["a", "b"]}


def test_resume_waits_at_most_lease_ttl(store: Any, thread: dict[str, Any]) -> None:
    graph, run_id = _failed_run(store, thread, lease_ttl=0.2)
    held = _hold(store, thread, _owner_of(1, run_id, host="host-b", stamp=""), ttl=600)
    with pytest.raises(ThreadBusyError) as info:
        graph.resume(run_id=run_id)
    assert "Waited 0.2s" in str(info.value)
    assert store.get_thread(thread["thread_id"]).lease == held


def test_update_state_takes_a_dead_holders_lease_at_once(store: Any,
                                                         thread: dict[str, Any]) -> None:
    graph, run_id = _failed_run(store, thread)
    pid, stamp = _reaped_pid()
    dead = _hold(store, thread, _owner_of(pid, run_id, stamp=stamp))
    # Without the takeover this raises ThreadBusyError (the lease has an hour left).
    graph.update_state(thread, {"trail": ["edited"]}, as_node="a")
    assert graph.get_state(thread).values == {"trail": ["a", "edited"]}
    with pytest.raises(LeaseLostError):  # the dead holder's token is fenced out
        store.renew_lease(dead, FAR)
