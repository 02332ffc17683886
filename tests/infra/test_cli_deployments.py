"""`overcast deployment ls|inspect|run|pause|resume`, run as a user runs them, over the embedded store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "overcast.infra.cli", "deployment"]


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OVERCAST_HOME": str(home), "COLUMNS": "200"}
    env.pop("OVERCAST_STORE", None)
    env.pop("OVERCAST_API_URL", None)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli-deployments")
    script = textwrap.dedent(
        """
        from datetime import timedelta

        from overcast._runtime import get_runtime
        from overcast.core.deployments import DeploymentCreate

        client = get_runtime().client
        for body in [
            {
                "name": "nightly", "flow_name": "etl", "entrypoint": "flows/etl.py:etl",
                "parameters": {"n": 3}, "tags": ["prod"],
                "parameter_openapi_schema": {
                    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]
                },
                "work_pool_name": "lambda", "work_queue_name": "default",
                "schedules": [{"schedule": {"cron": "0 2 * * *", "timezone": "Europe/Paris"}}],
                "concurrency_limit": 1,
            },
            {"name": "weekly", "flow_name": "report", "entrypoint": "reports:weekly",
             "schedules": [{"schedule": {"interval": 604800}},
                           {"schedule": {"cron": "@hourly"}, "active": False}]},
        ]:
            client.create_deployment(DeploymentCreate.model_validate(body))
        made = client.plane.scheduler.schedule(horizon=timedelta(days=7), max_runs=2).created
        print(len(made))
        """
    )
    done = _run([sys.executable, "-c", script], home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"  # two of the daily cron's (the cap), one of the weekly interval
    return home


def test_ls_lists_deployments_with_their_schedules(home: Path) -> None:
    out = _run([*CLI, "ls"], home)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    nightly = next(line for line in lines if "etl/nightly" in line)
    assert "active" in nightly and "cron '0 2 * * *' (Europe/Paris)" in nightly
    assert "lambda / default" in nightly and "1 (ENQUEUE)" in nightly
    assert any("report/weekly" in line and "every 7d" in line for line in lines)
    assert "cron '@hourly' (inactive)" in out.stdout
    listed = json.loads(_run([*CLI, "ls", "--json", "--flow", "report"], home).stdout)
    assert [d["name"] for d in listed] == ["weekly"]


def test_inspect_shows_settings_next_times_and_scheduled_runs(home: Path) -> None:
    out = _run([*CLI, "inspect", "etl/nightly", "--upcoming", "3"], home)
    assert out.returncode == 0, out.stderr
    assert "flows/etl.py:etl" in out.stdout and '{"n": 3}' in out.stdout
    assert "Next times (UTC)" in out.stdout and out.stdout.count(":00:00") >= 3
    assert "Scheduled runs" in out.stdout and "Scheduled" in out.stdout
    missing = _run([*CLI, "inspect", "etl/nope"], home)
    assert missing.returncode == 1 and "no deployment 'etl/nope'" in missing.stderr


def test_run_takes_parameters_and_refuses_bad_ones(home: Path) -> None:
    made = _run([*CLI, "run", "etl/nightly", "--param", "n=7", "--tag", "manual"], home)
    assert made.returncode == 0, made.stderr
    assert "created flow run" in made.stdout and "of etl/nightly" in made.stdout
    run_id = made.stdout.split("(")[1].split(")")[0]
    shown = _run([sys.executable, "-m", "overcast.infra.cli", "flow-run", "inspect", run_id], home)
    assert "{'n': 7}" in shown.stdout and "manual" in shown.stdout
    refused = _run([*CLI, "run", "etl/nightly", "-p", "n=seven"], home)
    assert refused.returncode == 1
    assert 'n: "seven" is not of type "integer"' in refused.stderr
    watched = _run(
        [*CLI, "run", "report/weekly", "--watch", "--watch-timeout", "0.5", "--watch-interval", "0.1"], home
    )
    assert watched.returncode == 2 and "Scheduled" in watched.stdout  # nothing runs it here: watching stops


def test_pause_and_resume(home: Path) -> None:
    paused = _run([*CLI, "pause", "report/weekly"], home)
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert "paused" in next(
        line for line in _run([*CLI, "ls"], home).stdout.splitlines() if "report/weekly" in line
    )
    resumed = _run([*CLI, "resume", "report/weekly"], home)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout
