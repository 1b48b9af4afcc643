"""The run context of a :class:`~threadloom.engine._durable.DurableRun`: stable execution ids
as task ids, and task hooks that record results, attempts, node times and ``@task``
outcomes with the run."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from threadloom.checkpoint.base import Attempt
from threadloom.engine._algo import PlannedTask, TaskResult
from threadloom.engine._loop import RunContext
from threadloom.engine._recording import DurableRecorder, error_text
from threadloom.engine._tasks import TaskCalls

if TYPE_CHECKING:
    from threadloom.engine._durable import DurableRun

__all__ = ["DurableContext"]


class DurableContext(RunContext):
    """Run context whose task ids are stable execution ids and whose task hooks record
    results, attempts and ``@task`` outcomes."""

    __slots__ = ("run",)
    run: DurableRun

    def task_id(self, task: PlannedTask) -> str:
        return str(self.run.ids[(task.name, task.push)])

    def resume_for(self, task_id: str) -> list[Any] | None:
        values = self.run.loaded_resume.get(task_id)
        return list(values) if values else None

    def on_task_start(self, task: PlannedTask, task_id: str, input: Any) -> None:
        self.run.task_times[task_id] = time.time()
        super().on_task_start(task, task_id, input)

    def on_attempt_failed(self, task: PlannedTask, task_id: str, attempt: int,
                          started: float, exc: BaseException) -> None:
        with self.run.lock:
            self.run.attempts.setdefault(task_id, []).append(
                Attempt(attempt, started, time.time(), error_text(exc))
            )

    def on_retry(self, task: PlannedTask) -> None:
        self.run.stats.retry()

    def on_task_done(self, result: TaskResult, task_id: str, attempts: int) -> None:
        super().on_task_done(result, task_id, attempts)
        run = self.run
        started = run.task_times.get(task_id)
        if started is not None:
            run.stats.node(result.task.name, time.time() - started)
        run.task_finished(result, task_id, attempts)

    def task_calls(self, scope: Any) -> TaskCalls:
        return TaskCalls(DurableRecorder(self.run, scope.task_id, scope.name, scope.step))
