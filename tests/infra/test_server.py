"""``overcast server`` as a user runs it: a real process on a free port, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from typer.testing import CliRunner

from overcast import __version__
from overcast.infra.cli import build

EXIT_DEADLINE_S = 20


@dataclass
class Server:
    """A running ``overcast server`` and where it writes."""

    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send a JSON request as curl would; return the status and the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def answers(self) -> bool:
        """Whether /api/health answers yet (fails the test if the process died instead)."""
        if self.process.poll() is not None:
            pytest.fail(f"overcast server exited with {self.process.returncode}:\n{self.stderr.read_text()}")
        try:
            return self.request("GET", "/api/health") == (200, {"status": "ok", "version": __version__})
        except OSError:
            return False

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` and return the exit code, failing the test if it takes past the deadline."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"overcast server did not exit within {EXIT_DEADLINE_S} s of {sig.name}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[], Server]]:
    """Start ``overcast server`` over an embedded store under ``tmp_path``; wait until it answers."""
    started: list[Server] = []

    def start() -> Server:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
        env["OVERCAST_HOME"] = str(tmp_path / "home")
        stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "overcast.infra.cli", "server", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=err,
            )
        server = Server(process, f"http://127.0.0.1:{port}", stdout, stderr)
        started.append(server)
        wait_until(server.answers, timeout=30)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_a_run_is_driven_to_completed_over_http_and_ctrl_c_exits_cleanly(
    start_server: Callable[[], Server], tmp_path: Path
) -> None:
    server = start_server()

    status, run = server.request("POST", "/api/flow_runs", {"flow_name": "etl", "parameters": {"n": 1}})
    assert status == 201, run
    assert run["state"]["type"] == "PENDING"
    for state_type in ("RUNNING", "COMPLETED"):
        status, result = server.request(
            "POST", f"/api/flow_runs/{run['id']}/set_state", {"state": {"type": state_type}}
        )
        assert (status, result["status"]) == (200, "ACCEPT"), result

    status, read = server.request("GET", f"/api/flow_runs/{run['id']}")
    assert status == 200
    assert read["state"]["type"] == "COMPLETED"
    assert read["run_count"] == 1

    assert server.stop(signal.SIGINT) == 0
    printed = server.stdout.read_text()
    assert f"{server.url}/api" in printed
    assert "Overcast API stopped." in printed
    # the run is in the embedded store under OVERCAST_HOME, where the next server finds it
    assert (tmp_path / "home" / "overcast.db").exists()


def test_sigterm_stops_the_server_cleanly(start_server: Callable[[], Server]) -> None:
    server = start_server()

    assert server.stop(signal.SIGTERM) == 0
    assert "Overcast API stopped." in server.stdout.read_text()


def _run_server(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``overcast server`` to completion (for the cases where it refuses to start)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
    environ.update(OVERCAST_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "overcast.infra.cli", "server", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=EXIT_DEADLINE_S,
        check=False,
    )


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run_server(tmp_path, "--port", str(port))

    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_bad_store_url_is_a_clear_error(tmp_path: Path) -> None:
    done = _run_server(tmp_path, "--port", "0", OVERCAST_STORE="postgres://db/overcast")

    assert done.returncode == 1
    assert "cannot start the API: unknown store backend 'postgres'" in done.stderr


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(build(), ["version"])

    assert result.exit_code == 0
    assert result.output.startswith(f"overcast {__version__} ")
