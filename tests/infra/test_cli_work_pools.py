"""`overcast work-pool …`, `work-queue …` and `worker ls`, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OVERCAST_HOME": str(home), "COLUMNS": "200"}
    for name in ("OVERCAST_STORE", "OVERCAST_API_URL"):
        env.pop(name, None)
    command = [sys.executable, "-m", "overcast.infra.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def _line(output: str, word: str) -> str:
    return next(line for line in output.splitlines() if f" {word} " in line)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli-pools")
    for args in [
        ("work-pool", "create", "local", "--type", "process"),
        ("work-pool", "create", "lam", "--type", "aws-lambda", "--config", '{"function": "overcast-runner"}'),
        ("work-pool", "create", "gcf", "--type", "gcp-functions", "--concurrency-limit", "4"),
        ("work-queue", "create", "gpu", "--pool", "local", "--priority", "5"),
    ]:
        done = _run(home, *args)
        assert done.returncode == 0, done.stderr
    heartbeat = (
        "from overcast._runtime import get_runtime; "
        "get_runtime().client.send_worker_heartbeat('local', 'box-1', queues=['default'])"
    )
    env = {**os.environ, "OVERCAST_HOME": str(home)}
    env.pop("OVERCAST_STORE", None)
    subprocess.run([sys.executable, "-c", heartbeat], env=env, check=True, timeout=120)
    return home


def test_work_pool_ls_shows_each_pool_with_its_status(home: Path) -> None:
    out = _run(home, "work-pool", "ls").stdout
    assert "READY" in _line(out, "local") and "process" in _line(out, "local")
    assert "READY" in _line(out, "lam") and "function=overcast-runner" in _line(out, "lam")
    gcf = _line(out, "gcf")
    assert "NOT_READY" in gcf and "4" in gcf and "no config yet" in gcf


def test_worker_ls_shows_status_and_queues(home: Path) -> None:
    out = _run(home, "worker", "ls", "--pool", "local").stdout
    line = _line(out, "box-1")
    assert "ONLINE" in line and "default" in line
    assert "box-1" not in _run(home, "worker", "ls", "--pool", "local", "--status", "offline").stdout
    missing = _run(home, "worker", "ls", "--pool", "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_work_queues_are_listed_paused_and_resumed(home: Path) -> None:
    out = _run(home, "work-queue", "ls", "--pool", "local").stdout
    assert "READY" in _line(out, "default")
    assert "5" in _line(out, "gpu") and "NOT_READY" in _line(out, "gpu")  # no worker polls it
    paused = _run(home, "work-queue", "pause", "gpu", "--pool", "local")
    assert paused.returncode == 0 and "PAUSED" in paused.stdout
    assert "PAUSED" in _line(_run(home, "work-queue", "ls", "--pool", "local").stdout, "gpu")
    assert "NOT_READY" in _run(home, "work-queue", "resume", "gpu", "--pool", "local").stdout


def test_work_pool_pause_resume_and_inspect(home: Path) -> None:
    assert "PAUSED" in _run(home, "work-pool", "pause", "lam").stdout
    assert "PAUSED" in _line(_run(home, "work-pool", "ls").stdout, "lam")
    assert "READY" in _run(home, "work-pool", "resume", "lam").stdout
    out = _run(home, "work-pool", "inspect", "local").stdout
    assert "process (pull" in out and "Work queues" in out and "Workers" in out
    assert "box-1" in out and "gpu" in out


def test_bad_input_is_refused_in_words(home: Path) -> None:
    bad_name = _run(home, "work-pool", "create", "Bad Name", "--type", "process")
    assert bad_name.returncode == 1 and "lowercase letters" in bad_name.stderr
    bad_type = _run(home, "work-pool", "create", "k8s", "--type", "kubernetes")
    assert bad_type.returncode == 1 and "process, aws-lambda, gcp-functions, queue" in bad_type.stderr
    bad_config = _run(home, "work-pool", "create", "q", "--type", "queue", "--config", '{"url": "http://x"}')
    assert bad_config.returncode == 1 and "queue URL" in bad_config.stderr
    not_json = _run(home, "work-pool", "create", "q", "--type", "queue", "--config", "{url")
    assert not_json.returncode == 1 and "not JSON" in not_json.stderr
    taken = _run(home, "work-pool", "create", "local", "--type", "process")
    assert taken.returncode == 1 and "already exists" in taken.stderr
    missing = _run(home, "work-pool", "inspect", "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr
