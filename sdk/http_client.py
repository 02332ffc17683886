"""``HttpClient``: the engine's client for a control plane behind its HTTP API.

Chosen when ``OVERCAST_API_URL`` is set (``OVERCAST_API_KEY`` for the bearer token). Answers
are mapped back to the same errors the in-process client raises, so the engine cannot tell
the two apart; transient failures (connection errors, 502/503/504, 429) are retried with the
same capped, jittered backoff the adapters use.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx2

from overcast.client import warn_rejected
from overcast.core.automations import Automation, AutomationCreate, AutomationUpdate, FiringRecord
from overcast.core.concurrency import (
    ConcurrencyLease,
    ConcurrencyLimit,
    ConcurrencyLimitCreate,
    ConcurrencyLimitExistsError,
    ConcurrencyLimitFilter,
    ConcurrencyLimitUpdate,
    NotARateLimitError,
    SlotAcquisition,
    SlotRequest,
    limit_name,
)
from overcast.core.deployments import (
    Deployment,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    DeploymentUpdate,
    split_full_name,
)
from overcast.core.errors import (
    BackendError,
    ConditionFailedError,
    ConfigurationError,
    InvalidValueError,
    LockLostError,
    LockTimeoutError,
    NotFoundError,
)
from overcast.core.events import Event, EventFilter
from overcast.core.models import Artifact, FlowRun, LogLine, TaskRun, Variable
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
from overcast.core.services.locks import Lease
from overcast.core.services.records import CommitResult, TransactionRecord
from overcast.core.services.variables import VariableExistsError
from overcast.core.services.work_pools import WorkPoolExistsError, WorkQueueExistsError
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

TASK_RUN_BATCH = 500  # the API's limit per request
LOG_BATCH = 1000
EVENT_BATCH = 500
RETRYABLE = frozenset({429, 502, 503, 504})
SET_ATTEMPTS = 25  # create-or-update rounds of Variable.set(overwrite=True) racing deletes
LOCK_POLL_S = 0.1  # the longest pause between tries for a held lock (jittered)


class HttpClient:
    """A ``Client`` over the control plane's HTTP API.

    Args:
        api_url: the API's base URL (``http://127.0.0.1:4200``; ``/api`` is added).
        api_key: the bearer token, if the API requires one.
        http: an ``httpx2.Client`` to use instead of building one (tests inject one).
        attempts: tries per request for transient failures.
    """

    def __init__(
        self, api_url: str, *, api_key: str = "", http: httpx2.Client | None = None, attempts: int = 5
    ) -> None:
        base = api_url.rstrip("/")
        self._base = base if base.endswith("/api") else f"{base}/api"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx2.Client(headers=headers, timeout=httpx2.Timeout(30.0, connect=5.0))
        self._attempts = attempts

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- the Client interface -------------------------------------------------------------------------

    def create_flow_run(self, request: FlowRunCreate) -> FlowRun:
        """Create a flow run (idempotent by ``idempotency_key``)."""
        return FlowRun.model_validate(self._call("POST", "/flow_runs", request.model_dump(mode="json")))

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        """Read a flow run. Raises ``NotFoundError``."""
        return FlowRun.model_validate(self._call("GET", f"/flow_runs/{run_id}"))

    def set_flow_run_state(
        self, run_id: uuid.UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose a state for a flow run and return the decision."""
        body = {"state": state.model_dump(mode="json"), "force": force}
        return OrchestrationResult.model_validate(self._call("POST", f"/flow_runs/{run_id}/set_state", body))

    def heartbeat_flow_run(self, run_id: uuid.UUID, lease_s: float) -> datetime:
        """Vouch for a running flow run for ``lease_s`` seconds; return when the lease ends."""
        answer = self._call("POST", f"/flow_runs/{run_id}/heartbeat", {"lease_s": lease_s})
        return datetime.fromisoformat(answer["expires_at"])

    def report_task_runs(self, documents: list[dict[str, Any]]) -> None:
        """Upsert task-run documents, in batches of the API's size; log the ones refused."""
        for start in range(0, len(documents), TASK_RUN_BATCH):
            outcomes = self._call(
                "POST", "/task_runs/batch", {"updates": documents[start : start + TASK_RUN_BATCH]}
            )
            warn_rejected((o["id"], o.get("reason")) for o in outcomes if o["status"] == "rejected")

    def write_logs(self, lines: list[dict[str, Any]]) -> None:
        """Store log lines, in batches of the API's size."""
        for start in range(0, len(lines), LOG_BATCH):
            self._call("POST", "/logs", {"lines": lines[start : start + LOG_BATCH]})

    def filter_flow_runs(self, query: FlowRunFilter) -> Page[FlowRun]:
        """List flow runs."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[FlowRun].model_validate(self._call("POST", "/flow_runs/filter", body))

    def read_task_run(self, task_run_id: uuid.UUID) -> TaskRun:
        """Read a task run. Raises ``NotFoundError``."""
        return TaskRun.model_validate(self._call("GET", f"/task_runs/{task_run_id}"))

    def filter_task_runs(self, query: TaskRunFilter) -> Page[TaskRun]:
        """List task runs of a flow run."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[TaskRun].model_validate(self._call("POST", "/task_runs/filter", body))

    def read_flow_run_states(self, run_id: uuid.UUID) -> list[State]:
        """A flow run's state history."""
        return [State.model_validate(s) for s in self._call("GET", f"/flow_runs/{run_id}/states")]

    def read_logs(self, run_id: uuid.UUID, *, limit: int = 200, cursor: str | None = None) -> Page[LogLine]:
        """A run's log lines, oldest first."""
        path = f"/logs/{run_id}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        return Page[LogLine].model_validate(self._call("GET", path))

    def create_artifact(self, request: ArtifactRequest) -> Artifact:
        """Create an artifact (the next version of its key, if it has one); a repeated id returns the first."""
        body = request.model_dump(mode="json", exclude_none=True)
        return Artifact.model_validate(self._call("POST", "/artifacts", body))

    def read_artifact(self, artifact_id: uuid.UUID) -> Artifact:
        """Read an artifact by id. Raises ``NotFoundError``."""
        return Artifact.model_validate(self._call("GET", f"/artifacts/{artifact_id}"))

    def read_latest_artifact(self, key: str) -> Artifact:
        """The newest version of an artifact key. Raises ``NotFoundError``."""
        return Artifact.model_validate(self._call("GET", f"/artifacts/{_segment(key)}/latest"))

    def filter_artifacts(self, query: ArtifactFilter) -> Page[Artifact]:
        """List artifacts."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[Artifact].model_validate(self._call("POST", "/artifacts/filter", body))

    def update_artifact(self, artifact_id: uuid.UUID, update: ArtifactUpdate) -> Artifact:
        """Move a progress artifact forward (a lower value is ignored) or change a description."""
        body = update.model_dump(mode="json", exclude_none=True)
        return Artifact.model_validate(self._call("PATCH", f"/artifacts/{artifact_id}", body))

    def read_artifact_image(self, artifact_id: uuid.UUID) -> bytes:
        """The bytes of an image artifact kept in the blob store. Raises ``NotFoundError``."""
        content: bytes = self._call("GET", f"/artifacts/{artifact_id}/image", raw=True)
        return content

    def set_variable(self, request: VariableCreate, *, overwrite: bool = False) -> Variable:
        """Create a variable, or replace an existing one's value with ``overwrite``.

        Raises:
            VariableExistsError: it exists and ``overwrite`` is false.
        """
        changes: dict[str, Any] = {"value": request.value}
        if "tags" in request.model_fields_set:
            changes["tags"] = request.tags
        for _ in range(SET_ATTEMPTS):
            try:
                return Variable.model_validate(
                    self._call("POST", "/variables", request.model_dump(mode="json"))
                )
            except ConditionFailedError:
                if not overwrite:
                    raise VariableExistsError(request.name) from None
            try:
                return Variable.model_validate(
                    self._call("PATCH", f"/variables/name/{_segment(request.name)}", changes)
                )
            except NotFoundError:
                continue  # deleted between the two: create it again
        raise ConditionFailedError("-", "-", f"variable {request.name!r} kept changing; try again")

    def read_variable(self, name: str) -> Variable:
        """Read a variable. Raises ``NotFoundError``."""
        return Variable.model_validate(self._call("GET", f"/variables/name/{_segment(name)}"))

    def update_variable(self, name: str, update: VariableUpdate) -> Variable:
        """Change a variable's value and/or tags. Raises ``NotFoundError``."""
        body = update.model_dump(mode="json", exclude_unset=True)  # a value of null is a value
        return Variable.model_validate(self._call("PATCH", f"/variables/name/{_segment(name)}", body))

    def delete_variable(self, name: str) -> bool:
        """Delete a variable; return whether there was one."""
        try:
            self._call("DELETE", f"/variables/name/{_segment(name)}")
        except NotFoundError:
            return False
        return True

    def filter_variables(self, query: VariableFilter) -> Page[Variable]:
        """List variables by name."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[Variable].model_validate(self._call("POST", "/variables/filter", body))

    # -- transaction records and locks --------------------------------------------------------------
    # Keys may hold any character, so they travel in the query string or the body, never the path.

    def read_record(self, key: str) -> TransactionRecord | None:
        """The record committed under ``key`` (``None``: none, or expired)."""
        try:
            return TransactionRecord.model_validate(self._call("GET", f"/records?key={_segment(key)}"))
        except NotFoundError:
            return None

    def commit_record(
        self,
        key: str,
        data: dict[str, Any],
        *,
        expires_at: datetime | None = None,
        overwrite: bool = False,
        fencing_token: int | None = None,
    ) -> CommitResult:
        """Commit a record once. Raises ``LockLostError`` when ``fencing_token`` is stale."""
        body = {
            "data": data,
            "expires_at": expires_at.isoformat() if expires_at is not None else None,
            "overwrite": overwrite,
            "fencing_token": fencing_token,
        }
        try:
            return CommitResult.model_validate(self._call("PUT", f"/records?key={_segment(key)}", body))
        except ConditionFailedError as exc:
            raise LockLostError(key, None, fencing_token or 0, str(exc)) from None

    def delete_record(self, key: str) -> bool:
        """Delete a record; return whether there was one."""
        return bool(self._call("DELETE", f"/records?key={_segment(key)}")["deleted"])

    def acquire_lock(self, key: str, holder: str, lease_s: float, *, wait_s: float | None = 0.0) -> Lease:
        """Take the lock on ``key``, polling up to ``wait_s`` (``None``: as long as it takes).

        The API never waits (a function would be billed for it, and gateways cut requests off):
        a held lock answers 409 at once, and this client polls with jitter.

        Raises:
            LockTimeoutError: another holder kept the lock for the whole wait.
        """
        start = time.monotonic()
        body = {"key": key, "holder": holder, "lease_s": lease_s}
        while True:
            try:
                return Lease.model_validate(self._call("POST", "/locks/acquire", body))
            except ConditionFailedError:
                waited = time.monotonic() - start
                if wait_s is not None and waited >= wait_s:
                    current = self._current_lock(key)
                    raise LockTimeoutError(
                        key,
                        holder,
                        current.holder if current else "?",
                        current.expires_at.timestamp() if current else 0.0,
                        waited,
                    ) from None
                pause = LOCK_POLL_S * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                time.sleep(pause if wait_s is None else max(0.0, min(pause, wait_s - waited)))

    def renew_lock(self, lease: Lease) -> Lease:
        """Extend a lease. Raises ``LockLostError`` when another holder took over."""
        return Lease.model_validate(self._lease_call("/locks/renew", lease))

    def release_lock(self, lease: Lease) -> None:
        """Let go of a lock. Raises ``LockLostError`` when another holder took over."""
        self._lease_call("/locks/release", lease)

    def _lease_call(self, path: str, lease: Lease) -> Any:
        try:
            return self._call("POST", path, lease.model_dump(mode="json"))
        except ConditionFailedError as exc:
            raise LockLostError(lease.key, lease.holder, lease.token, str(exc)) from None

    def _current_lock(self, key: str) -> Lease | None:
        try:
            return Lease.model_validate(self._call("GET", f"/locks?key={_segment(key)}"))
        except NotFoundError:
            return None

    # -- deployments --------------------------------------------------------------------------------

    def create_deployment(self, request: DeploymentCreate) -> Deployment:
        """Create a deployment, or update the one of that flow and name with the fields set (an upsert)."""
        body = request.model_dump(mode="json", exclude_unset=True)  # an upsert changes what is set
        return Deployment.model_validate(self._call("POST", "/deployments", body))

    def read_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Read a deployment. Raises ``NotFoundError``."""
        return Deployment.model_validate(self._call("GET", f"/deployments/{deployment_id}"))

    def read_deployment_by_name(self, full_name: str) -> Deployment:
        """Read the deployment called ``<flow name>/<name>``. Raises ``NotFoundError``."""
        flow_name, name = split_full_name(full_name)
        path = f"/deployments/name/{_segment(flow_name)}/{_segment(name)}"
        return Deployment.model_validate(self._call("GET", path))

    def filter_deployments(self, query: DeploymentFilter) -> Page[Deployment]:
        """List deployments."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[Deployment].model_validate(self._call("POST", "/deployments/filter", body))

    def update_deployment(self, deployment_id: uuid.UUID, update: DeploymentUpdate) -> Deployment:
        """Change the fields ``update`` sets. Raises ``NotFoundError``."""
        body = update.model_dump(mode="json", exclude_unset=True)  # null clears a field
        return Deployment.model_validate(self._call("PATCH", f"/deployments/{deployment_id}", body))

    def pause_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Pause a deployment. Raises ``NotFoundError``."""
        return Deployment.model_validate(self._call("POST", f"/deployments/{deployment_id}/pause"))

    def resume_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        """Resume a deployment. Raises ``NotFoundError``."""
        return Deployment.model_validate(self._call("POST", f"/deployments/{deployment_id}/resume"))

    def delete_deployment(self, deployment_id: uuid.UUID) -> bool:
        """Delete a deployment; return whether there was one."""
        try:
            self._call("DELETE", f"/deployments/{deployment_id}")
        except NotFoundError:
            return False
        return True

    def create_flow_run_from_deployment(
        self, deployment_id: uuid.UUID, request: DeploymentFlowRunCreate | None = None
    ) -> FlowRun:
        """Make a SCHEDULED run of a deployment. Raises ``InvalidValueError`` for bad parameters."""
        body = request.model_dump(mode="json", exclude_unset=True) if request is not None else None
        return FlowRun.model_validate(
            self._call("POST", f"/deployments/{deployment_id}/create_flow_run", body)
        )

    # -- work pools, queues, workers, events ---------------------------------------------------------
    # Names are checked by the API (lowercase letters, digits, _ and -), and quoted into paths.

    def create_work_pool(self, request: WorkPoolRequest) -> WorkPool:
        """Create a work pool with its ``default`` queue. Raises ``WorkPoolExistsError``."""
        try:
            return WorkPool.model_validate(self._call("POST", "/work_pools", request.model_dump(mode="json")))
        except ConditionFailedError:
            raise WorkPoolExistsError(request.name) from None

    def read_work_pool(self, name: str) -> WorkPool:
        """Read a work pool, with its status. Raises ``NotFoundError``."""
        return WorkPool.model_validate(self._call("GET", _pool(name)))

    def filter_work_pools(self, query: WorkPoolFilter) -> Page[WorkPool]:
        """List work pools by name, each with its status."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[WorkPool].model_validate(self._call("POST", "/work_pools/filter", body))

    def update_work_pool(self, name: str, update: WorkPoolUpdate) -> WorkPool:
        """Change a pool's description, concurrency limit or config. Raises ``NotFoundError``."""
        body = update.model_dump(mode="json", exclude_unset=True)  # null clears a limit or the config
        return WorkPool.model_validate(self._call("PATCH", _pool(name), body))

    def delete_work_pool(self, name: str) -> bool:
        """Delete a pool with its queues and workers; return whether there was one."""
        return self._delete(_pool(name))

    def pause_work_pool(self, name: str) -> WorkPool:
        """Pause a pool (it hands out no runs). Raises ``NotFoundError``."""
        return WorkPool.model_validate(self._call("POST", f"{_pool(name)}/pause"))

    def resume_work_pool(self, name: str) -> WorkPool:
        """Resume a paused pool. Raises ``NotFoundError``."""
        return WorkPool.model_validate(self._call("POST", f"{_pool(name)}/resume"))

    def create_work_queue(self, pool: str, request: WorkQueueCreate) -> WorkQueue:
        """Create a queue in a pool. Raises ``NotFoundError``, ``WorkQueueExistsError``."""
        body = request.model_dump(mode="json", exclude_none=True)
        try:
            return WorkQueue.model_validate(self._call("POST", f"{_pool(pool)}/queues", body))
        except ConditionFailedError:
            raise WorkQueueExistsError(pool, request.name) from None

    def read_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Read a queue, with its status. Raises ``NotFoundError``."""
        return WorkQueue.model_validate(self._call("GET", _queue(pool, name)))

    def read_work_queues(self, pool: str) -> list[WorkQueue]:
        """A pool's queues in the order they are served (priority 1 first). Raises ``NotFoundError``."""
        return [WorkQueue.model_validate(q) for q in self._call("GET", f"{_pool(pool)}/queues")]

    def update_work_queue(self, pool: str, name: str, update: WorkQueueUpdate) -> WorkQueue:
        """Change a queue's description, priority or concurrency limit. Raises ``NotFoundError``."""
        body = update.model_dump(mode="json", exclude_unset=True)
        return WorkQueue.model_validate(self._call("PATCH", _queue(pool, name), body))

    def delete_work_queue(self, pool: str, name: str) -> bool:
        """Delete a queue (not ``default``: ``InvalidValueError``); return whether there was one."""
        return self._delete(_queue(pool, name))

    def pause_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Pause a queue (it hands out no runs). Raises ``NotFoundError``."""
        return WorkQueue.model_validate(self._call("POST", f"{_queue(pool, name)}/pause"))

    def resume_work_queue(self, pool: str, name: str) -> WorkQueue:
        """Resume a paused queue. Raises ``NotFoundError``."""
        return WorkQueue.model_validate(self._call("POST", f"{_queue(pool, name)}/resume"))

    def send_worker_heartbeat(self, pool: str, name: str, *, queues: list[str] | None = None) -> Worker:
        """Register a worker, or keep it ONLINE; ``queues``: those it polls (all by default)."""
        body = {"name": name, "queues": queues or []}
        return Worker.model_validate(self._call("POST", f"{_pool(pool)}/workers/heartbeat", body))

    def filter_workers(self, pool: str, query: WorkerFilter) -> Page[Worker]:
        """List a pool's workers, each with its status. Raises ``NotFoundError``."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[Worker].model_validate(self._call("POST", f"{_pool(pool)}/workers/filter", body))

    def delete_worker(self, pool: str, name: str) -> bool:
        """Forget a worker that stopped for good; return whether there was one."""
        return self._delete(f"{_pool(pool)}/workers/{_segment(name)}")

    def get_scheduled_flow_runs(
        self,
        pool: str,
        *,
        work_queue_names: list[str] | None = None,
        scheduled_before: datetime | None = None,
        limit: int = 10,
    ) -> list[FlowRun]:
        """The SCHEDULED runs a pool should start next (see ``WorkPools.next_runs``)."""
        body: dict[str, Any] = {"limit": limit}
        if work_queue_names:
            body["work_queue_names"] = work_queue_names
        if scheduled_before is not None:
            body["scheduled_before"] = scheduled_before.isoformat()
        runs = self._call("POST", f"{_pool(pool)}/get_scheduled_flow_runs", body)
        return [FlowRun.model_validate(run) for run in runs]

    def emit_events(self, events: list[Event]) -> int:
        """Store events (idempotent by id), in batches of the API's size; return how many were new."""
        stored = 0
        for start in range(0, len(events), EVENT_BATCH):
            batch = [
                e.model_dump(mode="json", exclude={"received"}) for e in events[start : start + EVENT_BATCH]
            ]
            stored += int(self._call("POST", "/events", {"events": batch})["stored"])
        return stored

    def filter_events(self, query: EventFilter) -> Page[Event]:
        """List events newest first."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[Event].model_validate(self._call("POST", "/events/filter", body))

    # -- automations ------------------------------------------------------------------------------

    def create_automation(self, request: AutomationCreate) -> Automation:
        """Create an automation. Raises ``InvalidValueError`` for a broken template."""
        return Automation.model_validate(self._call("POST", "/automations", request.model_dump(mode="json")))

    def read_automation(self, automation_id: uuid.UUID) -> Automation:
        """Read an automation. Raises ``NotFoundError``."""
        return Automation.model_validate(self._call("GET", f"/automations/{automation_id}"))

    def filter_automations(
        self, *, owner_resource: str | None = None, limit: int = 200, cursor: str | None = None
    ) -> Page[Automation]:
        """List automations (those ``owner_resource`` owns, when given), a page at a time."""
        body: dict[str, Any] = {"limit": limit}
        if owner_resource is not None:
            body["owner_resource"] = owner_resource
        if cursor is not None:
            body["cursor"] = cursor
        return Page[Automation].model_validate(self._call("POST", "/automations/filter", body))

    def update_automation(self, automation_id: uuid.UUID, update: AutomationUpdate) -> Automation:
        """Change the fields ``update`` sets. Raises ``NotFoundError``."""
        body = update.model_dump(mode="json", exclude_unset=True)
        return Automation.model_validate(self._call("PATCH", f"/automations/{automation_id}", body))

    def set_automation_enabled(self, automation_id: uuid.UUID, enabled: bool) -> Automation:
        """Resume (``True``) or pause (``False``) an automation. Raises ``NotFoundError``."""
        verb = "resume" if enabled else "pause"
        return Automation.model_validate(self._call("POST", f"/automations/{automation_id}/{verb}"))

    def delete_automation(self, automation_id: uuid.UUID) -> bool:
        """Delete an automation; return whether there was one."""
        return self._delete(f"/automations/{automation_id}")

    def replace_automations_owned_by(
        self, resource_id: str, requests: list[AutomationCreate]
    ) -> list[Automation]:
        """Make the automations ``resource_id`` owns these (unchanged ones keep their ids)."""
        body = [r.model_dump(mode="json") for r in requests]
        answer = self._call("PUT", f"/automations/owned-by/{_segment(resource_id)}", body)
        return [Automation.model_validate(a) for a in answer]

    def delete_automations_owned_by(self, resource_id: str) -> int:
        """Delete the automations ``resource_id`` owns; return how many there were."""
        return int(self._call("DELETE", f"/automations/owned-by/{_segment(resource_id)}")["deleted"])

    def read_automation_firings(self, automation_id: uuid.UUID, *, limit: int = 50) -> list[FiringRecord]:
        """An automation's firings with their actions' outcomes, newest first. Raises ``NotFoundError``."""
        answer = self._call("GET", f"/automations/{automation_id}/firings?limit={int(limit)}")
        return [FiringRecord.model_validate(f) for f in answer]

    # -- global concurrency limits ----------------------------------------------------------------
    # Limit names are checked by the API (letters, digits, _ - : and .), and quoted into paths.

    def create_concurrency_limit(self, request: ConcurrencyLimitCreate) -> ConcurrencyLimit:
        """Create a concurrency limit. Raises ``ConcurrencyLimitExistsError``."""
        try:
            answer = self._call("POST", "/concurrency_limits", request.model_dump(mode="json"))
        except ConditionFailedError:
            raise ConcurrencyLimitExistsError(request.name) from None
        return ConcurrencyLimit.model_validate(answer)

    def read_concurrency_limit(self, name: str) -> ConcurrencyLimit:
        """Read a limit with its occupancy. Raises ``NotFoundError``."""
        return ConcurrencyLimit.model_validate(self._call("GET", _limit(name)))

    def filter_concurrency_limits(self, query: ConcurrencyLimitFilter) -> Page[ConcurrencyLimit]:
        """List limits by name."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[ConcurrencyLimit].model_validate(self._call("POST", "/concurrency_limits/filter", body))

    def update_concurrency_limit(self, name: str, update: ConcurrencyLimitUpdate) -> ConcurrencyLimit:
        """Change the settings ``update`` sets. Raises ``NotFoundError``."""
        body = update.model_dump(mode="json", exclude_none=True)
        return ConcurrencyLimit.model_validate(self._call("PATCH", _limit(name), body))

    def delete_concurrency_limit(self, name: str) -> bool:
        """Delete a limit; return whether there was one."""
        return self._delete(_limit(name))

    def acquire_concurrency_slots(self, request: SlotRequest) -> SlotAcquisition:
        """Take slots in every limit named, all or none, or be told to WAIT (never waits).

        Raises:
            NotFoundError: ``request.strict`` and a limit named does not exist.
            NotARateLimitError: rate-limit mode on a limit without slot decay.
        """
        body = request.model_dump(mode="json", exclude_none=True)
        try:
            answer = self._call("POST", "/concurrency_limits/increment", body)
        except NotFoundError as exc:
            raise NotFoundError("concurrency limit", ", ".join(request.names), str(exc)) from None
        except ConditionFailedError as exc:
            raise NotARateLimitError(list(request.names), str(exc)) from None
        return SlotAcquisition.model_validate(answer)

    def release_concurrency_slots(self, lease_id: uuid.UUID) -> bool:
        """Give back a lease's slots; return whether there was such a lease."""
        answer = self._call("POST", "/concurrency_limits/decrement", {"lease_id": str(lease_id)})
        return bool(answer["released"])

    def renew_concurrency_lease(self, lease_id: uuid.UUID) -> ConcurrencyLease:
        """Extend a lease by its own length. Raises ``NotFoundError`` once it is lost."""
        try:
            answer = self._call("POST", f"/concurrency_limits/leases/{lease_id}/renew")
        except NotFoundError as exc:
            raise NotFoundError("concurrency lease", str(lease_id), str(exc)) from None
        return ConcurrencyLease.model_validate(answer)

    def _delete(self, path: str) -> bool:
        try:
            self._call("DELETE", path)
        except NotFoundError:
            return False
        return True

    # -- transport ---------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        url = self._base + path
        for attempt in range(self._attempts):
            try:
                response = self._http.request(method, url, json=body)
            except httpx2.TransportError as exc:
                if attempt == self._attempts - 1:
                    raise BackendError(f"the Overcast API at {self._base} is unreachable: {exc}") from exc
            else:
                if response.status_code not in RETRYABLE or attempt == self._attempts - 1:
                    return _answer(response, raw=raw)
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))  # noqa: S311 - jitter, not crypto
        raise AssertionError("unreachable")  # pragma: no cover


def _pool(name: str) -> str:
    return f"/work_pools/{_segment(name)}"


def _queue(pool: str, name: str) -> str:
    return f"/work_pools/{_segment(pool)}/queues/{_segment(name)}"


def _limit(name: str) -> str:
    return f"/concurrency_limits/{_segment(limit_name(name))}"


def _segment(text: str) -> str:
    """``text`` as one path segment or query value: a name holding ``/``, ``?`` or ``&`` cannot
    reach another route or parameter."""
    return quote(text, safe="")


def _answer(response: httpx2.Response, *, raw: bool = False) -> Any:
    status = response.status_code
    if status < 400:
        if raw:
            return response.content
        return response.json() if response.content else None
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # validation errors: one line per problem
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail)
    message = f"{response.request.method} {response.request.url.path} -> {status}: {detail}"
    if status == 404:
        raise NotFoundError("resource", str(response.request.url.path), message)
    if status == 409:
        raise ConditionFailedError("-", "-", message)
    if status == 422:
        raise InvalidValueError(message)
    if status in (401, 403):
        raise ConfigurationError(f"{message} (set OVERCAST_API_KEY to the API's key)")
    raise BackendError(message)
