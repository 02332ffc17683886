"""Prefect 3 parity on the task side: submit/map with return_state, futures given to map,
failed upstreams passed as inputs, allow_failure and quote, and async hooks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import overcast
from overcast import allow_failure, flow, quote, task, unmapped
from overcast._task_engine import UpstreamTaskError
from overcast.futures import OvercastFuture
from overcast.testing import Harness


@task
def add(x: int, y: int = 1) -> int:
    return x + y


@task
def boom(x: int = 0) -> int:
    raise ValueError(f"boom {x}")


@task
def odd_fails(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def echo(value: Any) -> Any:
    return value


# -- return_state on submit and map -----------------------------------------------------------------


def test_submit_with_return_state_waits_and_returns_the_final_state(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:
        seen["ok"], seen["failed"] = add.submit(1, return_state=True), boom.submit(return_state=True)

    pipeline()
    ok, failed = seen["ok"], seen["failed"]
    assert ok.is_completed() and ok.result() == 2
    assert failed.is_failed() and "ValueError: boom 0" in failed.message
    assert isinstance(failed.result(raise_on_failure=False), ValueError)
    with pytest.raises(ValueError, match="boom 0"):
        failed.result()
    [run] = harness.flow_runs()
    assert run.state.is_completed()  # a failed run returned as a state does not fail the flow


def test_map_with_return_state_returns_every_final_state_in_order(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:
        seen["states"] = odd_fails.map([0, 1, 2], return_state=True)

    pipeline()
    states = seen["states"]
    assert [s.type.value for s in states] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert [s.result(raise_on_failure=False) for s in (states[0], states[2])] == [0, 2]
    assert str(states[1].result(raise_on_failure=False)) == "odd 1"


# -- map over futures ---------------------------------------------------------------------------------


def test_map_over_a_future_maps_over_its_result(harness: Harness) -> None:
    @flow
    def pipeline() -> tuple[list[int], list[int], list[int]]:
        over_future = add.map(numbers.submit(3)).result()
        # a future of a non-iterable result goes whole to every run
        with_static_future = add.map([1, 2], y=add.submit(9)).result()
        # a future list maps item by item (each run waits for its own upstream)
        over_futures = add.map(add.map([1, 2, 3])).result()
        return over_future, with_static_future, over_futures

    assert pipeline() == ([1, 2, 3], [11, 12], [3, 4, 5])


def test_map_over_the_future_of_a_failed_run_raises_upstream_task_error(harness: Harness) -> None:
    @flow
    def pipeline() -> Any:
        return add.map(boom.submit())

    with pytest.raises(UpstreamTaskError, match="is Failed"):
        pipeline()


# -- a failed upstream given as an input ------------------------------------------------------------


def test_a_failed_upstream_input_leaves_the_direct_call_not_ready(harness: Harness) -> None:
    ran = []

    @task
    def downstream(values: list[int]) -> int:
        ran.append(values)
        return sum(values)

    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:
        bad = boom.submit()
        with pytest.raises(UpstreamTaskError) as raised:
            downstream([add.submit(1), bad])
        seen["state"] = downstream([bad], return_state=True)
        seen["upstream_id"], seen["error"] = bad.task_run_id, raised.value

    pipeline()
    upstream_id, error, state = seen["upstream_id"], seen["error"], seen["state"]
    assert ran == []
    assert error.upstream_task_run_id == upstream_id
    assert (state.type.value, state.name) == ("PENDING", "NotReady")
    assert str(upstream_id) in state.message
    [flow_run] = harness.flow_runs()
    not_ready = [r for r in harness.task_runs(flow_run.id) if r.name == "downstream"]
    assert len(not_ready) == 2
    for run in not_ready:
        assert [s.name for s in harness.task_run_states(run.id)] == ["Pending", "NotReady"]


def test_a_failed_upstream_input_leaves_a_submitted_run_not_ready(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:
        bad = boom.submit()
        seen["error"] = add.submit(bad).result(raise_on_failure=False)
        seen["state"] = add.submit(x=bad, return_state=True)

    pipeline()
    error, state = seen["error"], seen["state"]
    assert isinstance(error, UpstreamTaskError)
    assert (state.type.value, state.name) == ("PENDING", "NotReady")
    [flow_run] = harness.flow_runs()
    runs = [r for r in harness.task_runs(flow_run.id) if r.name == "add"]
    assert [r.state.name for r in runs] == ["NotReady", "NotReady"]


def test_wait_for_and_inputs_agree_on_return_state(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:
        bad = boom.submit()
        seen["wait_for"] = add(1, wait_for=[bad], return_state=True)
        seen["input"] = add(bad, return_state=True)

    pipeline()
    assert seen["wait_for"].name == seen["input"].name == "NotReady"


# -- allow_failure ------------------------------------------------------------------------------------


def test_allow_failure_runs_the_task_with_the_upstream_exception(harness: Harness) -> None:
    @flow
    def pipeline() -> tuple[Any, Any, Any]:
        bad = boom.submit(7)
        direct = echo(allow_failure(bad))
        submitted = echo.submit(allow_failure([add.submit(1), bad])).result()
        keyword = echo.submit(value=allow_failure({"b": bad})).result()
        return direct, submitted, keyword

    direct, submitted, keyword = pipeline()
    assert isinstance(direct, ValueError) and str(direct) == "boom 7"
    assert submitted[0] == 2 and isinstance(submitted[1], ValueError)
    assert isinstance(keyword["b"], ValueError)
    [flow_run] = harness.flow_runs()
    echoes = [r for r in harness.task_runs(flow_run.id) if r.name == "echo"]
    assert [r.state.type.value for r in echoes] == ["COMPLETED"] * 3


def test_map_with_allow_failure_over_futures_and_a_single_future(harness: Harness) -> None:
    @task
    def pair(x: Any, y: Any) -> tuple[Any, Any]:
        return x, y

    @flow
    def pipeline() -> tuple[list[Any], list[Any]]:
        per_item = echo.map(allow_failure(odd_fails.map([0, 1, 2]))).result()
        single = pair.map([1, 2], allow_failure(boom.submit())).result()
        return per_item, single

    per_item, single = pipeline()
    assert per_item[0] == 0 and per_item[2] == 2 and isinstance(per_item[1], ValueError)
    assert [x for x, _ in single] == [1, 2]
    assert all(isinstance(y, ValueError) for _, y in single)


def test_without_allow_failure_only_the_runs_of_failed_items_are_not_ready(harness: Harness) -> None:
    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:
        seen["states"] = echo.map(odd_fails.map([0, 1, 2]), return_state=True)

    pipeline()
    states = seen["states"]
    assert [s.name for s in states] == ["Completed", "NotReady", "Completed"]


# -- quote --------------------------------------------------------------------------------------------


def test_quote_passes_the_value_as_it_is(harness: Harness) -> None:
    @task
    def kinds(values: list[Any]) -> list[bool]:
        return [isinstance(v, OvercastFuture) for v in values]

    @task
    def size(x: int, values: list[int]) -> int:
        return x + len(values)

    @flow
    def pipeline() -> tuple[list[bool], list[bool], list[int], list[int]]:
        future = add.submit(1)
        return (
            kinds(quote([future, 1])),
            kinds.submit(quote([future])).result(),
            size.map([10, 20], quote([1, 2, 3])).result(),  # not mapped over: whole to each run
            size.map(x=[10, 20], values=unmapped([1])).result(),
        )

    assert pipeline() == ([True, False], [True], [13, 23], [11, 21])


def test_the_annotations_are_importable_where_unmapped_is() -> None:
    from overcast import futures, tasks

    for name in ("unmapped", "allow_failure", "quote"):
        assert getattr(overcast, name) is getattr(futures, name) is getattr(tasks, name)
    assert quote([1]).unwrap() == [1]
    assert repr(allow_failure(1)) == "allow_failure(1)"


# -- async hooks --------------------------------------------------------------------------------------


def test_async_hooks_of_a_sync_task_run_to_completion(harness: Harness) -> None:
    events: list[tuple[str, Any]] = []

    async def running(t: Any, task_run: Any, state: Any) -> None:
        await asyncio.sleep(0)
        events.append(("running", state.name))

    async def completed(t: Any, task_run: Any, state: Any) -> None:
        await asyncio.sleep(0)
        events.append(("completed", state.result()))

    async def failed(t: Any, task_run: Any, state: Any) -> None:
        await asyncio.sleep(0)
        events.append(("failed", str(state.result(raise_on_failure=False))))

    hooked = add.with_options(on_running=[running], on_completion=[completed])
    hooked_boom = boom.with_options(on_failure=[failed])

    @flow
    def pipeline() -> None:
        hooked(1)
        hooked_boom(3, return_state=True)
        hooked.submit(2).result()

    pipeline()
    assert events == [
        ("running", "Running"),
        ("completed", 2),
        ("failed", "boom 3"),
        ("running", "Running"),
        ("completed", 3),
    ]


def test_async_hooks_of_an_async_task_run_to_completion(harness: Harness) -> None:
    events: list[tuple[str, Any]] = []
    loops: list[Any] = []

    async def completed(t: Any, task_run: Any, state: Any) -> None:
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())
        events.append((task_run.name, state.result()))

    @task(on_completion=[completed])
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @flow
    async def pipeline() -> int:
        loops.append(asyncio.get_running_loop())
        return await double(4)

    assert asyncio.run(pipeline()) == 8
    assert events == [("double", 8)]
    flow_loop, hook_loop = loops
    assert hook_loop is not flow_loop  # the flow's loop was not re-entered


def test_an_async_hook_that_raises_is_logged_not_raised(harness: Harness, caplog: Any) -> None:
    async def broken(t: Any, task_run: Any, state: Any) -> None:
        raise RuntimeError("hook broke")

    @task(on_completion=[broken])
    def fine() -> str:
        return "ok"

    assert fine() == "ok"
    assert "hook broke" in caplog.text
