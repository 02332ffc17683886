"""Run states: their types, their well-known names, and constructors for each.

A state has a *type* (what orchestration reasons about) and a *name* (what people read, and
what events are named after): ``Late`` and ``AwaitingRetry`` are both SCHEDULED, ``Cached`` is
COMPLETED, ``TimedOut`` is FAILED. The names are Prefect 3's, so a Prefect user reads them as
before.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from overcast.core.types import Bool, UtcDateTime


class StateType(StrEnum):
    """What a run is doing, as orchestration sees it."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CANCELLING = "CANCELLING"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"


TERMINAL_TYPES = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED})

DEFAULT_NAMES: dict[StateType, str] = {t: t.value.title() for t in StateType}

# Well-known names and the type each belongs to; a state with one of these names must have
# that type (a "Late" state that is RUNNING would mislead every reader and automation).
KNOWN_NAMES: dict[str, StateType] = {
    **{name: t for t, name in DEFAULT_NAMES.items()},
    "Late": StateType.SCHEDULED,
    "AwaitingRetry": StateType.SCHEDULED,
    "AwaitingConcurrencySlot": StateType.SCHEDULED,
    "Submitting": StateType.PENDING,
    "InfrastructurePending": StateType.PENDING,
    "NotReady": StateType.PENDING,
    "Retrying": StateType.RUNNING,
    "Rerunning": StateType.RUNNING,
    "Cached": StateType.COMPLETED,
    "RolledBack": StateType.COMPLETED,
    "TimedOut": StateType.FAILED,
    "Suspended": StateType.PAUSED,
}


MAX_NAME = 100
MAX_MESSAGE = 10_000


class RunFailedError(RuntimeError):
    """Raised by ``State.result()`` for a failed run whose exception is not in this process."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp Overcast stores is)."""
    return datetime.now(UTC)


class StateDetails(BaseModel):
    """Facts a state carries for orchestration.

    Attributes:
        scheduled_time: when a SCHEDULED (or AwaitingRetry, Suspended) run should start.
        transition_id: the proposer's id for this transition; proposing it again is a no-op.
        cache_key: the cache key a Cached or Completed state was stored under.
        cache_expiration: when that cache entry expires.
        pause_key: identifies one pause of a run, so that a resume names the pause it ends.
        pause_timeout: when a PAUSED run fails if nobody resumed it.
        pause_reschedule: a Suspended run goes back to SCHEDULED when resumed.
        retriable: whether the failure may be retried (False stops retries).
    """

    model_config = ConfigDict(extra="forbid")

    scheduled_time: UtcDateTime | None = None
    transition_id: uuid.UUID | None = None
    cache_key: str | None = Field(default=None, max_length=2000)
    cache_expiration: UtcDateTime | None = None
    pause_key: str | None = Field(default=None, max_length=200)
    pause_timeout: UtcDateTime | None = None
    pause_reschedule: Bool = False
    retriable: Bool | None = None


ResultLoader = Callable[[dict[str, Any]], Any]
_result_loader: ResultLoader | None = None


def register_result_loader(loader: ResultLoader) -> None:
    """Let ``State.result()`` load persisted results (the SDK registers its loader on import).

    The control plane's models cannot open blob stores themselves (core depends on nothing
    above it); a state whose ``data`` is a result reference (a dict naming its ``serializer``)
    is loaded through this hook.
    """
    global _result_loader  # noqa: PLW0603 - one loader per process
    _result_loader = loader


