"""Test your flows in memory: ``with overcast_test_harness(): my_flow()``.

The harness gives the engine a fresh in-memory control plane for the block (no file, no
server), and hands it to you to inspect what your flows did::

    from overcast.testing import overcast_test_harness

    def test_my_flow():
        with overcast_test_harness() as harness:
            assert my_flow(3) == 9
            runs = harness.flow_runs()
            assert runs[0].state.is_completed()
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from overcast._runtime import Runtime, use_runtime
from overcast.client import DirectClient
from overcast.core.models import FlowRun, LogLine, TaskRun
from overcast.core.schemas import FlowRunFilter, TaskRunFilter
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.core.states import State


class Harness:
    """What a test can ask of the in-memory control plane.

    Attributes:
        plane: the control plane's services, for anything not covered below.
    """

    def __init__(self, runtime: Runtime, plane: ControlPlane) -> None:
        self.runtime = runtime
        self.plane = plane

    def flush(self) -> None:
        """Send buffered task runs and logs now (the harness's readers call it for you)."""
        self.runtime.reporter.flush()

    def flow_runs(self, limit: int = 200) -> list[FlowRun]:
        """Flow runs, newest first."""
        self.flush()
        return self.plane.flow_runs.filter(FlowRunFilter(limit=limit)).items

    def flow_run_states(self, flow_run_id: uuid.UUID) -> list[State]:
        """A flow run's state history, oldest first."""
        return self.plane.flow_runs.states(flow_run_id)

    def task_runs(self, flow_run_id: uuid.UUID | None = None, limit: int = 500) -> list[TaskRun]:
        """Task runs of a flow run (or of none), oldest first."""
        self.flush()
        return self.plane.task_runs.filter(TaskRunFilter(flow_run_id=flow_run_id, limit=limit)).items

    def task_run_states(self, task_run_id: uuid.UUID) -> list[State]:
        """A task run's state history, oldest first."""
        self.flush()
        return self.plane.task_runs.states(task_run_id)

    def logs(self, run_id: uuid.UUID, limit: int = 1000) -> list[LogLine]:
        """A run's log lines, oldest first."""
        self.flush()
        return self.plane.logs.read(run_id, limit=limit).items


@contextmanager
def overcast_test_harness() -> Iterator[Harness]:
    """Run the block against a fresh in-memory control plane; yield a ``Harness`` over it."""
    from overcast.adapters.factory import open_blobs, open_store

    # Results go to a named in-memory blob store: private to the block, found again by its URL.
    blobs_url = f"memory://harness-{uuid.uuid4().hex}"
    plane = ControlPlane(open_store("memory://"), blobs=open_blobs(blobs_url))
    # its own queue too: background runs (``task.delay()``) never reach the home's queue
    runtime = Runtime(
        DirectClient(plane), Settings(blobs=blobs_url, queue=f"memory://harness-{uuid.uuid4().hex}")
    )
    with use_runtime(runtime):
        yield Harness(runtime, plane)
    runtime.close()
