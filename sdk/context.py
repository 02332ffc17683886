"""Which flow run and task run the current code runs in, and which tags new runs get (context
variables, so threads and asyncio tasks each see their own)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


def _current_flow_run_id() -> uuid.UUID | None:
    flow_ctx = flow_run_context.get()
    return flow_ctx.flow_run.id if flow_ctx is not None else None


@dataclass(slots=True)
class FlowRunContext:
    """The flow run that code is running in.

    Attributes:
        flow: the flow.
        flow_run: the run, as the control plane returned it when it was created (its state and
            run count are not kept current).
        parameters: the run's parameters.
        runtime: the client and reporter the run uses.
        task_runner: where ``submit`` and ``map`` send task runs.
        log_prints: whether ``print`` goes to the run's log.
        parent_flow_run_id: the flow run this one was called in (a subflow's parent): by
            default, the flow run whose context is current when this context is built.
    """

    flow: Flow[..., Any]
    flow_run: FlowRun
    parameters: dict[str, Any]
    runtime: Runtime
    task_runner: TaskRunner
    log_prints: bool = False
    parent_flow_run_id: uuid.UUID | None = field(default_factory=_current_flow_run_id)
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
        args, kwargs: the arguments the task's function is called with (futures resolved), kept
            as they are and bound to its parameters only when ``parameters`` is read;
            ``kwargs`` is ``None`` when the engine did not record them.
    """

    task: Task[..., Any]
    task_run: TaskRunRecord
    log_prints: bool = False
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None

    @property
    def task_run_id(self) -> uuid.UUID:
        """The task run's id."""
        return self.task_run.id

    @property
    def parameters(self) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied (``{}`` when not recorded)."""
        if self.kwargs is None:
            return {}
        return self.task.parameters(self.args, self.kwargs)


flow_run_context: ContextVar[FlowRunContext | None] = ContextVar("overcast_flow_run", default=None)
task_run_context: ContextVar[TaskRunContext | None] = ContextVar("overcast_task_run", default=None)
tags_context: ContextVar[tuple[str, ...]] = ContextVar("overcast_tags", default=())


@contextmanager
def tags(*names: str) -> Iterator[tuple[str, ...]]:
    """Add ``names`` to the tags of every flow run and task run created inside the block.

    Blocks nest: an inner block adds its tags to the outer's, and leaving it restores the
    outer's. A run's own tags (``@flow(tags=...)``, ``@task(tags=...)``) are kept.

    Example::

        with tags("nightly", "eu"):
            etl()  # the flow run and its task runs are tagged "nightly" and "eu"

    Yields:
        The tags in effect inside the block, outermost first.
    """
    current = tags_context.get()
    token = tags_context.set(current + tuple(n for n in dict.fromkeys(names) if n not in current))
    try:
        yield tags_context.get()
    finally:
        tags_context.reset(token)


def merge_tags(own: Iterable[str], extra: Iterable[str]) -> list[str]:
    """A new run's tags: its own and those of the enclosing ``tags`` blocks, each once, sorted."""
    return sorted({*own, *extra})


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
