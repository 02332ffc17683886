"""Schedules from the SDK (``overcast.schedules``: ``Cron``, ``Interval``, ``RRule``) on ``flow.deploy``,
over the in-process client and over HTTP to a real API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from overcast.core.schemas import FlowRunFilter
from overcast.core.services.deployments import schedule_of
from overcast.flows import flow
from overcast.schedules import Cron, Interval, RRule
from overcast.testing import Harness


@flow
def report(x: int = 0, kind: str = "plain") -> str:
    return f"{kind} {x}"


def test_each_schedule_keeps_its_own_parameters_and_activity(harness: Harness) -> None:
    deployment_id = report.deploy(
        "daily",
        parameters={"kind": "full"},
        schedules=[
            Cron("0 6 * * *", timezone="Europe/Paris", parameters={"x": 1}),
            Interval(3600, active=False),
        ],
    )
    cron, interval = harness.runtime.client.read_deployment(deployment_id).schedules
    assert cron.schedule == CronSchedule(cron="0 6 * * *", timezone="Europe/Paris")
    assert (cron.active, cron.parameters) == (True, {"x": 1})
    assert interval.schedule == IntervalSchedule(interval=timedelta(hours=1))
    assert (interval.active, interval.parameters) == (False, {})

    # a deploy makes the deployment due at once, so any later tick looks at it
    harness.plane.scheduler.schedule(datetime(2030, 1, 15, tzinfo=UTC), horizon=timedelta(days=2))
    runs = harness.plane.flow_runs.filter(FlowRunFilter(deployment_id=[deployment_id])).items
    assert sorted(run.expected_start_time for run in runs) == [
        datetime(2030, 1, 15, 5, tzinfo=UTC),  # 06:00 in Paris (UTC+1 in winter)
        datetime(2030, 1, 16, 5, tzinfo=UTC),
    ]
    assert {schedule_of(run) for run in runs} == {cron.id}
    assert [run.parameters for run in runs] == [{"x": 1, "kind": "full"}] * 2


def test_the_shortcuts_and_the_older_shapes_still_deploy(harness: Harness) -> None:
    deployment_id = report.deploy(
        "many",
        cron="0 9 * * *",
        interval=timedelta(minutes=30),
        timezone="America/New_York",
        schedules=[
            CronSchedule(cron="@daily"),
            {"interval": 600},
            {"schedule": {"rrule": "FREQ=DAILY;BYHOUR=7"}, "parameters": {"x": 2}},
            {"cron": "@hourly", "active": False, "max_scheduled_runs": 3},  # prefect.yaml's shape
            RRule("FREQ=WEEKLY;BYDAY=MO", timezone="Asia/Tokyo", max_scheduled_runs=5),
        ],
    )
    stored = harness.runtime.client.read_deployment(deployment_id).schedules
    assert [(s.schedule, s.active, s.parameters, s.max_scheduled_runs) for s in stored] == [
        (CronSchedule(cron="@daily"), True, {}, None),
        (IntervalSchedule(interval=timedelta(minutes=10)), True, {}, None),
        (RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=7"), True, {"x": 2}, None),
        (CronSchedule(cron="@hourly"), False, {}, 3),
        (RRuleSchedule(rrule="FREQ=WEEKLY;BYDAY=MO", timezone="Asia/Tokyo"), True, {}, 5),
        (CronSchedule(cron="0 9 * * *", timezone="America/New_York"), True, {}, None),
        (
            IntervalSchedule(interval=timedelta(minutes=30), timezone="America/New_York"),
            True,
            {},
            None,
        ),
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Cron("every morning"),
            r"Cron\('every morning'\): cron: cron 'every morning' must have 5 fields",
        ),
        (
            lambda: Cron("0 6 * * *", timezone="Mars/Olympus"),
            r"Cron\('0 6 \* \* \*'\): timezone: unknown time zone",
        ),
        (lambda: Interval(0), r"Interval\(0\): interval: the interval must be between 1 second"),
        (lambda: Interval(timedelta(minutes=-5)), r"Interval\(.*\): interval: .* not -300.0 seconds"),
        (
            lambda: RRule("FREQ=SOMETIMES"),
            r"RRule\('FREQ=SOMETIMES'\): rrule: rrule 'FREQ=SOMETIMES' is invalid",
        ),
        (lambda: Cron("@daily", max_scheduled_runs=0), r"Cron\('@daily'\): max_scheduled_runs: "),
    ],
)
def test_a_bad_schedule_is_refused_where_it_is_made(make: object, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message):
        make()  # type: ignore[operator]


def test_a_bad_schedule_fails_the_deploy_naming_the_schedule(harness: Harness) -> None:
    with pytest.raises(InvalidValueError, match=r"schedule 2 of deployment 'report/broken': cron: cron '61"):
        report.deploy("broken", schedules=[Cron("@daily"), {"cron": "61 * * * *"}])
    with pytest.raises(InvalidValueError, match=r"the interval= schedule of deployment 'report/broken'"):
        report.deploy("broken", interval=-1)
    with pytest.raises(InvalidValueError, match="schedule 1 of deployment 'report/broken': slug: Extra"):
        report.deploy("broken", schedules=[{"cron": "@daily", "slug": "daily"}])
    with pytest.raises(NotFoundError):
        harness.runtime.client.read_deployment_by_name("report/broken")
    # parameters the flow would refuse are refused by the control plane, before anything is stored
    with pytest.raises(InvalidValueError, match="would be refused"):
        report.deploy("broken", schedules=[Cron("@daily", parameters={"x": "many"})])
    with pytest.raises(NotFoundError):
        harness.runtime.client.read_deployment_by_name("report/broken")
