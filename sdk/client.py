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
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from overcast.core.states import register_result_loader

if TYPE_CHECKING:
    from overcast.core.automations import Automation, AutomationCreate, AutomationUpdate, FiringRecord
    from overcast.core.concurrency import (
        ConcurrencyLease,
        ConcurrencyLimit,
        ConcurrencyLimitCreate,
        ConcurrencyLimitFilter,
        ConcurrencyLimitUpdate,
        SlotAcquisition,
        SlotRequest,
    )
    from overcast.core.deployments import (
        Deployment,
        DeploymentCreate,
        DeploymentFilter,
        DeploymentFlowRunCreate,
        DeploymentUpdate,
    )
    from overcast.core.events import Event, EventFilter
    from overcast.core.models import Artifact, FlowRun, LogLine, TaskRun, Variable
    from overcast.core.ports import BlobStore
    from overcast.core.schemas import (
        ArtifactFilter,
        ArtifactRequest,
        ArtifactUpdate,
        FlowRunCreate,
        FlowRunFilter,
        OrchestrationResult,
        Page,
        TaskRunFilter,
        VariableCreate,
        VariableFilter,
        VariableUpdate,
    )
    from overcast.core.services import ControlPlane
    from overcast.core.services.locks import Lease
    from overcast.core.services.records import CommitResult, TransactionRecord
    from overcast.core.states import State
    from overcast.core.work_pools import (
        Worker,
        WorkerFilter,
        WorkPool,
        WorkPoolFilter,
        WorkPoolRequest,
        WorkPoolUpdate,
        WorkQueue,
        WorkQueueCreate,
        WorkQueueUpdate,
    )

logger = logging.getLogger("overcast.client")


def _load_result(reference: dict[str, Any]) -> Any:
    from overcast.results import load_result

    return load_result(reference)


