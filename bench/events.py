"""Events: ingest throughput with automations defined, and upload-to-run latency on the local stack.

Prints one JSON line:

- ``ingest_events_per_s``: events stored per second through ``Events.emit`` in batches of 100
  (each batch also evaluated against ``--automations`` automations, as ingest always is), on the
  embedded SQLite store; ``handler_events_per_s``: the same through the AWS events handler, fed
  SQS batches of 100 S3 notifications (parsing, ids, ingest, evaluation);
- ``firings``: how many firings the ingested events caused (a tenth of the events match);
- ``upload_to_running_median_s`` / ``_p95_s``: from a file upload into the local bucket to the
  RUNNING state of the flow run its automation started (bucket notification → events queue →
  ``events`` handler → automation → ``run-deployment`` → runs queue → ``runner`` handler), one
  upload at a time after warm-up.

Everything runs in a temporary home; nothing to configure.

    .venv/bin/python bench/events.py [--events 20000] [--automations 20] [--uploads 30]
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
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FLOW = textwrap.dedent(
    """
    from overcast import flow

    @flow
    def on_upload(bucket: str, key: str) -> str:
        return key
    """
)
BATCH = 100


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def _automations(count: int) -> list[Any]:
    """``count`` automations of the kinds people write; one in ten of the benchmark's events matches."""
    from overcast.core.automations import AutomationCreate

    shapes: list[dict[str, Any]] = [
        {"expect": ["aws.s3.object.created"], "match": {"aws.s3.bucket": "hot"}},  # matches
        {"expect": ["aws.s3.object.created"], "match": {"aws.s3.bucket": "cold", "aws.s3.key": "in/*.csv"}},
        {"expect": ["overcast.flow-run.Failed"], "for_each": ["overcast.resource.id"]},
        {"expect": ["aws.s3.object.deleted"], "threshold": 5, "within": 60},
        {
            "expect": ["overcast.flow-run.Completed"],
            "after": ["overcast.flow-run.Running"],
            "posture": "Proactive",
            "within": 3600,
            "for_each": ["overcast.resource.id"],
        },
    ]
    requests = []
    for index in range(count):
        trigger = dict(shapes[index % len(shapes)])
        if index >= len(shapes):  # the same shapes again, on other buckets and names
            trigger["match"] = {"aws.s3.bucket": f"bucket-{index}"}
        requests.append(
            AutomationCreate.model_validate(
                {"name": f"bench {index}", "trigger": trigger, "actions": [{"type": "do-nothing"}]}
            )
        )
    return requests


def _s3_record(bucket: str, key: str, size: int) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "bench",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": key,
                "size": size,
                "eTag": uuid.uuid4().hex,
                "sequencer": uuid.uuid4().hex[:16],
            },
        },
    }


def _events(count: int) -> list[Any]:
    from overcast.core.events import Event, related, resource

    out = []
    for index in range(count):
        bucket = "hot" if index % 10 == 0 else "elsewhere"
        key = f"in/file-{index}.csv"
        out.append(
            Event(
                event="aws.s3.object.created",
                resource=resource(
                    f"s3://{bucket}/{key}",
                    key,
                    **{"aws.s3.bucket": bucket, "aws.s3.key": key, "aws.s3.size": 100},
                ),
                related=[related(f"s3://{bucket}", "bucket")],
            )
        )
    return out


