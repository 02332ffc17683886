"""What clients send to the control plane and what it answers, beyond the records themselves.

Every request model forbids unknown fields and bounds every list and string, so bad input is
refused with a clear 422 before it reaches a service.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic import Tag as Choice
from pydantic_core import PydanticCustomError

from overcast.core.errors import InvalidValueError
from overcast.core.models import (
    ArtifactKey,
    ArtifactType,
    LogLine,
    Name,
    Parameters,
    RetryPolicy,
    Tag,
    TaskRun,
    VariableName,
    WorkPoolName,
    WorkQueueName,
)
from overcast.core.orchestration import Decision
from overcast.core.states import State, StateType
from overcast.core.types import Bool, Int, Percentage, UtcDateTime

T = TypeVar("T")
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlowCreate(_Request):
    """Register a flow (idempotent by name)."""

    name: Name
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class InitialState(State):
    """The state a new run starts in: SCHEDULED, PENDING or RUNNING."""

    type: Literal[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]


class FlowRunCreate(_Request):
    """Create a flow run; with an ``idempotency_key``, a repeat returns the first run.

    Attributes:
        flow_name: the flow to run (registered on first use).
        name: the run's name; generated when omitted.
        parameters: the flow's parameters.
        tags: tags.
        idempotency_key: makes creation idempotent per flow.
        state: the initial state: SCHEDULED, PENDING or RUNNING (default PENDING).
        deployment_id: the deployment that asks for the run.
        work_pool_name, work_queue_name: where the run waits for a worker (deployment runs).
        job_variables: overrides of the work pool's job template.
        parent_task_run_id: for a subflow, the parent's task run.
        retry_policy: how failures are retried.
    """

    flow_name: Name
    name: Name | None = None
    parameters: Parameters = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    idempotency_key: IdempotencyKey | None = None
    state: InitialState | None = None
    deployment_id: uuid.UUID | None = None
    work_pool_name: WorkPoolName | None = None
    work_queue_name: WorkQueueName | None = None
    job_variables: dict[str, JsonValue] | None = Field(default=None, max_length=200)
    parent_task_run_id: uuid.UUID | None = None
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)


class SetState(_Request):
    """Propose a state for a flow run.

    Attributes:
        state: the proposed state.
        force: skip the orchestration rules (an operator's override).
    """

    state: State
    force: Bool = False


class OrchestrationResult(BaseModel):
    """The answer to a proposed state.

    Attributes:
        status: ACCEPT, REJECT, WAIT or ABORT.
        state: the run's state after the decision (the proposed one when accepted).
        reason: why it was not accepted as proposed.
        wait_seconds: for WAIT, when to propose again.
    """

    status: Decision
    state: State
    reason: str | None = None
    wait_seconds: float | None = None


class Page(BaseModel, Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next (``None``: no more)."""

    items: list[T]
    next_cursor: str | None = None


class FlowRunFilter(_Request):
    """Which flow runs to list, in what order.

    All given criteria must hold. Runs are ordered by expected start time (creation time for
    runs that were not scheduled).
    """

    state_type: list[StateType] | None = Field(default=None, min_length=1, max_length=9)
    state_name: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None = Field(
        default=None, min_length=1, max_length=20
    )
    flow_name: list[Name] | None = Field(default=None, min_length=1, max_length=50)
    deployment_id: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=50)
    tags_all: list[Tag] | None = Field(default=None, min_length=1, max_length=20)
    expected_start_after: UtcDateTime | None = None
    expected_start_before: UtcDateTime | None = None
    sort: Literal["EXPECTED_START_TIME_DESC", "EXPECTED_START_TIME_ASC"] = "EXPECTED_START_TIME_DESC"
    limit: Int = Field(default=50, ge=1, le=200)
    cursor: Cursor | None = None


class TaskRunUpdate(_Request):
    """A task run as the engine last saw it, with the states it went through since its last report."""

    task_run: TaskRun
    states: list[State] = Field(default_factory=list, max_length=100)


class TaskRunBatch(_Request):
    """Task-run updates reported together by the client-side engine."""

    updates: list[TaskRunUpdate] = Field(min_length=1, max_length=500)


class TaskRunUpsert(BaseModel):
    """What became of one task-run update.

    Attributes:
        id: the task run.
        status: ``applied`` (stored), ``ignored`` (older than, or the same as, what is stored),
            or ``rejected`` (invalid; see ``reason``).
    """

    id: uuid.UUID
    status: Literal["applied", "ignored", "rejected"]
    reason: str | None = None


class TaskRunFilter(_Request):
    """Which task runs to list: those of one flow run (or of none), oldest first."""

    flow_run_id: uuid.UUID | None = None
    limit: Int = Field(default=100, ge=1, le=500)
    cursor: Cursor | None = None


