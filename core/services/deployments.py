"""Deployments: create (an upsert by flow and name), read, list, update, pause, resume, delete, run.

A deployment's item is written in one transaction with its concurrency slots item (when it has
a limit) and its due item (while it can be scheduled, see ``scheduler``), guarded by their
versions, so a deployment, its limit and whether the scheduler looks at it never disagree.

Runs its schedules made follow it: pausing a deployment deletes them while they wait (as
Prefect does), and so does a change to what its runs are made of (parameters, schedules, work
pool …) for the runs still due ahead, so that a scheduled run always reflects the deployment
as it is; the next tick makes them again. Runs asked for by hand are kept, and a run that has
started is never touched.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import JsonValue, ValidationError

from overcast.core import keys
from overcast.core.deployments import (
    Deployment,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    DeploymentSchedule,
    DeploymentScheduleCreate,
    DeploymentUpdate,
    check_parameter_schema,
    deployment_id_for,
    split_full_name,
    validate_parameters,
)
from overcast.core.errors import (
    ConditionFailedError,
    InvalidValueError,
    NotFoundError,
    OvercastError,
    TransactionConflictError,
)
from overcast.core.events import Event
from overcast.core.models import FlowRun
from overcast.core.ports import Delete, Item, KeyValueStore, Operation, Put
from overcast.core.schemas import FlowRunCreate, InitialState, Page
from overcast.core.services._listing import list_partition
from overcast.core.services._slots import slots_item
from overcast.core.services.events import Events
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.services.flows import Flows
from overcast.core.states import StateDetails, StateType, utcnow

logger = logging.getLogger("overcast.deployments")

MAX_ATTEMPTS = 25
SCHEDULED_KEY_PREFIX = "scheduled "
# Fields whose change makes the runs a deployment's schedules made ahead stale.
RUN_SHAPING = frozenset(
    {
        "entrypoint",
        "path",
        "parameters",
        "parameter_openapi_schema",
        "enforce_parameter_schema",
        "tags",
        "work_pool_name",
        "work_queue_name",
        "job_variables",
    }
)


class DeploymentConflictError(ConditionFailedError):
    """Raised when a deployment kept changing under a write (extreme contention)."""


def scheduled_run_key(deployment_id: uuid.UUID, schedule_id: uuid.UUID, moment: datetime) -> str:
    """The idempotency key of the run a schedule makes for ``moment``: a tick that makes it again gets the same run."""
    return f"{SCHEDULED_KEY_PREFIX}{deployment_id} {schedule_id} {keys.ts(moment)}"


def schedule_of(run: FlowRun) -> uuid.UUID | None:
    """The id of the schedule that made ``run`` (``None`` for a run made otherwise)."""
    key = run.idempotency_key or ""
    parts = key.split(" ")
    if not run.auto_scheduled or len(parts) != 4 or parts[0] != SCHEDULED_KEY_PREFIX.strip():
        return None
    try:
        return uuid.UUID(parts[2])
    except ValueError:
        return None


class Deployments:
    """Creates, reads, lists, changes and runs deployments.

    Args:
        store: the key-value store.
        flows: the flow registry (a deployment registers its flow).
        flow_runs: where runs are made (and unmade, when a deployment is paused).
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        flows: Flows,
        flow_runs: FlowRuns,
        *,
        events: Events | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._flows = flows
        self._flow_runs = flow_runs
        self._events = events
        self._clock = clock
        self._on_delete: list[Callable[[uuid.UUID], object]] = []

    def on_delete(self, callback: Callable[[uuid.UUID], object]) -> None:
        """Call ``callback`` with a deployment's id once it is deleted: what it owns (its
        triggers' automations) goes with it. A callback that fails is logged; the deletion stands."""
        self._on_delete.append(callback)

    def _announce(self, deployment: Deployment, what: str, **payload: JsonValue) -> None:
        """Emit ``overcast.deployment.<what>`` (after the change it reports is stored)."""
        if self._events is None:
            return
        labels = {
            "overcast.resource.id": f"overcast.deployment.{deployment.id}",
            "overcast.resource.name": deployment.full_name,
        }
        related = [
            {
                "overcast.resource.id": f"overcast.flow.{deployment.flow_id}",
                "overcast.resource.role": "flow",
                "overcast.resource.name": deployment.flow_name,
            }
        ]
        if deployment.work_pool_name:
            related.append(
                {
                    "overcast.resource.id": f"overcast.work-pool.{deployment.work_pool_name}",
                    "overcast.resource.role": "work-pool",
                    "overcast.resource.name": deployment.work_pool_name,
                }
            )
        event = Event(
            event=f"overcast.deployment.{what}",
            resource=labels,
            related=related,
            payload={"status": "paused" if deployment.paused else "active", **payload},
        )
        try:
            self._events.emit([event])
        except OvercastError:  # the change stands; its announcement is best effort
            logger.warning(
                "could not record event %s for deployment %s",
                event.event,
                deployment.full_name,
                exc_info=True,
            )

    # -- create and read ------------------------------------------------------------------------

    def create(self, request: DeploymentCreate) -> tuple[Deployment, bool]:
        """Create the deployment, or update the one of that flow and name; return it and whether it is new.

        On an existing deployment only the fields the request sets change (see
        ``DeploymentCreate``).

        Raises:
            InvalidValueError: the parameter schema is not a JSON schema, or the parameters
                (or a schedule's) do not match it.
            DeploymentConflictError: it kept changing under us.
        """
        flow, _ = self._flows.ensure(request.flow_name)
        deployment_id = deployment_id_for(flow.name, request.name)
        given = request.model_fields_set - {"name", "flow_name"}
        for _ in range(MAX_ATTEMPTS):
            found = self._read(deployment_id)
            now = self._clock()
            if found is None:
                fields = request.model_dump(exclude={"name", "flow_name", "schedules"})
                deployment = Deployment(
                    id=deployment_id,
                    name=request.name,
                    flow_id=flow.id,
                    flow_name=flow.name,
                    schedules=_with_ids([], request.schedules),
                    created=now,
                    updated=now,
                    **fields,
                )
                previous, version = None, None
            else:
                previous, version = found
                deployment = _changed(previous, request, given, now)
            _check(deployment)
            try:
                self._write(deployment, previous, version)
            except TransactionConflictError:
                continue
            if previous is not None:
                self._clean_up(previous, deployment)
            if previous is None:
                self._announce(deployment, "created")
            elif previous.paused != deployment.paused:
                self._announce(deployment, "paused" if deployment.paused else "resumed")
            else:
                self._announce(deployment, "updated")
            return deployment, previous is None
        raise DeploymentConflictError(*keys.deployment(deployment_id), "the deployment kept changing")

    def get(self, deployment_id: uuid.UUID) -> Deployment:
        """Return the deployment. Raises ``NotFoundError`` when there is none."""
        found = self._read(deployment_id)
        if found is None:
            raise NotFoundError("deployment", str(deployment_id))
        return found[0]

    def get_by_name(self, full_name: str) -> Deployment:
        """Return the deployment called ``<flow name>/<name>``.

        Raises:
            InvalidValueError: the name is not of that form.
            NotFoundError: there is no such deployment.
        """
        flow_name, name = split_full_name(full_name)
        try:
            return self.get(deployment_id_for(flow_name, name))
        except NotFoundError:
            raise NotFoundError("deployment", full_name) from None

    def resolve(self, name_or_id: str) -> Deployment:
        """Return the deployment named by an id or by ``<flow name>/<name>`` (what the CLI takes).

        Raises:
            InvalidValueError: neither an id nor such a name.
            NotFoundError: there is no such deployment.
        """
        try:
            deployment_id = uuid.UUID(name_or_id)
        except ValueError:
            return self.get_by_name(name_or_id)
        return self.get(deployment_id)

    def filter(self, query: DeploymentFilter) -> Page[Deployment]:
        """List deployments matching ``query``, by ``<flow name>/<name>``."""
        items, cursor = list_partition(
            self._store,
            keys.deployments_index(),
            index="gsi2",
            sort_attr="gsi2sk",
            cursor=query.cursor,
            limit=query.limit,
            keep=lambda item: _matches(item["deployment"], query),
        )
        return Page[Deployment](
            items=[Deployment.model_validate(i["deployment"]) for i in items], next_cursor=cursor
        )

    # -- change ---------------------------------------------------------------------------------

    def update(self, deployment_id: uuid.UUID, update: DeploymentUpdate) -> Deployment:
        """Change the fields ``update`` sets; return the deployment as it is now.

        Raises:
            NotFoundError: no such deployment.
            InvalidValueError: as for ``create``.
        """
        before = self.get(deployment_id)
        deployment = self._change(
            deployment_id, lambda d, now: _changed(d, update, update.model_fields_set, now)
        )
        if before.paused != deployment.paused:
            self._announce(deployment, "paused" if deployment.paused else "resumed")
        else:
            self._announce(deployment, "updated")
        return deployment

    def pause(self, deployment_id: uuid.UUID) -> Deployment:
        """Pause the deployment: its schedules make no more runs, and those waiting are deleted.

        Runs asked for by hand, and runs that started, are kept. Raises ``NotFoundError``.
        """
        deployment = self._change(
            deployment_id, lambda d, now: d.model_copy(update={"paused": True, "updated": now})
        )
        self._announce(deployment, "paused")
        return deployment

    def resume(self, deployment_id: uuid.UUID) -> Deployment:
        """Resume the deployment: the next tick schedules its runs again. Raises ``NotFoundError``."""
        deployment = self._change(
            deployment_id, lambda d, now: d.model_copy(update={"paused": False, "updated": now})
        )
        self._announce(deployment, "resumed")
        return deployment

    def delete(self, deployment_id: uuid.UUID) -> bool:
        """Delete the deployment and the runs of it that wait to start; return whether it existed.

        Runs that started keep their ``deployment_id`` (their history stays readable).
        """
        for _ in range(MAX_ATTEMPTS):
            found = self._read(deployment_id)
            if found is None:
                return False
            gone, version = found
            operations: list[Operation] = [
                Delete(*keys.deployment(deployment_id), if_version=version),
                Delete(*keys.deployment_slots(deployment_id)),
                Delete(*keys.deployment_due(deployment_id)),
            ]
            try:
                self._store.transact(operations)
            except TransactionConflictError:
                continue
            for run in self._flow_runs.scheduled_of_deployment(deployment_id):
                self._flow_runs.delete_unstarted(run.id)
            self._announce(gone, "deleted")
            for callback in self._on_delete:
                try:
                    callback(deployment_id)
                except OvercastError:
                    logger.warning(
                        "deployment %s is deleted, but not all it owns could be",
                        gone.full_name,
                        exc_info=True,
                    )
            return True
        raise DeploymentConflictError(*keys.deployment(deployment_id), "the deployment kept changing")

    # -- runs -----------------------------------------------------------------------------------

    def create_flow_run(
        self, deployment_id: uuid.UUID, request: DeploymentFlowRunCreate | None = None
    ) -> tuple[FlowRun, bool]:
        """Make a run of the deployment (SCHEDULED for ``scheduled_start_time``, now by default).

        Parameters are the request's over the deployment's defaults, checked against the
        deployment's schema when it enforces it. The run carries the deployment's id, work
        pool and queue, job variables (the request's over the deployment's) and tags (both).
        Works on a paused deployment too (pausing stops schedules, not people).

        Returns:
            The run, and whether it is new (a repeated ``idempotency_key`` returns the first).

        Raises:
            NotFoundError: no such deployment.
            ParameterValidationError: the parameters do not match the schema (an
                ``InvalidValueError``: the API answers 422).
        """
        request = request or DeploymentFlowRunCreate()
        deployment = self.get(deployment_id)
        parameters = {**deployment.parameters, **request.parameters}
        enforce = (
            request.enforce_parameter_schema
            if request.enforce_parameter_schema is not None
            else deployment.enforce_parameter_schema
        )
        if enforce:
            validate_parameters(deployment.parameter_openapi_schema, parameters)
        return self._flow_runs.create(
            run_request(
                deployment,
                parameters=parameters,
                when=request.scheduled_start_time or self._clock(),
                name=request.name,
                tags=request.tags,
                idempotency_key=request.idempotency_key,
                job_variables=request.job_variables,
                work_queue_name=request.work_queue_name,
                parent_task_run_id=request.parent_task_run_id,
                # the run's own policy when asked for, else the deployment's (its flow's retries)
                retry_policy=request.retry_policy.model_dump()
                if "retry_policy" in request.model_fields_set
                else None,
            )
        )

    # -- internals ------------------------------------------------------------------------------

    def _read(self, deployment_id: uuid.UUID) -> tuple[Deployment, int] | None:
        item = self._store.get(*keys.deployment(deployment_id))
        if item is None:
            return None
        return Deployment.model_validate(item["deployment"]), int(item["v"])

    def _change(
        self, deployment_id: uuid.UUID, change: Callable[[Deployment, datetime], Deployment]
    ) -> Deployment:
        for _ in range(MAX_ATTEMPTS):
            found = self._read(deployment_id)
            if found is None:
                raise NotFoundError("deployment", str(deployment_id))
            previous, version = found
            deployment = change(previous, self._clock())
            _check(deployment)
            try:
                self._write(deployment, previous, version)
            except TransactionConflictError:
                continue
            self._clean_up(previous, deployment)
            return deployment
        raise DeploymentConflictError(*keys.deployment(deployment_id), "the deployment kept changing")

    def _write(self, deployment: Deployment, previous: Deployment | None, version: int | None) -> None:
        """Write the deployment with its slots and due items, under their versions."""
        now = self._clock()
        operations: list[Operation] = [
            Put(_item(deployment), if_absent=version is None, if_version=version),
        ]
        slots = self._store.get(*keys.deployment_slots(deployment.id))
        if deployment.concurrency_limit is not None:
            holders = dict(slots.get("holders") or {}) if slots else {}
            strategy = deployment.concurrency_options.collision_strategy
            item = slots_item(deployment.id, deployment.concurrency_limit, strategy, holders)
            if slots is None:
                operations.append(Put(item, if_absent=True))
            else:
                operations.append(Put(item, if_version=int(slots["v"])))
        elif slots is not None:
            operations.append(Delete(*keys.deployment_slots(deployment.id), if_version=int(slots["v"])))
        if deployment.schedulable:
            # due now: the next tick looks at it afresh (a changed schedule is scheduled anew)
            operations.append(Put(due_item(deployment.id, now, {})))
        elif previous is not None:
            operations.append(Delete(*keys.deployment_due(deployment.id)))
        self._store.transact(operations)

    def _clean_up(self, previous: Deployment, deployment: Deployment) -> None:
        """Delete the waiting runs that ``previous``'s schedules made and ``deployment`` would not make."""
        if deployment.paused and not previous.paused:
            stale = self._flow_runs.scheduled_of_deployment(deployment.id)
        else:
            kept = {s.id for s in deployment.schedules if s.active}
            shaped = any(getattr(previous, f) != getattr(deployment, f) for f in RUN_SHAPING)
            now = self._clock()
            stale = [
                run
                for run in self._flow_runs.scheduled_of_deployment(deployment.id)
                if (sid := schedule_of(run)) is not None
                and (sid not in kept or shaped)
                and run.expected_start_time >= now
            ]
        for run in stale:
            if run.auto_scheduled:
                self._flow_runs.delete_unstarted(run.id)


