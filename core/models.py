"""The control plane's records: flows, flow runs, task runs, log lines, artifacts, variables.

These are what the API returns and what the store holds (one item each; see ``keys``). Inputs
from clients are validated by the request models in ``schemas``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from overcast.core.states import State, StateType, utcnow
from overcast.core.types import Float, Int, UtcDateTime

FLOW_NAMESPACE = uuid.UUID("6f7c6d1e-2c9e-4c59-9e55-0b1f3c7d2a10")

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f/%#\\]+$")]
"""A flow, run or task name: 1-200 printable characters, without ``/``, ``%``, ``#`` or ``\\``."""
Tag = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]
Parameters = dict[str, JsonValue]


def flow_id_for(name: str) -> uuid.UUID:
    """The id of the flow called ``name``: stable, so any process derives it without a lookup."""
    return uuid.uuid5(FLOW_NAMESPACE, name)


class Flow(BaseModel):
    """A flow, registered by name the first time a run of it is created.

    Attributes:
        id: derived from the name (``flow_id_for``).
        name: the flow's name.
        created: when it was first registered.
        tags: tags given at registration.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    name: Name
    created: UtcDateTime = Field(default_factory=utcnow)
    tags: list[Tag] = Field(default_factory=list)


class RetryPolicy(BaseModel):
    """How a run is retried when it fails or crashes.

    Attributes:
        retries: how many times to retry after the first attempt.
        retry_delay_seconds: the pause before each retry.
    """

    model_config = ConfigDict(extra="forbid")

    retries: Int = Field(default=0, ge=0, le=1000)
    retry_delay_seconds: Float = Field(default=0, ge=0, le=7 * 86400)


class FlowRun(BaseModel):
    """One run of a flow.

    Attributes:
        id: the run's id.
        name: a human name (a template's output, or generated).
        flow_id, flow_name: the flow it runs.
        deployment_id: the deployment that created it, if any.
        work_pool_name, work_queue_name: where it waits to be picked up (a deployment's run).
        job_variables: overrides of the work pool's job template for this run.
        auto_scheduled: created by the scheduler from a deployment's schedule.
        parent_task_run_id: for a subflow, the task run in the parent flow that stands for it.
        parameters: the flow's parameters (JSON).
        tags: tags.
        idempotency_key: a creation with the same key returns this run instead of a new one.
        state: the current state.
        retry_policy: how failures are retried.
        run_count: how many times it entered RUNNING (1 on the first attempt).
        expected_start_time: when it was meant to start (its sort key).
        start_time, end_time: the first RUNNING and the terminal transition.
        total_run_time: time spent RUNNING, across attempts.
        created, updated: record timestamps.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    name: Name
    flow_id: uuid.UUID
    flow_name: Name
    deployment_id: uuid.UUID | None = None
    work_pool_name: Name | None = None
    work_queue_name: Name | None = None
    job_variables: dict[str, JsonValue] | None = None
    auto_scheduled: bool = False
    parent_task_run_id: uuid.UUID | None = None
    parameters: Parameters = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list)
    idempotency_key: str | None = None
    state: State
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    run_count: int = 0
    expected_start_time: UtcDateTime
    start_time: UtcDateTime | None = None
    end_time: UtcDateTime | None = None
    total_run_time: timedelta = timedelta(0)
    created: UtcDateTime = Field(default_factory=utcnow)
    updated: UtcDateTime = Field(default_factory=utcnow)

    @property
    def state_type(self) -> StateType:
        """The current state's type."""
        return self.state.type


class TaskRun(BaseModel):
    """One run of a task, inside a flow run or on its own.

    Task-run states are decided by the client-side engine and reported in batches; the server
    keeps the newest state it has seen (by timestamp) and every state in the history.

    Attributes:
        id: the task run's id.
        flow_run_id: the flow run it belongs to (``None`` for a task called outside a flow).
        task_key: identifies the task within its flow (module and name).
        name: a human name.
        dynamic_key: distinguishes repeated calls of one task in one flow run.
        state: the newest state reported.
        run_count: attempts so far.
        tags: tags.
        cache_key: the key its result is cached under, if any.
        parameters: its inputs, when the engine records them (JSON).
        start_time, end_time: first RUNNING, terminal transition.
        created, updated: record timestamps.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    flow_run_id: uuid.UUID | None = None
    task_key: str = Field(min_length=1, max_length=500)
    name: Name
    dynamic_key: str = Field(default="0", max_length=200)
    state: State
    run_count: Int = Field(default=0, ge=0)
    tags: list[Tag] = Field(default_factory=list)
    cache_key: str | None = Field(default=None, max_length=2000)
    parameters: Parameters = Field(default_factory=dict)
    start_time: UtcDateTime | None = None
    end_time: UtcDateTime | None = None
    created: UtcDateTime = Field(default_factory=utcnow)
    updated: UtcDateTime = Field(default_factory=utcnow)


class LogLine(BaseModel):
    """One log line of a flow run or task run.

    Attributes:
        id: the line's id, chosen by the client so that a replayed batch writes nothing twice.
        flow_run_id: the flow run it belongs to (``None`` for a task outside a flow).
        task_run_id: the task run that logged it, if any.
        level: the logging level number (10 debug … 50 critical).
        name: the logger's name.
        message: the text.
        timestamp: when it was logged.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    level: Int = Field(default=20, ge=0, le=100)
    name: str = Field(default="overcast", max_length=200)
    message: str = Field(max_length=32_000)
    timestamp: UtcDateTime = Field(default_factory=utcnow)


# -- artifacts and variables -------------------------------------------------------------------


def _pattern_check(what: str, pattern: str, rule: str) -> Callable[[str], str]:
    """A validator that refuses, with a message in words, a string that breaks ``pattern``."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError("string_pattern_mismatch", f"{what} {value!r} is invalid: {rule}")
        return value

    return check


ARTIFACT_KEY_PATTERN = r"^[a-z0-9-]+$"
VARIABLE_NAME_PATTERN = r"^[a-z0-9_-]+$"
ArtifactKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(
        _pattern_check("artifact key", ARTIFACT_KEY_PATTERN, "use lowercase letters, digits and dashes")
    ),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200, "pattern": ARTIFACT_KEY_PATTERN}),
]
"""An artifact key: 1-200 lowercase letters, digits and dashes (``daily-report``)."""
VariableName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255),
    AfterValidator(
        _pattern_check(
            "variable name", VARIABLE_NAME_PATTERN, "use lowercase letters, digits, underscores and dashes"
        )
    ),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": VARIABLE_NAME_PATTERN}),
]
"""A variable name: 1-255 lowercase letters, digits, underscores and dashes (``s3_bucket``)."""
WORK_POOL_NAME_PATTERN = r"^[a-z0-9_-]+$"
"""The rule for the names of work pools, work queues and workers."""
_POOL_NAME_RULE = "use lowercase letters, digits, underscores and dashes"
_POOL_NAME_SCHEMA = WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": 100, "pattern": WORK_POOL_NAME_PATTERN}
)
WorkPoolName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(_pattern_check("work pool name", WORK_POOL_NAME_PATTERN, _POOL_NAME_RULE)),
    _POOL_NAME_SCHEMA,
]
"""A work pool's name: 1-100 lowercase letters, digits, underscores and dashes (``gpu-pool``)."""
WorkQueueName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(_pattern_check("work queue name", WORK_POOL_NAME_PATTERN, _POOL_NAME_RULE)),
    _POOL_NAME_SCHEMA,
]
"""A work queue's name, unique within its pool (the same rule; every pool has ``default``)."""
WorkerName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(_pattern_check("worker name", WORK_POOL_NAME_PATTERN, _POOL_NAME_RULE)),
    _POOL_NAME_SCHEMA,
]
"""A worker's name, unique within its pool (the same rule)."""
ArtifactType = Literal["markdown", "table", "link", "progress", "image"]
"""What an artifact holds; it decides the shape of ``Artifact.data``."""
ARTIFACT_TYPES: tuple[ArtifactType, ...] = ("markdown", "table", "link", "progress", "image")


