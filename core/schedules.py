"""Schedules: when a deployment's runs are due. Cron, interval and RRULE, in a time zone.

A schedule is a value: validated when it is made (a cron that does not parse, a zone that does
not exist, a rule that never fires are refused with a message that says so), and asked for its
``occurrences`` in a window, as UTC datetimes. Calendar rules are read by well-kept libraries,
never by hand: croniter for cron, python-dateutil for RRULE (RFC 5545), zoneinfo for zones.

Daylight saving time
--------------------
Cron and RRULE schedules, and intervals of a day or more, are *wall-clock* schedules: their
times are read on the clock of their zone (``0 9 * * *`` in ``America/New_York`` is 09:00 in
New York all year: 14:00 UTC in winter, 13:00 UTC in summer). Where the clock jumps, we follow
RFC 5545 (section 3.3.5), as iCalendar and Python's ``zoneinfo`` (``fold=0``) do:

- a wall time that happens twice (clocks go back: 01:30 on the first Sunday of November in
  New York) fires once, at its first occurrence;
- a wall time that does not happen (clocks go forward: 02:30 on the second Sunday of March)
  fires once, read with the offset before the jump, that is moved forward by the jump's length
  (02:30 EST does not exist, so it fires at 03:30 EDT);
- two wall times that land on the same instant fire once (``*/30`` on the spring-forward day
  gives 01:30, 03:00, 03:30, …: 02:00 and 02:30 become 03:00 and 03:30, which fire anyway).

So a daily or weekly schedule is never skipped nor doubled on a transition day; an hourly cron
has one slot fewer on the spring-forward day and no second 01:00 in the autumn (its hour of
wall time happens once). Intervals shorter than a day are *elapsed* time: every 15 minutes is
every 15 minutes of real time, whatever the clock on the wall says. These are Prefect's rules
for cron and interval schedules, made exact at the transitions.
"""

from __future__ import annotations

import bisect
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    PlainSerializer,
    StringConstraints,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from overcast.core.types import Bool

if TYPE_CHECKING:
    from collections.abc import Iterator

    from dateutil.rrule import rrule, rruleset

MAX_CRON_LENGTH = 100
MAX_RRULE_LENGTH = 6_500  # Prefect's limit
MIN_INTERVAL = timedelta(seconds=1)
MAX_INTERVAL = timedelta(days=3660)
DST_MARGIN = timedelta(hours=3)
"""More than any clock jump a zone makes today (2 hours at most): how far around a window
wall-clock candidates are looked at, since a jump moves a wall time's instant by that much."""
MAX_CANDIDATES = 200_000
"""The most candidate times one ``occurrences`` call looks at (a guard for dense rules)."""
DEFAULT_ANCHOR = datetime(2020, 1, 1)
RRULE_DEFAULT_START = datetime(2000, 1, 1)


# -- time zones ----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def zone(name: str | None) -> ZoneInfo:
    """The zone called ``name`` (``None``: UTC).

    Raises:
        ValueError: no such IANA zone.
    """
    if name is None:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'"
        ) from None


def _check_zone(name: str) -> str:
    try:
        zone(name)
    except ValueError as exc:
        raise PydanticCustomError("time_zone", str(exc)) from None
    return name


TimeZoneName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_+\-/]*$"),
    AfterValidator(_check_zone),
]
"""An IANA time zone name (``UTC``, ``Europe/Paris``); checked against the zone database."""


def to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant at which the clocks of ``tz`` show the naive wall time ``wall``.

    An ambiguous wall time is its first occurrence; a nonexistent one is read with the offset
    before the jump (RFC 5545), so it lands the jump's length later. See the module docstring.
    """
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def to_wall(moment: datetime, tz: ZoneInfo) -> datetime:
    """The naive wall time that the clocks of ``tz`` show at ``moment``."""
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


# -- the three kinds ---------------------------------------------------------------------------


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: TimeZoneName | None = None

    @property
    def tz(self) -> ZoneInfo:
        """The schedule's zone (UTC when none is given)."""
        return zone(self.timezone)


def _check_cron(expression: str) -> str:
    from croniter import CroniterBadDateError, CroniterError, croniter

    text = " ".join(expression.split())
    if not text.startswith("@") and len(text.split(" ")) != 5:
        raise PydanticCustomError(
            "cron",
            "cron '{cron}' must have 5 fields (minute hour day-of-month month day-of-week), "
            "or be a macro such as @hourly or @daily; seconds and years are not supported",
            {"cron": expression},
        )
    try:
        croniter(text, RRULE_DEFAULT_START).get_next(datetime)
    except CroniterBadDateError:
        raise PydanticCustomError(
            "cron", "cron '{cron}' never fires (no date matches it)", {"cron": expression}
        ) from None
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise PydanticCustomError(
            "cron",
            "cron '{cron}' is invalid: {reason}",
            {"cron": expression, "reason": str(exc) or "unreadable"},
        ) from None
    return text


