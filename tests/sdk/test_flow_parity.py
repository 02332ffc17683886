"""Prefect 3 parity on the flow side: the return value decides the final state, a task runner
given as a class, the state helpers, and ``wait_for`` on subflow calls."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from overcast import flow, task
from overcast._task_engine import UpstreamTaskError
from overcast.core.states import (
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    Late,
    Paused,
    Pending,
    RunFailedError,
    Running,
    Scheduled,
    State,
    Suspended,
)
from overcast.futures import OvercastFuture
from overcast.task_runners import ThreadPoolTaskRunner
from overcast.testing import Harness


@task
def add(x: int, y: int = 1) -> int:
    return x + y


@task
def boom(x: int = 0) -> int:
    raise ValueError(f"boom {x}")


def _state_names(harness: Harness, run_id: Any) -> list[str]:
    return [s.name for s in harness.flow_run_states(run_id)]


# -- a returned state is the final state ------------------------------------------------------------


def test_returning_a_failed_state_fails_the_flow_run(harness: Harness) -> None:
    failures: list[str] = []

    @flow(on_failure=[lambda f, run, state: failures.append(state.message)])
    def judged() -> State:
        return Failed(message="nope")

    with pytest.raises(RunFailedError, match="nope"):
        judged()
    state = judged(return_state=True)
    assert state.is_failed() and state.message == "nope"
    assert isinstance(state.result(raise_on_failure=False), RunFailedError)
    runs = harness.flow_runs()
    assert len(runs) == 2
    assert {(r.state.type.value, r.state.message) for r in runs} == {("FAILED", "nope")}
    assert failures == ["nope", "nope"]


def test_returning_a_completed_state_sets_its_name_message_and_result(harness: Harness) -> None:
    @flow
    def judged() -> State:
        return Completed(7, name="Skipped", message="nothing new")

    assert judged() == 7
    [run] = harness.flow_runs()
    assert (run.state.type.value, run.state.name, run.state.message) == (
        "COMPLETED",
        "Skipped",
        "nothing new",
    )
    assert run.state.data == 7


def test_returning_a_tasks_failed_state_fails_the_flow_with_the_tasks_exception(harness: Harness) -> None:
    @flow
    def pipeline() -> State:
        return boom(1, return_state=True)

    with pytest.raises(ValueError, match="boom 1"):
        pipeline()
    [run] = harness.flow_runs()
    assert run.state.is_failed() and "ValueError: boom 1" in (run.state.message or "")


def test_a_subflow_that_returns_a_failed_state_fails_its_parent_task_run(harness: Harness) -> None:
    @flow
    def child() -> State:
        return Failed(message="child said no")

    @flow
    def parent() -> str:
        state = child(return_state=True)
        return state.message or ""

    assert parent() == "child said no"
    runs = {r.flow_name: r for r in harness.flow_runs()}
    assert runs["child"].state.is_failed() and runs["parent"].state.is_completed()
    [tracker] = harness.task_runs(runs["parent"].id)
    assert (tracker.state.type.value, tracker.state.message) == ("FAILED", "child said no")


def test_an_async_flow_that_returns_a_failed_state_fails(harness: Harness) -> None:
    @flow
    async def judged() -> State:
        return Failed(message="async nope")

    with pytest.raises(RunFailedError, match="async nope"):
        asyncio.run(judged())
    [run] = harness.flow_runs()
    assert run.state.is_failed() and run.state.message == "async nope"


def test_a_returned_failure_is_retried_like_a_raised_one(harness: Harness) -> None:
    attempts: list[int] = []

    @flow(retries=1)
    def flaky() -> Any:
        attempts.append(1)
        return Failed(message="first try") if len(attempts) == 1 else "done"

    assert flaky() == "done"
    [run] = harness.flow_runs()
    assert len(attempts) == 2 and run.state.is_completed()
    assert "AwaitingRetry" in _state_names(harness, run.id)


# -- a returned future is resolved ------------------------------------------------------------------


def test_returning_a_future_returns_its_result(harness: Harness) -> None:
    @flow
    def pipeline() -> OvercastFuture[int]:
        return add.submit(1)

    assert pipeline() == 2
    [run] = harness.flow_runs()
    assert run.state.is_completed() and run.state.data == 2


def test_returning_a_failed_future_fails_the_flow_run(harness: Harness) -> None:
    @flow
    def pipeline() -> OvercastFuture[int]:
        return boom.submit(2)

    with pytest.raises(ValueError, match="boom 2"):
        pipeline()
    state = pipeline(return_state=True)
    assert state.is_failed() and "ValueError: boom 2" in (state.message or "")
    assert {r.state.type.value for r in harness.flow_runs()} == {"FAILED"}


# -- a returned collection of states or futures -----------------------------------------------------


def test_a_collection_with_one_failure_fails_the_flow_run(harness: Harness) -> None:
    @flow
    def pipeline() -> list[Any]:
        return [add.submit(1), boom.submit(3), add(2, return_state=True)]

    with pytest.raises(ValueError, match="boom 3"):
        pipeline()
    state = pipeline(return_state=True)
    assert state.is_failed() and state.message == "1/3 states failed."
    assert isinstance(state.result(raise_on_failure=False), ValueError)
    assert {r.state.message for r in harness.flow_runs()} == {"1/3 states failed."}


def test_a_dict_of_states_counts_its_values(harness: Harness) -> None:
    @flow
    def pipeline() -> dict[str, Any]:
        return {"a": boom(1, return_state=True), "b": boom(2, return_state=True), "c": 3}

    state = pipeline(return_state=True)
    assert state.is_failed() and state.message == "2/2 states failed."


def test_a_collection_that_all_completed_returns_the_futures_results(harness: Harness) -> None:
    @flow
    def as_list() -> Any:
        return add.map([1, 2, 3])

    @flow
    def as_dict() -> Any:
        return {"a": add.submit(1), "b": 10}

    @flow
    def as_tuple() -> Any:
        return add.submit(5), "label"

    assert as_list() == [2, 3, 4]
    assert as_dict() == {"a": 2, "b": 10}
    assert as_tuple() == (6, "label")
    runs = {r.flow_name: r for r in harness.flow_runs()}
    assert {r.state.type.value for r in runs.values()} == {"COMPLETED"}
    assert runs["as-list"].state.data == [2, 3, 4]
    assert runs["as-list"].state.message == "All states completed."


def test_a_collection_of_plain_values_is_returned_as_it_is(harness: Harness) -> None:
    values = [1, [2, 3], {"k": "v"}]

    @flow
    def plain() -> list[Any]:
        return values

    assert plain() is values
    [run] = harness.flow_runs()
    assert run.state.is_completed() and run.state.message is None and run.state.data == values


# -- task_runner given as a class -------------------------------------------------------------------


def test_a_task_runner_class_is_instantiated(harness: Harness) -> None:
    @flow(task_runner=ThreadPoolTaskRunner)
    def pipeline() -> list[int]:
        return [f.result() for f in add.map([1, 2])]

    assert isinstance(pipeline.task_runner, ThreadPoolTaskRunner)
    assert pipeline() == [2, 3]
    assert pipeline.with_options(retries=1)() == [2, 3]


# -- state helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "true_for"),
    [
        (Scheduled(), {"is_scheduled"}),
        (Pending(name="NotReady"), {"is_pending"}),
        (Running(), {"is_running"}),
        (Paused(), {"is_paused"}),
        (Suspended(), {"is_paused"}),
        (Cancelling(), {"is_cancelling"}),
        (Completed(), {"is_completed", "is_final"}),
        (Failed(), {"is_failed", "is_final"}),
        (Cancelled(), {"is_cancelled", "is_final"}),
        (Crashed(), {"is_crashed", "is_final"}),
    ],
    ids=lambda value: value.name if isinstance(value, State) else "",
)
def test_state_helpers_tell_each_type_apart(state: State, true_for: set[str]) -> None:
    helpers = [
        "is_scheduled",
        "is_pending",
        "is_running",
        "is_paused",
        "is_cancelling",
        "is_completed",
        "is_failed",
        "is_cancelled",
        "is_crashed",
        "is_final",
    ]
    assert {name for name in helpers if getattr(state, name)()} == true_for
    assert state.is_final() is state.is_terminal


def test_a_late_state_is_scheduled_and_not_final() -> None:
    from datetime import UTC, datetime

    late = Late(datetime.now(UTC))
    assert late.is_scheduled() and not late.is_final() and not late.is_pending()


# -- wait_for on subflow calls ----------------------------------------------------------------------


def test_a_subflow_waits_for_the_futures_it_is_given(harness: Harness) -> None:
    gate = threading.Event()
    seen: dict[str, Any] = {}

    @task
    def upstream() -> int:
        gate.wait(10)
        return 1

    @flow
    def child() -> str:
        seen["upstream done"] = seen["future"].done()
        return "ran"

    @flow
    def parent() -> str:
        seen["future"] = upstream.submit()
        threading.Timer(0.05, gate.set).start()  # the upstream is still running when child is called
        return child(wait_for=[seen["future"]])

    assert parent() == "ran"
    assert seen["upstream done"] is True
    assert {r.state.type.value for r in harness.flow_runs()} == {"COMPLETED"}


def test_a_subflow_whose_upstream_failed_does_not_run(harness: Harness) -> None:
    ran: list[str] = []
    seen: dict[str, Any] = {}

    @flow
    def child() -> None:
        ran.append("child")

    @flow
    def parent() -> None:
        bad = boom.submit(4)
        seen["bad"] = bad.task_run_id
        try:
            child(wait_for=[bad])
        except UpstreamTaskError as exc:
            seen["error"] = str(exc)

    parent()
    assert ran == []
    assert str(seen["bad"]) in seen["error"] and "Failed" in seen["error"]
    runs = {r.flow_name: r for r in harness.flow_runs()}
    child_run = runs["child"]
    assert (child_run.state.type.value, child_run.state.name) == ("PENDING", "NotReady")
    assert str(seen["bad"]) in (child_run.state.message or "")
    trackers = [t for t in harness.task_runs(runs["parent"].id) if t.id == child_run.parent_task_run_id]
    assert [t.state.name for t in trackers] == ["NotReady"]


def test_wait_for_is_not_a_flow_parameter(harness: Harness) -> None:
    @flow
    def child(x: int) -> int:
        return x

    @flow
    def parent() -> int:
        return child(3, wait_for=[add.submit(1)])

    assert parent() == 3
    assert {r.parameters.get("x") for r in harness.flow_runs() if r.flow_name == "child"} == {3}


def test_async_hooks_of_a_flow_and_of_a_transaction_run_to_completion(harness: Harness) -> None:
    from overcast.transactions import transaction

    ran: list[str] = []

    async def on_completion(flow: Any, flow_run: Any, state: Any) -> None:
        await asyncio.sleep(0)
        ran.append(f"flow {state.name}")

    async def on_commit(txn: Any) -> None:
        await asyncio.sleep(0)
        ran.append(f"commit {txn.key}")

    @flow(on_completion=[on_completion])
    def pipeline() -> int:
        with transaction(key=f"async-hook-{uuid.uuid4()}") as txn:
            txn.stage(1, on_commit=[on_commit])
        return 1

    assert pipeline() == 1
    assert [r.split()[0] for r in ran] == ["commit", "flow"] and ran[1] == "flow Completed"