class LogBatch(_Request):
    """Log lines written together."""

    lines: list[LogLine] = Field(min_length=1, max_length=1000)


# -- artifacts --------------------------------------------------------------------------------

MAX_ARTIFACT_DATA_BYTES = 256 * 1024
"""The most an artifact's data may take as JSON (UTF-8): two copies fit one 400 KB store item."""
MAX_IMAGE_BYTES = 4 * 1024 * 1024
"""The largest image an artifact may upload (base64 in a JSON body stays under Lambda's 6 MB)."""
Description = Annotated[str, StringConstraints(max_length=20_000)]
Url = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://[^\x00-\x20\x7f-\x9f]+$"
    ),
]
"""An absolute URL with a scheme, without spaces or control characters (``https://…``, ``s3://…``)."""
TableData = list[dict[str, JsonValue]] | dict[str, list[JsonValue]] | list[list[JsonValue]]
"""A table: rows as dicts, columns as lists, or rows as lists."""


def json_size(value: object) -> int:
    """The length in characters of ``value`` as compact JSON.

    Raises:
        ValueError: the value holds NaN or an infinity, which JSON cannot carry, or text that is
            not valid Unicode (a lone surrogate), which no store keeps.
    """
    return len(_json_text(value))


def json_bytes(value: object) -> int:
    """The size in bytes of ``value`` as compact JSON in UTF-8 (raises as ``json_size`` does)."""
    return len(_json_text(value).encode())


def _json_text(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError("NaN and infinite numbers are not JSON; use null instead") from None
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(
            "text must be valid Unicode; this holds a lone surrogate (half a UTF-16 pair)"
        ) from None
    return text


class _ArtifactCreate(_Request):
    """What every artifact creation carries.

    Attributes:
        id: the artifact's id, chosen by the client so that a retried creation creates one
            artifact (the repeat returns the first); generated when omitted.
        key: files the artifact as the next version of this key.
        description: markdown describing it.
        flow_run_id, task_run_id: the runs that created it.
    """

    id: uuid.UUID | None = None
    key: ArtifactKey | None = None
    description: Description | None = None
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        json_size(self.description)
        data = getattr(self, "data", None)
        if isinstance(data, BaseModel):
            json_size(data.model_dump(mode="json"))
        elif (size := json_bytes(data)) > MAX_ARTIFACT_DATA_BYTES:
            raise ValueError(
                f"the artifact's data is {size:,} bytes as JSON, over the limit of "
                f"{MAX_ARTIFACT_DATA_BYTES:,}; split it, or link to a file instead"
            )
        return self


class MarkdownArtifactCreate(_ArtifactCreate):
    """A markdown artifact: ``data`` is the text."""

    type: Literal["markdown"]
    data: Annotated[str, StringConstraints(max_length=MAX_ARTIFACT_DATA_BYTES)]


class TableArtifactCreate(_ArtifactCreate):
    """A table artifact: ``data`` is a list of row dicts, a dict of columns, or a list of row lists.

    Rows and columns may differ in length (readers pad them); numbers must be finite.
    """

    type: Literal["table"]
    data: TableData


class LinkData(_Request):
    """Where a link artifact points, and the text to show for it."""

    url: Url
    text: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None


class LinkArtifactCreate(_ArtifactCreate):
    """A link artifact."""

    type: Literal["link"]
    data: LinkData


class ProgressArtifactCreate(_ArtifactCreate):
    """A progress artifact: ``data`` is a percentage from 0 to 100."""

    type: Literal["progress"]
    data: Percentage


class ImageLink(_Request):
    """An image to link to: ``url`` is where it lives."""

    url: Url


MAX_IMAGE_BASE64 = (MAX_IMAGE_BYTES + 2) // 3 * 4


def _has(data: object, name: str) -> bool:
    return name in data if isinstance(data, dict) else getattr(data, name, None) is not None


def _image_size(encoded: str) -> str:
    if len(encoded) > MAX_IMAGE_BASE64:
        raise PydanticCustomError(
            "string_too_long",
            f"the image is about {len(encoded) // 4 * 3:,} bytes, over the limit of {MAX_IMAGE_BYTES:,}; "
            "upload it elsewhere and create the artifact with its URL",
        )
    return encoded


class ImageUpload(_Request):
    """An image's bytes, to keep in the blob store.

    Attributes:
        content_base64: the bytes, base64-encoded (at most ``MAX_IMAGE_BYTES`` decoded).
        content_type: the media type (``image/png``); recognised from the bytes when omitted.
    """

    content_base64: Annotated[
        str,
        StringConstraints(min_length=4, pattern=r"^[A-Za-z0-9+/]+={0,2}$"),
        AfterValidator(_image_size),
        WithJsonSchema(
            {
                "type": "string",
                "minLength": 4,
                "maxLength": MAX_IMAGE_BASE64,
                "pattern": r"^[A-Za-z0-9+/]+={0,2}$",
            }
        ),
    ]
    content_type: (
        Annotated[str, StringConstraints(max_length=100, pattern=r"^image/[a-z0-9.+-]+$")] | None
    ) = None


class ImageArtifactCreate(_ArtifactCreate):
    """An image artifact, linked by URL or uploaded to the blob store."""

    type: Literal["image"]
    data: Annotated[
        Annotated[ImageLink, Choice("link")] | Annotated[ImageUpload, Choice("upload")],
        Discriminator(
            lambda data: "link" if isinstance(data, ImageLink | dict) and _has(data, "url") else "upload"
        ),
    ]

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, value: Any) -> Any:
        # the union's own errors would list both shapes' complaints; say what is wrong in one line
        data = value.get("data") if isinstance(value, dict) else None
        if isinstance(data, dict) and ("url" in data) == ("content_base64" in data):
            raise ValueError(
                "an image artifact's data takes either a url or content_base64 (with content_type)"
            )
        return value