class State(BaseModel):
    """A run's state at one moment.

    A well-known name belongs to one type (``Late``, ``AwaitingRetry``: SCHEDULED; ``Retrying``:
    RUNNING; ``Cached``: COMPLETED; ``TimedOut``: FAILED; ``Suspended``: PAUSED …); a state
    with such a name and another type is refused.

    Attributes:
        id: the state's own id; a replayed state with the same id changes nothing.
        type: the state type.
        name: the state's name (``Late``, ``Cached`` …); defaults to the type's name.
        timestamp: when the state was entered (UTC).
        message: a human explanation (an error's message, a reason).
        data: a small JSON result, or a reference to a stored result (``{"ref": "blob key"}``).
        details: facts for orchestration.
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: StateType
    name: str = Field(default="", max_length=MAX_NAME)
    timestamp: UtcDateTime = Field(default_factory=utcnow)
    message: str | None = Field(default=None, max_length=MAX_MESSAGE)
    data: JsonValue = None
    details: StateDetails = Field(default_factory=StateDetails)

    @model_validator(mode="after")
    def _name_matches_type(self) -> State:
        if not self.name:
            self.name = DEFAULT_NAMES[self.type]
        expected = KNOWN_NAMES.get(self.name)
        if expected is not None and expected is not self.type:
            raise ValueError(f"a state named {self.name!r} must be {expected.value}, not {self.type.value}")
        return self

    # The Python value or exception of a run finished in this process (not stored, not sent)
    # are plain instance attributes, set only by ``attach``: pydantic private attributes would
    # cost every State validated (the API validates thousands a second) a Python call each.

    def attach(self, value: Any = None, exception: BaseException | None = None) -> None:
        """Attach the in-process result or exception (the engine does, for ``result()``)."""
        attached = self.__dict__
        attached["_value"], attached["_exception"] = value, exception

    def result(self, raise_on_failure: bool = True) -> Any:
        """Return the run's result.

        Args:
            raise_on_failure: for a FAILED, CRASHED or CANCELLED state, raise the run's
                exception (or a ``RunFailedError`` with its message) instead of returning it.
        """
        attached = self.__dict__
        failed = self.type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)
        if failed:
            error = attached.get("_exception") or RunFailedError(self.message or f"the run is {self.name}")
            if raise_on_failure:
                raise error
            return error
        value = attached.get("_value")
        if value is not None:
            return value
        if _result_loader is not None and isinstance(self.data, dict) and "serializer" in self.data:
            # a persisted result, read in another process
            value = attached["_value"] = _result_loader(self.data)
            return value
        return self.data

    @property
    def is_terminal(self) -> bool:
        """Whether the run is over (COMPLETED, FAILED, CANCELLED or CRASHED)."""
        return self.type in TERMINAL_TYPES

    def is_scheduled(self) -> bool:
        """Whether the state is SCHEDULED (including Late and AwaitingRetry)."""
        return self.type is StateType.SCHEDULED

    def is_running(self) -> bool:
        """Whether the state is RUNNING."""
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        """Whether the state is COMPLETED (including Cached)."""
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        """Whether the state is FAILED (including TimedOut)."""
        return self.type is StateType.FAILED

    def is_pending(self) -> bool:
        """Whether the state is PENDING (including NotReady)."""
        return self.type is StateType.PENDING

    def is_paused(self) -> bool:
        """Whether the state is PAUSED (including Suspended)."""
        return self.type is StateType.PAUSED

    def is_cancelling(self) -> bool:
        """Whether the state is CANCELLING: cancellation asked for, the run not stopped yet."""
        return self.type is StateType.CANCELLING

    def is_cancelled(self) -> bool:
        """Whether the state is CANCELLED."""
        return self.type is StateType.CANCELLED

    def is_crashed(self) -> bool:
        """Whether the state is CRASHED."""
        return self.type is StateType.CRASHED

    def is_final(self) -> bool:
        """Whether the run is over (COMPLETED, FAILED, CANCELLED or CRASHED): ``is_terminal`` as a method."""
        return self.type in TERMINAL_TYPES

    def fresh(self, **changes: Any) -> State:
        """Return a copy with a new id and timestamp (and any ``changes``), as a new transition."""
        return self.model_copy(update={"id": uuid.uuid4(), "timestamp": utcnow(), **changes})


def _state(type_: StateType, name: str | None, message: str | None, data: JsonValue, **details: Any) -> State:
    return State(type=type_, name=name or "", message=message, data=data, details=StateDetails(**details))


def Scheduled(  # noqa: N802 - constructors read as state names, as in Prefect
    scheduled_time: datetime | None = None, *, name: str | None = None, message: str | None = None
) -> State:
    """A SCHEDULED state, to start at ``scheduled_time`` (now when omitted)."""
    return _state(StateType.SCHEDULED, name, message, None, scheduled_time=scheduled_time or utcnow())


def Late(scheduled_time: datetime, *, message: str | None = None) -> State:  # noqa: N802
    """A SCHEDULED state named Late: the run missed its start time."""
    return Scheduled(scheduled_time, name="Late", message=message)


def AwaitingRetry(delay_s: float = 0, *, message: str | None = None, now: datetime | None = None) -> State:  # noqa: N802
    """A SCHEDULED state named AwaitingRetry, to run again after ``delay_s`` seconds."""
    start = (now or utcnow()) + timedelta(seconds=delay_s)
    return Scheduled(start, name="AwaitingRetry", message=message)


def AwaitingConcurrencySlot(delay_s: float = 30, *, message: str | None = None) -> State:  # noqa: N802
    """A SCHEDULED state named AwaitingConcurrencySlot, to try again after ``delay_s`` seconds."""
    return Scheduled(utcnow() + timedelta(seconds=delay_s), name="AwaitingConcurrencySlot", message=message)


def Pending(*, name: str | None = None, message: str | None = None) -> State:  # noqa: N802
    """A PENDING state: claimed, about to run."""
    return _state(StateType.PENDING, name, message, None)


def Running(*, name: str | None = None, message: str | None = None) -> State:  # noqa: N802
    """A RUNNING state."""
    return _state(StateType.RUNNING, name, message, None)


def Retrying(*, message: str | None = None) -> State:  # noqa: N802
    """A RUNNING state named Retrying."""
    return Running(name="Retrying", message=message)


def Completed(data: JsonValue = None, *, name: str | None = None, message: str | None = None) -> State:  # noqa: N802
    """A COMPLETED state carrying ``data`` (a small result or a result reference)."""
    return _state(StateType.COMPLETED, name, message, data)


def Cached(data: JsonValue = None, *, cache_key: str | None = None, message: str | None = None) -> State:  # noqa: N802
    """A COMPLETED state named Cached: the result came from the cache."""
    return _state(StateType.COMPLETED, "Cached", message, data, cache_key=cache_key)


def Failed(message: str | None = None, *, name: str | None = None, data: JsonValue = None) -> State:  # noqa: N802
    """A FAILED state."""
    return _state(StateType.FAILED, name, message, data)


def TimedOut(message: str | None = None) -> State:  # noqa: N802
    """A FAILED state named TimedOut."""
    return Failed(message, name="TimedOut")


def Crashed(message: str | None = None) -> State:  # noqa: N802
    """A CRASHED state: the run's process or sandbox died."""
    return _state(StateType.CRASHED, None, message, None)


