"""Background tasks: ``task.delay()`` queues a run, a task worker runs it, the future reads it back."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from overcast import allow_failure, flow, task
from overcast._task_engine import UpstreamTaskError
from overcast.core.settings import Settings
from overcast.futures import OvercastDistributedFuture, wait
from overcast.task_worker import TaskWorker, _resumed_record, task_queue_url
from overcast.testing import Harness


@pytest.fixture
def harness(harness: Harness) -> Harness:
    """The engine harness (direct and HTTP), with a tasks queue in memory of its own."""
    runtime = harness.runtime
    runtime.settings = Settings(blobs=runtime.settings.blobs, queue=f"memory://bg-{uuid.uuid4().hex}")
    return harness


@contextmanager
def serving(*tasks: object, limit: int = 10) -> Iterator[TaskWorker]:
    """A task worker serving ``tasks`` on a thread of its own for the block."""
    worker = TaskWorker(*tasks, limit=limit, wait_s=0.1)  # type: ignore[arg-type]
    thread = threading.Thread(target=worker.start, name="test-task-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive()


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@task
def double(x: int) -> int:
    return 2 * x


def test_delay_queues_a_run_that_a_worker_runs_as_the_same_task_run(harness: Harness) -> None:
    threads: list[str] = []

    @task
    def where(x: int) -> int:
        threads.append(threading.current_thread().name)
        return x + 1

    future = where.delay(41)
    assert isinstance(future, OvercastDistributedFuture)
    assert future.state.is_scheduled() and threads == []  # nothing ran yet: no worker
    with serving(where):
        assert future.result(timeout=30) == 42
    assert threads[0].startswith("overcast-task-worker")
    [run] = harness.task_runs(None)
    assert run.id == future.task_run_id and run.state.is_completed() and run.task_key == where.task_key
    assert [s.name for s in harness.task_run_states(run.id)] == [
        "Scheduled",
        "Pending",
        "Running",
        "Completed",
    ]


def test_a_failed_background_run_raises_the_tasks_own_error(harness: Harness) -> None:
    @task(retries=1)
    def flaky(n: int) -> int:
        raise ValueError(f"no luck with {n}")

    with serving(flaky):
        future = flaky.delay(7)
        with pytest.raises(ValueError, match="no luck with 7"):
            future.result(timeout=30)
    assert future.state.is_failed() and future.state.message == "ValueError: no luck with 7"
    assert isinstance(future.result(raise_on_failure=False), ValueError)
    names = [s.name for s in harness.task_run_states(future.task_run_id)]
    assert names == ["Scheduled", "Pending", "Running", "AwaitingRetry", "Retrying", "Failed"]


def test_arguments_json_cannot_carry_go_and_come_back_whole(harness: Harness) -> None:
    @task
    def mirror(point: Point, blob: bytes, *, scale: int = 1) -> tuple[Point, bytes]:
        return Point(point.x * scale, point.y * scale), blob[::-1]

    big = bytes(range(256)) * 8  # over the inline limit: the arguments and the result go to blobs
    with serving(mirror):
        future = mirror.apply_async(args=(Point(1, 2), big), kwargs={"scale": 3})
        assert future.result(timeout=30) == (Point(3, 6), big[::-1])
        assert mirror.delay(Point(0, 1), b"ab").result(timeout=30) == (Point(0, 1), b"ba")


def test_a_run_of_a_task_the_worker_does_not_serve_waits_for_a_worker_that_does(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    @task
    def triple(x: int) -> int:
        return 3 * x

    future = triple.delay(3)
    with caplog.at_level(logging.WARNING, logger="overcast.task_worker"):
        assert TaskWorker(double).run_once(wait_s=5) == 1  # received, and passed on
    assert future.state.is_scheduled()
    assert [r.message for r in caplog.records if "does not serve" in r.message] == [
        f"task worker does not serve task {triple.task_key!r}: passing its runs on"
    ]
    assert TaskWorker(triple).run_once(wait_s=10) == 1
    assert future.result(timeout=30) == 9


def test_a_message_delivered_again_for_a_finished_run_is_acknowledged_and_skipped(harness: Harness) -> None:
    calls: list[int] = []

    @task
    def count(x: int) -> int:
        calls.append(x)
        return x

    queue = TaskWorker(count).queue
    future = count.delay(5)
    [message] = queue.receive(1, visibility_s=0, wait_s=5)  # a look: it stays visible
    assert json.loads(message.body)["task_run_id"] == str(future.task_run_id)
    assert TaskWorker(count).run_once(wait_s=5) == 1
    assert future.result(timeout=30) == 5
    history = harness.task_run_states(future.task_run_id)

    queue.send(message.body)  # delivered again, as after a worker died before acknowledging it
    # (a visibility of 0: a message left unacknowledged would be visible again at once)
    assert TaskWorker(count, visibility_s=0).run_once(wait_s=5) == 1
    assert calls == [5]
    assert queue.receive(1, wait_s=0) == []
    assert harness.task_run_states(future.task_run_id) == history


def test_a_run_whose_worker_died_mid_run_is_run_again_to_its_end(harness: Harness) -> None:
    future = double.delay(4)
    # What a worker that died in its second attempt left in the control plane.
    died = _resumed_record(harness.runtime.client.read_task_run(future.task_run_id))
    died.run_count = 2
    for state, name in [("PENDING", "Pending"), ("RUNNING", "Running"), ("SCHEDULED", "AwaitingRetry")]:
        died.add(state, name)
    died.add("RUNNING", "Retrying")
    harness.runtime.reporter.document(died.document())
    harness.flush()

    assert TaskWorker(double).run_once(wait_s=5) == 1
    assert future.result(timeout=30) == 8
    names = [s.name for s in harness.task_run_states(future.task_run_id)]
    assert names == [
        "Scheduled",
        "Pending",
        "Running",
        "AwaitingRetry",
        "Retrying",
        "Pending",
        "Running",
        "Completed",
    ]


def test_futures_of_background_runs_pass_on_as_their_results(harness: Harness) -> None:
    @task
    def fail() -> int:
        raise RuntimeError("upstream broke")

    @task
    def kind(value: object) -> str:
        return type(value).__name__

    with serving(double, fail, kind):
        first = double.delay(2)
        second = double.apply_async(args=(first,))
        after = double.apply_async(args=(1,), wait_for=[second])
        assert second.result(timeout=30) == 8
        assert after.result(timeout=30) == 2
        broken = fail.delay()
        blocked = double.apply_async(args=(1,), wait_for=[broken])
        tolerant = kind.delay(allow_failure(broken))
        done, not_done = wait([blocked, tolerant], timeout=30)
        assert done == {blocked, tolerant} and not not_done
        with pytest.raises(UpstreamTaskError, match="is Failed"):
            blocked.result()
        assert tolerant.result() == "RuntimeError"  # the upstream's exception, passed in its place


def test_delay_inside_a_flow_is_a_run_of_its_own(harness: Harness) -> None:
    @flow
    def fan_out(n: int) -> list[uuid.UUID]:
        return [double.delay(i).task_run_id for i in range(n)]

    with serving(double):
        ids = fan_out(3)
        assert [OvercastDistributedFuture(i).result(timeout=30) for i in ids] == [0, 2, 4]
    [flow_run] = harness.flow_runs()
    assert harness.task_runs(flow_run.id) == []  # not part of the flow run's graph (as in Prefect)
    assert {run.id for run in harness.task_runs(None)} == set(ids)


def test_delay_refuses_what_no_worker_could_run(harness: Harness) -> None:
    @task
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError):
        double.delay(1, 2)  # an argument too many: refused here, not in a worker
    with pytest.raises(TypeError, match="generator"):
        numbers.delay()

    @flow
    def hands_over_a_local_future() -> None:
        double.delay(double.submit(1))

    with pytest.raises(TypeError, match="runs in this process"):
        hands_over_a_local_future()
    assert harness.task_runs(None) == []  # nothing was queued


def test_the_tasks_queue_sits_next_to_the_settings_queue() -> None:
    assert task_queue_url(Settings(queue="memory://q")) == "memory://q-tasks"
    assert (
        task_queue_url(Settings(queue="local:///var/q.db?name=runs")) == "local:///var/q.db?name=runs-tasks"
    )
    assert task_queue_url(Settings(queue="", home="/srv/oc")) == "local:///srv/oc/queue.db?name=tasks"
    assert task_queue_url(Settings(queue="sqs://jobs.fifo?region=eu-west-1")) == (
        "sqs://jobs-tasks.fifo?region=eu-west-1"
    )


def test_task_serve_runs_the_tasks_background_runs_until_its_timeout(harness: Harness) -> None:
    future = double.delay(8)
    server = threading.Thread(target=double.serve, kwargs={"timeout": 2}, daemon=True)
    server.start()
    assert future.result(timeout=30) == 16
    server.join(30)
    assert not server.is_alive()  # it stopped by itself


def test_a_malformed_message_is_refused_without_losing_it_or_the_good_ones(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    queue = TaskWorker(double).queue
    queue.send("not json at all")
    queue.send(json.dumps({"task_key": double.task_key}))  # no run, no parameters
    future = double.delay(21)
    caplog.set_level(logging.ERROR, logger="overcast.task_worker")
    # (a visibility of 0: the refused messages are visible again at once, for the look below)
    assert TaskWorker(double, visibility_s=0).run_once(wait_s=5) == 3
    assert future.result(timeout=30) == 42  # the good run in the same batch went through
    assert caplog.text.count("not a background task run") == 2
    left = sorted(message.body for message in queue.receive(10, visibility_s=60, wait_s=1))
    assert left == sorted(["not json at all", json.dumps({"task_key": double.task_key})])  # not lost
