"""Run leases: a runner that stops heartbeating has its run reaped to Crashed, and retried."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from support import FakeClock

from overcast.adapters.factory import open_store
from overcast.core.models import RetryPolicy
from overcast.core.schemas import FlowRunCreate
from overcast.core.services import ControlPlane
from overcast.core.states import Pending, Running, StateType

START = time.time()  # the stores expire items by the real clock: lease items must be fresh to it


def _plane(store: object, clock: FakeClock) -> ControlPlane:
    return ControlPlane(store, clock=lambda: datetime.fromtimestamp(clock(), UTC))  # type: ignore[arg-type]


def _running(plane: ControlPlane, retries: int = 0) -> object:
    run, _ = plane.flow_runs.create(
        FlowRunCreate(flow_name="etl", retry_policy=RetryPolicy(retries=retries, retry_delay_seconds=5))
    )
    plane.flow_runs.set_state(run.id, Pending())
    plane.flow_runs.set_state(run.id, Running())
    return run.id


def test_a_heartbeating_run_is_left_alone_and_a_silent_one_is_crashed() -> None:
    clock = FakeClock(START)
    plane = _plane(open_store("memory://"), clock)
    alive, silent = _running(plane), _running(plane)
    clock.advance(50)
    plane.leases.heartbeat(alive, lease_s=60)
    clock.advance(30)  # silent: 80 s since it started, past the 60 s grace
    assert plane.leases.reap(grace_s=60) == [silent]
    assert plane.flow_runs.get(silent).state.type is StateType.CRASHED
    assert plane.flow_runs.get(alive).state.type is StateType.RUNNING
    clock.advance(31)  # alive's lease (to 110 s) has lapsed now
    assert plane.leases.reap(grace_s=60) == [alive]
    assert plane.leases.reap(grace_s=60) == []  # reaped once


def test_a_reaped_run_with_retries_left_is_scheduled_again() -> None:
    clock = FakeClock(START)
    plane = _plane(open_store("memory://"), clock)
    run_id = _running(plane, retries=1)
    plane.leases.heartbeat(run_id, lease_s=10)
    clock.advance(11)
    assert plane.leases.reap() == [run_id]
    state = plane.flow_runs.get(run_id).state
    assert (state.type, state.name) == (StateType.SCHEDULED, "AwaitingRetry")
    assert state.details.scheduled_time == datetime.fromtimestamp(clock(), UTC) + timedelta(seconds=5)


def test_two_reapers_racing_crash_a_run_once(tmp_path: object) -> None:
    clock = FakeClock(START)
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    first, second = _plane(store, clock), _plane(store, clock)
    run_id = _running(first)
    clock.advance(120)
    assert first.leases.reap() + second.leases.reap() == [run_id]
    states = [s.type for s in first.flow_runs.states(run_id)]
    assert states.count(StateType.CRASHED) == 1
