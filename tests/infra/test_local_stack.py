"""A deployment created from the CLI runs on the local stack: queue → function host → runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.core.settings import Settings
from overcast.infra.stack import LocalStack

FLOW = textwrap.dedent(
    """
    from overcast import flow, task

    @task
    def shout(word: str) -> str:
        return word.upper() + "!"

    @flow
    def greet(word: str = "hello") -> str:
        return shout(word)
    """
)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "home"))  # the runner's worker processes inherit it
    with LocalStack(Settings(home=tmp_path / "home"), workers=1, tick_s=0.2) as running:
        yield running


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "overcast.infra.cli", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("pool", ["local-queue", "local-lambda"])
def test_a_deployment_made_with_the_cli_runs_through_the_local_stack(
    stack: LocalStack, tmp_path: Path, pool: str
) -> None:
    (tmp_path / "flows.py").write_text(FLOW)
    made = _cli(
        "deploy", "flows.py:greet", "--name", "cli", "--pool", pool, "--param", "word=bonjour", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    ran = _cli("deployment", "run", "greet/cli", "--watch", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (run,) = stack.plane.flow_runs.filter(_all_runs()).items
    assert run.state.is_completed()
    assert run.state.result() == "BONJOUR!"
    assert run.work_pool_name == pool


def _all_runs() -> object:
    from overcast.core.schemas import FlowRunFilter

    return FlowRunFilter(limit=10)


CRASHING = textwrap.dedent(
    """
    import os, signal
    from pathlib import Path
    from overcast import flow

    @flow(retries=1)
    def fragile(marker: str) -> str:
        if not Path(marker).exists():
            Path(marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)  # the function's sandbox dies mid-run
        return "survived"
    """
)


def test_a_runner_killed_mid_flow_is_reaped_to_crashed_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "home"))
    (tmp_path / "flows.py").write_text(CRASHING)
    with LocalStack(Settings(home=tmp_path / "home"), workers=1, tick_s=0.2, reap_after_s=1) as stack:
        made = _cli(
            "deploy",
            "flows.py:fragile",
            "--name",
            "k",
            "--pool",
            "local-lambda",
            "--param",
            f"marker={tmp_path / 'marker'}",
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        ran = _cli("deployment", "run", "fragile/k", "--watch", cwd=tmp_path)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        (run,) = stack.plane.flow_runs.filter(_all_runs()).items
        history = [s.name for s in stack.plane.flow_runs.states(run.id)]
    assert run.state.result() == "survived"
    assert "Crashed" in history or "AwaitingRetry" in history
    assert history.count("Running") == 2 and history[-1] == "Completed"
