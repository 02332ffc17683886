"""A deployment created from the CLI runs on the local stack: queue → function host → runner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

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


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "overcast.infra.cli", *args],
        cwd=cwd,
        env=dict(os.environ) if env is None else env,
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


# -- buckets, storage events and `overcast dev` ------------------------------------------------------


def _storage_events(plane: Any) -> list[tuple[str, str]]:
    from overcast.core.events import EventFilter

    page = plane.events.filter(EventFilter(names=["aws.s3.*"], order="asc", limit=50))
    return [(e.event, e.resource_id) for e in page.items]


def test_changes_in_a_bucket_directory_become_storage_events(stack: LocalStack) -> None:
    assert stack.buckets is not None
    path = stack.buckets.root / "uploads" / "in" / "day 1+2.csv"
    path.parent.mkdir()
    path.write_text("a,b\n")
    created = ("aws.s3.object.created", "s3://uploads/in/day 1+2.csv")
    wait_until(lambda: _storage_events(stack.plane) == [created], timeout=60)

    path.write_text("a,b\n1,2\n")  # new content: a new version
    wait_until(lambda: _storage_events(stack.plane) == [created, created], timeout=30)
    events = stack.plane.events.filter(_names("aws.s3.object.created")).items
    assert sorted(e.resource.get("aws.s3.size") for e in events) == ["4", "8"]

    path.unlink()
    deleted = ("aws.s3.object.deleted", "s3://uploads/in/day 1+2.csv")
    wait_until(lambda: _storage_events(stack.plane) == [created, created, deleted], timeout=30)


def _names(*names: str) -> Any:
    from overcast.core.events import EventFilter

    return EventFilter(names=list(names))


def test_overcast_upload_puts_the_file_into_the_local_bucket(stack: LocalStack, tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.7")
    done = _cli("upload", "report.pdf", "s3://uploads/reports/", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "s3://uploads/reports/report.pdf" in done.stdout
    assert stack.buckets is not None
    assert (stack.buckets.root / "uploads" / "reports" / "report.pdf").read_bytes() == b"%PDF-1.7"
    created = ("aws.s3.object.created", "s3://uploads/reports/report.pdf")
    wait_until(lambda: _storage_events(stack.plane) == [created], timeout=60)

    refused = _cli("upload", "report.pdf", "s3://No_Such/x", cwd=tmp_path)
    assert refused.returncode == 1 and "invalid bucket name" in refused.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_lines(stream: Any, into: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(iter(stream.readline, "")), daemon=True)
    thread.start()
    return thread


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_overcast_dev_turns_uploads_into_events_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    import httpx2

    env = {**os.environ, "OVERCAST_HOME": str(tmp_path / "home")}
    env.pop("OVERCAST_API_URL", None)
    port = _free_port()
    command = ["dev", "--port", str(port), "--function-port", "0", "--workers", "1", "--tick", "1"]
    dev = subprocess.Popen(
        [sys.executable, "-m", "overcast.infra.cli", *command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [_read_lines(dev.stdout, out), _read_lines(dev.stderr, err)]
    api = f"http://127.0.0.1:{port}"

    def stored() -> set[str]:
        answer = httpx2.post(f"{api}/api/events/filter", json={"names": ["aws.s3.object.created"]})
        return {e["resource"]["overcast.resource.id"] for e in answer.json()["items"]}

    try:
        wait_until(lambda: any("Ctrl-C stops everything" in line for line in out) or dev.poll(), timeout=60)
        assert dev.poll() is None, "".join(err)
        assert f"OVERCAST_API_URL='{api}'" in "".join(out)
        (tmp_path / "a file.txt").write_text("hello")
        through_api = _cli(
            "upload", "a file.txt", "s3://uploads/api/", cwd=tmp_path, env={**env, "OVERCAST_API_URL": api}
        )
        assert through_api.returncode == 0, through_api.stderr
        direct = _cli("upload", "a file.txt", "s3://uploads/direct/a.txt", cwd=tmp_path, env=env)
        assert direct.returncode == 0, direct.stderr
        (tmp_path / "home" / "buckets" / "uploads" / "dropped.txt").write_text("by hand")
        wanted = {"s3://uploads/api/a file.txt", "s3://uploads/direct/a.txt", "s3://uploads/dropped.txt"}
        wait_until(lambda: stored() == wanted, timeout=60)
        children = _children(dev.pid)
        assert children  # the function host's worker, at least

        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        for reader in readers:
            reader.join(timeout=10)
    assert dev.returncode == 0, "".join(err)
    assert "Traceback" not in "".join(err)
    assert out[-1].strip() == "stopped."
    # multiprocessing's resource tracker leaves once it sees its parent's pipe close: soon after
    wait_until(lambda: not [pid for pid in children if _running(pid)], timeout=10)


ON_UPLOAD = textwrap.dedent(
    """
    from overcast import flow

    @flow
    def count_lines(bucket: str, key: str) -> str:
        return f"{bucket}/{key}"
    """
)


def test_an_upload_runs_the_deployment_its_trigger_names(stack: LocalStack, tmp_path: Path) -> None:
    from overcast._runtime import _build, use_runtime
    from overcast.automations import DeploymentEventTrigger
    from overcast.flows import load_flow_from_entrypoint

    (tmp_path / "flows.py").write_text(ON_UPLOAD)
    trigger = DeploymentEventTrigger(
        expect={"aws.s3.object.created"},
        match={"aws.s3.bucket": "uploads"},
        parameters={
            "bucket": "{{ event.resource['aws.s3.bucket'] }}",
            "key": "{{ event.resource['aws.s3.key'] }}",
        },
    )
    entrypoint = f"{tmp_path / 'flows.py'}:count_lines"
    with use_runtime(_build(stack.settings)):
        load_flow_from_entrypoint(entrypoint).deploy(
            "on-upload", work_pool_name="local-queue", entrypoint=entrypoint, triggers=[trigger]
        )
    assert stack.buckets is not None
    stack.buckets.bucket("uploads").put("in/lines 1.txt", b"a\nb\n")

    def completed() -> Any:
        runs = stack.plane.flow_runs.filter(_all_runs()).items
        return runs if runs and all(r.state.is_terminal for r in runs) else None

    (run,) = wait_until(completed, timeout=120)
    assert run.state.is_completed(), run.state
    assert run.state.result() == "uploads/in/lines 1.txt"
