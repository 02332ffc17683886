"""Deployments: the records, the requests that change them, and run-parameter validation.

A deployment names a flow's code (an entrypoint), its default parameters and the JSON schema
of its signature, where its runs wait for a worker (a work pool and queue), when they are due
(schedules), and how many may run at once. It is identified by its flow's name and its own
(``etl/nightly``); its id is derived from that pair (``deployment_id_for``).

The services are in ``overcast.core.services.deployments`` (CRUD, runs) and
``overcast.core.services.scheduler`` (the tick).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

from overcast.core.errors import InvalidValueError
from overcast.core.models import FlowRun, Name, Parameters, RetryPolicy, Tag, WorkPoolName, WorkQueueName
from overcast.core.orchestration import CollisionStrategy
from overcast.core.schedules import Schedule
from overcast.core.schemas import Cursor, IdempotencyKey, json_bytes
from overcast.core.states import utcnow
from overcast.core.types import Bool, Int, UtcDateTime

DEPLOYMENT_NAMESPACE = uuid.UUID("0c3f8a52-5d0e-4a8e-9a0c-7e4d6a1b2f93")
MAX_SCHEDULES = 20
MAX_SCHEDULED_RUNS = 1000
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_SCHEMA_BYTES = 128 * 1024
MAX_JOB_VARIABLES_BYTES = 32 * 1024

ENTRYPOINT_PATTERN = (
    r"^(?:[^\x00-\x1f]+\.py|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r":[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$"
)
Entrypoint = Annotated[str, StringConstraints(min_length=3, max_length=1000, pattern=ENTRYPOINT_PATTERN)]
"""Where a flow's code is: ``path/to/file.py:flow_function`` or ``package.module:flow_function``."""
Version = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f]*$")]
Description = Annotated[str, StringConstraints(max_length=20_000)]
JobVariables = dict[str, JsonValue]


def _json_integer(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a JSON number")
    return value


# the bounds come before the validator, so that the JSON schema states them
ScheduledRunsCap = Annotated[int, Field(ge=1, le=MAX_SCHEDULED_RUNS), BeforeValidator(_json_integer)]
"""How many runs of one schedule to keep ahead: 1 to ``MAX_SCHEDULED_RUNS``."""
ConcurrencyLimit = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_json_integer)]
"""How many runs of a deployment may be PENDING or RUNNING at once: 1 to 10,000."""


def deployment_id_for(flow_name: str, name: str) -> uuid.UUID:
    """The id of deployment ``name`` of flow ``flow_name``: stable, so any process derives it."""
    return uuid.uuid5(DEPLOYMENT_NAMESPACE, f"{flow_name}/{name}")


def split_full_name(full_name: str) -> tuple[str, str]:
    """``("etl", "nightly")`` from ``"etl/nightly"``.

    Raises:
        InvalidValueError: the text is not ``<flow name>/<deployment name>``.
    """
    flow_name, slash, name = full_name.partition("/")
    if not slash or not flow_name or not name or "/" in name:
        raise InvalidValueError(
            f"{full_name!r} is not a deployment name: write it as <flow name>/<deployment name>, e.g. etl/nightly"
        )
    return flow_name, name


class ConcurrencyOptions(BaseModel):
    """What happens to a run that finds its deployment's concurrency limit reached."""

    model_config = ConfigDict(extra="forbid")

    collision_strategy: CollisionStrategy = CollisionStrategy.ENQUEUE


class DeploymentScheduleCreate(BaseModel):
    """A schedule to attach to a deployment.

    Attributes:
        schedule: when: a cron, interval or RRULE schedule.
        active: an inactive schedule creates no runs (and keeps its settings).
        max_scheduled_runs: the most runs of this schedule to keep scheduled ahead (the
            scheduler's own cap when omitted).
        parameters: parameters for this schedule's runs, over the deployment's defaults.
    """

    model_config = ConfigDict(extra="forbid")

    schedule: Schedule
    active: Bool = True
    max_scheduled_runs: ScheduledRunsCap | None = None
    parameters: Parameters = Field(default_factory=dict)