def ingest(home: Path, events: int, automations: int) -> dict[str, Any]:
    from overcast.adapters.factory import Adapters
    from overcast.core.settings import Settings

    adapters = Adapters(Settings(home=home / "ingest"))
    plane = adapters.control_plane()
    for request in _automations(automations):
        plane.automations.create(request)
    batch = _events(events)
    started = time.perf_counter()
    for start in range(0, len(batch), BATCH):
        plane.events.emit(batch[start : start + BATCH])
    direct = time.perf_counter() - started
    firings = sum(len(plane.automations.firings(a.id, limit=10_000)) for a in plane.automations.list().items)

    os.environ["OVERCAST_HOME"] = str(home / "ingest")
    from overcast.handlers import bootstrap
    from overcast.handlers.aws.events import handler

    bootstrap.reset()
    sqs = [
        {
            "Records": [
                {
                    "messageId": str(uuid.uuid4()),
                    "receiptHandle": "bench",
                    "body": json.dumps(
                        {
                            "Records": [
                                _s3_record("hot" if i % 10 == 0 else "elsewhere", f"in/h{n}-{i}.csv", 10)
                            ]
                        }
                    ),
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:events",
                }
                for i in range(BATCH)
            ]
        }
        for n in range(events // BATCH)
    ]
    started = time.perf_counter()
    for invocation in sqs:
        answer = handler(invocation, None)
        assert not answer["batchItemFailures"], answer
    through_handler = time.perf_counter() - started
    adapters.close()
    return {
        "events": events,
        "automations": automations,
        "ingest_events_per_s": round(events / direct),
        "handler_events_per_s": round(events / through_handler),
        "firings": firings,
    }


def upload_latency(home: Path, uploads: int, workers: int) -> dict[str, Any]:
    os.environ["OVERCAST_HOME"] = str(home / "stack")
    from overcast._runtime import _build, use_runtime
    from overcast.automations import DeploymentEventTrigger
    from overcast.core.schemas import FlowRunFilter
    from overcast.core.settings import Settings
    from overcast.flows import load_flow_from_entrypoint
    from overcast.infra.stack import LocalStack

    (home / "stack").mkdir(exist_ok=True)
    (home / "stack" / "flows.py").write_text(FLOW)
    entrypoint = f"{home / 'stack' / 'flows.py'}:on_upload"
    settings = Settings(home=home / "stack")
    runtime = _build(settings)
    with LocalStack(settings, workers=workers, tick_s=1.0) as stack, use_runtime(runtime):
        assert stack.buckets is not None
        bucket = stack.buckets.bucket("uploads")
        client = runtime.client
        deployment_id = load_flow_from_entrypoint(entrypoint).deploy(
            "bench",
            work_pool_name="local-queue",
            entrypoint=entrypoint,
            triggers=[
                DeploymentEventTrigger(
                    expect={"aws.s3.object.created"},
                    match={"aws.s3.bucket": "uploads"},
                    parameters={
                        "bucket": "{{ event.resource['aws.s3.bucket'] }}",
                        "key": "{{ event.resource['aws.s3.key'] }}",
                    },
                )
            ],
        )

        def run_of(key: str, deadline: float) -> Any:
            while time.monotonic() < deadline:
                page = client.filter_flow_runs(FlowRunFilter(deployment_id=[deployment_id], limit=5))
                for run in page.items:
                    if run.parameters.get("key") == key and run.state is not None and run.state.is_terminal:
                        return run
                time.sleep(0.002)
            raise TimeoutError(f"no finished run for {key}")

        latencies: list[float] = []
        for index in range(uploads + workers * 2):  # the first ones warm every worker process
            key = f"in/upload-{index}.csv"
            started = datetime.now(UTC)
            bucket.put(key, b"a,b\n1,2\n")
            run = run_of(key, time.monotonic() + 60)
            running = next(
                s.timestamp for s in client.read_flow_run_states(run.id) if s.type.value == "RUNNING"
            )
            if index >= workers * 2:
                latencies.append((running - started).total_seconds())
    return {
        "uploads": uploads,
        "workers": workers,
        "upload_to_running_median_s": round(statistics.median(latencies), 4),
        "upload_to_running_p95_s": round(_p95(latencies), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events ingested (in batches of 100)")
    parser.add_argument("--automations", type=int, default=20, help="automations defined while ingesting")
    parser.add_argument("--uploads", type=int, default=30, help="uploads timed one after another")
    parser.add_argument("--workers", type=int, default=2, help="function-host worker processes")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="overcast-bench-events-"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    figures = {"bench": "events"}
    figures |= ingest(home, args.events, args.automations)
    figures |= upload_latency(home, args.uploads, args.workers)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
