"""``overcast task-worker module:task``: a worker process runs what another process delays."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast._runtime import _build, use_runtime
from overcast.core.settings import Settings

TASKS = textwrap.dedent(
    """
    import os
    from dataclasses import dataclass

    from overcast import task

    @dataclass
    class Order:
        item: str
        quantity: int

    @task
    def pack(order: Order) -> dict:
        return {"label": f"{order.quantity} x {order.item}".upper(), "packed_by": os.getpid()}

    @task
    def refuse(order: Order) -> None:
        raise LookupError(f"no {order.item} left")
    """
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary OVERCAST_HOME (embedded SQLite store, blobs and queue) and the tasks' module."""
    home = tmp_path / "home"
    monkeypatch.setenv("OVERCAST_HOME", str(home))
    for name in ("OVERCAST_STORE", "OVERCAST_BLOBS", "OVERCAST_QUEUE", "OVERCAST_API_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "warehouse.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return home


@pytest.fixture
def worker(home: Path) -> Iterator[subprocess.Popen[str]]:
    """``overcast task-worker`` serving the module's two tasks, stopped (SIGTERM) afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "overcast.infra.cli", "task-worker", "warehouse:pack", "warehouse:refuse"],
        cwd=home.parent,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output


def test_a_task_worker_process_runs_what_this_process_delays(
    home: Path, worker: subprocess.Popen[str]
) -> None:
    import warehouse  # the module the worker serves, imported here as well

    runtime = _build(Settings(home=home))
    try:
        with use_runtime(runtime):
            future = warehouse.pack.delay(warehouse.Order("crate", 3))
            failing = warehouse.refuse.delay(warehouse.Order("tape", 1))
            result = future.result(timeout=120)
            assert result["label"] == "3 X CRATE"
            assert result["packed_by"] == worker.pid  # run by the worker process, not here
            with pytest.raises(LookupError, match="no tape left"):
                failing.result(timeout=120)
    finally:
        runtime.close()


def test_a_task_worker_refuses_what_is_not_a_task(home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "overcast.infra.cli", "task-worker", "warehouse:Order"],
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "is not a @task" in done.stderr