class DeploymentSchedule(DeploymentScheduleCreate):
    """A schedule of a deployment, with the id that its runs' idempotency keys name."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)

    def same_as(self, other: DeploymentScheduleCreate) -> bool:
        """Whether ``other`` asks for exactly this schedule (an upsert then keeps its id and runs)."""
        mine = self.model_dump(mode="json", exclude={"id"})
        theirs = DeploymentScheduleCreate.model_validate(other.model_dump()).model_dump(mode="json")
        return mine == theirs


class Deployment(BaseModel):
    """A flow made runnable by name, on a schedule or on demand.

    Attributes:
        id: derived from ``flow_name`` and ``name`` (``deployment_id_for``).
        name: the deployment's name, unique per flow.
        flow_id, flow_name: the flow it runs.
        entrypoint: where the flow's code is (``flows/etl.py:etl`` or ``pkg.flows:etl``).
        path: where ``entrypoint`` is relative to (a directory, or a code bundle's key).
        description, version: for people.
        parameters: default parameters of its runs.
        parameter_openapi_schema: the JSON schema of the flow's parameters (what the SDK
            derives from the flow's signature).
        enforce_parameter_schema: validate every run's parameters against that schema.
        tags: tags, given to every run.
        work_pool_name, work_queue_name: where its runs wait for a worker.
        job_variables: overrides of the work pool's job template for its runs.
        schedules: when runs are due.
        paused: a paused deployment gets no scheduled runs (runs asked for by hand still work).
        concurrency_limit: the most runs that may be PENDING or RUNNING at once.
        concurrency_options: what happens to a run past the limit.
        retry_policy: how its runs' failures are retried (its flow's ``retries``), unless a run
            asks otherwise.
        created, updated: record timestamps.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    name: Name
    flow_id: uuid.UUID
    flow_name: Name
    entrypoint: Entrypoint | None = None
    path: Annotated[str, StringConstraints(max_length=1000)] | None = None
    description: Description | None = None
    version: Version | None = None
    parameters: Parameters = Field(default_factory=dict)
    parameter_openapi_schema: dict[str, JsonValue] | None = None
    enforce_parameter_schema: bool = True
    tags: list[Tag] = Field(default_factory=list)
    work_pool_name: WorkPoolName | None = None
    work_queue_name: WorkQueueName | None = None
    job_variables: JobVariables = Field(default_factory=dict)
    schedules: list[DeploymentSchedule] = Field(default_factory=list)
    paused: bool = False
    concurrency_limit: int | None = None
    concurrency_options: ConcurrencyOptions = Field(default_factory=ConcurrencyOptions)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    created: UtcDateTime = Field(default_factory=utcnow)
    updated: UtcDateTime = Field(default_factory=utcnow)

    @property
    def full_name(self) -> str:
        """``<flow name>/<name>``: how people and the CLI name it."""
        return f"{self.flow_name}/{self.name}"

    @property
    def schedulable(self) -> bool:
        """Whether the scheduler creates runs for it: not paused, with an active schedule."""
        return not self.paused and any(s.active for s in self.schedules)


# -- requests ----------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _DeploymentFields(_Request):
    """The fields a deployment is created or updated with (see ``Deployment``)."""

    entrypoint: Entrypoint | None = None
    path: Annotated[str, StringConstraints(max_length=1000)] | None = None
    description: Description | None = None
    version: Version | None = None
    parameters: Parameters = Field(default_factory=dict)
    parameter_openapi_schema: dict[str, JsonValue] | None = None
    enforce_parameter_schema: Bool = True
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    work_pool_name: WorkPoolName | None = None
    work_queue_name: WorkQueueName | None = None
    job_variables: JobVariables = Field(default_factory=dict)
    schedules: list[DeploymentScheduleCreate] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    paused: Bool = False
    concurrency_limit: ConcurrencyLimit | None = None
    concurrency_options: ConcurrencyOptions = Field(default_factory=ConcurrencyOptions)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        _check_size("parameters", self.parameters, MAX_PARAMETERS_BYTES)
        _check_size("parameter_openapi_schema", self.parameter_openapi_schema, MAX_SCHEMA_BYTES)
        _check_size("job_variables", self.job_variables, MAX_JOB_VARIABLES_BYTES)
        json_bytes(self.description)
        for schedule in self.schedules:
            _check_size("a schedule's parameters", schedule.parameters, MAX_PARAMETERS_BYTES)
        return self


class DeploymentCreate(_DeploymentFields):
    """Create a deployment, or update the one of that flow and name (an upsert, as in Prefect).

    On an existing deployment, only the fields given change (``schedules`` given replace the
    schedules: an identical one keeps its id and its runs; the runs of the others are deleted
    while they wait). Parameters, when the deployment enforces its schema, are checked against
    it, required ones excepted (runs may supply them).

    Attributes:
        name: the deployment's name, unique per flow.
        flow_name: the flow (registered on first use).
    """

    name: Name
    flow_name: Name


class DeploymentUpdate(_DeploymentFields):
    """Change a deployment: the fields given change, the others stay (``null`` clears a field).

    ``schedules`` given replace the schedules, as for ``DeploymentCreate``.
    """


