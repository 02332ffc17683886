"""The scheduler on memory, SQLite and DynamoDB (moto's server): the runs a tick makes, on a fake clock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support import FakeClock

from overcast.core.deployments import DeploymentCreate, DeploymentUpdate
from overcast.core.ports import KeyValueStore
from overcast.core.schedules import occurrences
from overcast.core.schemas import FlowRunFilter
from overcast.core.services import ControlPlane
from overcast.core.states import StateType

NEW_YORK = ZoneInfo("America/New_York")
SPRING_FORWARD = datetime(2026, 3, 8, tzinfo=NEW_YORK)  # New York skips 02:00-03:00 that day


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(SPRING_FORWARD.timestamp())


@pytest.fixture
def plane(store: KeyValueStore, clock: FakeClock) -> ControlPlane:
    return ControlPlane(store, clock=lambda: datetime.fromtimestamp(clock(), UTC))


def now(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def deploy(plane: ControlPlane, *schedules: dict[str, Any], name: str = "hourly", **fields: Any) -> Any:
    body = {"name": name, "flow_name": "etl", "schedules": list(schedules), **fields}
    return plane.deployments.create(DeploymentCreate.model_validate(body))[0]


def all_runs(plane: ControlPlane, deployment_id: Any) -> list[Any]:
    runs: list[Any] = []
    cursor = None
    while True:
        page = plane.flow_runs.filter(
            FlowRunFilter(
                deployment_id=[deployment_id], sort="EXPECTED_START_TIME_ASC", limit=200, cursor=cursor
            )
        )
        runs += page.items
        if (cursor := page.next_cursor) is None:
            return runs


def test_a_cron_produces_exactly_the_expected_runs_over_a_simulated_day(
    plane: ControlPlane, clock: FakeClock
) -> None:
    hourly = {"cron": "0 * * * *", "timezone": "America/New_York"}
    deployment = deploy(plane, {"schedule": hourly})
    day_start, day_end = (
        now(clock),
        now(clock) + timedelta(hours=23),
    )  # the spring-forward day is 23 hours long
    made = []
    while now(clock) < day_end:  # a tick every 5 minutes, making runs an hour ahead
        made += plane.scheduler.schedule(horizon=timedelta(hours=1), max_runs=10).created
        clock.advance(300)
    in_day = [r for r in all_runs(plane, deployment.id) if r.expected_start_time < day_end]
    expected = occurrences(deployment.schedules[0].schedule, day_start, day_end, limit=100)
    assert [r.expected_start_time for r in in_day] == expected
    assert [t.astimezone(NEW_YORK).hour for t in expected] == [0, 1, *range(3, 24)]  # 02:00 does not exist
    assert len({r.id for r in made}) == len(made)  # each run reported by the one tick that made it
    assert {r.id for r in in_day} <= {r.id for r in made}
    for run in in_day:
        assert run.auto_scheduled and run.state.type is StateType.SCHEDULED
        assert run.state.details.scheduled_time == run.expected_start_time
        assert run.idempotency_key == f"scheduled {deployment.id} {deployment.schedules[0].id} " + (
            run.expected_start_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        )


def test_a_tick_makes_runs_up_to_the_cap_within_the_horizon(plane: ControlPlane, clock: FakeClock) -> None:
    every_minute = deploy(plane, {"schedule": {"cron": "* * * * *"}}, name="busy")
    daily = deploy(plane, {"schedule": {"cron": "0 12 * * *"}, "max_scheduled_runs": 2}, name="daily")
    result = plane.scheduler.schedule(horizon=timedelta(days=7), max_runs=5)
    assert result.deployments == 2 and result.skipped == 0
    assert len(all_runs(plane, every_minute.id)) == 5
    assert len(all_runs(plane, daily.id)) == 2  # the schedule's own cap
    short = plane.scheduler.schedule(now(clock), horizon=timedelta(minutes=2), max_runs=50)
    assert short.created == []  # nothing new within two minutes: those runs exist


def test_a_repeated_tick_makes_nothing_and_reads_only_due_deployments(
    plane: ControlPlane, clock: FakeClock
) -> None:
    deploy(plane, {"schedule": {"interval": 3600}})
    clock.advance(60)  # a minute past the hour: the next run enters the 3-hour horizon in 59 minutes
    first = plane.scheduler.schedule(horizon=timedelta(hours=3), max_runs=10)
    assert len(first.created) == 3
    again = plane.scheduler.schedule(horizon=timedelta(hours=3), max_runs=10)
    assert (again.deployments, again.created) == (0, [])  # not due until the next run enters the horizon
    clock.advance(3600)
    later = plane.scheduler.schedule(horizon=timedelta(hours=3), max_runs=10)
    assert later.deployments == 1 and len(later.created) == 1


def test_two_ticks_racing_make_each_run_once(plane: ControlPlane, kv_backend: Any) -> None:
    kv_backend.skip_racing_transactions()
    deployment = deploy(plane, {"schedule": {"cron": "*/10 * * * *"}})
    barrier = threading.Barrier(4)

    def tick(_: int) -> list[Any]:
        barrier.wait()
        return plane.scheduler.schedule(horizon=timedelta(hours=2), max_runs=12).created

    with ThreadPoolExecutor(4) as pool:
        made = [run for runs in pool.map(tick, range(4)) for run in runs]
    runs = all_runs(plane, deployment.id)
    assert len(runs) == 12 and len({r.expected_start_time for r in runs}) == 12
    assert sorted(r.id for r in made) == sorted(r.id for r in runs)  # reported once, by the tick that won


def test_paused_deployments_and_inactive_schedules_make_no_runs(plane: ControlPlane) -> None:
    paused = deploy(plane, {"schedule": {"interval": 600}}, name="paused", paused=True)
    inactive = deploy(plane, {"schedule": {"interval": 600}, "active": False}, name="inactive")
    assert plane.scheduler.schedule().created == []
    assert all_runs(plane, paused.id) == all_runs(plane, inactive.id) == []
    assert plane.scheduler.schedule(deployment_ids=[paused.id, inactive.id]).created == []


def test_an_interval_with_an_anchor(plane: ControlPlane, clock: FakeClock) -> None:
    anchor = now(clock) - timedelta(days=3, minutes=50)
    deployment = deploy(plane, {"schedule": {"interval": 1800, "anchor_date": anchor.isoformat()}})
    plane.scheduler.schedule(horizon=timedelta(hours=2))
    starts = [r.expected_start_time for r in all_runs(plane, deployment.id)]
    assert starts == [now(clock) + timedelta(minutes=m) for m in (10, 40, 70, 100)]


def test_an_rrule_schedule_with_its_own_parameters(plane: ControlPlane, clock: FakeClock) -> None:
    rule = {"rrule": "FREQ=DAILY;BYHOUR=6,18;BYMINUTE=30", "timezone": "America/New_York"}
    deployment = deploy(
        plane, {"schedule": rule, "parameters": {"shift": "day"}}, parameters={"region": "us"}
    )
    plane.scheduler.schedule(horizon=timedelta(days=2))
    runs = all_runs(plane, deployment.id)
    assert [r.expected_start_time.astimezone(NEW_YORK).strftime("%d %H:%M") for r in runs] == [
        "08 06:30",
        "08 18:30",
        "09 06:30",
        "09 18:30",
    ]
    assert all(r.parameters == {"region": "us", "shift": "day"} for r in runs)


def test_changing_a_schedule_replaces_its_waiting_runs(plane: ControlPlane, clock: FakeClock) -> None:
    deployment = deploy(plane, {"schedule": {"cron": "0 * * * *"}})
    old = plane.scheduler.schedule(horizon=timedelta(hours=3)).created
    plane.deployments.update(
        deployment.id, DeploymentUpdate.model_validate({"schedules": [{"schedule": {"cron": "30 * * * *"}}]})
    )
    new = plane.scheduler.schedule(horizon=timedelta(hours=3)).created
    runs = all_runs(plane, deployment.id)
    assert {r.id for r in runs} == {r.id for r in new} and not {r.id for r in old} & {r.id for r in runs}
    assert all(r.expected_start_time.minute == 30 for r in runs)


def test_changing_default_parameters_remakes_the_runs_ahead(plane: ControlPlane) -> None:
    deployment = deploy(plane, {"schedule": {"interval": 3600}}, parameters={"n": 1})
    plane.scheduler.schedule(horizon=timedelta(hours=2))
    plane.deployments.update(deployment.id, DeploymentUpdate(parameters={"n": 2}))
    plane.scheduler.schedule(horizon=timedelta(hours=2))
    assert [r.parameters for r in all_runs(plane, deployment.id)] == [{"n": 2}, {"n": 2}]
