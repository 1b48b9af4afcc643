"""The engine's deterministic ids: executions, ``@task`` calls and interrupts.

They are derived from the thread id, so that a replay of a step finds what the step
recorded. Stdlib only: :func:`threadloom.checkpoint.retention.import_thread` derives them
again when it moves a thread to a new id.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

__all__ = ["execution_id", "interrupt_id", "interrupt_task", "task_execution_id"]

_IDS = uuid.UUID("5b0c3f7e-8a41-4e0f-9d8e-7c1a2f3b4d5e")


def execution_id(thread_id: str, seq: int, name: str, push: int) -> str:
    """The id of the execution of ``name`` in the step that starts at checkpoint ``seq``:
    the same on every replay of that step, unique across threads (128-bit hash, hex)."""
    key = f"{thread_id}\x00{seq}\x00{name}\x00{push}".encode()
    return hashlib.blake2b(key, digest_size=16, person=b"threadloom-exec").hexdigest()


def task_execution_id(parent: str, name: str, index: int) -> str:
    """The id of call ``index`` of ``@task`` ``name`` inside execution ``parent``."""
    key = f"{parent}\x00{name}\x00{index}".encode()
    return hashlib.blake2b(key, digest_size=16, person=b"threadloom-task").hexdigest()


def interrupt_id(task_id: str, index: int) -> str:
    """The id of the ``index``-th ``interrupt()`` call of an execution (stable on replay)."""
    return uuid.uuid5(_IDS, f"{task_id}\x00{index}").hex


def interrupt_task(interrupt: str, task_ids: Iterable[str], index: int) -> str:
    """Which of ``task_ids`` raised interrupt ``interrupt`` as its ``index``-th call.

    Raises:
        LookupError: none of them did.
    """
    for task_id in task_ids:
        if interrupt_id(task_id, index) == interrupt:
            return task_id
    raise LookupError(f"interrupt {interrupt} belongs to no task of this step")