# -- helpers -------------------------------------------------------------------------------------


def run_request(
    deployment: Deployment,
    *,
    parameters: dict[str, Any],
    when: datetime,
    name: str | None = None,
    tags: list[str] | None = None,
    idempotency_key: str | None = None,
    job_variables: dict[str, Any] | None = None,
    work_queue_name: str | None = None,
    parent_task_run_id: uuid.UUID | None = None,
    retry_policy: dict[str, Any] | None = None,
) -> FlowRunCreate:
    """The request that makes a SCHEDULED run of ``deployment`` due at ``when``.

    Raises:
        InvalidValueError: the merged run is not a valid one (too many tags, say).
    """
    state = InitialState(type=StateType.SCHEDULED, details=StateDetails(scheduled_time=when))
    try:
        return FlowRunCreate.model_validate(
            {
                "flow_name": deployment.flow_name,
                "name": name,
                "parameters": parameters,
                "tags": list(dict.fromkeys([*deployment.tags, *(tags or [])])),
                "idempotency_key": idempotency_key,
                "state": state,
                "deployment_id": deployment.id,
                "work_pool_name": deployment.work_pool_name,
                "work_queue_name": work_queue_name or deployment.work_queue_name,
                "job_variables": {**deployment.job_variables, **(job_variables or {})},
                "parent_task_run_id": parent_task_run_id,
                "retry_policy": retry_policy
                if retry_policy is not None
                else deployment.retry_policy.model_dump(),
            }
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidValueError(f"the deployment's run would be invalid: {problems}") from None


def due_item(deployment_id: uuid.UUID, due: datetime, through: dict[str, str]) -> Item:
    """The item that tells the scheduler when to look at a deployment next.

    ``through`` maps a schedule's id to the last time the scheduler made a run for (its runs
    up to then exist, so a later tick makes only the ones after).
    """
    pk, sk = keys.deployment_due(deployment_id)
    return {
        "pk": pk,
        "sk": sk,
        "gsi1pk": keys.due_index(keys.shard_of(deployment_id)),
        "gsi1sk": keys.due_sort(due, deployment_id),
        "deployment_id": str(deployment_id),
        "through": through,
    }


def _item(deployment: Deployment) -> Item:
    pk, sk = keys.deployment(deployment.id)
    return {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.deployments_index(keys.shard_of(deployment.id)),
        "gsi2sk": deployment.full_name,
        "deployment": deployment.model_dump(mode="json"),
    }


def _with_ids(
    existing: list[DeploymentSchedule], wanted: list[DeploymentScheduleCreate]
) -> list[DeploymentSchedule]:
    """``wanted`` as schedules, each keeping the id of an identical existing one (and so its runs)."""
    free = list(existing)
    out = []
    for schedule in wanted:
        match = next((s for s in free if s.same_as(schedule)), None)
        if match is not None:
            free.remove(match)
            out.append(match)
        else:
            out.append(DeploymentSchedule(**schedule.model_dump()))
    return out


def _changed(
    deployment: Deployment, request: DeploymentCreate | DeploymentUpdate, given: set[str], now: datetime
) -> Deployment:
    changes: dict[str, Any] = {f: getattr(request, f) for f in given if f != "schedules"}
    if "concurrency_options" in changes:
        changes["concurrency_options"] = request.concurrency_options.model_dump()
    if "schedules" in given:
        changes["schedules"] = _with_ids(deployment.schedules, request.schedules)
    data = {**deployment.model_dump(), **changes, "updated": now}
    return Deployment.model_validate(data)


def _check(deployment: Deployment) -> None:
    """Refuse a deployment whose schema is not a schema, or whose runs' parameters would break it."""
    schema = deployment.parameter_openapi_schema
    check_parameter_schema(schema)
    if not deployment.enforce_parameter_schema or schema is None:
        return
    validate_parameters(schema, deployment.parameters, ignore_required=True)
    for schedule in deployment.schedules:
        try:
            validate_parameters(schema, {**deployment.parameters, **schedule.parameters})
        except InvalidValueError as exc:
            raise InvalidValueError(f"the runs of schedule {schedule.id} would be refused: {exc}") from None


def _matches(data: dict[str, Any], query: DeploymentFilter) -> bool:
    if query.flow_name and data["flow_name"] not in query.flow_name:
        return False
    if query.name and data["name"] not in query.name:
        return False
    if query.work_pool_name and data.get("work_pool_name") not in query.work_pool_name:
        return False
    if query.paused is not None and data["paused"] is not query.paused:
        return False
    return not (query.tags_all and not set(query.tags_all) <= set(data["tags"]))