def Cancelling(message: str | None = None) -> State:  # noqa: N802
    """A CANCELLING state: cancellation asked for, the run's process must stop."""
    return _state(StateType.CANCELLING, None, message, None)


def Cancelled(message: str | None = None) -> State:  # noqa: N802
    """A CANCELLED state."""
    return _state(StateType.CANCELLED, None, message, None)


def Paused(  # noqa: N802
    *, timeout_s: float | None = None, pause_key: str | None = None, message: str | None = None
) -> State:
    """A PAUSED state, failing after ``timeout_s`` seconds unless resumed."""
    timeout = utcnow() + timedelta(seconds=timeout_s) if timeout_s is not None else None
    return _state(StateType.PAUSED, None, message, None, pause_timeout=timeout, pause_key=pause_key)


def Suspended(  # noqa: N802
    *, timeout_s: float | None = None, pause_key: str | None = None, message: str | None = None
) -> State:
    """A PAUSED state named Suspended: the run's process exits; resuming reschedules it."""
    timeout = utcnow() + timedelta(seconds=timeout_s) if timeout_s is not None else None
    return _state(
        StateType.PAUSED,
        "Suspended",
        message,
        None,
        pause_timeout=timeout,
        pause_key=pause_key,
        pause_reschedule=True,
    )
