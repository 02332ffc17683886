"""``overcast.runtime`` (the current run, read anywhere) and ``tags(...)`` blocks."""

from __future__ import annotations

import threading
from typing import Any

import overcast
from overcast import flow, runtime, tags, task
from overcast._flow_engine import execute_flow_run
from overcast.deployments import run_deployment
from overcast.testing import Harness


def flow_run_view() -> dict[str, Any]:
    fr = runtime.flow_run
    return {
        "id": fr.id,
        "name": fr.name,
        "flow_name": fr.flow_name,
        "parameters": fr.parameters,
        "tags": fr.tags,
        "run_count": fr.run_count,
        "scheduled_start_time": fr.scheduled_start_time,
        "parent_flow_run_id": fr.parent_flow_run_id,
        "deployment_id": fr.deployment_id,
    }


def task_run_view() -> dict[str, Any]:
    tr = runtime.task_run
    return {
        "id": tr.id,
        "name": tr.name,
        "task_name": tr.task_name,
        "run_count": tr.run_count,
        "tags": tr.tags,
    }


# -- runtime ----------------------------------------------------------------------------------------


def test_runtime_is_the_same_module_however_it_is_reached() -> None:
    from overcast.runtime import deployment, flow_run, task_run

    assert overcast.runtime is runtime
    assert (runtime.flow_run, runtime.task_run, runtime.deployment) == (flow_run, task_run, deployment)


def test_outside_any_run_every_attribute_is_empty() -> None:
    assert flow_run_view() == {
        "id": None,
        "name": None,
        "flow_name": None,
        "parameters": {},
        "tags": [],
        "run_count": None,
        "scheduled_start_time": None,
        "parent_flow_run_id": None,
        "deployment_id": None,
    }
    assert task_run_view() == {"id": None, "name": None, "task_name": None, "run_count": None, "tags": []}
    assert runtime.task_run.parameters == {}
    assert (runtime.deployment.id, runtime.deployment.name, runtime.deployment.parameters) == (None, None, {})


