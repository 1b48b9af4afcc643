"""Who holds a thread's lease, whether that process still lives, and taking the lease.

A run's lease owner names the process that took it::

    <host> pid <pid> start <stamp> <nonce> run <run_id>

``host`` is ``THREADLOOM_HOST_ID`` when set, else the hostname (percent-quoted, so it has no
spaces); ``stamp`` says when the process started, so that a new process that reuses the pid
is not mistaken for the holder: on Linux ``<boot>.<pidns>.<ticks>`` (the first 8 hex digits
of the kernel's boot id, the inode of the process's pid namespace, and field 22 of
``/proc/<pid>/stat``, the start time in clock ticks after boot), elsewhere ``-`` (unknown).
``nonce`` makes two runs of one process distinct owners.

A holder is **gone** only when this process can be sure: it is on this host (same host id),
and either the machine rebooted since (another boot id), or, in the same pid namespace, its
pid no longer exists, is a zombie, or belongs to a process that started at another time.
Without a stamp (not Linux) a pid that exists counts as alive. A holder on another host, in
another pid namespace, or written by something else (an owner string this module cannot
parse) is never judged: its lease can only lapse. See ``docs/decisions.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal
from urllib.parse import quote, unquote

from threadloom import _metrics
from threadloom.checkpoint.base import DEFAULT_NAMESPACE, Lease, Store
from threadloom.errors import LeaseLostError, ThreadBusyError

__all__ = [
    "HOST_ENV", "Owner", "acquire", "holder_state", "host_id", "parse_owner", "process_stamp",
    "this_process",
]

HOST_ENV = "THREADLOOM_HOST_ID"

log = logging.getLogger(__name__)

HolderState = Literal["gone", "alive", "unknown"]
"""``gone``: dead for sure (take its lease now); ``alive``: running on this host;
``unknown``: on another host or not ours to judge (wait for the lease to lapse)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """A lease owner: the process that holds (or held) a thread's lease, and for which run."""

    host: str
    pid: int
    stamp: str  # the process's start stamp ("" when unknown, see the module docstring)
    nonce: str
    run_id: str

    def __str__(self) -> str:
        return (f"{quote(self.host, safe='')} pid {self.pid} start {self.stamp or '-'} "
                f"{self.nonce} run {self.run_id}")


def parse_owner(text: str) -> Owner | None:
    """The :class:`Owner` an owner string names, or ``None`` if it is not one this module
    wrote (e.g. a lease taken by an older threadloom or another tool)."""
    parts = text.split(" ", 7)
    if len(parts) != 8 or parts[1] != "pid" or parts[3] != "start" or parts[6] != "run":
        return None
    if not parts[2].isdigit():
        return None
    stamp = "" if parts[4] == "-" else parts[4]
    return Owner(unquote(parts[0]), int(parts[2]), stamp, parts[5], parts[7])