class CronSchedule(_Schedule):
    """Runs at the times a cron expression names, on the wall clock of ``timezone``.

    Attributes:
        cron: five fields (minute hour day-of-month month day-of-week: ``0 9 * * MON-FRI``),
            or a macro (``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``).
            croniter's extensions work too (``L`` for the last day, ``5#3`` for the third
            Friday).
        timezone: an IANA zone; UTC when omitted.
        day_or: when both day fields are restricted, run on days matching either (cron's
            rule, the default) or only on days matching both.
    """

    cron: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_CRON_LENGTH), AfterValidator(_check_cron)
    ]
    day_or: Bool = True


def _interval(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("an interval is a number of seconds or an ISO 8601 duration")
    return value


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def _naive_or_aware(value: Any) -> Any:
    if value is None or isinstance(value, str | datetime):
        return value
    raise ValueError("expected an ISO 8601 date-time string")


class IntervalSchedule(_Schedule):
    """Runs every ``interval``, counted from ``anchor_date``.

    Intervals of a day or more keep the anchor's wall-clock time in ``timezone`` (a daily run
    at 09:00 stays at 09:00 across DST); shorter ones are elapsed time. Occurrences fall on
    ``anchor_date + k * interval`` for every whole ``k``, before the anchor too: the anchor
    sets the phase, not a start.

    Attributes:
        interval: seconds (a number) or an ISO 8601 duration (``PT1H``); at least one second.
            Sent back as seconds.
        anchor_date: where the count starts; a naive date-time is read in ``timezone``.
            Defaults to 2020-01-01 00:00 in ``timezone``, so that an hourly interval fires on
            the hour and every deploy of the same schedule computes the same times.
        timezone: an IANA zone; UTC when omitted.
    """

    interval: Annotated[
        timedelta,
        BeforeValidator(_interval),
        PlainSerializer(_seconds, return_type=float, when_used="json"),
        WithJsonSchema({"type": "number", "minimum": 1, "maximum": MAX_INTERVAL.total_seconds()}),
    ]
    anchor_date: Annotated[datetime | None, BeforeValidator(_naive_or_aware)] = None

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if not MIN_INTERVAL <= self.interval <= MAX_INTERVAL:
            raise PydanticCustomError(
                "interval",
                "the interval must be between 1 second and 3660 days, not {seconds} seconds",
                {"seconds": self.interval.total_seconds()},
            )
        if self.anchor_date is not None and self.anchor_date.tzinfo is None:
            self.anchor_date = self.anchor_date.replace(tzinfo=self.tz).astimezone(UTC)
        elif self.anchor_date is not None:
            self.anchor_date = self.anchor_date.astimezone(UTC)
        return self

    @property
    def anchor(self) -> datetime:
        """The anchor as an aware UTC instant (the default one when none was given)."""
        return self.anchor_date or to_utc(DEFAULT_ANCHOR, self.tz)

    @property
    def wall_clock(self) -> bool:
        """Whether occurrences keep their wall-clock time (intervals of a day or more)."""
        return self.interval >= timedelta(days=1)


_TZID = re.compile(r"DTSTART;TZID=([^:;\n]+):", re.IGNORECASE)


class RRuleSchedule(_Schedule):
    """Runs at the times an iCalendar recurrence rule names (RFC 5545), on the wall clock of its zone.

    Attributes:
        rrule: an ``RRULE:…`` line (the ``RRULE:`` prefix may be left out), optionally with
            ``DTSTART``, ``RDATE``, ``EXRULE`` and ``EXDATE`` lines:
            ``DTSTART:20260105T090000\\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR``. Without a
            ``DTSTART`` the rule starts at 2000-01-01 00:00 in its zone, so times of day come
            from ``BYHOUR``/``BYMINUTE`` (midnight by default).
        timezone: an IANA zone; when omitted, the zone of ``DTSTART;TZID=…``, else UTC.
    """

    rrule: Annotated[str, StringConstraints(min_length=1, max_length=MAX_RRULE_LENGTH)]

    @model_validator(mode="after")
    def _parses(self) -> Self:
        if self.timezone is None and (found := _TZID.search(self.rrule)):
            try:
                zone(found.group(1))
            except ValueError as exc:
                raise PydanticCustomError("rrule", str(exc)) from None
            self.timezone = found.group(1)
        try:
            rules = _parse_rrule(self.rrule, self.timezone)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise PydanticCustomError(
                "rrule",
                "rrule '{rrule}' is invalid ({reason}); write it as RFC 5545 does, e.g. "
                "'FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=9;BYMINUTE=0'",
                {"rrule": self.rrule, "reason": str(exc) or type(exc).__name__},
            ) from None
        if not rules.rrules and not rules.rdates:
            raise PydanticCustomError("rrule", "rrule '{rrule}' has no RRULE or RDATE", {"rrule": self.rrule})
        return self


Schedule = Annotated[
    Annotated[CronSchedule, Tag("cron")]
    | Annotated[IntervalSchedule, Tag("interval")]
    | Annotated[RRuleSchedule, Tag("rrule")],
    Discriminator(
        lambda value: next(
            (
                kind
                for kind in ("cron", "interval", "rrule")
                if (kind in value if isinstance(value, dict) else hasattr(value, kind))
            ),
            None,
        ),
        custom_error_type="schedule_kind",
        custom_error_message="a schedule needs one of cron, interval or rrule",
    ),
]
"""A cron, interval or RRULE schedule, told apart by which of ``cron``, ``interval`` or
``rrule`` it has (Prefect's shapes: ``{"cron": "0 9 * * *", "timezone": "Europe/Paris"}``)."""

AnySchedule = CronSchedule | IntervalSchedule | RRuleSchedule


# -- occurrences -----------------------------------------------------------------------------


def occurrences(schedule: AnySchedule, start: datetime, end: datetime, limit: int = 100) -> list[datetime]:
    """The times ``schedule`` fires in ``[start, end)``, earliest first, at most ``limit`` of them.

    Args:
        schedule: the schedule.
        start: the window's start (included); a naive datetime is taken as UTC.
        end: the window's end (excluded).
        limit: the most times to return.

    Returns:
        Distinct aware UTC datetimes, ascending.
    """
    start, end = _aware(start), _aware(end)
    if limit <= 0 or end <= start:
        return []
    if isinstance(schedule, IntervalSchedule) and not schedule.wall_clock:
        return _elapsed(schedule, start, end, limit)
    tz = schedule.tz
    found: list[datetime] = []
    wall_start, wall_end = to_wall(start, tz) - DST_MARGIN, to_wall(end, tz) + DST_MARGIN
    for looked, wall in enumerate(_wall_times(schedule, wall_start), start=1):
        if wall > wall_end or looked > MAX_CANDIDATES:
            break
        if len(found) >= limit and wall > to_wall(found[limit - 1], tz) + DST_MARGIN:
            break  # no later wall time can land before the limit-th found
        moment = to_utc(wall, tz)
        if start <= moment < end:
            at = bisect.bisect_left(found, moment)
            if at == len(found) or found[at] != moment:
                found.insert(at, moment)
                del found[limit + 1 :]
    return found[:limit]


def next_occurrences(schedule: AnySchedule, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` times ``schedule`` fires at or after ``after`` (looking up to ten years ahead)."""
    after = _aware(after)
    return occurrences(schedule, after, after + timedelta(days=3660), count)


def describe(schedule: AnySchedule) -> str:
    """A short human description: ``cron '0 9 * * *' (Europe/Paris)``, ``every 1:00:00``."""
    where = f" ({schedule.timezone})" if schedule.timezone else ""
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.cron!r}{where}"
    if isinstance(schedule, IntervalSchedule):
        anchor = f" from {schedule.anchor_date.isoformat()}" if schedule.anchor_date else ""
        return f"every {_duration(schedule.interval)}{anchor}{where}"
    return f"rrule {schedule.rrule!r}{where}"


def _duration(span: timedelta) -> str:
    """``1d 6h``, ``15m``, ``1m 30s``: a span in its non-zero units."""
    seconds = span.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return " ".join(parts)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _elapsed(schedule: IntervalSchedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    anchor, step = schedule.anchor, schedule.interval
    k = -((anchor - start) // step)  # the first k with anchor + k * step >= start
    out: list[datetime] = []
    moment = anchor + k * step
    while moment < end and len(out) < limit:
        out.append(moment)
        k += 1
        moment = anchor + k * step
    return out


def _wall_times(schedule: AnySchedule, wall_start: datetime) -> Iterator[datetime]:
    """Naive wall times of ``schedule`` from ``wall_start`` on, ascending."""
    if isinstance(schedule, CronSchedule):
        from croniter import croniter

        it = croniter(schedule.cron, wall_start - timedelta(seconds=1), day_or=schedule.day_or)
        while True:
            yield it.get_next(datetime)
    elif isinstance(schedule, IntervalSchedule):
        anchor = to_wall(schedule.anchor, schedule.tz)
        k = -((anchor - wall_start) // schedule.interval)
        while True:
            yield anchor + k * schedule.interval
            k += 1
    else:
        rules = _parse_rrule(schedule.rrule, schedule.timezone).build(wall_start)
        yield from rules.xafter(wall_start, inc=True)


class _Rules(NamedTuple):
    """A parsed rule set, every date-time in it a naive wall time of the schedule's zone."""

    rrules: tuple[rrule, ...]
    exrules: tuple[rrule, ...]
    rdates: tuple[datetime, ...]
    exdates: tuple[datetime, ...]

    def build(self, wall_start: datetime | None = None) -> rruleset:
        """A dateutil rule set of these parts; with ``wall_start``, fast-forwarded to it.

        dateutil walks a rule from its DTSTART, so a minutely rule that started years ago
        would take millions of steps. A rule without COUNT whose period has a fixed length
        (weekly or finer) repeats itself every ``INTERVAL`` periods: moving its start by whole
        repeats changes no occurrence after the new start.
        """
        from dateutil.rrule import rruleset as RuleSet  # noqa: N812

        rules = RuleSet()
        for rule in self.rrules:
            period = _PERIODS.get(_attr(rule, "_freq"))
            start: datetime = _attr(rule, "_dtstart")
            if wall_start is not None and period is not None and _attr(rule, "_count") is None:
                step = period * _attr(rule, "_interval")
                repeats = (wall_start - start) // step - 1
                if repeats > 0:
                    rule = rule.replace(dtstart=start + repeats * step)  # noqa: PLW2901
            rules.rrule(rule)
        for rule in self.exrules:
            rules.exrule(rule)
        for day in self.rdates:
            rules.rdate(day)
        for day in self.exdates:
            rules.exdate(day)
        return rules


def _attr(obj: object, name: str) -> Any:
    # dateutil keeps a rule's and a set's parts in private attributes, unchanged since 2.7
    return getattr(obj, name)


@lru_cache(maxsize=256)
def _parse_rrule(text: str, timezone: str | None) -> _Rules:
    """The parts of ``text`` with every date-time made a naive wall time in ``timezone``.

    Iterating naive wall times lets one DST rule, ours (``to_utc``), decide every instant.
    """
    from dateutil.rrule import rrulestr

    tz = zone(timezone)
    body = text.strip()
    if not re.search(r"^(RRULE|DTSTART|RDATE|EXRULE|EXDATE)", body, re.IGNORECASE | re.MULTILINE):
        body = f"RRULE:{body}"
    parsed = rrulestr(body, forceset=True, dtstart=RRULE_DEFAULT_START, cache=False)

    def wall(moment: datetime | None) -> datetime | None:
        if moment is None or moment.tzinfo is None:
            return moment
        return to_wall(moment, tz)

    def walled(rule: rrule) -> rrule:
        return rule.replace(dtstart=wall(_attr(rule, "_dtstart")), until=wall(_attr(rule, "_until")))

    return _Rules(
        rrules=tuple(walled(r) for r in _attr(parsed, "_rrule")),
        exrules=tuple(walled(r) for r in _attr(parsed, "_exrule")),
        rdates=tuple(to_wall(d, tz) if d.tzinfo else d for d in _attr(parsed, "_rdate")),
        exdates=tuple(to_wall(d, tz) if d.tzinfo else d for d in _attr(parsed, "_exdate")),
    )


_PERIODS: dict[int, timedelta] = {
    2: timedelta(weeks=1),  # WEEKLY
    3: timedelta(days=1),  # DAILY
    4: timedelta(hours=1),  # HOURLY
    5: timedelta(minutes=1),  # MINUTELY
    6: timedelta(seconds=1),  # SECONDLY
}


ScheduleKind = Literal["cron", "interval", "rrule"]


def kind_of(schedule: AnySchedule) -> ScheduleKind:
    """``cron``, ``interval`` or ``rrule``."""
    if isinstance(schedule, CronSchedule):
        return "cron"
    return "interval" if isinstance(schedule, IntervalSchedule) else "rrule"


__all__ = [
    "AnySchedule",
    "CronSchedule",
    "IntervalSchedule",
    "RRuleSchedule",
    "Schedule",
    "TimeZoneName",
    "describe",
    "kind_of",
    "next_occurrences",
    "occurrences",
    "to_utc",
    "to_wall",
    "zone",
]
