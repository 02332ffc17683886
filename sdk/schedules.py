"""Schedules for deployments, as Prefect 3's ``prefect.schedules``: ``Cron``, ``Interval`` and ``RRule``.

Each helper makes one schedule of a deployment: when its runs are due, and how they differ
from the deployment's other runs (their ``parameters``, whether the schedule is ``active``)::

    from overcast.schedules import Cron, Interval

    report.deploy(
        "reports",
        schedules=[
            Cron("0 6 * * MON-FRI", timezone="Europe/Paris", parameters={"kind": "daily"}),
            Interval(3600, active=False),  # kept, makes no runs until made active
        ],
    )

A schedule is checked when it is made: a cron that does not parse, a zone that does not exist
or an interval under a second raise ``InvalidValueError`` naming the schedule. The helpers
return ``DeploymentScheduleCreate``, the control plane's own request, so what you build here is
what is stored. Prefect's ``slug`` is not supported (the control plane names a schedule by its
id); ``max_scheduled_runs`` is ours: the most runs of the schedule to keep scheduled ahead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from overcast.core.deployments import DeploymentScheduleCreate
from overcast.core.errors import InvalidValueError
from overcast.core.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

__all__ = [
    "Cron",
    "CronSchedule",
    "DeploymentScheduleCreate",
    "Interval",
    "IntervalSchedule",
    "RRule",
    "RRuleSchedule",
    "ScheduleLike",
    "deployment_schedule",
]

ScheduleLike = DeploymentScheduleCreate | CronSchedule | IntervalSchedule | RRuleSchedule | Mapping[str, Any]
"""What ``deploy(schedules=[...])`` takes: what ``Cron``/``Interval``/``RRule`` make, a bare
``CronSchedule``/``IntervalSchedule``/``RRuleSchedule``, or a dict of either shape (as in
``prefect.yaml``: ``{"cron": "0 6 * * *", "timezone": "UTC", "parameters": {...}}``, or
``{"schedule": {"cron": ...}, "active": False}``)."""

_PER_SCHEDULE = ("active", "max_scheduled_runs", "parameters")
_KINDS = ("cron", "interval", "rrule")


# Prefect's names, capitalised as Prefect's functions are, so that imports are all that change.
def Cron(  # noqa: N802
    cron: str,
    /,
    timezone: str | None = None,
    day_or: bool = True,
    active: bool = True,
    parameters: dict[str, Any] | None = None,
    max_scheduled_runs: int | None = None,
) -> DeploymentScheduleCreate:
    """A schedule that runs at the times a cron expression names, on the clock of ``timezone``.

    Args:
        cron: five fields (``0 9 * * MON-FRI``) or a macro (``@hourly``, ``@daily`` …).
        timezone: an IANA zone (``Europe/Paris``); UTC when omitted.
        day_or: when both day fields are restricted, run on days matching either (cron's rule)
            rather than both.
        active: an inactive schedule makes no runs (and keeps its settings).
        parameters: parameters of this schedule's runs, over the deployment's defaults.
        max_scheduled_runs: the most runs of it to keep scheduled ahead (the scheduler's cap
            when omitted).

    Raises:
        InvalidValueError: an invalid cron, zone, parameter or cap.
    """
    when = {"cron": cron, "timezone": timezone, "day_or": day_or}
    return _create(f"Cron({cron!r})", when, active, parameters, max_scheduled_runs)


def Interval(  # noqa: N802
    interval: float | timedelta,
    /,
    anchor_date: datetime | None = None,
    timezone: str | None = None,
    active: bool = True,
    parameters: dict[str, Any] | None = None,
    max_scheduled_runs: int | None = None,
) -> DeploymentScheduleCreate:
    """A schedule that runs every ``interval``, counted from ``anchor_date``.

    Args:
        interval: seconds, or a ``timedelta``; from one second to 3660 days.
        anchor_date: where the count starts (it sets the phase: runs fall on it plus whole
            intervals); a naive date-time is read in ``timezone``. Default: 2020-01-01 00:00.
        timezone: an IANA zone; intervals of a day or more keep their wall-clock time in it.
        active, parameters, max_scheduled_runs: as for ``Cron``.

    Raises:
        InvalidValueError: an interval out of range, an invalid zone, parameter or cap.
    """
    when = {"interval": interval, "anchor_date": anchor_date, "timezone": timezone}
    return _create(f"Interval({interval!r})", when, active, parameters, max_scheduled_runs)


def RRule(  # noqa: N802
    rrule: str,
    /,
    timezone: str | None = None,
    active: bool = True,
    parameters: dict[str, Any] | None = None,
    max_scheduled_runs: int | None = None,
) -> DeploymentScheduleCreate:
    """A schedule that runs at the times an iCalendar recurrence rule (RFC 5545) names.

    Args:
        rrule: ``FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=9``, optionally with ``DTSTART``/``EXDATE`` lines.
        timezone: an IANA zone; default: the rule's ``DTSTART;TZID=``, else UTC.
        active, parameters, max_scheduled_runs: as for ``Cron``.

    Raises:
        InvalidValueError: an invalid rule, zone, parameter or cap.
    """
    when = {"rrule": rrule, "timezone": timezone}
    return _create(f"RRule({rrule!r})", when, active, parameters, max_scheduled_runs)


def deployment_schedule(value: ScheduleLike, name: str = "schedule") -> DeploymentScheduleCreate:
    """``value`` (see ``ScheduleLike``) as a schedule to attach to a deployment.

    Args:
        value: the schedule.
        name: how errors name it (``schedule 2 of deployment 'nightly'``).

    Raises:
        InvalidValueError: it is not a valid schedule; the message names it and says why.
    """
    if isinstance(value, DeploymentScheduleCreate):
        return value
    if not isinstance(value, Mapping) or "schedule" in value:
        return _validated(name, value if isinstance(value, Mapping) else {"schedule": value})
    when = {k: v for k, v in value.items() if k not in _PER_SCHEDULE}
    return _validated(name, {"schedule": when, **{k: v for k, v in value.items() if k in _PER_SCHEDULE}})


def _create(
    name: str,
    when: dict[str, Any],
    active: bool,
    parameters: dict[str, Any] | None,
    max_scheduled_runs: int | None,
) -> DeploymentScheduleCreate:
    fields = {
        "schedule": when,
        "active": active,
        "parameters": to_jsonable_python(parameters or {}),
        "max_scheduled_runs": max_scheduled_runs,
    }
    return _validated(name, fields)


def _validated(name: str, fields: Mapping[str, Any]) -> DeploymentScheduleCreate:
    try:
        return DeploymentScheduleCreate.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(error['loc'])}{error['msg']}" for error in exc.errors())
        raise InvalidValueError(f"{name}: {problems}") from exc


def _where(loc: tuple[int | str, ...]) -> str:
    """The field an error is about, without the model's nesting (``cron: ``, ``parameters.x: ``)."""
    if loc[:1] == ("schedule",):
        loc = loc[1:]
        if len(loc) > 1 and loc[0] in _KINDS:
            loc = loc[1:]  # the kind's tag, then its field
    return ".".join(str(part) for part in loc) + ": " if loc else ""
