"""Named fault points, for crash tests.

Set ``THREADLOOM_FAULTS`` to a comma-separated list of ``name`` or ``name@N`` (the N-th time
the point is reached, 1-based) and the process kills itself with SIGKILL there. Unset (the
normal case) the check is one frozenset lookup. Points:

* ``before_step_commit`` / ``after_step_commit``: around a step's commit (``sync``; in
  ``async`` the queueing), the window between a step's writes and its commit;
* ``before_task_record`` / ``after_task_record``: around recording a ``@task`` result;
* ``before_writer_commit``: in the ``async`` background writer, before a transaction.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["fault"]


def _parse(raw: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, _, nth = item.partition("@")
        out[name] = int(nth) if nth else 1
    return out


_ARMED = _parse(os.environ.get("THREADLOOM_FAULTS", ""))
_HITS: dict[str, int] = {}
_LOCK = threading.Lock()


def fault(name: str) -> None:
    """Kill this process here if the fault point ``name`` is armed for this hit."""
    if not _ARMED or name not in _ARMED:
        return
    with _LOCK:
        _HITS[name] = _HITS.get(name, 0) + 1
        if _HITS[name] != _ARMED[name]:
            return
    os.kill(os.getpid(), signal.SIGKILL)