class DeploymentFilter(_Request):
    """Which deployments to list, by ``<flow name>/<name>``; every criterion given must hold."""

    flow_name: list[Name] | None = Field(default=None, min_length=1, max_length=50)
    name: list[Name] | None = Field(default=None, min_length=1, max_length=50)
    tags_all: list[Tag] | None = Field(default=None, min_length=1, max_length=20)
    work_pool_name: list[WorkPoolName] | None = Field(default=None, min_length=1, max_length=50)
    paused: Bool | None = None
    limit: Int = Field(default=50, ge=1, le=200)
    cursor: Cursor | None = None


class DeploymentFlowRunCreate(_Request):
    """Ask a deployment for a run (Prefect's ``run_deployment``).

    Attributes:
        parameters: over the deployment's defaults; the merged set is validated against the
            deployment's schema when it (or ``enforce_parameter_schema`` here) says so.
        name: the run's name; generated when omitted.
        tags: added to the deployment's tags.
        idempotency_key: a repeat with the same key returns the first run.
        scheduled_start_time: when the run is due (now when omitted); it is created SCHEDULED.
        job_variables: over the deployment's job variables.
        work_queue_name: another queue of the deployment's pool.
        enforce_parameter_schema: overrides the deployment's setting for this run.
        parent_task_run_id: for a run started as a subflow, the parent's task run.
        retry_policy: how failures are retried.
    """

    parameters: Parameters = Field(default_factory=dict)
    name: Name | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    idempotency_key: IdempotencyKey | None = None
    scheduled_start_time: UtcDateTime | None = None
    job_variables: JobVariables | None = None
    work_queue_name: WorkQueueName | None = None
    enforce_parameter_schema: Bool | None = None
    parent_task_run_id: uuid.UUID | None = None
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        _check_size("parameters", self.parameters, MAX_PARAMETERS_BYTES)
        _check_size("job_variables", self.job_variables, MAX_JOB_VARIABLES_BYTES)
        return self


class ScheduleTick(_Request):
    """Run the scheduler now (``POST /schedules/tick``).

    Attributes:
        horizon_seconds: how far ahead to create runs.
        max_runs: the most runs to keep scheduled ahead per schedule.
    """

    horizon_seconds: Int = Field(default=3600, ge=60, le=100 * 86400)
    max_runs: Int = Field(default=10, ge=1, le=MAX_SCHEDULED_RUNS)


class TickResult(BaseModel):
    """What one scheduler tick did.

    Attributes:
        deployments: how many deployments it looked at.
        created: the runs it created (a run that an earlier or a racing tick created is not
            listed again).
        skipped: deployments it left for the next tick (changed under it, or failing).
    """

    deployments: int = 0
    created: list[FlowRun] = Field(default_factory=list)
    skipped: int = 0


# -- parameters --------------------------------------------------------------------------------


class ParameterValidationError(InvalidValueError):
    """Raised when a run's parameters do not match its deployment's parameter schema.

    Attributes:
        problems: one line per problem (``n: 'x' is not of type 'integer'``).
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the parameters do not match the flow's signature: " + "; ".join(problems))


def check_parameter_schema(schema: dict[str, Any] | None) -> None:
    """Check that ``schema`` is a JSON schema one can validate parameters with.

    Raises:
        InvalidValueError: it is not a valid JSON schema.
    """
    if schema is None:
        return
    import jsonschema_rs

    try:
        jsonschema_rs.meta.validate(schema)
        jsonschema_rs.validator_for(schema, offline=True)  # never fetch a remote $ref
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidValueError(f"parameter_openapi_schema is not a valid JSON schema: {first}") from None


def validate_parameters(
    schema: dict[str, Any] | None, parameters: dict[str, Any], *, ignore_required: bool = False
) -> None:
    """Validate ``parameters`` against the JSON schema of a flow's signature.

    Args:
        schema: the schema (``None``: anything goes).
        parameters: the parameters.
        ignore_required: accept missing required parameters (a deployment's defaults need not
            name them all; its runs must).

    Raises:
        ParameterValidationError: with one line per problem.
    """
    if schema is None:
        return
    import jsonschema_rs

    if ignore_required and "required" in schema:
        schema = {k: v for k, v in schema.items() if k != "required"}
    try:
        validator = jsonschema_rs.validator_for(schema, offline=True)  # never fetch a remote $ref
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        raise InvalidValueError(f"the deployment's parameter schema is unusable: {exc}") from None
    problems = []
    for error in validator.iter_errors(parameters):
        where = ".".join(str(p) for p in error.instance_path)
        problems.append(f"{where}: {error.message}" if where else error.message)
    if problems:
        raise ParameterValidationError(sorted(problems)[:20])


def _check_size(what: str, value: object, limit: int) -> None:
    size = json_bytes(value)
    if size > limit:
        raise ValueError(f"{what} take {size:,} bytes as JSON, over the limit of {limit:,}")
