"""The demo: a file lands in a bucket and a flow runs, on the local serverless stack.

``examples/run demo`` does, on a fresh machine and with no cloud account:

1. starts ``overcast dev`` (the API on 127.0.0.1:4200, the function host running the
   ``runner`` and ``events`` handlers, the runs and events queues, the local bucket
   ``uploads`` and the tick), unless one is already running;
2. deploys ``uploads.py:summarise_upload`` to the ``local-queue`` work pool with a trigger: an
   automation that runs it for every CSV created under ``s3://uploads/incoming/``, its
   ``bucket`` and ``key`` parameters templated from the event;
3. uploads ``data/orders.csv`` with ``overcast upload``;
4. follows the flow run the upload started to COMPLETED, and prints its result and logs;
5. keeps the stack running for you to explore, until Ctrl-C.

The path is the one AWS takes: the bucket's notification goes through the events queue to the
``events`` handler, which stores an ``aws.s3.object.created`` event; the automation fires on
it and creates a run, which goes through the runs queue to the ``runner`` handler.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PORT = int(os.environ.get("OVERCAST_DEMO_PORT", "4200"))
API = f"http://127.0.0.1:{PORT}"
os.environ["OVERCAST_API_URL"] = API  # this script and the commands it runs talk to the stack's API
os.environ.setdefault("OVERCAST_HOME", str(Path("~/.overcast").expanduser()))
CLI = [sys.executable, "-m", "overcast.infra.cli"]


def say(text: str = "") -> None:
    print(text, flush=True)


def api_is_up() -> bool:
    try:
        with urllib.request.urlopen(f"{API}/api/health", timeout=1) as answer:  # noqa: S310 - loopback
            return bool(answer.status == 200)
    except OSError:
        return False


def start_stack(log: Path) -> subprocess.Popen[bytes] | None:
    """Start ``overcast dev`` (or use the one already answering on the port)."""
    if api_is_up():
        say(f"• overcast dev is already running on {API}; using it")
        return None
    say(f"• starting overcast dev (its log: {log})")
    out = log.open("ab")
    child = subprocess.Popen(
        [*CLI, "dev", "--port", str(PORT), "--tick", "1"],
        cwd=HERE,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OVERCAST_API_URL": ""},  # the stack serves the API; it does not call it
    )
    deadline = time.monotonic() + 90
    while not api_is_up():
        if child.poll() is not None:
            sys.exit(f"overcast dev stopped (exit {child.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            child.terminate()
            sys.exit(f"overcast dev did not answer on {API} within 90 s; see {log}")
        time.sleep(0.1)
    say(f"  the API answers on {API}/api")
    return child


def deploy() -> Any:
    """Deploy the flow with its upload trigger; return the deployment's id."""
    from uploads import summarise_upload

    from overcast.automations import DeploymentEventTrigger
    from overcast.deployments import deploy as deploy_flow

    trigger = DeploymentEventTrigger(
        name="csv uploaded to s3://uploads/incoming/",
        expect={"aws.s3.object.created"},
        match={"aws.s3.bucket": "uploads", "aws.s3.key": "incoming/*.csv"},
        parameters={
            "bucket": "{{ event.resource['aws.s3.bucket'] }}",
            "key": "{{ event.resource['aws.s3.key'] }}",
        },
    )
    deployment_id = deploy_flow(
        summarise_upload,
        "on-upload",
        work_pool_name="local-queue",
        entrypoint="uploads.py:summarise_upload",
        triggers=[trigger],
    )
    say("• deployed summarise-upload/on-upload to the local-queue pool, with an automation:")
    say("    on aws.s3.object.created in s3://uploads/incoming/*.csv → run it with bucket and key")
    return deployment_id


def upload() -> str:
    key = f"incoming/orders-{datetime.now(UTC):%Y%m%d-%H%M%S}.csv"
    command = [*CLI, "upload", "data/orders.csv", f"s3://uploads/{key}"]
    say(f"• uploading: overcast upload data/orders.csv s3://uploads/{key}")
    done = subprocess.run(command, cwd=HERE, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the upload failed:\n{done.stdout}{done.stderr}")
    return key


def follow(deployment_id: Any, key: str, started: float) -> None:
    """Wait for the run the upload starts, print its states as they come, then its result and logs."""
    from overcast._runtime import get_runtime
    from overcast.core.schemas import FlowRunFilter

    client = get_runtime().client
    deadline = time.monotonic() + 120
    run = None
    while run is None:
        page = client.filter_flow_runs(FlowRunFilter(deployment_id=[deployment_id], limit=20))
        run = next((r for r in page.items if r.parameters.get("key") == key), None)
        if run is None:
            if time.monotonic() > deadline:
                sys.exit("no flow run appeared for the upload within 120 s; see `overcast events ls`")
            time.sleep(0.05)
    say(
        f"• the automation started flow run {run.name} ({run.id}) {time.monotonic() - started:.2f} s after the upload"
    )
    seen: set[str] = set()
    while True:
        for state in client.read_flow_run_states(run.id):
            if str(state.id) not in seen:
                seen.add(str(state.id))
                say(f"    {state.timestamp:%H:%M:%S.%f}"[:-3] + f"  {state.name}")
        run = client.read_flow_run(run.id)
        if run.state is not None and run.state.is_terminal:
            break
        if time.monotonic() > deadline:
            sys.exit(f"flow run {run.id} did not finish within 120 s (now {run.state})")
        time.sleep(0.05)
    state = run.state
    say(f"• {state.name} in {time.monotonic() - started:.2f} s from the upload")
    if state.type.value == "COMPLETED":
        say(f"  result: {state.result()}")
    else:
        say(f"  message: {state.message}")
    say("  logs:")
    for line in client.read_logs(run.id).items:
        say(f"    {line.timestamp:%H:%M:%S} {logging.getLevelName(line.level):<7} {line.message}")


def main() -> None:
    home = Path(os.environ["OVERCAST_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    os.chdir(HERE)  # the deployment records its path: the runner loads uploads.py from here
    sys.path.insert(0, str(HERE))
    child = start_stack(home / "dev.log")
    try:
        deployment_id = deploy()
        started = time.monotonic()
        key = upload()
        follow(deployment_id, key, started)
        say()
        say("The stack keeps running. Try:")
        say(f"  export OVERCAST_API_URL={API}")
        say("  overcast events ls                      # the upload's event, the runs' events")
        say("  overcast automation ls                  # the deployment's trigger")
        say("  overcast flow-run ls                    # the run it started")
        say("  overcast artifact inspect revenue-by-region")
        say(
            f"  cp examples/data/orders.csv {home}/buckets/uploads/incoming/more.csv   # a dropped file runs it too"
        )
        say("Ctrl-C stops everything.")
        if child is None:
            return
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))
        child.wait()
    except KeyboardInterrupt:
        say("stopping…")
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    main()
