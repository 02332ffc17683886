"""`overcast flow-run ls|inspect`, `task-run ls` and `logs`, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _run(args: list[str], home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OVERCAST_HOME": str(home), **extra}
    env.pop("OVERCAST_STORE", None)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("cli-home")
    script = textwrap.dedent(
        """
        from overcast import flow, task, get_run_logger

        @task
        def square(x: int) -> int:
            get_run_logger().info("squaring %d", x)
            return x * x

        @flow(flow_run_name="nightly-{n}")
        def nightly(n: int) -> int:
            return sum(square(i) for i in range(n))

        state = nightly(3, return_state=True)
        print(state.result())
        """
    )
    done = _run([sys.executable, "-c", script], home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    listing = _run([sys.executable, "-m", "overcast.infra.cli", "flow-run", "ls"], home)
    assert listing.returncode == 0, listing.stderr
    run_id = next(
        word
        for line in listing.stdout.splitlines()
        if "nightly-3" in line
        for word in line.split()
        if len(word) == 36
    )
    return home, run_id


def test_flow_run_ls_shows_the_run(ran: tuple[Path, str]) -> None:
    home, run_id = ran
    out = _run(
        [sys.executable, "-m", "overcast.infra.cli", "flow-run", "ls", "--state", "completed"], home
    ).stdout
    assert "nightly" in out and "Completed" in out and run_id in out
    failed_only = _run(
        [sys.executable, "-m", "overcast.infra.cli", "flow-run", "ls", "--state", "FAILED"], home
    )
    assert run_id not in failed_only.stdout


def test_flow_run_inspect_shows_details_and_history(ran: tuple[Path, str]) -> None:
    home, run_id = ran
    out = _run([sys.executable, "-m", "overcast.infra.cli", "flow-run", "inspect", run_id], home).stdout
    assert "nightly-3" in out and "{'n': 3}" in out
    assert out.index("Pending") < out.index("Running") < out.rindex("Completed")


def test_task_run_ls_and_logs(ran: tuple[Path, str]) -> None:
    home, run_id = ran
    tasks = _run(
        [sys.executable, "-m", "overcast.infra.cli", "task-run", "ls", "--flow-run", run_id], home
    ).stdout
    assert tasks.count("square") >= 3 and "Completed" in tasks
    logs = _run([sys.executable, "-m", "overcast.infra.cli", "logs", run_id], home).stdout
    assert [f"squaring {i}" in logs for i in range(3)] == [True, True, True]


def test_unknown_runs_get_a_clear_error(ran: tuple[Path, str]) -> None:
    home, _ = ran
    missing = _run(
        [
            sys.executable,
            "-m",
            "overcast.infra.cli",
            "flow-run",
            "inspect",
            "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        ],
        home,
    )
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = _run([sys.executable, "-m", "overcast.infra.cli", "flow-run", "inspect", "not-an-id"], home)
    assert bad.returncode == 2 and "valid UUID" in bad.stderr
