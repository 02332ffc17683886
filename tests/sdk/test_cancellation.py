"""Cancelling a running flow run stops it: its engine notices, interrupts the flow, ends it Cancelled."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from overcast import _heartbeats, flow, get_run_context, task, workers
from overcast._flow_engine import FlowRunCancelledError
from overcast._runtime import _build, use_runtime
from overcast.core.settings import Settings
from overcast.core.states import Cancelling, StateType
from overcast.core.work_pools import ProcessPoolCreate
from overcast.deployments import run_deployment
from overcast.flows import load_flow_from_entrypoint
from overcast.task_runners import ThreadPoolTaskRunner
from overcast.testing import Harness
from overcast.workers import Worker

LONG_S = 60.0  # how long a flow would go on if nobody stopped it


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_heartbeats, "CANCEL_CHECK_S", 0.05)


class Probe:
    """What a flow under test tells the test: its run, that it started, that it ran to its end, its hooks."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.run_ids: list[uuid.UUID] = []
        self.hooked: list[str] = []
        self.ended = False

    def begin(self) -> None:
        self.run_ids.append(get_run_context().flow_run.id)
        self.started.set()

    def begin_in_task(self) -> None:
        from overcast import runtime

        self.run_ids.append(runtime.flow_run.id)
        self.started.set()

    def on_cancellation(self, _flow: Any, _run: Any, state: Any) -> None:
        self.hooked.append(state.type.value)

    def cancel_when_started(self, harness: Harness, run: Callable[[], uuid.UUID] | None = None) -> None:
        """From another thread: once the flow started, ask the control plane to cancel its run (or ``run()``)."""

        def cancel() -> None:
            if self.started.wait(LONG_S):
                harness.plane.flow_runs.cancel(run() if run is not None else self.run_ids[0])

        threading.Thread(target=cancel, daemon=True).start()


def looping_flow(probe: Probe) -> Any:
    @flow(on_cancellation=[probe.on_cancellation])
    def looping() -> str:
        probe.begin()
        deadline = time.monotonic() + LONG_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
        probe.ended = True
        return "ran to the end"

    return looping


def assert_cancelled(harness: Harness, run_id: uuid.UUID) -> None:
    [run] = [r for r in harness.flow_runs() if r.id == run_id]
    assert run.state.type is StateType.CANCELLED
    assert [s.type.value for s in harness.flow_run_states(run_id)][-2:] == ["CANCELLING", "CANCELLED"]


def test_a_running_sync_flow_is_stopped_when_its_run_is_cancelled(harness: Harness) -> None:
    probe = Probe()
    probe.cancel_when_started(harness)

    with pytest.raises(FlowRunCancelledError) as raised:
        looping_flow(probe)()

    assert not probe.ended
    assert raised.value.flow_run_id == probe.run_ids[0]
    assert_cancelled(harness, probe.run_ids[0])
    assert probe.hooked == ["CANCELLED"]  # the on_cancellation hook ran once


def test_a_running_async_flow_is_stopped_when_its_run_is_cancelled(harness: Harness) -> None:
    probe = Probe()

    @flow(on_cancellation=[probe.on_cancellation])
    async def looping() -> str:
        probe.begin()
        deadline = time.monotonic() + LONG_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        probe.ended = True
        return "ran to the end"

    probe.cancel_when_started(harness)
    with pytest.raises(FlowRunCancelledError):
        asyncio.run(looping())

    assert not probe.ended
    assert_cancelled(harness, probe.run_ids[0])
    assert probe.hooked == ["CANCELLED"]


def test_return_state_returns_the_cancelled_state(harness: Harness) -> None:
    probe = Probe()
    probe.cancel_when_started(harness)

    state = looping_flow(probe)(return_state=True)

    assert not probe.ended
    assert state.is_cancelled()
    with pytest.raises(FlowRunCancelledError):
        state.result()
    assert probe.hooked == ["CANCELLED"]


def test_a_flow_that_catches_exceptions_is_stopped_all_the_same(harness: Harness) -> None:
    probe = Probe()

    @flow
    def stubborn() -> str:
        probe.begin()
        deadline = time.monotonic() + LONG_S
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except Exception:  # the interrupt is not an Exception: this does not swallow it
                continue
        probe.ended = True
        return "ran to the end"

    probe.cancel_when_started(harness)
    with pytest.raises(FlowRunCancelledError):
        stubborn()
    assert not probe.ended
    assert_cancelled(harness, probe.run_ids[0])


def test_a_subflow_stops_with_its_cancelled_parent(harness: Harness) -> None:
    probe = Probe()
    looping = looping_flow(probe)
    parent_ids: list[uuid.UUID] = []

    @flow
    def parent() -> str:
        parent_ids.append(get_run_context().flow_run.id)
        return looping()

    probe.cancel_when_started(harness, run=lambda: parent_ids[0])
    with pytest.raises(FlowRunCancelledError) as raised:
        parent()

    assert not probe.ended
    assert raised.value.flow_run_id == parent_ids[0]
    assert_cancelled(harness, parent_ids[0])
    [subflow] = [r for r in harness.flow_runs() if r.id == probe.run_ids[0]]
    assert subflow.state.type is StateType.CANCELLED
    assert probe.hooked == ["CANCELLED"]


