"""Work pools, work queues and workers: the records, the pool types and their settings, the requests.

A *work pool* is where a deployment's runs go to be executed. Its type says how:

==================  ======  =====================================================================
type                kind    how a run starts
==================  ======  =====================================================================
``process``         pull    a worker (``overcast worker start --pool NAME``) polls the pool and
                            runs each run in a subprocess
``aws-lambda``      push    the control plane invokes an AWS Lambda function (``config.function``)
``gcp-functions``   push    the control plane calls a Google Cloud Function (``config.url``)
``queue``           push    the control plane sends the run onto a queue (``config.url``: SQS or
                            the local queue), whose consumer runs it
==================  ======  =====================================================================

A pool holds *work queues* (every pool has ``default``): a deployment sends its runs to one,
queues are served highest priority first (1 is the highest), and pools and queues may cap how
many of their runs are PENDING or RUNNING at once (``concurrency_limit``) or be paused.

Status is derived, never set: a pull pool is READY while a worker has sent a heartbeat within
the threshold (90 s by default) and NOT_READY otherwise; a push pool is READY once configured;
a paused pool or queue is PAUSED; a worker is ONLINE or OFFLINE by the age of its heartbeat.
"""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from overcast.core.errors import InvalidValueError
from overcast.core.models import WorkerName, WorkPoolName, WorkQueueName
from overcast.core.schemas import Cursor, Description
from overcast.core.states import utcnow
from overcast.core.types import Bool, Int, UtcDateTime

DEFAULT_QUEUE = "default"
"""The queue every pool is created with; it cannot be deleted."""


class WorkPoolType(StrEnum):
    """How a pool's runs are started (see the module's table)."""

    PROCESS = "process"
    AWS_LAMBDA = "aws-lambda"
    GCP_FUNCTIONS = "gcp-functions"
    QUEUE = "queue"


PUSH_TYPES = frozenset({WorkPoolType.AWS_LAMBDA, WorkPoolType.GCP_FUNCTIONS, WorkPoolType.QUEUE})
"""The types whose runs the control plane starts itself (no worker polls them)."""


class WorkPoolStatus(StrEnum):
    """Whether a pool (or a queue) can start runs now."""

    READY = "READY"
    NOT_READY = "NOT_READY"
    PAUSED = "PAUSED"


WorkQueueStatus = WorkPoolStatus
"""A queue's status takes the same values as a pool's."""


class WorkerStatus(StrEnum):
    """Whether a worker sent a heartbeat recently."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"


# -- the settings of each pool type --------------------------------------------------------------


def _rule(what: str, pattern: str, rule: str, *, max_length: int) -> Any:
    """A string type that refuses, with a message in words, text that breaks ``pattern``."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError("string_pattern_mismatch", f"{what} {value!r} is invalid: {rule}")
        return value

    return (
        StringConstraints(min_length=1, max_length=max_length),
        AfterValidator(check),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": max_length, "pattern": pattern}),
    )


_HTTP_URL = r"^https?://[^\x00-\x20\x7f]+$"
_LAMBDA = (
    r"^(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
    r"(\d{12}:)?(function:)?([a-zA-Z0-9_.-]+)(:(\$LATEST|[a-zA-Z0-9_-]+))?$"
)
_REGION = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d+$"
_QUEUE_URL = (
    r"^(sqs://[A-Za-z0-9_-]{1,80}(\.fifo)?|local:///[^\x00-\x20\x7f?#]+|memory://[A-Za-z0-9_.-]*)"
    r"(\?[^\x00-\x20\x7f#]*)?$"
)
HttpUrl = Annotated[str, *_rule("URL", _HTTP_URL, "expected an http:// or https:// URL", max_length=2048)]
"""An ``http://`` or ``https://`` URL."""
LambdaFunction = Annotated[
    str,
    *_rule(
        "Lambda function",
        _LAMBDA,
        "expected a function name, a partial ARN or an ARN, optionally with :version or :alias",
        max_length=170,
    ),
]
"""A Lambda function's name, partial ARN or ARN, with an optional version or alias (AWS's rule)."""
AwsRegion = Annotated[
    str, *_rule("AWS region", _REGION, "expected a region such as us-east-1", max_length=30)
]
QueueUrl = Annotated[
    str,
    *_rule(
        "queue URL",
        _QUEUE_URL,
        "expected sqs://NAME[?region=R&endpoint=URL], local:///PATH[?name=Q] or memory://NAME",
        max_length=2048,
    ),
]
"""A queue URL: ``sqs://NAME?region=R&endpoint=URL``, ``local:///PATH?name=Q`` or ``memory://NAME`` (tests)."""
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
EnvValue = Annotated[str, StringConstraints(max_length=10_000, pattern=r"^[^\x00]*$")]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProcessConfig(_Config):
    """How a ``process`` pool's worker starts a run's subprocess.

    Attributes:
        env: environment variables to set for the run.
        working_dir: the directory to run in (the worker's own by default).
    """

    env: Annotated[
        dict[EnvName, EnvValue],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": 200,
                "propertyNames": {"minLength": 1, "maxLength": 200, "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": {"type": "string", "maxLength": 10_000, "pattern": r"^[^\x00]*$"},
            }
        ),
    ] = Field(default_factory=dict, max_length=200)
    working_dir: (
        Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=r"^[^\x00-\x1f]+$")] | None
    ) = None


