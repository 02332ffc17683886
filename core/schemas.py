"""What clients send to the control plane and what it answers, beyond the records themselves.

Every request model forbids unknown fields and bounds every list and string, so bad input is
refused with a clear 422 before it reaches a service.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from overcast.core.errors import InvalidValueError
from overcast.core.models import LogLine, Name, Parameters, RetryPolicy, Tag, TaskRun
from overcast.core.orchestration import Decision
from overcast.core.states import State, StateType
from overcast.core.types import Bool, Int, UtcDateTime

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
