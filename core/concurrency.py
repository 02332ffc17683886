"""Global concurrency limits and rate limits: the records, the requests and the answers.

A *concurrency limit* has ``limit`` slots. Code that needs one of the limited resources (a
database connection, an API quota) takes slots before it starts and gives them back when it
ends; when every slot is taken, the next taker waits. Takers hold their slots under a *lease*:
a taker that dies without giving them back loses them when the lease lapses (unless renewed).

A limit with ``slot_decay_per_second > 0`` is a *rate limit*: its slots are never given back,
they free themselves at that rate (a leaky bucket), so ``limit`` 10 with a decay of 2 lets
bursts of 10 through and then 2 a second.

A limit that is not ``active`` is ignored: taking its slots succeeds at once and takes none.
A limit of 0 lets nothing through (a request waits until the limit is raised), and so does any
request for more slots than the limit has.

As in Prefect 3: ``ConcurrencyLimit`` is ``ConcurrencyLimitV2`` (``name``, ``limit``,
``active``, ``slot_decay_per_second``, ``active_slots``, ``denied_slots``), and ``SlotRequest``
is the body of ``increment-with-lease``.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from overcast.core.errors import ConditionFailedError, InvalidValueError
from overcast.core.schemas import Cursor
from overcast.core.types import Bool, Int, UtcDateTime, _number

MAX_LIMIT = 1_000_000
"""The most slots a limit may have (and a request may ask for)."""
MAX_DECAY = 1_000_000.0
"""The fastest slot decay, in slots per second."""
MAX_NAMES = 50
"""The most limits one request may name (all are written in one store transaction)."""
MAX_LEASE_S = 86_400.0
"""The longest lease: a day (renew a longer hold)."""
DEFAULT_LEASE_S = 300.0
MAX_NAME_CHARS = 200
MAX_HOLDER_CHARS = 200

LIMIT_NAME_PATTERN = r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]*$"
_LIMIT_NAME = re.compile(LIMIT_NAME_PATTERN)
_NAME_RULE = "use letters, digits, '_', '-', ':' and '.' (not first)"


def _check_name(value: str) -> str:
    if not _LIMIT_NAME.fullmatch(value):
        raise PydanticCustomError(
            "string_pattern_mismatch", f"concurrency limit name {value!r} is invalid: {_NAME_RULE}"
        )
    return value


ConcurrencyLimitName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_NAME_CHARS),
    AfterValidator(_check_name),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": LIMIT_NAME_PATTERN}
    ),
]
"""A limit's name: 1-200 letters, digits, ``_``, ``-``, ``:`` and ``.`` (not first): ``db``, ``tag:etl``, ``openai.api``."""

# The bounds go before the validator so that they stay in the JSON schema inside ``… | None``.
SlotCount = Annotated[int, Field(ge=0, le=MAX_LIMIT), BeforeValidator(_number)]
"""How many slots a limit has: a JSON integer from 0 to 1,000,000."""
DecayRate = Annotated[float, Field(ge=0, le=MAX_DECAY), BeforeValidator(_number)]
"""Slots freed per second: a JSON number from 0 (a concurrency limit) to 1,000,000."""
LeaseSeconds = Annotated[float, Field(gt=0, le=MAX_LEASE_S), BeforeValidator(_number)]
"""A lease's length: a JSON number of seconds in (0, 86,400]."""
Holder = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_HOLDER_CHARS, pattern=r"^[^\x00-\x1f]+$")
]
"""Who takes the slots (shown with the lease): any printable text of 1-200 characters."""
Mode = Literal["concurrency", "rate_limit"]


def limit_name(name: object) -> str:
    """Return ``name`` when it is a valid limit name (checked where a name is not in a model).

    Raises:
        InvalidValueError: it is not a string of 1-200 letters, digits, ``_``, ``-``, ``:`` and ``.``.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS or not _LIMIT_NAME.fullmatch(name):
        raise InvalidValueError(f"concurrency limit name {name!r} is invalid: 1-200 characters; {_NAME_RULE}")
    return name


class ConcurrencyLimit(BaseModel):
    """A global concurrency limit or rate limit, with its occupancy as of when it was read.

    Attributes:
        id: the limit's id.
        name: its name (unique; how code refers to it).
        limit: how many slots it has.
        active: whether it is enforced (an inactive limit lets everything through).
        slot_decay_per_second: 0 for a concurrency limit; above 0, a rate limit whose
            occupied slots free themselves at this rate.
        active_slots: slots occupied now: held under live leases, plus (rate limits) those
            that have not decayed yet.
        denied_slots: slots asked for and refused since the limit last granted any (a gauge
            of waiting demand; approximate under contention).
        created, updated: record timestamps (``updated`` moves with settings, not slots).
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    name: ConcurrencyLimitName
    limit: int
    active: bool
    slot_decay_per_second: float
    active_slots: int
    denied_slots: int
    created: UtcDateTime
    updated: UtcDateTime

    @property
    def is_rate_limit(self) -> bool:
        """Whether its slots decay (a rate limit) rather than being given back."""
        return self.slot_decay_per_second > 0