class AwsLambdaConfig(_Config):
    """The Lambda function an ``aws-lambda`` pool invokes for each run.

    Attributes:
        function: the function's name or ARN (``overcast-runner``, ``arn:aws:lambda:…``).
        region: its region (the control plane's by default).
        endpoint: another endpoint than AWS's (moto, LocalStack).
    """

    function: LambdaFunction
    region: AwsRegion | None = None
    endpoint: HttpUrl | None = None


class GcpFunctionsConfig(_Config):
    """The Cloud Function a ``gcp-functions`` pool calls for each run.

    Attributes:
        url: the function's HTTPS trigger URL.
        audience: the identity token's audience (the URL by default).
    """

    url: HttpUrl
    audience: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None


class QueueConfig(_Config):
    """The queue a ``queue`` pool sends each run onto.

    Attributes:
        url: the queue's URL: ``sqs://NAME?region=R&endpoint=URL`` or ``local:///PATH?name=Q``
            (``memory://NAME`` in tests).
    """

    url: QueueUrl


PoolConfig = ProcessConfig | AwsLambdaConfig | GcpFunctionsConfig | QueueConfig
"""The settings of a pool, of the class its type names (``CONFIG_TYPES``)."""
CONFIG_TYPES: dict[WorkPoolType, type[ProcessConfig | AwsLambdaConfig | GcpFunctionsConfig | QueueConfig]] = {
    WorkPoolType.PROCESS: ProcessConfig,
    WorkPoolType.AWS_LAMBDA: AwsLambdaConfig,
    WorkPoolType.GCP_FUNCTIONS: GcpFunctionsConfig,
    WorkPoolType.QUEUE: QueueConfig,
}


def parse_config(pool_type: WorkPoolType, data: dict[str, Any]) -> PoolConfig:
    """Validate ``data`` as the settings of a pool of ``pool_type``.

    Raises:
        InvalidValueError: ``data`` is not valid for that type; the message says what is wrong.
    """
    try:
        return CONFIG_TYPES[pool_type].model_validate(data)
    except ValidationError as exc:
        raise InvalidValueError(
            f"invalid config for a pool of type {pool_type.value!r}: {_problems(exc)}"
        ) from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}" for error in exc.errors()
    )


# -- records ---------------------------------------------------------------------------------------