def test_task_runs_waiting_for_a_thread_are_dropped(harness: Harness) -> None:
    probe, release, ran = Probe(), threading.Event(), []

    @task
    def hold(n: int) -> int:
        ran.append(n)
        release.wait(LONG_S)
        return n

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def fan_out() -> None:
        hold.map(range(4))  # one runs and holds the only thread, three wait for it
        probe.begin()
        deadline = time.monotonic() + LONG_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
        probe.ended = True

    probe.cancel_when_started(harness)
    try:
        with pytest.raises(FlowRunCancelledError):
            fan_out()
        assert not release.is_set()  # the call returned while a task run still held its thread
    finally:
        release.set()
    assert not probe.ended
    assert_cancelled(harness, probe.run_ids[0])
    assert ran == [0]  # the task runs not started never ran


def test_a_flow_that_is_not_cancelled_runs_to_its_end(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = harness.runtime.client
    read = client.read_flow_run
    checks: list[uuid.UUID] = []

    def counting_read(run_id: uuid.UUID) -> Any:
        if threading.current_thread().name == "overcast-heartbeat":
            checks.append(run_id)
        return read(run_id)

    monkeypatch.setattr(client, "read_flow_run", counting_read)
    hooked: list[str] = []

    @flow(on_cancellation=[lambda f, run, state: hooked.append("cancelled")])
    def patient() -> str:
        wait_until(lambda: len(checks) >= 3, timeout=LONG_S)  # its state was read several times
        return "done"

    assert patient() == "done"
    [run] = harness.flow_runs()
    assert run.state.is_completed() and set(checks) == {run.id}
    assert hooked == []


# -- a worker's subprocess ----------------------------------------------------------------------

WORKER_FLOW = textwrap.dedent(
    """
    import time
    from pathlib import Path
    from overcast import flow

    def note(flow, flow_run, state):
        with Path(flow_run.parameters["ledger"]).open("a") as out:
            out.write(f"hook {state.type.value}\\n")

    @flow(on_cancellation=[note])
    def linger(ledger: str, block: bool) -> None:
        with Path(ledger).open("a") as out:
            out.write("started\\n")
        if block:
            time.sleep(600)  # one blocking call: the engine cannot interrupt it, the worker must
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(0.05)
    """
)


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    home = tmp_path / "home"
    monkeypatch.setenv("OVERCAST_HOME", str(home))  # the run subprocesses inherit it
    runtime = _build(Settings(home=home))
    (tmp_path / "flows.py").write_text(WORKER_FLOW)
    with use_runtime(runtime):
        runtime.client.create_work_pool(ProcessPoolCreate.model_validate({"name": "laptop"}))
        entrypoint = f"{tmp_path / 'flows.py'}:linger"
        load_flow_from_entrypoint(entrypoint).deploy("pulled", work_pool_name="laptop", entrypoint=entrypoint)
        yield runtime
    runtime.close()


def run_until_cancelled(runtime: Any, ledger: Path, *, block: bool) -> tuple[Any, int | None]:
    """Start the deployment's run on a worker, cancel it once it runs, poll until it is over."""
    run = run_deployment("linger/pulled", parameters={"ledger": str(ledger), "block": block}, timeout=0)
    worker = Worker(runtime.client, "laptop", name="w")

    def polled(done: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            worker.poll()
            return done()

        return check

    wait_until(polled(lambda: ledger.exists() and "started" in ledger.read_text()), timeout=120, interval=0.1)
    [process] = worker.running.values()
    runtime.client.set_flow_run_state(run.id, Cancelling("stop it"))
    wait_until(
        polled(lambda: not worker.running and runtime.client.read_flow_run(run.id).state.is_terminal),
        timeout=120,
        interval=0.1,
    )
    return runtime.client.read_flow_run(run.id), process.returncode


def test_a_workers_run_is_stopped_by_its_own_engine(
    pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "CANCEL_GRACE_S", LONG_S * 10)  # the worker leaves it to the engine
    ledger = tmp_path / "ledger"

    run, returncode = run_until_cancelled(pool, ledger, block=False)

    assert run.state.type is StateType.CANCELLED
    assert ledger.read_text().splitlines() == ["started", "hook CANCELLED"]
    assert returncode == 1  # the run did not complete


def test_a_worker_terminates_a_cancelled_run_its_engine_cannot_stop(
    pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "CANCEL_GRACE_S", 0.0)
    ledger = tmp_path / "ledger"

    run, returncode = run_until_cancelled(pool, ledger, block=True)

    assert run.state.type is StateType.CANCELLED
    assert "worker w stopped" in (run.state.message or "")
    assert returncode is not None and returncode < 0  # ended by a signal
    assert ledger.read_text().splitlines() == ["started"]


def test_a_task_running_when_its_flow_run_is_cancelled_ends_cancelled(harness: Harness) -> None:
    probe = Probe()
    probe.cancel_when_started(harness)

    @task
    def wait_long() -> None:
        probe.begin_in_task()
        deadline = time.monotonic() + LONG_S
        while time.monotonic() < deadline:
            time.sleep(0.05)

    @flow
    def pipeline() -> None:
        wait_long()

    with pytest.raises(FlowRunCancelledError):
        pipeline()
    [task_run] = harness.task_runs(probe.run_ids[0])
    assert (task_run.state.type, task_run.state.name) == (StateType.CANCELLED, "Cancelled")