ArtifactRequest = (
    MarkdownArtifactCreate
    | TableArtifactCreate
    | LinkArtifactCreate
    | ProgressArtifactCreate
    | ImageArtifactCreate
)
"""A validated artifact creation, of one of the five types."""
ArtifactCreate = Annotated[ArtifactRequest, Field(discriminator="type")]
"""Create an artifact; ``type`` decides the shape of ``data``."""


class ArtifactUpdate(_Request):
    """Update an artifact in place: a progress artifact's progress, any artifact's description.

    Attributes:
        data: the new progress, 0 to 100 (progress artifacts only). Progress never goes back:
            a value below the stored one is ignored.
        description: a new description.
    """

    data: Percentage | None = None
    description: Description | None = None

    @model_validator(mode="after")
    def _unicode(self) -> Self:
        json_size(self.description)
        return self


class ArtifactFilter(_Request):
    """Which artifacts to list: all given criteria must hold.

    With a ``key``, its versions are listed (newest first by default); otherwise artifacts are
    listed by creation time.
    """

    key: ArtifactKey | None = None
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    type: list[ArtifactType] | None = Field(default=None, min_length=1, max_length=5)
    sort: Literal["CREATED_DESC", "CREATED_ASC"] = "CREATED_DESC"
    limit: Int = Field(default=50, ge=1, le=200)
    cursor: Cursor | None = None


# -- variables --------------------------------------------------------------------------------

MAX_VARIABLE_VALUE_LENGTH = 5_000
"""The most characters a variable's value may take as compact JSON (Prefect's limit)."""


def _check_variable(value: JsonValue, tags: list[str] | None) -> None:
    json_size(tags)
    size = json_size(value)
    if size > MAX_VARIABLE_VALUE_LENGTH:
        raise ValueError(
            f"the variable's value is {size:,} characters as JSON, over the limit of "
            f"{MAX_VARIABLE_VALUE_LENGTH:,}; keep large data in an artifact or the blob store"
        )


class VariableCreate(_Request):
    """Create a variable.

    Attributes:
        name: lowercase letters, digits, ``_`` and ``-``, at most 255 characters.
        value: any JSON value, at most ``MAX_VARIABLE_VALUE_LENGTH`` characters as compact JSON.
        tags: tags.
    """

    name: VariableName
    value: JsonValue
    tags: list[Tag] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        _check_variable(self.value, self.tags)
        return self


class VariableUpdate(_Request):
    """Change a variable's value, its tags, or both: the fields given change (``null`` is a value)."""

    value: JsonValue = None
    tags: list[Tag] | None = Field(default=None, max_length=50)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        _check_variable(self.value if "value" in self.model_fields_set else None, self.tags)
        return self


class VariableFilter(_Request):
    """Which variables to list, by name."""

    name_prefix: (
        Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[a-z0-9_-]+$")] | None
    ) = None
    tags_all: list[Tag] | None = Field(default=None, min_length=1, max_length=20)
    limit: Int = Field(default=100, ge=1, le=500)
    cursor: Cursor | None = None


# -- cursors ----------------------------------------------------------------------------------


def encode_cursor(after: str) -> str:
    """An opaque cursor that continues a listing after the sort key ``after``."""
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The sort key a cursor continues after. Raises ``InvalidValueError`` for a forged one."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = payload["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidValueError("the cursor is invalid; pass back a next_cursor this API returned") from None
    if not isinstance(after, str):
        raise InvalidValueError("the cursor is invalid; pass back a next_cursor this API returned")
    return after
