"""Dispatch latency and throughput on the local stack: run_deployment → queue → function host → runner.

Prints one JSON line: the median and p95 seconds from ``run_deployment`` to the run's RUNNING
and COMPLETED states (an empty flow, runs one after another, after warm-up), and the runs
started per second when ``--burst`` runs are asked for at once, with ``--workers`` function-host
worker processes. Everything runs in a temporary home; nothing to configure.

    .venv/bin/python bench/dispatch.py [--runs 30] [--burst 100] [--workers 2] [--pool local-queue]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FLOW = textwrap.dedent(
    """
    from overcast import flow

    @flow
    def empty() -> None:
        return None
    """
)


def _state_time(client: Any, run_id: Any, kind: str) -> datetime | None:
    for state in client.read_flow_run_states(run_id):
        if state.type.value == kind:
            return state.timestamp
    return None


def _wait_done(client: Any, run_ids: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(run_ids)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} runs not done after {timeout} s")
        pending = {r for r in pending if not client.read_flow_run(r).state.is_terminal}
        time.sleep(0.005)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs timed one after another")
    parser.add_argument("--burst", type=int, default=100, help="runs asked for at once")
    parser.add_argument("--workers", type=int, default=2, help="function-host worker processes")
    parser.add_argument("--pool", default="local-queue", choices=["local-queue", "local-lambda"])
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="overcast-bench-dispatch-"))
    os.environ["OVERCAST_HOME"] = str(home)  # the function host's workers inherit it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from overcast._runtime import _build, use_runtime
    from overcast.core.settings import Settings
    from overcast.deployments import run_deployment
    from overcast.flows import load_flow_from_entrypoint
    from overcast.infra.stack import LocalStack

    (home / "flows.py").write_text(FLOW)
    settings = Settings(home=home)
    runtime = _build(settings)
    with LocalStack(settings, workers=args.workers, tick_s=1.0), use_runtime(runtime):
        client = runtime.client
        load_flow_from_entrypoint(f"{home / 'flows.py'}:empty").deploy(
            "bench", work_pool_name=args.pool, entrypoint=f"{home / 'flows.py'}:empty"
        )
        warm = [run_deployment("empty/bench", timeout=0).id for _ in range(args.workers * 2)]
        _wait_done(client, warm, timeout=120)  # every worker process imported Overcast once

        to_running, to_completed = [], []
        for _ in range(args.runs):
            start = datetime.now(UTC)
            run = run_deployment("empty/bench", timeout=60, poll_interval=0.002)
            running, completed = (
                _state_time(client, run.id, "RUNNING"),
                _state_time(client, run.id, "COMPLETED"),
            )
            assert running is not None and completed is not None, run.state
            to_running.append((running - start).total_seconds())
            to_completed.append((completed - start).total_seconds())

        burst_start = datetime.now(UTC)
        burst = [run_deployment("empty/bench", timeout=0).id for _ in range(args.burst)]
        _wait_done(client, burst, timeout=600)
        started = [_state_time(client, r, "RUNNING") for r in burst]
        last_started = max(s for s in started if s is not None)
        span = (last_started - burst_start).total_seconds()

    print(
        json.dumps(
            {
                "bench": "dispatch",
                "pool": args.pool,
                "workers": args.workers,
                "runs": args.runs,
                "to_running_median_s": round(statistics.median(to_running), 4),
                "to_running_p95_s": round(_p95(to_running), 4),
                "to_completed_median_s": round(statistics.median(to_completed), 4),
                "to_completed_p95_s": round(_p95(to_completed), 4),
                "burst": args.burst,
                "burst_runs_started_per_s": round(args.burst / span, 1) if span > 0 else None,
            }
        )
    )


if __name__ == "__main__":
    main()
