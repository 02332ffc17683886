"""The parent side: workloads in fresh, bounded subprocesses, and ``overcast server`` for HTTP.

Standard library only, so any interpreter can drive any framework's venv.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKLOADS_PY = Path(__file__).resolve().with_name("workloads.py")
T0_ENV = "BENCH_ENGINE_T0"  # mirrors workloads.T0_ENV (that file must import nothing of ours)
SERVER_START_S = 30
STDERR_TAIL = 1500


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus every Prefect and Overcast setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OVERCAST_", "BENCH_"))}
    return env | extra


@dataclass(frozen=True)
class Subject:
    """One framework in one interpreter, reached through one client."""

    framework: str
    python: str
    client: str
    env: Mapping[str, str]


def run_workload(
    subject: Subject, workload: str, argv: list[str], *, workdir: Path, timeout: float
) -> dict[str, Any]:
    """Run one workload in a fresh interpreter (its own session) and return its JSON line.

    A child that overruns ``timeout`` is killed with its whole process group (Prefect's
    ephemeral server included); what it wrote before is kept, and the failure is recorded.
    """
    out = workdir / f"{subject.framework}-{subject.client}-{workload}.json"
    log = workdir / f"{subject.framework}-{subject.client}-{workload}.log"
    out.unlink(missing_ok=True)
    command = [
        subject.python,
        str(WORKLOADS_PY),
        "--framework",
        subject.framework,
        "--workload",
        workload,
        "--client",
        subject.client,
        "--out",
        str(out),
        *argv,
    ]
    env = {**subject.env, T0_ENV: repr(time.time())}
    start = time.perf_counter()
    with log.open("wb") as sink:
        child = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        timed_out = False
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(child)
    elapsed = time.perf_counter() - start

    line: dict[str, Any] = {"workload": workload, "framework": subject.framework, "client": subject.client}
    if out.exists():
        line |= json.loads(out.read_text())
    line["process_total_s"] = round(elapsed, 3)
    if timed_out:
        line.setdefault("error", f"timed out after {timeout:g}s")
    elif child.returncode != 0:
        line.setdefault("error", f"exited with {child.returncode}")
    elif not out.exists():
        line["error"] = "wrote no result"
    if "error" in line:
        line["log_tail"] = log.read_text(errors="replace")[-STDERR_TAIL:]
    return line


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Stop ``child`` and everything it started (its own session): SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        try:
            child.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OvercastServer:
    """``overcast server`` on a free loopback port, over the home the environment names."""

    def __init__(self, python: str, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log
        command = [
            python,
            "-m",
            "overcast.infra.cli",
            "server",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                command, env=dict(env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = SERVER_START_S) -> None:
        """Return once ``/api/health`` answers 200; raise ``RuntimeError`` with the log if it won't."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if self.call("GET", "/api/health")[0] == 200:
                    return
            time.sleep(0.05)
        tail = self._log.read_text(errors="replace")[-STDERR_TAIL:].strip()
        code = self.process.poll()
        why = f"exited with {code}" if code is not None else f"did not answer within {timeout:g}s"
        raise RuntimeError(f"overcast server {why}: {tail}")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            connection.close()

    def latest_flow_run_id(self) -> str | None:
        """The newest flow run the server holds (``None``: none yet)."""
        status, page = self.call("POST", "/api/flow_runs/filter", {"limit": 1})
        if status != 200:
            raise RuntimeError(f"flow-run filter answered {status}: {page}")
        return page["items"][0]["id"] if page["items"] else None

    def peak_rss_mb(self) -> float | None:
        """The server process's peak RSS so far (Linux /proc), or ``None``."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def stop(self) -> None:
        """Ctrl-C (a graceful stop), then the whole group if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(self.process)


@contextlib.contextmanager
def overcast_server(python: str, env: Mapping[str, str], workdir: Path) -> Iterator[OvercastServer]:
    """A running ``overcast server``; stopped on exit, even if it never came up."""
    server = OvercastServer(python, env, workdir / "overcast-server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def interpreter_version(python: str) -> str:
    """``python``'s version, e.g. ``3.11.7`` (``sys.executable``'s without a subprocess)."""
    if python == sys.executable:
        return ".".join(map(str, sys.version_info[:3]))
    done = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()