class Artifact(BaseModel):
    """Something a run published for people to read: a report, a table, a link, a progress bar, an image.

    Artifacts with a ``key`` are versioned: each creation under a key is its next version, and
    the key's latest version is what "the artifact" means to a reader. Keyless artifacts stand
    alone.

    Attributes:
        id: the artifact's id.
        key: its key, if any.
        version: its version under ``key`` (1, 2, …); ``None`` for a keyless artifact.
        type: what it holds.
        description: a markdown description.
        data: by ``type``: ``markdown`` the text; ``table`` the rows as given (a list of dicts,
            a dict of lists or a list of lists); ``link`` ``{"url", "text"}``; ``progress`` a
            number from 0 to 100; ``image`` ``{"url"}`` for a linked image, or
            ``{"blob_key", "content_type", "size"}`` for one stored in the blob store.
        flow_run_id, task_run_id: the runs that created it (``None`` outside a run).
        created, updated: record timestamps (``updated`` moves with progress updates).
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    key: ArtifactKey | None = None
    version: int | None = None
    type: ArtifactType
    description: str | None = None
    data: JsonValue = None
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    created: UtcDateTime = Field(default_factory=utcnow)
    updated: UtcDateTime = Field(default_factory=utcnow)


class Variable(BaseModel):
    """A named JSON value that flows, deployments and automations read (``Variable.get``).

    Attributes:
        id: the variable's id (kept when its value changes).
        name: its name (unique).
        value: any JSON value: object, list, string, number, boolean or null.
        tags: tags.
        created, updated: record timestamps.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    name: VariableName
    value: JsonValue
    tags: list[Tag] = Field(default_factory=list)
    created: UtcDateTime = Field(default_factory=utcnow)
    updated: UtcDateTime = Field(default_factory=utcnow)