class ConcurrencyLease(BaseModel):
    """A taker's hold on the slots it took, as ``renew`` returns it.

    Attributes:
        id: the lease's id (release and renew by it).
        limits: the limits it holds slots in (rate limits are never listed: their slots decay).
        slots: how many slots it holds in each.
        holder: who took them, if said.
        expires_at: when the slots free themselves unless the lease is renewed.
        lease_seconds: the lease's length (a renewal extends it by this much from now).
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    limits: list[str]
    slots: int
    holder: str | None = None
    expires_at: UtcDateTime
    lease_seconds: float


class SlotAcquisition(BaseModel):
    """The answer to a ``SlotRequest``: the slots were taken, or the caller must wait.

    Attributes:
        status: ``ACQUIRED``: every active limit named gave its slots (all or none);
            ``WAIT``: at least one had too few free, nothing was taken.
        lease_id: (ACQUIRED) the lease to release and renew; ``None`` when no slot needs
            giving back (only rate limits, inactive or missing limits were named).
        expires_at: (ACQUIRED, with a lease) when the lease lapses unless renewed.
        limits: (ACQUIRED) the limits whose slots were taken.
        missing: the names of limits that do not exist (taken as no limit at all).
        blocked_by: (WAIT) the limits that had too few free slots.
        retry_after_seconds: (WAIT) how long to wait before asking again.
        reason: (WAIT) why, in words.
    """

    model_config = ConfigDict(extra="forbid")

    status: Literal["ACQUIRED", "WAIT"]
    lease_id: uuid.UUID | None = None
    expires_at: UtcDateTime | None = None
    limits: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    blocked_by: list[str] = Field(default_factory=list)
    retry_after_seconds: float | None = None
    reason: str | None = None

    @property
    def acquired(self) -> bool:
        """Whether the slots were taken."""
        return self.status == "ACQUIRED"


# -- requests ----------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConcurrencyLimitCreate(_Request):
    """A new limit: its name, its slots, whether it is enforced, and (rate limits) its decay."""

    name: ConcurrencyLimitName
    limit: SlotCount
    active: Bool = True
    slot_decay_per_second: DecayRate = 0.0


class ConcurrencyLimitUpdate(_Request):
    """The settings to change; those left out (or null) stay as they are.

    Turning a rate limit into a concurrency limit (``slot_decay_per_second`` to 0) frees the
    slots that were still decaying; the leases of a concurrency limit are kept either way.
    """

    limit: SlotCount | None = None
    active: Bool | None = None
    slot_decay_per_second: DecayRate | None = None


class ConcurrencyLimitFilter(_Request):
    """Which limits to list, by name."""

    name_prefix: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[A-Za-z0-9_.:-]+$")
        ]
        | None
    ) = None
    limit: Int = Field(default=100, ge=1, le=500)
    cursor: Cursor | None = None


class SlotRequest(_Request):
    """Take ``slots`` slots in every limit ``names`` names, all or none.

    ``mode="concurrency"`` holds them under a lease of ``lease_seconds`` (give them back with a
    release; a rate limit's slots decay instead); ``mode="rate_limit"`` takes slots that are
    never given back, and is refused unless every active limit named decays. A limit that does
    not exist counts as no limit, unless ``strict`` (then the request fails).
    """

    names: list[ConcurrencyLimitName] = Field(min_length=1, max_length=MAX_NAMES)
    slots: Int = Field(default=1, ge=1, le=MAX_LIMIT)
    mode: Mode = "concurrency"
    lease_seconds: LeaseSeconds = DEFAULT_LEASE_S
    holder: Holder | None = None
    strict: Bool = False


# -- errors ------------------------------------------------------------------------------------


class ConcurrencyLimitExistsError(ConditionFailedError, ValueError):
    """Raised when a limit is created under a name that is taken.

    Attributes:
        name: the limit's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"LIMIT#{name}", "META", "absent")
        self.args = (f"concurrency limit {name!r} already exists",)


class NotARateLimitError(ConditionFailedError):
    """Raised when slots are taken as a rate limit (never given back) from limits that do not decay.

    Such slots would stay taken for good. Give the limits a ``slot_decay_per_second``, or take
    their slots with ``concurrency`` (which gives them back).

    Attributes:
        names: the active limits named that have no slot decay (over HTTP: every limit named).
    """

    def __init__(self, names: list[str], message: str | None = None) -> None:
        self.names = names
        super().__init__(f"LIMIT#{names[0]}", "META", "a slot decay")
        self.args = (
            message
            or f"concurrency limits {names} have no slot decay, so they cannot be used as rate limits: "
            "set their slot_decay_per_second, or take their slots with concurrency()",
        )