class WorkPool(BaseModel):
    """A pool of work: where runs of deployments wait to be started, and how they are started.

    Attributes:
        id: the pool's id (its events name ``overcast.work-pool.<id>``).
        name: its name (unique; immutable).
        type: how its runs start (``process`` is pulled by workers; the others are pushed).
        description: what it is for.
        paused: a paused pool hands out no runs.
        concurrency_limit: the most of its runs PENDING or RUNNING at once (``None``: no limit).
        config: the settings of its type (``None``: not configured yet; a push pool is then
            NOT_READY).
        status: READY, NOT_READY or PAUSED, derived when read.
        status_detail: why it is not READY, in words.
        created, updated: record timestamps.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    name: WorkPoolName
    type: WorkPoolType
    description: str | None = None
    paused: bool = False
    concurrency_limit: int | None = None
    config: PoolConfig | None = None
    status: WorkPoolStatus = WorkPoolStatus.NOT_READY
    status_detail: str | None = None
    created: UtcDateTime = Field(default_factory=utcnow)
    updated: UtcDateTime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _typed_config(cls, data: Any) -> Any:
        # the settings' class follows from the pool's type, not from the settings' shape
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            try:
                model = CONFIG_TYPES[WorkPoolType(str(data.get("type")))]
            except (ValueError, KeyError):
                return data  # the type itself is invalid: its own error says so
            data = {**data, "config": model.model_validate(data["config"])}
        return data

    @model_validator(mode="after")
    def _config_of_type(self) -> Self:
        if self.config is not None and not isinstance(self.config, CONFIG_TYPES[self.type]):
            raise ValueError(
                f"a {self.type.value} pool's config must be a {CONFIG_TYPES[self.type].__name__}"
            )
        return self

    @property
    def is_push(self) -> bool:
        """Whether the control plane starts its runs (no worker polls it)."""
        return self.type in PUSH_TYPES


class WorkQueue(BaseModel):
    """A queue of a work pool: deployments send runs to it; it is served by priority.

    Attributes:
        id: the queue's id (its events name ``overcast.work-queue.<id>``).
        pool_name: its pool.
        name: its name, unique within the pool.
        description: what it is for.
        priority: 1 is served first; queues of equal priority by name.
        concurrency_limit: the most of its runs PENDING or RUNNING at once (``None``: no limit).
        paused: a paused queue hands out no runs.
        status: READY, NOT_READY or PAUSED, derived when read: a queue is READY when its pool
            is and (for a pull pool) an online worker serves it.
        status_detail: why it is not READY, in words.
        created, updated: record timestamps.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    pool_name: WorkPoolName
    name: WorkQueueName
    description: str | None = None
    priority: int = 1
    concurrency_limit: int | None = None
    paused: bool = False
    status: WorkQueueStatus = WorkPoolStatus.NOT_READY
    status_detail: str | None = None
    created: UtcDateTime = Field(default_factory=utcnow)
    updated: UtcDateTime = Field(default_factory=utcnow)


class Worker(BaseModel):
    """A process that polls a pull pool for runs, known by its heartbeats.

    Attributes:
        id: the worker's id, given at its first heartbeat (events name ``overcast.worker.<id>``).
        pool_name: its pool.
        name: its name, unique within the pool.
        queues: the queues it polls (empty: all of the pool's).
        status: ONLINE while its last heartbeat is younger than the threshold, else OFFLINE.
        last_heartbeat: when it last sent one.
        created: its first heartbeat.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    pool_name: WorkPoolName
    name: WorkerName
    queues: list[WorkQueueName] = Field(default_factory=list)
    status: WorkerStatus = WorkerStatus.ONLINE
    last_heartbeat: UtcDateTime = Field(default_factory=utcnow)
    created: UtcDateTime = Field(default_factory=utcnow)

    def serves(self, queue: str) -> bool:
        """Whether it polls ``queue``."""
        return not self.queues or queue in self.queues


# -- requests --------------------------------------------------------------------------------------


def _json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a JSON number")
    return value


# the bounds come first, so that the JSON schema states them (also inside ``| None``)
ConcurrencyLimit = Annotated[int, Field(ge=0, le=1_000_000), BeforeValidator(_json_number)]
"""The most runs PENDING or RUNNING at once: a whole JSON number from 0 to 1,000,000."""
Priority = Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(_json_number)]
"""A queue's priority: 1 is served first."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _type_required(schema: dict[str, Any]) -> None:
    # ``type`` has a default for Python callers (``ProcessPoolCreate(name=…)``), but the API
    # tells the four shapes apart by it, so a request must carry it
    schema["required"] = sorted({*schema.get("required", []), "type"})


