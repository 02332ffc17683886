"""The local stack on the AWS emulator: S3 → notification → SQS → events function → DynamoDB.

The same stack as ``overcast dev --aws-emulator``, on the suite's moto server: the control plane
and the function host's workers use the DynamoDB, S3 and SQS adapters, and S3 itself announces
uploads to the events queue.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from overcast.adapters.factory import open_bucket
from overcast.core.events import EventFilter
from overcast.core.settings import Settings
from overcast.infra.aws_emulator import AwsEmulator
from overcast.infra.stack import LocalStack

pytestmark = pytest.mark.aws


@pytest.fixture
def stack(aws: Any, unique: Callable[[str], str], tmp_path: Path) -> Iterator[LocalStack]:
    if not aws.is_moto:
        pytest.skip("the emulator's S3 notifications need moto (real S3 needs a queue policy in place)")
    emulator = AwsEmulator(
        endpoint_url=aws.endpoint_url,
        region=aws.region,
        table=unique("overcast"),
        blobs_bucket=unique("overcast-blobs"),
        buckets=[unique("uploads")],
        runs_queue=unique("overcast-runs"),
        events_queue=unique("overcast-events"),
    )
    with emulator, LocalStack(Settings(home=tmp_path / "home"), workers=1, tick_s=0, aws=emulator) as running:
        yield running


def _storage_events(stack: LocalStack) -> list[tuple[str, str]]:
    page = stack.plane.events.filter(EventFilter(names=["aws.s3.*"], order="asc", limit=50))
    return [(e.event, e.resource_id) for e in page.items]


def test_the_stack_runs_on_the_emulators_dynamodb_s3_and_sqs(stack: LocalStack) -> None:
    assert stack.settings.store_url.startswith("dynamodb://")
    assert stack.queue_url.startswith("sqs://") and stack.events_queue_url.startswith("sqs://")
    assert stack.buckets is None  # S3 holds the buckets, and announces their changes itself
    assert os.environ["OVERCAST_STORE"] == stack.settings.store  # what the workers inherit


def test_an_upload_to_s3_becomes_a_stored_event_and_a_removal_too(stack: LocalStack) -> None:
    assert stack.aws is not None
    bucket = stack.aws.buckets[0]
    open_bucket(stack.settings.buckets_url, bucket).put("in/day 1+2.csv", b"a,b\n")

    created = ("aws.s3.object.created", f"s3://{bucket}/in/day 1+2.csv")
    wait_until(lambda: _storage_events(stack) == [created], timeout=60)
    (event,) = stack.plane.events.filter(EventFilter(names=["aws.s3.object.created"])).items
    assert event.resource.get("aws.s3.size") == "4"
    assert event.resource.get("aws.s3.event-name") == "ObjectCreated:Put"

    stack.aws.client("s3").delete_object(Bucket=bucket, Key="in/day 1+2.csv")
    deleted = ("aws.s3.object.deleted", f"s3://{bucket}/in/day 1+2.csv")
    wait_until(lambda: _storage_events(stack) == [created, deleted], timeout=60)


def test_the_upload_route_and_overcast_upload_write_to_s3(stack: LocalStack, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from overcast.handlers.api import create_app

    assert stack.aws is not None
    bucket = stack.aws.buckets[0]
    api = TestClient(create_app(stack.plane, settings=stack.settings))
    answer = api.put(f"/api/storage/{bucket}/via/api.json", content=b"{}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["url"] == f"s3://{bucket}/via/api.json"
    assert api.put("/api/storage/no-such-bucket-here/x", content=b"").status_code == 404

    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    done = subprocess.run(
        [sys.executable, "-m", "overcast.infra.cli", "upload", "data.bin", f"s3://{bucket}/via/cli/"],
        cwd=tmp_path,
        env=dict(os.environ),  # the stack's: OVERCAST_BUCKETS on the emulator, dummy credentials
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    s3 = stack.aws.client("s3")
    assert s3.get_object(Bucket=bucket, Key="via/cli/data.bin")["Body"].read() == b"\x00\x01"
    wanted = {f"s3://{bucket}/via/api.json", f"s3://{bucket}/via/cli/data.bin"}
    wait_until(lambda: {resource for _, resource in _storage_events(stack)} == wanted, timeout=60)


ON_UPLOAD = textwrap.dedent(
    """
    from overcast import flow

    @flow
    def describe(bucket: str, key: str, size: int) -> str:
        return f"{bucket}/{key}: {size} bytes"
    """
)


def test_an_upload_to_s3_runs_the_deployment_its_trigger_names(stack: LocalStack, tmp_path: Path) -> None:
    from overcast._runtime import _build, use_runtime
    from overcast.automations import DeploymentEventTrigger
    from overcast.core.schemas import FlowRunFilter
    from overcast.flows import load_flow_from_entrypoint

    assert stack.aws is not None
    bucket = stack.aws.buckets[0]
    (tmp_path / "flows.py").write_text(ON_UPLOAD)
    trigger = DeploymentEventTrigger(
        expect={"aws.s3.object.created"},
        match={"aws.s3.bucket": bucket},
        parameters={
            "bucket": "{{ event.resource['aws.s3.bucket'] }}",
            "key": "{{ event.resource['aws.s3.key'] }}",
            "size": "{{ event.resource['aws.s3.size'] | int }}",
        },
    )
    entrypoint = f"{tmp_path / 'flows.py'}:describe"
    with use_runtime(_build(stack.settings)):
        load_flow_from_entrypoint(entrypoint).deploy(
            "on-upload", work_pool_name="local-queue", entrypoint=entrypoint, triggers=[trigger]
        )
    open_bucket(stack.settings.buckets_url, bucket).put("in/report.csv", b"a,b\n1,2\n")

    def finished() -> Any:
        runs = stack.plane.flow_runs.filter(FlowRunFilter(limit=10)).items
        return runs if runs and all(r.state.is_terminal for r in runs) else None

    (run,) = wait_until(finished, timeout=120)
    assert run.state.is_completed(), run.state
    assert run.state.result() == f"{bucket}/in/report.csv: 8 bytes"