def host_id() -> str:
    """This machine's id for leases: ``THREADLOOM_HOST_ID`` when set, else the hostname."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def this_process(run_id: str) -> Owner:
    """A new owner for a run of this process."""
    pid = os.getpid()
    return Owner(host_id(), pid, _own_stamp(pid) or "", uuid.uuid4().hex[:8], run_id)


def holder_state(owner: str) -> HolderState:
    """Whether the process that wrote ``owner`` is gone, alive on this host, or unknown."""
    parsed = parse_owner(owner)
    if parsed is None or parsed.host != host_id():
        return "unknown"
    return _process_state(parsed.pid, parsed.stamp)


# -- process liveness ----------------------------------------------------------------------


def _process_state(pid: int, stamp: str) -> HolderState:
    if stamp:
        boot, _, rest = stamp.partition(".")
        pidns, _, ticks = rest.partition(".")
        mine = _kernel()
        if mine is None:
            return "unknown"  # this process cannot read /proc: no judgement
        if boot != mine[0]:
            return "gone"  # the machine rebooted since: every process of that boot is gone
        if pidns != mine[1]:
            return "unknown"  # another container's pids: not ours to look up
        now = _proc_stat(pid)
        if now is None or now[0] in ("Z", "X") or now[1] != ticks:
            return "gone"  # no such pid, a zombie, or the pid was reused
        return "alive"
    if os.name != "posix":
        return "unknown"  # no signal 0 to probe with (os.kill would terminate on Windows)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "alive"  # exists, owned by another user
    except OSError:
        return "unknown"
    return "alive"


@lru_cache(maxsize=1)
def _kernel() -> tuple[str, str] | None:
    """This process's boot id (8 hex digits) and pid namespace inode, or ``None`` off Linux."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip().replace("-", "")[:8]
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return boot, str(pidns)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """Process ``pid``'s state letter and start time (clock ticks after boot), from
    ``/proc/<pid>/stat``; ``None`` when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces or parentheses.
    fields = raw[raw.rfind(")") + 2:].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # fields 3 (state) and 22 (starttime)


@lru_cache(maxsize=4)
def _own_stamp(pid: int) -> str | None:
    """:func:`process_stamp` of this process, cached by pid (a forked child has its own)."""
    return process_stamp(pid)


def process_stamp(pid: int) -> str | None:
    """Process ``pid``'s start stamp (see the module docstring), or ``None`` off Linux or
    when there is no such process."""
    kernel = _kernel()
    stat = _proc_stat(pid) if kernel is not None else None
    if kernel is None or stat is None:
        return None
    return f"{kernel[0]}.{kernel[1]}.{stat[1]}"


# -- taking a thread's lease ---------------------------------------------------------------


def acquire(store: Store, thread_id: str, run_id: str, ttl: float,
            wait: bool | float, namespace: str = DEFAULT_NAMESPACE) -> Lease:
    """Take the thread's lease for a run of this process.

    A lease held by a process of this host that is gone (see :func:`holder_state`) is taken
    over at once, with a new fencing token. Any other holder makes this raise, or, with
    ``wait`` (``True``: up to an hour; a number: up to that many seconds), poll until the
    lease is released or lapses.

    Raises:
        ThreadBusyError: still held when the wait (if any) ran out; the message says who
            holds it, when the lease lapses and how to wait for it.
    """
    owner = str(this_process(run_id))
    deadline = None
    if wait:
        deadline = time.monotonic() + (3600.0 if wait is True else float(wait))
    delay = 0.01
    races = 0  # the lease changed between two of our reads: look again at once (bounded)
    while True:
        try:
            return store.acquire_lease(thread_id, owner, ttl, namespace=namespace)
        except ThreadBusyError as exc:
            busy = exc
        thread = store.get_thread(thread_id, namespace=namespace)
        held = thread.lease if thread is not None else None
        if held is not None and holder_state(held.owner) == "gone":
            try:
                taken = store.takeover_lease(held, owner, ttl)
            except LeaseLostError:
                held = None  # another process recovered it first, or it changed hands
            else:
                _metrics.lease_takeover()
                log.warning("took over the lease on thread %s from %s, which is gone",
                            thread_id, held.owner)
                return taken
        now = time.time()
        if (held is None or held.expires_at <= now) and races < 3:
            races += 1
            continue  # released, lapsed or taken meanwhile: try again
        races = 0
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is None or remaining <= 0:
            if held is None:
                raise busy
            raise ThreadBusyError(_busy_message(thread_id, held, wait)) from None
        if held is not None and held.expires_at > now:
            delay = min(delay, held.expires_at - now + 0.01)  # wake as it lapses
        time.sleep(max(min(delay, remaining), 0.001))
        delay = min(delay * 2, 0.5)


def _busy_message(thread_id: str, held: Lease, wait: bool | float) -> str:
    state = holder_state(held.owner)
    parsed = parse_owner(held.owner)
    if parsed is None:
        who = f"owner {held.owner!r}"
    else:
        where = "this host" if state == "alive" else f"host {parsed.host!r}"
        who = f"run {parsed.run_id!r} (process {parsed.pid} on {where})"
    left = held.expires_at - time.time()
    lapse = datetime.fromtimestamp(held.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    when = (f"lapses at {lapse} (in {left:.1f}s) unless its holder renews it" if left > 0
            else f"lapsed at {lapse}")
    alive = " The process is running: it renews the lease until the run ends." \
        if state == "alive" else ""
    waited = (f" Waited {'up to an hour' if wait is True else f'{float(wait):g}s'} for it."
              if wait else "")
    return (
        f"thread {thread_id!r} is busy: {who} holds its lease, which {when}.{alive}{waited} "
        "To wait for the lease, invoke with wait=True (or wait=<seconds>), or call "
        "graph.resume(run_id=...), which waits up to the graph's lease_ttl."
    )