class _WorkPoolCreate(_Request):
    """What every pool creation carries.

    Attributes:
        name: the pool's name: lowercase letters, digits, ``_`` and ``-``, at most 100.
        description: what it is for.
        paused: create it paused.
        concurrency_limit: the most of its runs PENDING or RUNNING at once.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_type_required)

    name: WorkPoolName
    description: Description | None = None
    paused: Bool = False
    concurrency_limit: ConcurrencyLimit | None = None


class ProcessPoolCreate(_WorkPoolCreate):
    """Create a ``process`` pool: workers poll it and run its runs in subprocesses."""

    type: Literal["process"] = "process"
    config: ProcessConfig | None = None


class AwsLambdaPoolCreate(_WorkPoolCreate):
    """Create an ``aws-lambda`` pool: the control plane invokes ``config.function`` for each run."""

    type: Literal["aws-lambda"] = "aws-lambda"
    config: AwsLambdaConfig | None = None


class GcpFunctionsPoolCreate(_WorkPoolCreate):
    """Create a ``gcp-functions`` pool: the control plane calls ``config.url`` for each run."""

    type: Literal["gcp-functions"] = "gcp-functions"
    config: GcpFunctionsConfig | None = None


class QueuePoolCreate(_WorkPoolCreate):
    """Create a ``queue`` pool: the control plane sends each run onto ``config.url``."""

    type: Literal["queue"] = "queue"
    config: QueueConfig | None = None


WorkPoolRequest = ProcessPoolCreate | AwsLambdaPoolCreate | GcpFunctionsPoolCreate | QueuePoolCreate
"""A validated pool creation, of one of the four types."""
WorkPoolCreate = Annotated[WorkPoolRequest, Field(discriminator="type")]
"""Create a work pool; ``type`` decides the shape of ``config``."""


@cache
def _create_adapter() -> TypeAdapter[WorkPoolRequest]:
    return TypeAdapter(WorkPoolCreate)


def work_pool_create(data: dict[str, Any]) -> WorkPoolRequest:
    """Validate ``data`` (``{"name", "type", "config", …}``) as a pool creation of its type.

    Raises:
        pydantic.ValidationError: it is not a valid creation.
    """
    return _create_adapter().validate_python(data)


class WorkPoolUpdate(_Request):
    """Change a pool: the fields given change (``null`` clears a limit or the settings).

    Attributes:
        description: a new description.
        concurrency_limit: a new limit; ``null`` removes it.
        config: new settings for the pool's type, validated against it (``null``: none).
    """

    description: Description | None = None
    concurrency_limit: ConcurrencyLimit | None = None
    config: dict[str, JsonValue] | None = None


class WorkPoolFilter(_Request):
    """Which pools to list, by name."""

    name_prefix: (
        Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z0-9_-]+$")] | None
    ) = None
    type: list[WorkPoolType] | None = Field(default=None, min_length=1, max_length=4)
    limit: Int = Field(default=100, ge=1, le=500)
    cursor: Cursor | None = None


class WorkQueueCreate(_Request):
    """Create a queue in a pool.

    Attributes:
        name: the queue's name, unique within the pool (the pool-name rule).
        description: what it is for.
        priority: 1 is served first; by default one below the pool's lowest.
        concurrency_limit: the most of its runs PENDING or RUNNING at once.
        paused: create it paused.
    """

    name: WorkQueueName
    description: Description | None = None
    priority: Priority | None = None
    concurrency_limit: ConcurrencyLimit | None = None
    paused: Bool = False


class WorkQueueUpdate(_Request):
    """Change a queue: the fields given change (``null`` clears the limit; a priority is never null)."""

    description: Description | None = None
    # optional, but never null: a queue always has a priority
    priority: Annotated[
        Priority | None, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 1_000_000})
    ] = None
    concurrency_limit: ConcurrencyLimit | None = None

    @field_validator("priority")
    @classmethod
    def _not_null(cls, value: int | None) -> int:
        if value is None:
            raise ValueError("a queue's priority cannot be null; give a number from 1 (served first)")
        return value


class WorkerHeartbeat(_Request):
    """A worker's heartbeat: registers it on its first, keeps it ONLINE after.

    Attributes:
        name: the worker's name, unique within its pool (the pool-name rule).
        queues: the queues it polls (empty: all of the pool's).
    """

    name: WorkerName
    queues: list[WorkQueueName] = Field(default_factory=list, max_length=100)


class WorkerFilter(_Request):
    """Which workers of a pool to list, by name."""

    status: WorkerStatus | None = None
    limit: Int = Field(default=100, ge=1, le=500)
    cursor: Cursor | None = None


class ScheduledRunsRequest(_Request):
    """Ask a pool for the runs due to start (``POST /work_pools/{name}/get_scheduled_flow_runs``).

    Attributes:
        work_queue_names: only these queues (default: all of the pool's).
        scheduled_before: runs expected to start before this (default: now).
        limit: the most runs to return.
    """

    work_queue_names: list[WorkQueueName] | None = Field(default=None, min_length=1, max_length=100)
    scheduled_before: UtcDateTime | None = None
    limit: Int = Field(default=10, ge=1, le=200)
