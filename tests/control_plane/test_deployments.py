"""Deployments on memory, SQLite and DynamoDB (moto's server): upserts, runs, pause, concurrency.

A fake clock drives the services; the races run real threads.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from support import FakeClock

from overcast.core import keys
from overcast.core.deployments import (
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    DeploymentUpdate,
    ParameterValidationError,
    deployment_id_for,
)
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.orchestration import Decision
from overcast.core.ports import KeyValueStore
from overcast.core.services import ControlPlane
from overcast.core.states import Completed, Crashed, Pending, Running, StateType, Suspended

START = datetime(2026, 6, 1, 12, tzinfo=UTC)
SCHEMA = {
    "type": "object",
    "title": "Parameters",
    "properties": {
        "n": {"type": "integer", "title": "n", "position": 0},
        "label": {"type": "string", "default": "x", "position": 1},
    },
    "required": ["n"],
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START.timestamp())


@pytest.fixture
def plane(store: KeyValueStore, clock: FakeClock) -> ControlPlane:
    return ControlPlane(store, clock=lambda: datetime.fromtimestamp(clock(), UTC))


def deploy(plane: ControlPlane, name: str = "nightly", flow: str = "etl", **fields: Any) -> Any:
    body = {"name": name, "flow_name": flow, "entrypoint": "flows/etl.py:etl", **fields}
    return plane.deployments.create(DeploymentCreate.model_validate(body))[0]


# -- create, read, upsert -----------------------------------------------------------------------


def test_a_deployment_is_read_by_id_and_by_name(plane: ControlPlane) -> None:
    created, new = plane.deployments.create(
        DeploymentCreate(name="nightly", flow_name="etl", entrypoint="flows/etl.py:etl", tags=["a"])
    )
    assert new and created.id == deployment_id_for("etl", "nightly")
    assert created.full_name == "etl/nightly" and created.flow_id == plane.flows.get_by_name("etl").id
    assert plane.deployments.get(created.id) == created
    assert plane.deployments.get_by_name("etl/nightly") == created
    assert plane.deployments.resolve(str(created.id)) == plane.deployments.resolve("etl/nightly") == created
    with pytest.raises(NotFoundError):
        plane.deployments.get_by_name("etl/weekly")
    with pytest.raises(InvalidValueError, match="<flow name>/<deployment name>"):
        plane.deployments.get_by_name("nightly")


def test_create_is_an_upsert_that_changes_only_the_fields_given(
    plane: ControlPlane, clock: FakeClock
) -> None:
    first = deploy(plane, description="first", tags=["a"], parameters={"n": 1})
    clock.advance(60)
    again, new = plane.deployments.create(
        DeploymentCreate(name="nightly", flow_name="etl", description="second", version="2")
    )
    assert not new and again.id == first.id and again.created == first.created
    assert (again.description, again.version, again.tags, again.parameters) == (
        "second",
        "2",
        ["a"],
        {"n": 1},
    )
    assert again.updated == first.updated + timedelta(seconds=60)


def test_identical_schedules_keep_their_ids_across_upserts(plane: ControlPlane) -> None:
    daily = {"schedule": {"cron": "0 9 * * *", "timezone": "Europe/Paris"}}
    first = deploy(plane, schedules=[daily, {"schedule": {"interval": 3600}}])
    second = deploy(plane, schedules=[daily, {"schedule": {"interval": 7200}}])
    assert second.schedules[0].id == first.schedules[0].id
    assert second.schedules[1].id != first.schedules[1].id


def test_bad_input_is_refused_before_anything_is_written(plane: ControlPlane) -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        DeploymentCreate(name="d", flow_name="etl", entrypoint="not an entrypoint")
    with pytest.raises(ValidationError, match="unknown time zone"):
        DeploymentCreate.model_validate(
            {
                "name": "d",
                "flow_name": "etl",
                "schedules": [{"schedule": {"cron": "* * * * *", "timezone": "X/Y"}}],
            }
        )
    with pytest.raises(InvalidValueError, match="not a valid JSON schema"):
        deploy(plane, parameter_openapi_schema={"type": 12})
    with pytest.raises(ParameterValidationError, match='n: "x" is not of type "integer"'):
        deploy(plane, parameter_openapi_schema=SCHEMA, parameters={"n": "x"})
    with pytest.raises(
        InvalidValueError, match=r'the runs of schedule .* would be refused.*"n" is a required'
    ):
        deploy(plane, parameter_openapi_schema=SCHEMA, schedules=[{"schedule": {"interval": 60}}])
    assert plane.deployments.filter(DeploymentFilter()).items == []


def test_filter_lists_by_name_with_criteria_and_pages(plane: ControlPlane) -> None:
    for flow, name, tags in [("etl", "b", ["x"]), ("etl", "a", ["x", "y"]), ("report", "a", [])]:
        deploy(plane, name, flow, tags=tags, work_pool_name="pool-1" if flow == "etl" else None)
    plane.deployments.pause(deployment_id_for("report", "a"))
    names = lambda q: [d.full_name for d in plane.deployments.filter(q).items]  # noqa: E731
    assert names(DeploymentFilter()) == ["etl/a", "etl/b", "report/a"]
    assert names(DeploymentFilter(tags_all=["x", "y"])) == ["etl/a"]
    assert names(DeploymentFilter(paused=True)) == ["report/a"]
    assert names(DeploymentFilter(work_pool_name=["pool-1"], name=["b"])) == ["etl/b"]
    page = plane.deployments.filter(DeploymentFilter(limit=2))
    rest = plane.deployments.filter(DeploymentFilter(limit=2, cursor=page.next_cursor))
    assert [d.full_name for d in page.items + rest.items] == ["etl/a", "etl/b", "report/a"]
    assert rest.next_cursor is None


def test_update_sets_and_clears_fields(plane: ControlPlane) -> None:
    deployment = deploy(plane, concurrency_limit=2, description="d")
    changed = plane.deployments.update(deployment.id, DeploymentUpdate(concurrency_limit=None, version="7"))
    assert (changed.concurrency_limit, changed.version, changed.description) == (None, "7", "d")
    with pytest.raises(NotFoundError):
        plane.deployments.update(uuid.uuid4(), DeploymentUpdate(version="1"))


# -- runs of a deployment ---------------------------------------------------------------------


def test_a_run_carries_the_deployment_merged_with_the_request(plane: ControlPlane) -> None:
    deployment = deploy(
        plane,
        parameters={"n": 1, "label": "default"},
        parameter_openapi_schema=SCHEMA,
        tags=["etl"],
        work_pool_name="pool-1",
        work_queue_name="default",
        job_variables={"memory": 512, "image": "a"},
    )
    when = START + timedelta(hours=1)
    run, new = plane.deployments.create_flow_run(
        deployment.id,
        DeploymentFlowRunCreate(
            parameters={"n": 5},
            tags=["manual"],
            job_variables={"memory": 1024},
            scheduled_start_time=when,
            idempotency_key="once",
        ),
    )
    assert new and run.deployment_id == deployment.id and run.flow_name == "etl"
    assert run.parameters == {"n": 5, "label": "default"}
    assert run.tags == ["etl", "manual"]
    assert (run.work_pool_name, run.work_queue_name) == ("pool-1", "default")
    assert run.job_variables == {"memory": 1024, "image": "a"}
    assert (
        run.state.type is StateType.SCHEDULED and run.expected_start_time == when and not run.auto_scheduled
    )
    again, new = plane.deployments.create_flow_run(
        deployment.id, DeploymentFlowRunCreate(idempotency_key="once")
    )
    assert not new and again.id == run.id


def test_run_parameters_are_validated_against_the_schema(plane: ControlPlane) -> None:
    deployment = deploy(plane, parameter_openapi_schema=SCHEMA)
    with pytest.raises(ParameterValidationError) as refused:
        plane.deployments.create_flow_run(deployment.id, DeploymentFlowRunCreate(parameters={"label": 3}))
    assert refused.value.problems == ['"n" is a required property', 'label: 3 is not of type "string"']
    assert "do not match the flow's signature" in str(refused.value)
    lenient = DeploymentFlowRunCreate(parameters={"label": 3}, enforce_parameter_schema=False)
    assert plane.deployments.create_flow_run(deployment.id, lenient)[0].parameters == {"label": 3}


def test_a_pools_waiting_runs_are_listed_in_order_until_they_run(plane: ControlPlane) -> None:
    deployment = deploy(plane, work_pool_name="pool-1", work_queue_name="fast")
    later, sooner = (
        plane.deployments.create_flow_run(
            deployment.id, DeploymentFlowRunCreate(scheduled_start_time=START + timedelta(minutes=m))
        )[0]
        for m in (10, 5)
    )
    other_queue = plane.deployments.create_flow_run(
        deployment.id, DeploymentFlowRunCreate(work_queue_name="slow")
    )[0]
    waiting = plane.flow_runs.waiting_in_pool("pool-1")
    assert [r.id for r in waiting] == [other_queue.id, sooner.id, later.id]
    assert [r.id for r in plane.flow_runs.waiting_in_pool("pool-1", work_queue_names=["fast"])] == [
        sooner.id,
        later.id,
    ]
    assert [r.id for r in plane.flow_runs.waiting_in_pool("pool-1", before=START)] == [other_queue.id]
    plane.flow_runs.set_state(other_queue.id, Pending())
    assert [r.id for r in plane.flow_runs.waiting_in_pool("pool-1", states=[StateType.PENDING])] == [
        other_queue.id
    ]
    plane.flow_runs.set_state(other_queue.id, Running())
    assert other_queue.id not in {r.id for r in plane.flow_runs.waiting_in_pool("pool-1")}
    assert plane.flow_runs.waiting_in_pool("pool-2") == []


# -- pause, resume, delete ----------------------------------------------------------------------


def test_pausing_deletes_scheduled_runs_and_keeps_the_others(plane: ControlPlane) -> None:
    deployment = deploy(plane, schedules=[{"schedule": {"cron": "0 * * * *"}}])
    made = plane.scheduler.schedule(START, max_runs=3).created
    manual = plane.deployments.create_flow_run(deployment.id)[0]
    started = made[0]
    plane.flow_runs.set_state(started.id, Pending(), force=True)
    paused = plane.deployments.pause(deployment.id)
    assert paused.paused
    left = {r.id for r in plane.flow_runs.scheduled_of_deployment(deployment.id)}
    assert left == {manual.id}
    with pytest.raises(NotFoundError):
        plane.flow_runs.get(made[1].id)
    assert plane.flow_runs.get(started.id).state.type is StateType.PENDING
    assert plane.scheduler.schedule(START).created == []
    # resuming schedules them again, under the same keys (the deleted runs freed them)
    plane.deployments.resume(deployment.id)
    again = plane.scheduler.schedule(START, max_runs=3).created
    assert {r.idempotency_key for r in again} == {r.idempotency_key for r in made[1:]}


def test_delete_removes_the_deployment_and_its_waiting_runs(
    plane: ControlPlane, store: KeyValueStore
) -> None:
    deployment = deploy(plane, concurrency_limit=1, schedules=[{"schedule": {"interval": 600}}])
    runs = plane.scheduler.schedule(START, max_runs=2).created
    assert len(runs) == 2
    assert plane.deployments.delete(deployment.id)
    assert not plane.deployments.delete(deployment.id)
    with pytest.raises(NotFoundError):
        plane.deployments.get(deployment.id)
    assert plane.flow_runs.scheduled_of_deployment(deployment.id) == []
    assert store.get(*keys.deployment_slots(deployment.id)) is None
    assert store.get(*keys.deployment_due(deployment.id)) is None


# -- concurrency --------------------------------------------------------------------------------


def runs_of(plane: ControlPlane, deployment_id: uuid.UUID, count: int) -> list[Any]:
    return [plane.deployments.create_flow_run(deployment_id)[0] for _ in range(count)]


def test_enqueue_makes_the_second_run_wait_for_the_first(plane: ControlPlane) -> None:
    deployment = deploy(plane, concurrency_limit=1)
    first, second = runs_of(plane, deployment.id, 2)
    assert plane.flow_runs.set_state(first.id, Pending()).status is Decision.ACCEPT
    waiting = plane.flow_runs.set_state(second.id, Pending())
    assert waiting.status is Decision.WAIT and waiting.wait_seconds
    assert "concurrency limit of 1 is reached" in (waiting.reason or "")
    assert plane.flow_runs.get(second.id).state.type is StateType.SCHEDULED
    plane.flow_runs.set_state(first.id, Running())
    assert plane.flow_runs.set_state(second.id, Running()).status is Decision.WAIT  # RUNNING needs a slot too
    plane.flow_runs.set_state(first.id, Completed())
    assert plane.flow_runs.set_state(second.id, Pending()).status is Decision.ACCEPT


def test_cancel_new_cancels_the_run_past_the_limit(plane: ControlPlane) -> None:
    deployment = deploy(plane, concurrency_limit=1, concurrency_options={"collision_strategy": "CANCEL_NEW"})
    first, second = runs_of(plane, deployment.id, 2)
    plane.flow_runs.set_state(first.id, Running())
    refused = plane.flow_runs.set_state(second.id, Pending())
    assert refused.status is Decision.REJECT and refused.state.type is StateType.CANCELLED
    assert plane.flow_runs.get(second.id).state.type is StateType.CANCELLED


def test_a_slot_is_freed_by_an_end_or_a_suspension_and_a_run_keeps_its_own(plane: ControlPlane) -> None:
    deployment = deploy(plane, concurrency_limit=1)
    first, second, third = runs_of(plane, deployment.id, 3)
    plane.flow_runs.set_state(first.id, Pending())
    assert plane.flow_runs.set_state(first.id, Running()).status is Decision.ACCEPT  # it holds the slot
    plane.flow_runs.set_state(first.id, Suspended())
    assert plane.flow_runs.set_state(second.id, Running()).status is Decision.ACCEPT
    plane.flow_runs.set_state(second.id, Crashed("lost"))
    assert plane.flow_runs.set_state(third.id, Running()).status is Decision.ACCEPT


def test_raising_the_limit_lets_waiting_runs_in(plane: ControlPlane) -> None:
    deployment = deploy(plane, concurrency_limit=1)
    first, second = runs_of(plane, deployment.id, 2)
    plane.flow_runs.set_state(first.id, Running())
    assert plane.flow_runs.set_state(second.id, Running()).status is Decision.WAIT
    plane.deployments.update(deployment.id, DeploymentUpdate(concurrency_limit=2))
    assert plane.flow_runs.set_state(second.id, Running()).status is Decision.ACCEPT


def test_a_holder_whose_run_is_gone_loses_its_slot(
    plane: ControlPlane, store: KeyValueStore, clock: FakeClock
) -> None:
    deployment = deploy(plane, concurrency_limit=1)
    first, second = runs_of(plane, deployment.id, 2)
    plane.flow_runs.set_state(first.id, Running())
    store.delete(*keys.flow_run(first.id))  # as if lost: no end state was ever written
    assert plane.flow_runs.set_state(second.id, Running()).status is Decision.WAIT  # not so soon
    clock.advance(61)
    assert plane.flow_runs.set_state(second.id, Running()).status is Decision.ACCEPT
    holders = store.get(*keys.deployment_slots(deployment.id))["holders"]  # type: ignore[index]
    assert set(holders) == {str(second.id)}


def test_runs_racing_for_the_last_slot_get_one_between_them(plane: ControlPlane, kv_backend: Any) -> None:
    kv_backend.skip_racing_transactions()
    deployment = deploy(plane, concurrency_limit=2)
    runs = runs_of(plane, deployment.id, 6)
    barrier = threading.Barrier(len(runs))

    def claim(run: Any) -> Decision:
        barrier.wait()
        return plane.flow_runs.set_state(run.id, Pending()).status

    with ThreadPoolExecutor(len(runs)) as pool:
        decisions = list(pool.map(claim, runs))
    assert decisions.count(Decision.ACCEPT) == 2 and decisions.count(Decision.WAIT) == 4
    pending = [r for r in runs if plane.flow_runs.get(r.id).state.type is StateType.PENDING]
    assert len(pending) == 2
