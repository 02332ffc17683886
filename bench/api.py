"""API throughput: accepted flow-run state transitions per second, over SQLite.

Two paths to the same app, each over its own SQLite store in a temporary ``OVERCAST_HOME``:

- ``uvicorn_http``: ``overcast server`` in a subprocess on 127.0.0.1, driven over real HTTP by
  one keep-alive ``http.client`` connection;
- ``mangum_v2``: the Lambda entry (``overcast.handlers.aws.api.handler``) called in process
  with API Gateway HTTP API (payload 2.0) events.

A run is one create (PENDING) and two proposals, RUNNING then COMPLETED: two accepted
transitions in three requests. Each figure is the median of ``--repeat`` timed batches of
``--runs`` runs, after a short warm-up. Prints one JSON line.

    python bench/api.py [--runs 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
V2_TEMPLATE = ROOT / "tests" / "handlers" / "events" / "http_api_v2.json"
WARMUP_RUNS = 20

# (method, path, JSON body) -> (status, decoded answer)
Call = Callable[[str, str, Any], tuple[int, Any]]


def drive(call: Call, runs: int) -> int:
    """Create ``runs`` flow runs and move each to COMPLETED; return the accepted transitions."""
    accepted = 0
    for _ in range(runs):
        status, run = call("POST", "/api/flow_runs", {"flow_name": "bench"})
        if status != 201:
            raise RuntimeError(f"create answered {status}: {run}")
        for state_type in ("RUNNING", "COMPLETED"):
            status, result = call(
                "POST", f"/api/flow_runs/{run['id']}/set_state", {"state": {"type": state_type}}
            )
            if status == 200 and result["status"] == "ACCEPT":
                accepted += 1
    return accepted


def measure(call: Call, runs: int, repeat: int) -> dict[str, Any]:
    """Time ``repeat`` batches of ``runs`` runs; report medians and the counts behind them."""
    drive(call, WARMUP_RUNS)
    transitions, requests, accepted = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        done = drive(call, runs)
        elapsed = time.perf_counter() - start
        accepted.append(done)
        transitions.append(done / elapsed)
        requests.append(3 * runs / elapsed)
    return {
        "transitions_per_s": round(statistics.median(transitions), 1),
        "requests_per_s": round(statistics.median(requests), 1),
        "transitions_per_s_each": [round(rate, 1) for rate in transitions],
        "accepted_each": accepted,
        "runs_each": runs,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_uvicorn(home: Path, runs: int, repeat: int) -> dict[str, Any]:
    """Run ``overcast server`` in a subprocess and drive it over one keep-alive connection."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
    env["OVERCAST_HOME"] = str(home)
    command = [
        sys.executable,
        "-m",
        "overcast.infra.cli",
        "server",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(method: str, path: str, body: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if call("GET", "/api/health", None)[0] == 200:
                    break
            except OSError:
                connection.close()
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("overcast server did not come up")
            time.sleep(0.05)
        return measure(call, runs, repeat)
    finally:
        connection.close()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def bench_mangum(home: Path, runs: int, repeat: int) -> dict[str, Any]:
    """Call the Lambda handler in process with HTTP API v2 events."""
    # the handler module builds its app from the environment at import, as on a cold start
    os.environ["OVERCAST_HOME"] = str(home)
    os.environ.pop("OVERCAST_STORE", None)
    os.environ.pop("OVERCAST_API_KEY", None)
    from overcast.handlers.aws.api import handler

    template = json.loads(V2_TEMPLATE.read_text())

    def call(method: str, path: str, body: Any) -> tuple[int, Any]:
        event = copy.deepcopy(template)
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["requestId"] = uuid.uuid4().hex
        event["pathParameters"] = {"proxy": path.lstrip("/")}
        if body is not None:
            event["body"] = json.dumps(body)
            event["headers"]["content-type"] = "application/json"
            event["headers"]["content-length"] = str(len(event["body"].encode()))
        response = handler(event, None)
        return response["statusCode"], json.loads(response["body"])

    try:
        return measure(call, runs, repeat)
    finally:
        from overcast.handlers import bootstrap

        bootstrap.reset()  # close the store before its directory goes


def main() -> None:
    """Measure both paths and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="flow runs per timed batch")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed batches per path (the median is reported)"
    )
    args = parser.parse_args()

    results: dict[str, Any] = {
        "bench": "api",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "store": "sqlite",
        "runs": args.runs,
        "repeat": args.repeat,
        "transitions_per_run": 2,
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["uvicorn_http"] = bench_uvicorn(Path(tmp) / "uvicorn", args.runs, args.repeat)
        results["mangum_v2"] = bench_mangum(Path(tmp) / "mangum", args.runs, args.repeat)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