# Whoever holds a client can read runs' states: let State.result() load persisted results.
register_result_loader(_load_result)


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

    def heartbeat_flow_run(self, run_id: uuid.UUID, lease_s: float) -> datetime:
        """Vouch for a running flow run for ``lease_s`` seconds; return when the lease ends."""
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

    def create_artifact(self, request: ArtifactRequest) -> Artifact:
        """Create an artifact (the next version of its key, if it has one); a repeated id returns the first."""
        ...

    def read_artifact(self, artifact_id: uuid.UUID) -> Artifact:
        """Read an artifact by id. Raises ``NotFoundError``."""
        ...

    def read_latest_artifact(self, key: str) -> Artifact:
        """The newest version of an artifact key. Raises ``NotFoundError``."""
        ...

    def filter_artifacts(self, query: ArtifactFilter) -> Page[Artifact]:
        """List artifacts."""
        ...

    def update_artifact(self, artifact_id: uuid.UUID, update: ArtifactUpdate) -> Artifact:
        """Move a progress artifact forward (a lower value is ignored) or change a description."""
        ...

    def read_artifact_image(self, artifact_id: uuid.UUID) -> bytes:
        """The bytes of an image artifact kept in the blob store. Raises ``NotFoundError``."""
        ...

    def set_variable(self, request: VariableCreate, *, overwrite: bool = False) -> Variable:
        """Create a variable, or replace an existing one's value with ``overwrite``.

        Raises ``VariableExistsError`` when it exists and ``overwrite`` is false.
        """
        ...

    def read_variable(self, name: str) -> Variable:
        """Read a variable. Raises ``NotFoundError``."""
        ...

    def update_variable(self, name: str, update: VariableUpdate) -> Variable:
        """Change a variable's value and/or tags. Raises ``NotFoundError``."""
        ...

    def delete_variable(self, name: str) -> bool:
        """Delete a variable; return whether there was one."""
        ...

    def filter_variables(self, query: VariableFilter) -> Page[Variable]:
        """List variables by name."""
        ...

    # -- transaction records and locks ------------------------------------------------------------

    def read_record(self, key: str) -> TransactionRecord | None:
        """The record committed under ``key`` (``None``: none, or expired)."""
        ...

    def commit_record(
        self,
        key: str,
        data: dict[str, Any],
        *,
        expires_at: datetime | None = None,
        overwrite: bool = False,
        fencing_token: int | None = None,
    ) -> CommitResult:
        """Commit a record once (see ``Records.commit``). Raises ``LockLostError`` on a stale token."""
        ...

    def delete_record(self, key: str) -> bool:
        """Delete a record; return whether there was one."""
        ...

    def acquire_lock(self, key: str, holder: str, lease_s: float, *, wait_s: float | None = 0.0) -> Lease:
        """Take the lock on ``key``, waiting up to ``wait_s`` (``None``: as long as it takes)."""
        ...

    def renew_lock(self, lease: Lease) -> Lease:
        """Extend a lease. Raises ``LockLostError`` when another holder took over."""
        ...

    def release_lock(self, lease: Lease) -> None:
        """Let go of a lock. Raises ``LockLostError`` when another holder took over."""
        ...

    # -- deployments --------------------------------------------------------------------------------

    def create_deployment(self, request: DeploymentCreate) -> Deployment:
        """Create a deployment, or update the one of that flow and name with the fields set (an upsert)."""
        ...

    def read_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Read a deployment. Raises ``NotFoundError``."""
        ...

    def read_deployment_by_name(self, full_name: str) -> Deployment:
        """Read the deployment called ``<flow name>/<name>``. Raises ``NotFoundError``."""
        ...

    def filter_deployments(self, query: DeploymentFilter) -> Page[Deployment]:
        """List deployments by ``<flow name>/<name>``."""
        ...

    def update_deployment(self, deployment_id: uuid.UUID, update: DeploymentUpdate) -> Deployment:
        """Change the fields ``update`` sets. Raises ``NotFoundError``."""
        ...

    def pause_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Pause a deployment (its waiting scheduled runs are deleted). Raises ``NotFoundError``."""
        ...

    def resume_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Resume a paused deployment. Raises ``NotFoundError``."""
        ...

    def delete_deployment(self, deployment_id: uuid.UUID) -> bool:
        """Delete a deployment and its runs waiting to start; return whether there was one."""
        ...

    def create_flow_run_from_deployment(
        self, deployment_id: uuid.UUID, request: DeploymentFlowRunCreate | None = None
    ) -> FlowRun:
        """Make a SCHEDULED run of a deployment (idempotent by ``idempotency_key``).

        Raises:
            NotFoundError: no such deployment.
            InvalidValueError: the parameters do not match the deployment's schema.
        """
        ...

    # -- work pools, queues, workers, events -------------------------------------------------------

    def create_work_pool(self, request: WorkPoolRequest) -> WorkPool:
        """Create a work pool with its ``default`` queue. Raises ``WorkPoolExistsError``."""
        ...

    def read_work_pool(self, name: str) -> WorkPool:
        """Read a work pool, with its status. Raises ``NotFoundError``."""
        ...

    def filter_work_pools(self, query: WorkPoolFilter) -> Page[WorkPool]:
        """List work pools by name, each with its status."""
        ...

    def update_work_pool(self, name: str, update: WorkPoolUpdate) -> WorkPool:
        """Change a pool's description, concurrency limit or config. Raises ``NotFoundError``."""
        ...

    def delete_work_pool(self, name: str) -> bool:
        """Delete a pool with its queues and workers; return whether there was one."""
        ...

    def pause_work_pool(self, name: str) -> WorkPool:
        """Pause a pool (it hands out no runs). Raises ``NotFoundError``."""
        ...

    def resume_work_pool(self, name: str) -> WorkPool:
        """Resume a paused pool. Raises ``NotFoundError``."""
        ...

    def create_work_queue(self, pool: str, request: WorkQueueCreate) -> WorkQueue:
        """Create a queue in a pool. Raises ``NotFoundError``, ``WorkQueueExistsError``."""
        ...

    def read_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Read a queue, with its status. Raises ``NotFoundError``."""
        ...

    def read_work_queues(self, pool: str) -> list[WorkQueue]:
        """A pool's queues in the order they are served (priority 1 first). Raises ``NotFoundError``."""
        ...

    def update_work_queue(self, pool: str, name: str, update: WorkQueueUpdate) -> WorkQueue:
        """Change a queue's description, priority or concurrency limit. Raises ``NotFoundError``."""
        ...

    def delete_work_queue(self, pool: str, name: str) -> bool:
        """Delete a queue (not ``default``: ``InvalidValueError``); return whether there was one."""
        ...

    def pause_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Pause a queue (it hands out no runs). Raises ``NotFoundError``."""
        ...

    def resume_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Resume a paused queue. Raises ``NotFoundError``."""
        ...

    def send_worker_heartbeat(self, pool: str, name: str, *, queues: list[str] | None = None) -> Worker:
        """Register a worker, or keep it ONLINE; ``queues``: those it polls (all by default)."""
        ...

    def filter_workers(self, pool: str, query: WorkerFilter) -> Page[Worker]:
        """List a pool's workers, each with its status. Raises ``NotFoundError``."""
        ...

    def delete_worker(self, pool: str, name: str) -> bool:
        """Forget a worker that stopped for good; return whether there was one."""
        ...

    def get_scheduled_flow_runs(
        self,
        pool: str,
        *,
        work_queue_names: list[str] | None = None,
        scheduled_before: datetime | None = None,
        limit: int = 10,
    ) -> list[FlowRun]:
        """The SCHEDULED runs a pool should start next (see ``WorkPools.next_runs``)."""
        ...

    def emit_events(self, events: list[Event]) -> int:
        """Store events (idempotent by id); return how many were new."""
        ...

    def filter_events(self, query: EventFilter) -> Page[Event]:
        """List events newest first."""
        ...

    # -- automations ------------------------------------------------------------------------------

    def create_automation(self, request: AutomationCreate) -> Automation:
        """Create an automation. Raises ``InvalidValueError`` for a broken template."""
        ...

    def read_automation(self, automation_id: uuid.UUID) -> Automation:
        """Read an automation. Raises ``NotFoundError``."""
        ...

    def filter_automations(
        self, *, owner_resource: str | None = None, limit: int = 200, cursor: str | None = None
    ) -> Page[Automation]:
        """List automations (those ``owner_resource`` owns, when given), a page at a time."""
        ...

    def update_automation(self, automation_id: uuid.UUID, update: AutomationUpdate) -> Automation:
        """Change the fields ``update`` sets. Raises ``NotFoundError``."""
        ...

    def set_automation_enabled(self, automation_id: uuid.UUID, enabled: bool) -> Automation:
        """Resume (``True``) or pause (``False``) an automation. Raises ``NotFoundError``."""
        ...

    def delete_automation(self, automation_id: uuid.UUID) -> bool:
        """Delete an automation; return whether there was one."""
        ...

    def replace_automations_owned_by(
        self, resource_id: str, requests: list[AutomationCreate]
    ) -> list[Automation]:
        """Make the automations ``resource_id`` owns these (unchanged ones keep their ids)."""
        ...

    def delete_automations_owned_by(self, resource_id: str) -> int:
        """Delete the automations ``resource_id`` owns; return how many there were."""
        ...

    def read_automation_firings(self, automation_id: uuid.UUID, *, limit: int = 50) -> list[FiringRecord]:
        """An automation's firings with their actions' outcomes, newest first. Raises ``NotFoundError``."""
        ...

    # -- global concurrency limits ----------------------------------------------------------------

    def create_concurrency_limit(self, request: ConcurrencyLimitCreate) -> ConcurrencyLimit:
        """Create a concurrency limit. Raises ``ConcurrencyLimitExistsError``."""
        ...

    def read_concurrency_limit(self, name: str) -> ConcurrencyLimit:
        """Read a limit with its occupancy. Raises ``NotFoundError``."""
        ...

    def filter_concurrency_limits(self, query: ConcurrencyLimitFilter) -> Page[ConcurrencyLimit]:
        """List limits by name."""
        ...

    def update_concurrency_limit(self, name: str, update: ConcurrencyLimitUpdate) -> ConcurrencyLimit:
        """Change the settings ``update`` sets. Raises ``NotFoundError``."""
        ...

    def delete_concurrency_limit(self, name: str) -> bool:
        """Delete a limit; return whether there was one."""
        ...

    def acquire_concurrency_slots(self, request: SlotRequest) -> SlotAcquisition:
        """Take slots in every limit named, all or none, or be told to WAIT (never waits).

        Raises:
            NotFoundError: ``request.strict`` and a limit named does not exist.
            NotARateLimitError: rate-limit mode on a limit without slot decay.
        """
        ...

    def release_concurrency_slots(self, lease_id: uuid.UUID) -> bool:
        """Give back a lease's slots; return whether there was such a lease."""
        ...

    def renew_concurrency_lease(self, lease_id: uuid.UUID) -> ConcurrencyLease:
        """Extend a lease by its own length. Raises ``NotFoundError`` once it is lost."""
        ...


