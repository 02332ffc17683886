"""Which flow run and task run the current code runs in (context variables, so threads and
asyncio tasks each see their own)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from overcast.core.errors import OvercastError

if TYPE_CHECKING:
    from overcast._records import TaskRunRecord
    from overcast._runtime import Runtime
    from overcast.core.models import FlowRun
    from overcast.flows import Flow
    from overcast.task_runners import TaskRunner
    from overcast.tasks import Task


class MissingContextError(OvercastError, RuntimeError):
    """Raised when run context is asked for outside any flow run or task run."""


@dataclass(slots=True)
class FlowRunContext:
    """The flow run that code is running in.

    Attributes:
        flow: the flow.
        flow_run: the run, as the control plane returned it when it started.
        parameters: the run's parameters.
        runtime: the client and reporter the run uses.
        task_runner: where ``submit`` and ``map`` send task runs.
        log_prints: whether ``print`` goes to the run's log.
    """

    flow: Flow[..., Any]
    flow_run: FlowRun
    parameters: dict[str, Any]
    runtime: Runtime
    task_runner: TaskRunner
    log_prints: bool = False
    _dynamic_keys: dict[str, Iterator[int]] = field(default_factory=dict)

    def next_dynamic_key(self, task_key: str) -> str:
        """The next call number of ``task_key`` in this run ("0", "1", …); safe from any thread."""
        counter = self._dynamic_keys.get(task_key)
        if counter is None:  # setdefault is atomic: racing first calls share one counter
            counter = self._dynamic_keys.setdefault(task_key, itertools.count())
        return str(next(counter))  # a C iterator: one call is atomic under the GIL


@dataclass(slots=True)
class TaskRunContext:
    """The task run that code is running in.

    Attributes:
        task: the task.
        task_run: the engine's record of the run.
        log_prints: whether ``print`` goes to the run's log.
    """

    task: Task[..., Any]
    task_run: TaskRunRecord
    log_prints: bool = False

    @property
    def task_run_id(self) -> uuid.UUID:
        """The task run's id."""
        return self.task_run.id


flow_run_context: ContextVar[FlowRunContext | None] = ContextVar("overcast_flow_run", default=None)
task_run_context: ContextVar[TaskRunContext | None] = ContextVar("overcast_task_run", default=None)


def get_run_context() -> TaskRunContext | FlowRunContext:
    """Return the innermost run context: the task run's inside a task, else the flow run's.

    Raises:
        MissingContextError: called outside any flow or task.
    """
    task_ctx = task_run_context.get()
    if task_ctx is not None:
        return task_ctx
    flow_ctx = flow_run_context.get()
    if flow_ctx is not None:
        return flow_ctx
    raise MissingContextError("no run context: this was called outside a flow and outside a task")