def test_inside_a_flow_the_flow_run_is_described(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @flow(flow_run_name="etl-{day}", tags=["nightly"])
    def etl(day: str, limit: int = 10) -> None:
        seen.update(flow_run_view(), task=task_run_view(), deployment=runtime.deployment.id)

    etl("monday")
    [run] = harness.flow_runs()
    assert seen == {
        "id": run.id,
        "name": "etl-monday",
        "flow_name": "etl",
        "parameters": {"day": "monday", "limit": 10},
        "tags": ["nightly"],
        "run_count": 1,
        "scheduled_start_time": run.expected_start_time,
        "parent_flow_run_id": None,
        "deployment_id": None,
        "task": {"id": None, "name": None, "task_name": None, "run_count": None, "tags": []},
        "deployment": None,
    }


def test_a_retried_flow_run_counts_its_attempts(harness: Harness) -> None:
    counts = []

    @flow(retries=1)
    def flaky() -> None:
        counts.append(runtime.flow_run.run_count)
        if len(counts) == 1:
            raise ValueError("first attempt fails")

    flaky()
    assert counts == [1, 2]


def test_inside_a_task_the_task_run_and_its_flow_run_are_described(harness: Harness) -> None:
    seen: list[dict[str, Any]] = []

    @task(tags=["io"], retries=1, task_run_name="load-{n}")
    def load(n: int) -> None:
        seen.append({**task_run_view(), "flow_run_id": runtime.flow_run.id})
        if len(seen) == 1:
            raise ValueError("first attempt fails")

    @flow
    def pipeline() -> None:
        load(3)

    pipeline()
    [run] = harness.flow_runs()
    [task_run] = harness.task_runs(run.id)
    expected = {
        "id": task_run.id,
        "name": "load-3",
        "task_name": "load",
        "tags": ["io"],
        "flow_run_id": run.id,
    }
    assert seen == [{**expected, "run_count": 1}, {**expected, "run_count": 2}]


def test_a_task_submitted_to_the_thread_pool_sees_its_own_run(harness: Harness) -> None:
    seen: dict[int, dict[str, Any]] = {}

    @task
    def square(n: int) -> int:
        seen[n] = {
            **task_run_view(),
            "flow_run_id": runtime.flow_run.id,
            "thread": threading.current_thread(),
        }
        return n * n

    @flow
    def pipeline() -> list[int]:
        return [f.result() for f in square.map([1, 2])]

    assert pipeline() == [1, 4]
    [run] = harness.flow_runs()
    assert {v["id"]: v["name"] for v in seen.values()} == {t.id: t.name for t in harness.task_runs(run.id)}
    for view in seen.values():
        assert (view["task_name"], view["run_count"], view["flow_run_id"]) == ("square", 1, run.id)
        assert view["thread"] is not threading.main_thread()


def test_a_task_outside_a_flow_has_a_task_run_but_no_flow_run(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @task
    def alone() -> None:
        seen.update(
            task=runtime.task_run.id, flow=runtime.flow_run.id, parameters=runtime.flow_run.parameters
        )

    alone()
    [task_run] = harness.task_runs(None)
    assert seen == {"task": task_run.id, "flow": None, "parameters": {}}


def test_a_subflow_knows_its_parent_flow_run(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @flow
    def child() -> None:
        seen["child"] = (runtime.flow_run.id, runtime.flow_run.parent_flow_run_id)

    @task
    def step() -> None:
        child()

    @flow
    def parent() -> None:
        seen["parent"] = (runtime.flow_run.id, runtime.flow_run.parent_flow_run_id)
        child()
        seen["direct"] = seen.pop("child")
        step()
        seen["in a task"] = seen.pop("child")
        seen["after"] = runtime.flow_run.id

    parent()
    runs = {r.flow_name: r for r in harness.flow_runs()}
    parent_id = seen["parent"][0]
    assert seen["parent"] == (parent_id, None)
    assert seen["direct"][1] == parent_id and seen["in a task"][1] == parent_id
    assert seen["after"] == parent_id  # the parent's run again once the subflow returns
    assert runs["parent"].id == parent_id


@flow
def report(region: str, day: str = "today") -> dict[str, Any]:
    return {
        "id": runtime.deployment.id,
        "name": runtime.deployment.name,
        "parameters": runtime.deployment.parameters,
        "flow_run_deployment_id": runtime.flow_run.deployment_id,
    }


def test_a_deployments_run_describes_its_deployment(harness: Harness) -> None:
    deployment_id = report.deploy("daily", parameters={"region": "eu", "day": "monday"})
    run = run_deployment("report/daily", parameters={"day": "tuesday"}, timeout=0, as_subflow=False)
    assert execute_flow_run(report, run) == {
        "id": deployment_id,
        "name": "daily",
        "parameters": {"region": "eu", "day": "tuesday"},
        "flow_run_deployment_id": deployment_id,
    }
    assert report("us") == {"id": None, "name": None, "parameters": {}, "flow_run_deployment_id": None}


def test_inside_a_task_the_parameters_are_the_calls_arguments(harness: Harness) -> None:
    seen = []

    @task
    def scale(x: int, factor: int = 2, *, offset: int = 0) -> int:
        seen.append(runtime.task_run.parameters)
        return x * factor + offset

    @flow
    def pipeline() -> None:
        scale(1)
        scale(2, offset=5)

    pipeline()
    assert seen == [{"x": 1, "factor": 2, "offset": 0}, {"x": 2, "factor": 2, "offset": 5}]


# -- tags -------------------------------------------------------------------------------------------


@task(tags=["io"])
def fetch(n: int) -> int:
    return n


def test_tags_blocks_tag_the_flow_runs_and_task_runs_created_inside(harness: Harness) -> None:
    @flow(tags=["etl", "io"])
    def pipeline() -> None:
        fetch(1)
        fetch.submit(2).wait()
        with tags("inner"):
            fetch(3)

    with tags("nightly", "eu", "nightly") as current:
        assert current == ("nightly", "eu")
        pipeline()
    [run] = harness.flow_runs()
    assert run.tags == ["etl", "eu", "io", "nightly"]  # each once, sorted
    by_key = {t.dynamic_key: t.tags for t in harness.task_runs(run.id)}
    assert by_key == {
        "0": ["eu", "io", "nightly"],
        "1": ["eu", "io", "nightly"],
        "2": ["eu", "inner", "io", "nightly"],
    }


def test_nested_tags_blocks_add_up_and_leaving_one_restores_the_outer(harness: Harness) -> None:
    seen = []

    @flow
    def tagged() -> None:
        seen.append(runtime.flow_run.tags)

    with tags("a"):
        with tags("b", "a") as inner:
            assert inner == ("a", "b")
            tagged()
        tagged()
    tagged()
    assert seen == [["a", "b"], ["a"], []]
    assert sorted(r.tags for r in harness.flow_runs()) == [[], ["a"], ["a", "b"]]


def test_without_a_tags_block_runs_keep_only_their_own_tags(harness: Harness) -> None:
    with tags("before"):
        pass
    assert fetch(1) == 1
    [task_run] = harness.task_runs(None)
    assert task_run.tags == ["io"]
