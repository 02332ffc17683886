"""The engine's way to the control plane: one interface, two clients.

``DirectClient`` runs the control plane's services in this process over the adapters from
settings: what a user gets with no configuration (SQLite under ``~/.overcast``), and what a
runner function next to DynamoDB uses. ``HttpClient`` (``OVERCAST_API_URL``) talks to a
deployed API. The engine and its tests only see ``Client``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from overcast.core.models import FlowRun, LogLine, TaskRun
from overcast.core.schemas import FlowRunCreate, FlowRunFilter, OrchestrationResult, Page, TaskRunFilter
from overcast.core.services import ControlPlane
from overcast.core.states import State

logger = logging.getLogger("overcast.client")


def warn_rejected(rejected: Iterable[tuple[str, str | None]]) -> None:
    """Log task runs the control plane refused to record (``(id, reason)`` pairs), if any."""
    for task_run_id, reason in rejected:
        logger.warning("the control plane did not record task run %s: %s", task_run_id, reason)


@runtime_checkable
class Client(Protocol):
    """What the engine asks of the control plane."""

    def create_flow_run(self, request: FlowRunCreate) -> FlowRun:
        """Create a flow run (idempotent by ``idempotency_key``)."""
        ...

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        """Read a flow run. Raises ``NotFoundError``."""
        ...

    def set_flow_run_state(
        self, run_id: uuid.UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose a state for a flow run and return the decision."""
        ...

    def report_task_runs(self, documents: list[dict[str, Any]]) -> None:
        """Upsert task-run documents (``{"task_run": …, "states": […]}``, JSON-ready)."""
        ...

    def write_logs(self, lines: list[dict[str, Any]]) -> None:
        """Store log lines (``LogLine`` as JSON)."""
        ...

    def filter_flow_runs(self, query: FlowRunFilter) -> Page[FlowRun]:
        """List flow runs."""
        ...

    def read_task_run(self, task_run_id: uuid.UUID) -> TaskRun:
        """Read a task run. Raises ``NotFoundError``."""
        ...

    def filter_task_runs(self, query: TaskRunFilter) -> Page[TaskRun]:
        """List task runs of a flow run."""
        ...

    def read_flow_run_states(self, run_id: uuid.UUID) -> list[State]:
        """A flow run's state history."""
        ...

    def read_logs(self, run_id: uuid.UUID, *, limit: int = 200, cursor: str | None = None) -> Page[LogLine]:
        """A run's log lines, oldest first."""
        ...


class DirectClient:
    """The control plane's services, called in this process.

    Args:
        plane: the services (over the store the settings name).
    """

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def create_flow_run(self, request: FlowRunCreate) -> FlowRun:
        """Create a flow run (idempotent by ``idempotency_key``)."""
        return self.plane.flow_runs.create(request)[0]

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        """Read a flow run. Raises ``NotFoundError``."""
        return self.plane.flow_runs.get(run_id)

    def set_flow_run_state(
        self, run_id: uuid.UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose a state for a flow run and return the decision."""
        return self.plane.flow_runs.set_state(run_id, state, force=force)

    def report_task_runs(self, documents: list[dict[str, Any]]) -> None:
        """Upsert task-run documents; log the ones refused."""
        outcomes = self.plane.task_runs.write_documents(documents)
        warn_rejected((o.id, o.reason) for o in outcomes if o.status == "rejected")

    def write_logs(self, lines: list[dict[str, Any]]) -> None:
        """Store log lines."""
        self.plane.logs.write([LogLine.model_validate(line) for line in lines])

    def filter_flow_runs(self, query: FlowRunFilter) -> Page[FlowRun]:
        """List flow runs."""
        return self.plane.flow_runs.filter(query)

    def read_task_run(self, task_run_id: uuid.UUID) -> TaskRun:
        """Read a task run. Raises ``NotFoundError``."""
        return self.plane.task_runs.get(task_run_id)

    def filter_task_runs(self, query: TaskRunFilter) -> Page[TaskRun]:
        """List task runs of a flow run."""
        return self.plane.task_runs.filter(query)

    def read_flow_run_states(self, run_id: uuid.UUID) -> list[State]:
        """A flow run's state history."""
        return self.plane.flow_runs.states(run_id)

    def read_logs(self, run_id: uuid.UUID, *, limit: int = 200, cursor: str | None = None) -> Page[LogLine]:
        """A run's log lines, oldest first."""
        return self.plane.logs.read(run_id, limit=limit, cursor=cursor)
