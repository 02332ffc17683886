"""The current run, readable anywhere (Prefect's ``prefect.runtime``).

::

    from overcast import runtime

    @task
    def load(path: str) -> None:
        print(runtime.flow_run.name, runtime.task_run.run_count, runtime.deployment.name)

Three objects, ``flow_run``, ``task_run`` and ``deployment``, whose attributes are read from
the run context when asked. Outside a run (or a deployment's run) an attribute is ``None``, and
``parameters`` and ``tags`` are empty: reading one never raises. An attribute the context does
not hold (a deployment's name, a retried flow run's count) is asked of the control plane, and
``None`` if it cannot answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from overcast.context import FlowRunContext, flow_run_context, task_run_context

__all__ = ["deployment", "flow_run", "task_run"]

logger = logging.getLogger("overcast.runtime")

T = TypeVar("T")


def _ask(flow_ctx: FlowRunContext, what: str, read: Callable[[Any], T]) -> T | None:
    """``read(client)`` with the run's client; ``None`` (logged) if the control plane cannot answer."""
    try:
        return read(flow_ctx.runtime.client)
    except Exception:  # not found, unreachable, or no client (a process-pool worker)
        logger.debug("could not read %s of flow run %s", what, flow_ctx.flow_run.id, exc_info=True)
        return None


class _FlowRun:
    """The flow run the current code runs in (a task's, inside a task)."""

    __slots__ = ()

    @property
    def id(self) -> uuid.UUID | None:
        """The flow run's id."""
        ctx = flow_run_context.get()
        return ctx.flow_run.id if ctx is not None else None

    @property
    def name(self) -> str | None:
        """The flow run's name."""
        ctx = flow_run_context.get()
        return ctx.flow_run.name if ctx is not None else None

    @property
    def flow_name(self) -> str | None:
        """The name of the flow it runs."""
        ctx = flow_run_context.get()
        return ctx.flow_run.flow_name if ctx is not None else None

    @property
    def parameters(self) -> dict[str, Any]:
        """The flow run's parameters (a copy), ``{}`` outside a flow run."""
        ctx = flow_run_context.get()
        return dict(ctx.parameters) if ctx is not None else {}

    @property
    def tags(self) -> list[str]:
        """The flow run's tags (its flow's, its deployment's, and the ``tags`` blocks'), ``[]`` outside one."""
        ctx = flow_run_context.get()
        return list(ctx.flow_run.tags) if ctx is not None else []

    @property
    def run_count(self) -> int | None:
        """How many times the flow run has entered Running: 1 on its first attempt."""
        ctx = flow_run_context.get()
        if ctx is None:
            return None
        if ctx.flow_run.run_count:
            return ctx.flow_run.run_count
        # The context holds the run as it was created, before it ran: the control plane knows.
        return _ask(ctx, "the run count", lambda client: client.read_flow_run(ctx.flow_run.id).run_count)

    @property
    def scheduled_start_time(self) -> datetime | None:
        """When the flow run was meant to start (its expected start time)."""
        ctx = flow_run_context.get()
        return ctx.flow_run.expected_start_time if ctx is not None else None

    @property
    def parent_flow_run_id(self) -> uuid.UUID | None:
        """For a subflow, the flow run it was called in; ``None`` for a top-level run."""
        ctx = flow_run_context.get()
        if ctx is None:
            return None
        if ctx.parent_flow_run_id is not None or ctx.flow_run.parent_task_run_id is None:
            return ctx.parent_flow_run_id
        # Started in another process (a deployment's run as a subflow): its parent task run knows.
        parent_task_run_id = ctx.flow_run.parent_task_run_id
        return _ask(
            ctx, "the parent flow run", lambda client: client.read_task_run(parent_task_run_id).flow_run_id
        )

    @property
    def deployment_id(self) -> uuid.UUID | None:
        """The deployment that created the flow run, if any."""
        ctx = flow_run_context.get()
        return ctx.flow_run.deployment_id if ctx is not None else None


class _TaskRun:
    """The task run the current code runs in."""

    __slots__ = ()

    @property
    def id(self) -> uuid.UUID | None:
        """The task run's id."""
        ctx = task_run_context.get()
        return ctx.task_run.id if ctx is not None else None

    @property
    def name(self) -> str | None:
        """The task run's name."""
        ctx = task_run_context.get()
        return ctx.task_run.name if ctx is not None else None

    @property
    def task_name(self) -> str | None:
        """The name of the task it runs."""
        ctx = task_run_context.get()
        return ctx.task.name if ctx is not None else None

    @property
    def run_count(self) -> int | None:
        """How many attempts the task run has made, this one included: 1 on its first."""
        ctx = task_run_context.get()
        return ctx.task_run.run_count if ctx is not None else None

    @property
    def parameters(self) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied; ``{}`` outside a task run."""
        ctx = task_run_context.get()
        return ctx.parameters if ctx is not None else {}

    @property
    def tags(self) -> list[str]:
        """The task run's tags (its task's and the ``tags`` blocks'), ``[]`` outside one."""
        ctx = task_run_context.get()
        return list(ctx.task_run.tags) if ctx is not None else []


# A deployment's id is derived from its flow's name and its own, so the name never changes.
_deployment_names: dict[uuid.UUID, str] = {}


class _Deployment:
    """The deployment whose run the current code runs in."""

    __slots__ = ()

    @property
    def id(self) -> uuid.UUID | None:
        """The deployment's id; ``None`` outside a deployment's run."""
        ctx = flow_run_context.get()
        return ctx.flow_run.deployment_id if ctx is not None else None

    @property
    def name(self) -> str | None:
        """The deployment's name (read from the control plane once per deployment)."""
        ctx = flow_run_context.get()
        if ctx is None or ctx.flow_run.deployment_id is None:
            return None
        deployment_id = ctx.flow_run.deployment_id
        name = _deployment_names.get(deployment_id)
        if name is None:
            name = _ask(ctx, "the deployment", lambda client: str(client.read_deployment(deployment_id).name))
            if name is not None:
                _deployment_names[deployment_id] = name
        return name

    @property
    def parameters(self) -> dict[str, Any]:
        """The run's parameters: the deployment's defaults with the run's own over them.

        ``{}`` outside a deployment's run.
        """
        ctx = flow_run_context.get()
        if ctx is None or ctx.flow_run.deployment_id is None:
            return {}
        return dict(ctx.parameters)  # the control plane merged the defaults when it created the run


flow_run = _FlowRun()
task_run = _TaskRun()
deployment = _Deployment()
