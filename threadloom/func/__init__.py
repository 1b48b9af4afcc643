"""The functional API: ``@task`` for recorded side effects and ``@entrypoint`` for workflows
written as one function."""

from threadloom.engine._tasks import TaskFuture
from threadloom.func._entrypoint import entrypoint
from threadloom.func._task import TaskFunction, task

__all__ = ["TaskFunction", "TaskFuture", "entrypoint", "task"]