class DirectClient:
    """The control plane's services, called in this process.

    Args:
        plane: the services (over the store the settings name). A plane built without a blob
            store is given the one the settings name, opened when the first image artifact
            needs it.
    """

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        if not plane.has_blobs:
            plane.provide_blobs(_blobs_from_settings)

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

    def heartbeat_flow_run(self, run_id: uuid.UUID, lease_s: float) -> datetime:
        """Vouch for a running flow run for ``lease_s`` seconds; return when the lease ends."""
        return self.plane.leases.heartbeat(run_id, lease_s)

    def report_task_runs(self, documents: list[dict[str, Any]]) -> None:
        """Upsert task-run documents; log the ones refused."""
        outcomes = self.plane.task_runs.write_documents(documents)
        warn_rejected((o.id, o.reason) for o in outcomes if o.status == "rejected")

    def write_logs(self, lines: list[dict[str, Any]]) -> None:
        """Store log lines."""
        from overcast.core.models import LogLine

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

    def create_artifact(self, request: ArtifactRequest) -> Artifact:
        """Create an artifact (the next version of its key, if it has one); a repeated id returns the first."""
        return self.plane.artifacts.create(request)[0]

    def read_artifact(self, artifact_id: uuid.UUID) -> Artifact:
        """Read an artifact by id. Raises ``NotFoundError``."""
        return self.plane.artifacts.get(artifact_id)

    def read_latest_artifact(self, key: str) -> Artifact:
        """The newest version of an artifact key. Raises ``NotFoundError``."""
        return self.plane.artifacts.latest(key)

    def filter_artifacts(self, query: ArtifactFilter) -> Page[Artifact]:
        """List artifacts."""
        return self.plane.artifacts.filter(query)

    def update_artifact(self, artifact_id: uuid.UUID, update: ArtifactUpdate) -> Artifact:
        """Move a progress artifact forward (a lower value is ignored) or change a description."""
        return self.plane.artifacts.update(artifact_id, update)

    def read_artifact_image(self, artifact_id: uuid.UUID) -> bytes:
        """The bytes of an image artifact kept in the blob store. Raises ``NotFoundError``."""
        return self.plane.artifacts.image(artifact_id)[0]

    def set_variable(self, request: VariableCreate, *, overwrite: bool = False) -> Variable:
        """Create a variable, or replace an existing one's value with ``overwrite``."""
        return self.plane.variables.set(request, overwrite=overwrite)

    def read_variable(self, name: str) -> Variable:
        """Read a variable. Raises ``NotFoundError``."""
        return self.plane.variables.get(name)

    def update_variable(self, name: str, update: VariableUpdate) -> Variable:
        """Change a variable's value and/or tags. Raises ``NotFoundError``."""
        return self.plane.variables.update(name, update)

    def delete_variable(self, name: str) -> bool:
        """Delete a variable; return whether there was one."""
        return self.plane.variables.delete(name)

    def filter_variables(self, query: VariableFilter) -> Page[Variable]:
        """List variables by name."""
        return self.plane.variables.filter(query)

    def read_record(self, key: str) -> TransactionRecord | None:
        """The record committed under ``key`` (``None``: none, or expired)."""
        return self.plane.records.read(key)

    def commit_record(
        self,
        key: str,
        data: dict[str, Any],
        *,
        expires_at: datetime | None = None,
        overwrite: bool = False,
        fencing_token: int | None = None,
    ) -> CommitResult:
        """Commit a record once (see ``Records.commit``)."""
        return self.plane.records.commit(
            key, data, expires_at=expires_at, overwrite=overwrite, fencing_token=fencing_token
        )

    def delete_record(self, key: str) -> bool:
        """Delete a record; return whether there was one."""
        return self.plane.records.delete(key)

    def acquire_lock(self, key: str, holder: str, lease_s: float, *, wait_s: float | None = 0.0) -> Lease:
        """Take the lock on ``key``, waiting up to ``wait_s`` (``None``: as long as it takes)."""
        return self.plane.locks.acquire(key, holder, lease_s, wait_s=wait_s)

    def renew_lock(self, lease: Lease) -> Lease:
        """Extend a lease."""
        return self.plane.locks.renew(lease)

    def release_lock(self, lease: Lease) -> None:
        """Let go of a lock."""
        self.plane.locks.release(lease)

    # -- deployments --------------------------------------------------------------------------------

    def create_deployment(self, request: DeploymentCreate) -> Deployment:
        """Create a deployment, or update the one of that flow and name (an upsert)."""
        return self.plane.deployments.create(request)[0]

    def read_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Read a deployment. Raises ``NotFoundError``."""
        return self.plane.deployments.get(deployment_id)

    def read_deployment_by_name(self, full_name: str) -> Deployment:
        """Read the deployment called ``<flow name>/<name>``. Raises ``NotFoundError``."""
        return self.plane.deployments.get_by_name(full_name)

    def filter_deployments(self, query: DeploymentFilter) -> Page[Deployment]:
        """List deployments."""
        return self.plane.deployments.filter(query)

    def update_deployment(self, deployment_id: uuid.UUID, update: DeploymentUpdate) -> Deployment:
        """Change the fields ``update`` sets. Raises ``NotFoundError``."""
        return self.plane.deployments.update(deployment_id, update)

    def pause_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Pause a deployment. Raises ``NotFoundError``."""
        return self.plane.deployments.pause(deployment_id)

    def resume_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Resume a deployment. Raises ``NotFoundError``."""
        return self.plane.deployments.resume(deployment_id)

    def delete_deployment(self, deployment_id: uuid.UUID) -> bool:
        """Delete a deployment; return whether there was one."""
        return self.plane.deployments.delete(deployment_id)

    def create_flow_run_from_deployment(
        self, deployment_id: uuid.UUID, request: DeploymentFlowRunCreate | None = None
    ) -> FlowRun:
        """Make a SCHEDULED run of a deployment."""
        return self.plane.run_deployment(deployment_id, request)[0]

    # -- work pools, queues, workers, events -------------------------------------------------------

    def create_work_pool(self, request: WorkPoolRequest) -> WorkPool:
        """Create a work pool with its ``default`` queue. Raises ``WorkPoolExistsError``."""
        return self.plane.work_pools.create_pool(request)

    def read_work_pool(self, name: str) -> WorkPool:
        """Read a work pool, with its status. Raises ``NotFoundError``."""
        return self.plane.work_pools.get_pool(name)

    def filter_work_pools(self, query: WorkPoolFilter) -> Page[WorkPool]:
        """List work pools by name, each with its status."""
        return self.plane.work_pools.filter_pools(query)

    def update_work_pool(self, name: str, update: WorkPoolUpdate) -> WorkPool:
        """Change a pool's description, concurrency limit or config. Raises ``NotFoundError``."""
        return self.plane.work_pools.update_pool(name, update)

    def delete_work_pool(self, name: str) -> bool:
        """Delete a pool with its queues and workers; return whether there was one."""
        return self.plane.work_pools.delete_pool(name)

    def pause_work_pool(self, name: str) -> WorkPool:
        """Pause a pool (it hands out no runs). Raises ``NotFoundError``."""
        return self.plane.work_pools.pause_pool(name)

    def resume_work_pool(self, name: str) -> WorkPool:
        """Resume a paused pool. Raises ``NotFoundError``."""
        return self.plane.work_pools.resume_pool(name)

    def create_work_queue(self, pool: str, request: WorkQueueCreate) -> WorkQueue:
        """Create a queue in a pool. Raises ``NotFoundError``, ``WorkQueueExistsError``."""
        return self.plane.work_pools.create_queue(pool, request)

    def read_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Read a queue, with its status. Raises ``NotFoundError``."""
        return self.plane.work_pools.get_queue(pool, name)

    def read_work_queues(self, pool: str) -> list[WorkQueue]:
        """A pool's queues in the order they are served (priority 1 first). Raises ``NotFoundError``."""
        return self.plane.work_pools.list_queues(pool)

    def update_work_queue(self, pool: str, name: str, update: WorkQueueUpdate) -> WorkQueue:
        """Change a queue's description, priority or concurrency limit. Raises ``NotFoundError``."""
        return self.plane.work_pools.update_queue(pool, name, update)

    def delete_work_queue(self, pool: str, name: str) -> bool:
        """Delete a queue (not ``default``: ``InvalidValueError``); return whether there was one."""
        return self.plane.work_pools.delete_queue(pool, name)

    def pause_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Pause a queue (it hands out no runs). Raises ``NotFoundError``."""
        return self.plane.work_pools.pause_queue(pool, name)

    def resume_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Resume a paused queue. Raises ``NotFoundError``."""
        return self.plane.work_pools.resume_queue(pool, name)

    def send_worker_heartbeat(self, pool: str, name: str, *, queues: list[str] | None = None) -> Worker:
        """Register a worker, or keep it ONLINE; ``queues``: those it polls (all by default)."""
        return self.plane.work_pools.heartbeat(pool, name, queues=queues)

    def filter_workers(self, pool: str, query: WorkerFilter) -> Page[Worker]:
        """List a pool's workers, each with its status. Raises ``NotFoundError``."""
        return self.plane.work_pools.filter_workers(pool, query)

    def delete_worker(self, pool: str, name: str) -> bool:
        """Forget a worker that stopped for good; return whether there was one."""
        return self.plane.work_pools.delete_worker(pool, name)

    def get_scheduled_flow_runs(
        self,
        pool: str,
        *,
        work_queue_names: list[str] | None = None,
        scheduled_before: datetime | None = None,
        limit: int = 10,
    ) -> list[FlowRun]:
        """The SCHEDULED runs a pool should start next (see ``WorkPools.next_runs``)."""
        return self.plane.work_pools.next_runs(pool, work_queue_names, before=scheduled_before, limit=limit)

    def emit_events(self, events: list[Event]) -> int:
        """Store events (idempotent by id); return how many were new."""
        return len(self.plane.events.emit(events))

    def filter_events(self, query: EventFilter) -> Page[Event]:
        """List events newest first."""
        return self.plane.events.filter(query)

    # -- automations ------------------------------------------------------------------------------

    def create_automation(self, request: AutomationCreate) -> Automation:
        """Create an automation. Raises ``InvalidValueError`` for a broken template."""
        from overcast.core.automations import validate_action_templates

        validate_action_templates(request)
        return self.plane.automations.create(request)

    def read_automation(self, automation_id: uuid.UUID) -> Automation:
        """Read an automation. Raises ``NotFoundError``."""
        return self.plane.automations.get(automation_id)

    def filter_automations(
        self, *, owner_resource: str | None = None, limit: int = 200, cursor: str | None = None
    ) -> Page[Automation]:
        """List automations (those ``owner_resource`` owns, when given), a page at a time."""
        return self.plane.automations.list(limit=limit, cursor=cursor, owner_resource=owner_resource)

    def update_automation(self, automation_id: uuid.UUID, update: AutomationUpdate) -> Automation:
        """Change the fields ``update`` sets. Raises ``NotFoundError``."""
        from overcast.core.automations import validate_action_templates

        validate_action_templates(update)
        return self.plane.automations.update(automation_id, update)

    def set_automation_enabled(self, automation_id: uuid.UUID, enabled: bool) -> Automation:
        """Resume (``True``) or pause (``False``) an automation. Raises ``NotFoundError``."""
        return self.plane.automations.set_enabled(automation_id, enabled)

    def delete_automation(self, automation_id: uuid.UUID) -> bool:
        """Delete an automation; return whether there was one."""
        from overcast.core.errors import NotFoundError

        try:
            self.plane.automations.delete(automation_id)
        except NotFoundError:
            return False
        return True

    def replace_automations_owned_by(
        self, resource_id: str, requests: list[AutomationCreate]
    ) -> list[Automation]:
        """Make the automations ``resource_id`` owns these (unchanged ones keep their ids)."""
        from overcast.core.automations import validate_action_templates

        for request in requests:
            validate_action_templates(request)
        return self.plane.automations.replace_owned_by(resource_id, requests)

    def delete_automations_owned_by(self, resource_id: str) -> int:
        """Delete the automations ``resource_id`` owns; return how many there were."""
        return self.plane.automations.delete_owned_by(resource_id)

    def read_automation_firings(self, automation_id: uuid.UUID, *, limit: int = 50) -> list[FiringRecord]:
        """An automation's firings with their actions' outcomes, newest first. Raises ``NotFoundError``."""
        return self.plane.automations.firings(automation_id, limit=limit)

    # -- global concurrency limits ----------------------------------------------------------------

    def create_concurrency_limit(self, request: ConcurrencyLimitCreate) -> ConcurrencyLimit:
        """Create a concurrency limit. Raises ``ConcurrencyLimitExistsError``."""
        return self.plane.concurrency_limits.create(request)

    def read_concurrency_limit(self, name: str) -> ConcurrencyLimit:
        """Read a limit with its occupancy. Raises ``NotFoundError``."""
        return self.plane.concurrency_limits.get(name)

    def filter_concurrency_limits(self, query: ConcurrencyLimitFilter) -> Page[ConcurrencyLimit]:
        """List limits by name."""
        return self.plane.concurrency_limits.filter(query)

    def update_concurrency_limit(self, name: str, update: ConcurrencyLimitUpdate) -> ConcurrencyLimit:
        """Change the settings ``update`` sets. Raises ``NotFoundError``."""
        return self.plane.concurrency_limits.update(name, update)

    def delete_concurrency_limit(self, name: str) -> bool:
        """Delete a limit; return whether there was one."""
        return self.plane.concurrency_limits.delete(name)

    def acquire_concurrency_slots(self, request: SlotRequest) -> SlotAcquisition:
        """Take slots in every limit named, all or none, or be told to WAIT (never waits)."""
        return self.plane.concurrency_limits.acquire(request)

    def release_concurrency_slots(self, lease_id: uuid.UUID) -> bool:
        """Give back a lease's slots; return whether there was such a lease."""
        return self.plane.concurrency_limits.release(lease_id)

    def renew_concurrency_lease(self, lease_id: uuid.UUID) -> ConcurrencyLease:
        """Extend a lease by its own length. Raises ``NotFoundError`` once it is lost."""
        return self.plane.concurrency_limits.renew(lease_id)


def _blobs_from_settings() -> BlobStore:
    from overcast.adapters.factory import open_blobs
    from overcast.core.settings import Settings

    return open_blobs(Settings().blobs_url)
