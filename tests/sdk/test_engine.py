"""The client-side engine: flows and tasks as a Prefect 3 user writes them, checked in memory."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from overcast import flow, get_run_context, get_run_logger, task, unmapped
from overcast._flow_engine import RunAbortedError
from overcast._task_engine import UpstreamTaskError
from overcast._timeout import RunTimeoutError
from overcast.flows import ParameterValidationError
from overcast.futures import as_completed, wait
from overcast.tasks import exponential_backoff
from overcast.testing import Harness


@task
def add(x: int, y: int = 1) -> int:
    return x + y


# -- calls ------------------------------------------------------------------------------------------


def test_a_flow_runs_its_tasks_on_the_callers_thread_and_records_everything(harness: Harness) -> None:
    seen_threads = []

    @task
    def where(x: int) -> int:
        seen_threads.append(threading.current_thread())
        return x * 2

    @flow
    def pipeline(n: int) -> int:
        return sum(where(i) for i in range(n))

    assert pipeline(4) == 12
    assert set(seen_threads) == {threading.main_thread()}
    [run] = harness.flow_runs()
    assert (run.flow_name, run.parameters, run.state.type.value) == ("pipeline", {"n": 4}, "COMPLETED")
    assert run.state.data == 12
    assert [s.type.value for s in harness.flow_run_states(run.id)] == ["PENDING", "RUNNING", "COMPLETED"]
    task_runs = harness.task_runs(run.id)
    assert len(task_runs) == 4 and {t.state.type.value for t in task_runs} == {"COMPLETED"}
    assert sorted(t.dynamic_key for t in task_runs) == ["0", "1", "2", "3"]
    assert [s.name for s in harness.task_run_states(task_runs[0].id)] == ["Pending", "Running", "Completed"]


def test_tasks_called_outside_a_flow_are_tracked_too(harness: Harness) -> None:
    assert add(1, 2) == 3
    [task_run] = harness.task_runs(None)
    assert task_run.flow_run_id is None and task_run.state.is_completed()


def test_return_state(harness: Harness) -> None:
    @task
    def boom() -> None:
        raise ValueError("nope")

    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:  # (returning a failed state would fail the flow run)
        seen["ok"], seen["failed"] = add(1, return_state=True), boom(return_state=True)

    pipeline()
    ok, failed = seen["ok"], seen["failed"]
    assert ok.is_completed() and ok.result() == 2
    assert failed.is_failed() and "ValueError: nope" in failed.message
    with pytest.raises(ValueError, match="nope"):
        failed.result()
    assert isinstance(failed.result(raise_on_failure=False), ValueError)
    state = pipeline(return_state=True)
    assert state.is_completed()


def test_a_failing_flow_fails_and_reraises(harness: Harness) -> None:
    @flow
    def broken() -> None:
        add("x")  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        broken()
    [run] = harness.flow_runs()
    assert run.state.type.value == "FAILED" and "TypeError" in run.state.message
    [task_run] = harness.task_runs(run.id)
    assert task_run.state.type.value == "FAILED"


def test_subflows_are_child_runs_linked_to_a_parent_task_run(harness: Harness) -> None:
    @flow
    def child(x: int) -> int:
        return add(x)

    @flow
    def parent() -> int:
        return child(1) + child(2)

    assert parent() == 5
    runs = {r.flow_name: r for r in harness.flow_runs()}
    children = [r for r in harness.flow_runs() if r.flow_name == "child"]
    assert len(children) == 2
    trackers = {t.id for t in harness.task_runs(runs["parent"].id)}
    assert {c.parent_task_run_id for c in children} == trackers


def test_parameters_are_validated_and_coerced(harness: Harness) -> None:
    @flow
    def typed(n: int, ratio: float = 0.5) -> tuple[int, float]:
        return n, ratio

    assert typed("3") == (3, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ParameterValidationError, match="n"):
        typed("three")  # type: ignore[arg-type]
    with pytest.raises(ParameterValidationError):
        typed(1, 2, 3)  # type: ignore[call-arg]


def test_run_names_from_templates(harness: Harness) -> None:
    @task(task_run_name="add-{x}-{y}")
    def named(x: int, y: int = 10) -> int:
        return x + y

    @flow(flow_run_name="daily-{day}")
    def daily(day: str) -> int:
        return named(1)

    daily("2026-11-24")
    [run] = harness.flow_runs()
    assert run.name == "daily-2026-11-24"
    assert [t.name for t in harness.task_runs(run.id)] == ["add-1-10"]


# -- retries and timeouts -------------------------------------------------------------------------


def test_task_retries_with_delays_until_success(harness: Harness) -> None:
    attempts = []

    @task(retries=3, retry_delay_seconds=[0, 0.01])
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    assert flaky() == "ok"
    assert len(attempts) == 3
    [task_run] = harness.task_runs(None)
    names = [s.name for s in harness.task_run_states(task_run.id)]
    assert names == [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "AwaitingRetry",
        "Retrying",
        "Completed",
    ]
    assert task_run.run_count == 3


def test_retries_stop_when_the_condition_says_so(harness: Harness) -> None:
    calls = []

    @task(retries=5, retry_condition_fn=lambda task, task_run, state: "transient" in (state.message or ""))
    def fails(kind: str) -> None:
        calls.append(kind)
        raise RuntimeError(kind)

    with pytest.raises(RuntimeError):
        fails("permanent")
    assert calls == ["permanent"]


def test_exponential_backoff_and_jitter_shape_the_delays() -> None:
    assert exponential_backoff(2)(4) == [2, 4, 8, 16]

    @task(retries=3, retry_delay_seconds=exponential_backoff(10), retry_jitter_factor=0.5)
    def t() -> None: ...

    class Record:
        run_count = 3

    delays = [t.retry_delay(Record(), ValueError()) for _ in range(200)]  # type: ignore[arg-type]
    assert all(20 <= d <= 60 for d in delays) and len({round(d, 3) for d in delays}) > 1


def test_a_task_that_runs_too_long_times_out_on_the_main_thread_and_on_workers(harness: Harness) -> None:
    @task(timeout_seconds=0.2)
    def slow() -> None:
        time.sleep(30)

    @task(timeout_seconds=0.2)
    def spin() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pass

    seen: dict[str, Any] = {}

    @flow
    def pipeline() -> None:  # (returning a failed state would fail the flow run)
        seen["main"], seen["worker"] = slow(return_state=True), spin.submit().result(raise_on_failure=False)

    started = time.monotonic()
    pipeline()
    main_thread, worker = seen["main"], seen["worker"]
    assert time.monotonic() - started < 20  # both were stopped, not waited out
    assert main_thread.name == "TimedOut"
    assert isinstance(worker, RunTimeoutError)


def test_flow_retries_are_decided_by_the_control_plane(harness: Harness) -> None:
    attempts = []

    @flow(retries=2)
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("flaky")
        return len(attempts)

    assert flaky() == 3
    [run] = harness.flow_runs()
    assert run.run_count == 3
    names = [s.name for s in harness.flow_run_states(run.id)]
    assert names.count("AwaitingRetry") == 2 and names[-1] == "Completed"


# -- hooks ---------------------------------------------------------------------------------------------


def test_task_and_flow_hooks_run_and_their_errors_are_contained(harness: Harness) -> None:
    events = []

    @task(on_completion=[lambda t, tr, s: events.append(("task done", tr.name, s.result()))])
    def good() -> int:
        return 7

    @task
    def bad() -> None:
        raise KeyError("k")

    @bad.on_failure
    def note_failure(t: Any, task_run: Any, state: Any) -> None:
        events.append(("task failed", state.name))

    @bad.on_failure
    def broken_hook(t: Any, task_run: Any, state: Any) -> None:
        raise RuntimeError("a hook that fails must not break the run")

    @flow
    def pipeline() -> None:
        good()
        bad(return_state=True)

    @pipeline.on_completion
    def flow_done(f: Any, flow_run: Any, state: Any) -> None:
        events.append(("flow done", flow_run.flow_name, state.type.value))

    pipeline()
    assert events == [
        ("task done", "good", 7),
        ("task failed", "Failed"),
        ("flow done", "pipeline", "COMPLETED"),
    ]


# -- futures ---------------------------------------------------------------------------------------------


def test_submit_map_and_futures_as_arguments(harness: Harness) -> None:
    @task
    def total(values: list[int]) -> int:
        return sum(values)

    @flow
    def pipeline() -> tuple[int, list[int], int]:
        first = add.submit(1)
        chained = add.submit(first, y=first)  # a future as an argument resolves to its result
        mapped = add.map([1, 2, 3], y=unmapped(10))
        return chained.result(), mapped.result(), total.submit(mapped).result()

    assert pipeline() == (4, [11, 12, 13], 36)
    [run] = harness.flow_runs()
    assert len(harness.task_runs(run.id)) == 6


def test_map_checks_its_arguments(harness: Harness) -> None:
    @flow
    def pipeline(which: str) -> Any:
        if which == "none":
            return add.map(1)
        return add.map([1, 2], y=[1, 2, 3])

    with pytest.raises(ValueError, match="at least one iterable"):
        pipeline("none")
    with pytest.raises(ValueError, match="different lengths"):
        pipeline("lengths")


def test_wait_for_and_upstream_failure(harness: Harness) -> None:
    order = []

    @task
    def first() -> None:
        time.sleep(0.05)
        order.append("first")

    @task
    def second() -> None:
        order.append("second")

    @task
    def fails() -> None:
        raise ValueError("upstream")

    @flow
    def pipeline() -> Any:
        a = first.submit()
        b = second.submit(wait_for=[a])
        b.result()
        bad = fails.submit()
        return second.submit(wait_for=[bad]).result(raise_on_failure=False)

    outcome = pipeline()
    assert order == ["first", "second"]
    assert isinstance(outcome, UpstreamTaskError)


def test_wait_and_as_completed(harness: Harness) -> None:
    gate = threading.Event()

    @task
    def gated(x: int) -> int:
        if x == 1:
            gate.wait(10)
        return x

    @flow
    def pipeline() -> tuple[list[int], int, int]:
        futures = gated.map([0, 1, 2])
        done, not_done = wait(futures, timeout=0.2)
        first_done = sorted(f.result() for f in done)
        gate.set()
        finished = [f.result() for f in as_completed(futures, timeout=10)]
        return first_done, len(not_done), len(finished)

    assert pipeline() == ([0, 2], 1, 3)


def test_submit_outside_a_flow_says_what_to_do(harness: Harness) -> None:
    with pytest.raises(RuntimeError, match="inside a @flow"):
        add.submit(1)


# -- async and generators ---------------------------------------------------------------------------


def test_async_flows_and_tasks(harness: Harness) -> None:
    @task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @flow
    async def pipeline(n: int) -> list[int]:
        return list(await asyncio.gather(*(double(i) for i in range(n))))

    assert asyncio.run(pipeline(3)) == [0, 2, 4]
    [run] = harness.flow_runs()
    assert run.state.is_completed() and len(harness.task_runs(run.id)) == 3


def test_generator_tasks_stream_while_running(harness: Harness) -> None:
    @task
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    @flow
    def pipeline() -> list[int]:
        return [x * 10 for x in count(3)]

    assert pipeline() == [0, 10, 20]
    [run] = harness.flow_runs()
    [task_run] = harness.task_runs(run.id)
    assert task_run.state.is_completed()


# -- context and logs -----------------------------------------------------------------------------------


def test_run_context_and_logs_reach_the_control_plane(harness: Harness) -> None:
    @task
    def shout(word: str) -> str:
        get_run_logger().info("shouting %s", word)
        return word.upper()

    @flow(log_prints=True)
    def pipeline() -> str:
        ctx = get_run_context()
        print(f"running {ctx.flow_run.name}")  # type: ignore[union-attr]
        return shout("hi")

    assert pipeline() == "HI"
    [run] = harness.flow_runs()
    [task_run] = harness.task_runs(run.id)
    flow_lines = [line.message for line in harness.logs(run.id)]
    assert any(f"running {run.name}" in m for m in flow_lines)
    assert any("shouting hi" in m for m in flow_lines)  # task lines of a flow run are the run's lines
    assert any(line.task_run_id == task_run.id for line in harness.logs(run.id))


def test_get_run_context_outside_a_run_says_so() -> None:
    from overcast.context import MissingContextError

    with pytest.raises(MissingContextError):
        get_run_context()


def test_a_run_cancelled_while_it_runs_is_aborted(harness: Harness) -> None:
    @flow
    def cancelled_meanwhile() -> None:
        ctx = get_run_context()
        harness.plane.flow_runs.cancel(ctx.flow_run.id)  # type: ignore[union-attr]

    hooked = []
    cancelled_meanwhile.on_cancellation(lambda f, run, state: hooked.append(state.type.value))
    with pytest.raises(RunAbortedError, match="being cancelled"):
        cancelled_meanwhile()
    [run] = harness.flow_runs()
    assert run.state.type.value == "CANCELLED"
    assert hooked == ["CANCELLED"]


def test_with_options_copies_with_changes(harness: Harness) -> None:
    renamed = add.with_options(name="plus", retries=2)
    assert (renamed.name, renamed.retries, add.name, add.retries) == ("plus", 2, "add", 0)
    assert renamed(1) == 2
    with pytest.raises(TypeError, match="unknown options"):
        add.with_options(colour="red")

    @flow
    def base() -> str:
        return get_run_context().flow_run.name  # type: ignore[union-attr]

    assert base.with_options(flow_run_name="custom-run")() == "custom-run"
    assert base.with_options(retries=3).retries == 3


# -- the process pool ----------------------------------------------------------------------------------


@task
def whoami(x: int) -> tuple[int, int]:
    import os

    get_run_logger().info("working on %d", x)
    return x * x, os.getpid()


@task
def fail_in_worker(x: int) -> None:
    raise ArithmeticError(f"bad {x}")


def test_the_process_pool_runs_tasks_in_other_processes_and_reports_them(harness: Harness) -> None:
    import os

    from overcast.task_runners import ProcessPoolTaskRunner

    offset = 100

    @task
    def nested(x: int) -> int:
        return add(x, offset)  # a closure, and a direct task call inside the worker

    @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
    def crunch() -> tuple[list[tuple[int, int]], int, Any]:
        squares = whoami.map([1, 2, 3]).result()
        bad = fail_in_worker.submit(7).result(raise_on_failure=False)
        return squares, nested.submit(1).result(), bad

    squares, nested_result, bad = crunch()
    assert [s for s, _ in squares] == [1, 4, 9]
    assert os.getpid() not in {pid for _, pid in squares}
    assert nested_result == 101
    assert isinstance(bad, ArithmeticError) and "bad 7" in str(bad)
    [run] = harness.flow_runs()
    task_runs = harness.task_runs(run.id)
    by_name: dict[str, list[str]] = {}
    for t in task_runs:
        by_name.setdefault(t.name, []).append(t.state.type.value)
    assert by_name["whoami"] == ["COMPLETED"] * 3
    assert by_name["fail_in_worker"] == ["FAILED"]
    assert by_name["nested"] == ["COMPLETED"] and by_name["add"] == ["COMPLETED"]
    lines = [line.message for line in harness.logs(run.id)]
    assert sum("working on" in m for m in lines) == 3


def test_the_dask_runner_runs_tasks_on_a_cluster_and_reports_them(harness: Harness) -> None:
    pytest.importorskip("distributed")
    from overcast.task_runners import DaskTaskRunner

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 2, "processes": False})

    @flow(task_runner=runner)
    def on_dask() -> tuple[list[int], Any]:
        squares = [s for s, _ in whoami.map([2, 3]).result()]
        return squares, fail_in_worker.submit(1).result(raise_on_failure=False)

    squares, bad = on_dask()
    assert squares == [4, 9] and isinstance(bad, ArithmeticError)
    [run] = harness.flow_runs()
    states = sorted((t.name, t.state.type.value) for t in harness.task_runs(run.id))
    assert states == [("fail_in_worker", "FAILED"), ("whoami", "COMPLETED"), ("whoami", "COMPLETED")]
    assert sum("working on" in line.message for line in harness.logs(run.id)) == 2


def test_a_task_may_call_and_submit_tasks(harness: Harness) -> None:
    @task
    def fan_out(n: int) -> int:
        direct = add(0)  # a nested call, on this task's thread
        submitted = [add.submit(i) for i in range(n)]  # nested submits, on the flow's runner
        return direct + sum(f.result() for f in submitted)

    @flow
    def pipeline() -> int:
        return fan_out.submit(3).result()

    assert pipeline() == 1 + (1 + 2 + 3)
    [run] = harness.flow_runs()
    names = sorted(t.name for t in harness.task_runs(run.id))
    assert names == ["add", "add", "add", "add", "fan_out"]
