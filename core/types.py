"""Field types that take JSON values at face value.

pydantic's lax mode turns ``true`` into 1, ``"5"`` into 5 and a number into a datetime. For an
API that must refuse what its schema does not allow, numbers, booleans and datetimes here
accept only their own JSON type (an int is still a valid float).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # what a ``Z`` or ``+00:00`` parses to: nearly every value
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # naive times are taken as UTC, as Prefect's API does
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # Within hours of year 1 or 9999 an offset can push the instant past what datetime
        # holds; RFC 3339 allows such values, so they are pinned to the edge of time.
        edge = datetime.min if value.year < 5000 else datetime.max
        return edge.replace(tzinfo=UTC)


_NUMERIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a JSON number")
    return value


def _text_or_datetime(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        if ":" in value:  # a time of day: no number has one (the common case, without a regex)
            return value
        # pydantic would read a numeric string ("0", "1.5e9") as Unix time: not ISO 8601
        if not _NUMERIC.fullmatch(value.strip()):
            return value
    raise ValueError("expected an ISO 8601 date-time string")


Int = Annotated[int, BeforeValidator(_number)]
"""An integer: a JSON number with no fraction (``3`` or ``3.0``), not a bool or a numeric string."""
Float = Annotated[float, BeforeValidator(_number)]
"""A JSON number, not a bool or a numeric string."""
Bool = Annotated[bool, Strict()]
"""``true`` or ``false``, not 0 or 1."""
UtcDateTime = Annotated[datetime, BeforeValidator(_text_or_datetime), AfterValidator(_as_utc)]
"""An ISO 8601 date-time, normalized to UTC (a naive one is taken as UTC)."""
Percentage = Annotated[float, Field(ge=0, le=100), BeforeValidator(_number)]
"""A JSON number from 0 to 100 (the bounds come first, so the JSON schema states them)."""
