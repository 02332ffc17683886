"""The tick on a fake clock: schedule, mark late, push due runs to their queue, resend lost ones."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import FakeClock

from overcast.adapters.kv.memory import MemoryKeyValueStore
from overcast.adapters.queues.local import LocalQueue
from overcast.core.deployments import DeploymentCreate, DeploymentFlowRunCreate
from overcast.core.services import ControlPlane
from overcast.core.states import StateType
from overcast.core.work_pools import ProcessPoolCreate, QueuePoolCreate

START = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


class Stack:
    def __init__(self) -> None:
        self.clock = FakeClock(START.timestamp())
        self.queue = LocalQueue(":memory:", "runs")
        self.plane = ControlPlane(
            MemoryKeyValueStore(clock=self.clock),
            open_queue=lambda url: self.queue,
            clock=lambda: datetime.fromtimestamp(self.clock(), UTC),
        )
        self.plane.work_pools.create_pool(
            QueuePoolCreate.model_validate({"name": "pushed", "config": {"url": "memory://runs"}})
        )
        self.plane.work_pools.create_pool(ProcessPoolCreate.model_validate({"name": "pulled"}))

    def deploy(self, pool: str, **fields: Any) -> Any:
        body = {"name": pool, "flow_name": "etl", "work_pool_name": pool, **fields}
        return self.plane.deployments.create(DeploymentCreate.model_validate(body))[0]

    def messages(self) -> list[str]:
        """The runs sent since the last look (taken off the queue)."""
        received = self.queue.receive(10, visibility_s=30)
        for message in received:
            self.queue.ack(message.receipt)
        return [json.loads(m.body)["flow_run_id"] for m in received]


@pytest.fixture
def stack() -> Stack:
    return Stack()


def test_run_deployment_pushes_a_due_run_of_a_queue_pool_at_once(stack: Stack) -> None:
    deployment = stack.deploy("pushed")
    run, created = stack.plane.run_deployment(deployment.id)
    assert created and run.state.type is StateType.PENDING
    assert stack.messages() == [str(run.id)]
    again, created = stack.plane.run_deployment(deployment.id)  # no key: a second run
    assert created and stack.messages() == [str(again.id)]


def test_a_scheduled_run_is_pushed_by_the_tick_once_it_is_due(stack: Stack) -> None:
    first = "2026-11-25T06:05:00Z"  # five minutes from now, then every ten
    deployment = stack.deploy("pushed", schedules=[{"schedule": {"interval": 600, "anchor_date": first}}])
    report = stack.plane.tick.run()
    assert report.scheduled and not report.dispatched  # made ahead, none due yet
    assert stack.messages() == []
    stack.clock.advance(300)
    report = stack.plane.tick.run()
    assert len(report.dispatched) == 1
    run = stack.plane.flow_runs.get(uuid.UUID(report.dispatched[0]))
    assert (run.deployment_id, run.state.type) == (deployment.id, StateType.PENDING)
    assert run.expected_start_time == datetime(2026, 11, 25, 6, 5, tzinfo=UTC)
    assert stack.messages() == [str(run.id)]
    assert stack.plane.tick.run().dispatched == []  # sent once


def test_a_run_nobody_pulls_is_marked_late(stack: Stack) -> None:
    deployment = stack.deploy("pulled")
    run, _ = stack.plane.run_deployment(deployment.id)
    assert run.state.type is StateType.SCHEDULED  # a pull pool: it waits for a worker
    stack.clock.advance(10)
    assert stack.plane.tick.run().late == []
    stack.clock.advance(10)
    assert stack.plane.tick.run().late == [str(run.id)]
    assert stack.plane.flow_runs.get(run.id).state.name == "Late"


def test_a_pushed_run_that_never_started_is_sent_again(stack: Stack) -> None:
    deployment = stack.deploy("pushed")
    run, _ = stack.plane.run_deployment(deployment.id, DeploymentFlowRunCreate())
    assert stack.messages() == [str(run.id)]  # then the message is lost: nobody runs it
    stack.clock.advance(timedelta(minutes=14).total_seconds())
    assert stack.plane.tick.run().resent == []
    stack.clock.advance(timedelta(minutes=2).total_seconds())
    assert stack.plane.tick.run().resent == [str(run.id)]
    assert stack.messages() == [str(run.id)]
