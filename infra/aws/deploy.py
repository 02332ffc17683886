"""Deploying an Overcast stack with boto3: upload the package, create or update, wait, destroy.

``deploy_stack`` uploads the code package to the artifacts bucket (``overcast-artifacts-
<account>-<region>``, created on first use) under a key that carries the package's hash, then
creates the stack or updates it, and waits, reporting each stack event as it comes. The same
package and template give the same key and the same template, so a second deploy with
nothing changed is refused by CloudFormation as "No updates are to be performed" — which is
success, with nothing changed.

The API key (the ``ApiKey`` parameter, ``NoEcho``) is generated on creation unless one is
given, and kept across updates (``UsePreviousValue``).

``destroy_stack`` deletes the stack and the packages uploaded for it. The table and the two
buckets have ``DeletionPolicy: Retain``: they outlive the stack unless ``delete_data`` asks
for them to be emptied and deleted too.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from overcast.core.errors import OvercastError
from overcast.infra.aws.package import Package
from overcast.infra.aws.template import Json, template_json

_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation takes inline; larger goes through S3
_DATA = ("Table", "UploadsBucket", "BlobsBucket")  # retained on delete
_NO_UPDATES = "No updates are to be performed"


class StackError(OvercastError):
    """Raised when a stack cannot be deployed or destroyed; the message lists the failures.

    Attributes:
        stack: the stack's name.
        status: its status when we gave up (``""`` when it was never created).
    """

    def __init__(self, stack: str, message: str, status: str = "") -> None:
        self.stack = stack
        self.status = status
        super().__init__(f"stack {stack}: {message}")


@dataclass(frozen=True)
class StackEvent:
    """One step of a stack operation, as CloudFormation reports it."""

    timestamp: datetime
    logical_id: str
    resource_type: str
    status: str
    reason: str = ""

    @property
    def failed(self) -> bool:
        """Whether this step failed."""
        return self.status.endswith("_FAILED")


OnEvent = Callable[[StackEvent], None]


@dataclass
class AwsSession:
    """Where the stack goes: a region and optionally another endpoint (moto, LocalStack).

    Attributes:
        region: the region (``None``: boto3's default, from the environment or profile).
        endpoint_url: another endpoint than AWS's, for every service.
        poll_s: seconds between two looks at a stack in progress.
        timeout_s: how long to wait for a stack operation.
    """

    region: str | None = None
    endpoint_url: str | None = None
    poll_s: float = 5.0
    timeout_s: float = 3600.0
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _session: Any = field(default=None, repr=False)

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` (one per service)."""
        if service not in self._clients:
            if self._session is None:
                import boto3

                self._session = boto3.session.Session(region_name=self.region)
            self._clients[service] = self._session.client(service, endpoint_url=self.endpoint_url)
        return self._clients[service]

    @property
    def region_name(self) -> str:
        """The region the clients use."""
        region = self.client("cloudformation").meta.region_name
        return str(region)


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did.

    Attributes:
        stack: the stack's name.
        created: the stack was created (not updated).
        changed: CloudFormation changed something (``False``: the stack was already so).
        uploaded: the package was uploaded (``False``: that package was there already).
        code: the package's location, ``s3://bucket/key``.
        outputs: the stack's outputs (``ApiUrl``, ``UploadsBucket``, …).
        api_key: the API key, when this deploy generated it (shown once).
    """

    stack: str
    created: bool
    changed: bool
    uploaded: bool
    code: str
    outputs: dict[str, str]
    api_key: str | None = None


@dataclass(frozen=True)
class DestroyResult:
    """What a destroy did: the stack is gone; ``kept`` are the data resources left in place."""

    stack: str
    existed: bool
    kept: dict[str, str]
    deleted_data: dict[str, str]
    packages_deleted: int


def deploy_stack(
    aws: AwsSession,
    stack: str,
    template: Json,
    package: Package,
    *,
    artifacts_bucket: str | None = None,
    api_key: str | None = None,
    on_event: OnEvent | None = None,
) -> DeployResult:
    """Create or update ``stack`` from ``template`` with ``package`` as the functions' code.

    Args:
        artifacts_bucket: where packages (and large templates) go; default
            ``overcast-artifacts-<account>-<region>``, created when missing.
        api_key: the API's bearer token; default: generated on creation, kept on update.
        on_event: called with each stack event while waiting.

    Raises:
        StackError: the stack is busy or failed (the message lists the failed resources).
    """
    _check_name(stack)
    bucket = artifacts_bucket or default_artifacts_bucket(aws)
    _ensure_bucket(aws, bucket)
    key = f"{stack}/{package.name}"
    uploaded = _upload_once(aws, bucket, key, package)
    body = template_json(template)
    source = _template_source(aws, bucket, stack, body)
    parameters = [
        {"ParameterKey": "CodeBucket", "ParameterValue": bucket},
        {"ParameterKey": "CodeKey", "ParameterValue": key},
    ]
    current = describe_stack(aws, stack)
    if current is not None and current["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED"):
        # a first creation that failed: the stack can only be deleted, then created again
        _delete_and_wait(aws, stack, on_event)
        current = None
    if current is not None and current["StackStatus"].endswith("_IN_PROGRESS"):
        raise StackError(
            stack, f"another operation is in progress ({current['StackStatus']})", current["StackStatus"]
        )
    cloudformation = aws.client("cloudformation")
    seen = _event_ids(aws, stack) if current is not None else set()
    generated = None
    if current is None:
        key_value = api_key if api_key is not None else secrets.token_urlsafe(32)
        generated = None if api_key is not None else key_value
        cloudformation.create_stack(
            StackName=stack,
            Parameters=[*parameters, {"ParameterKey": "ApiKey", "ParameterValue": key_value}],
            Capabilities=["CAPABILITY_IAM"],
            OnFailure="ROLLBACK",
            Tags=[{"Key": "overcast:stack", "Value": stack}],
            **source,
        )
        _wait(aws, stack, "CREATE_COMPLETE", seen, on_event)
        changed = True
    else:
        key_parameter = (
            {"ParameterKey": "ApiKey", "ParameterValue": api_key}
            if api_key is not None
            else {"ParameterKey": "ApiKey", "UsePreviousValue": True}
        )
        try:
            cloudformation.update_stack(
                StackName=stack,
                Parameters=[*parameters, key_parameter],
                Capabilities=["CAPABILITY_IAM"],
                Tags=[{"Key": "overcast:stack", "Value": stack}],
                **source,
            )
        except Exception as exc:
            if _NO_UPDATES not in str(exc):
                raise StackError(stack, f"update refused: {exc}", current["StackStatus"]) from exc
            changed = False
        else:
            _wait(aws, stack, "UPDATE_COMPLETE", seen, on_event)
            changed = True
    return DeployResult(
        stack=stack,
        created=current is None,
        changed=changed,
        uploaded=uploaded,
        code=f"s3://{bucket}/{key}",
        outputs=stack_outputs(aws, stack),
        api_key=generated,
    )


def destroy_stack(
    aws: AwsSession,
    stack: str,
    *,
    delete_data: bool = False,
    artifacts_bucket: str | None = None,
    on_event: OnEvent | None = None,
) -> DestroyResult:
    """Delete ``stack`` and its uploaded packages; with ``delete_data``, its table and buckets too.

    Raises:
        StackError: the deletion failed.
    """
    _check_name(stack)
    current = describe_stack(aws, stack)
    if current is None:
        return DestroyResult(stack, existed=False, kept={}, deleted_data={}, packages_deleted=0)
    data = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in aws.client("cloudformation").describe_stack_resources(StackName=stack)["StackResources"]
        if r.get("LogicalResourceId") in _DATA and r.get("PhysicalResourceId")
    }
    _delete_and_wait(aws, stack, on_event)
    bucket = artifacts_bucket or default_artifacts_bucket(aws)
    packages = _empty_bucket(aws, bucket, prefix=f"{stack}/")
    deleted: dict[str, str] = {}
    if delete_data:
        for logical_id, physical_id in sorted(data.items()):
            if logical_id == "Table":
                _delete_table(aws, physical_id)
            else:
                _delete_bucket(aws, physical_id)
            deleted[logical_id] = physical_id
    kept = {k: v for k, v in data.items() if k not in deleted}
    return DestroyResult(stack, existed=True, kept=kept, deleted_data=deleted, packages_deleted=packages)


def describe_stack(aws: AwsSession, stack: str) -> dict[str, Any] | None:
    """The stack's description, or ``None`` when there is no such (live) stack."""
    try:
        stacks = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:
        if "does not exist" in str(exc):
            return None
        raise
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


def stack_outputs(aws: AwsSession, stack: str) -> dict[str, str]:
    """The stack's outputs, by key."""
    described = describe_stack(aws, stack)
    if described is None:
        raise StackError(stack, "no such stack")
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def default_artifacts_bucket(aws: AwsSession) -> str:
    """``overcast-artifacts-<account>-<region>``: where packages go unless told otherwise."""
    account = aws.client("sts").get_caller_identity()["Account"]
    return f"overcast-artifacts-{account}-{aws.region_name}"


# -- steps --------------------------------------------------------------------------------------


def _check_name(stack: str) -> None:
    if not _STACK_NAME.match(stack):
        raise StackError(stack, "a stack name is 1-128 letters, digits and hyphens, starting with a letter")


def _ensure_bucket(aws: AwsSession, bucket: str) -> None:
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except Exception as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise StackError("-", f"cannot use the artifacts bucket {bucket}: {exc}") from exc
    region = aws.region_name
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **extra)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def _upload_once(aws: AwsSession, bucket: str, key: str, package: Package) -> bool:
    s3 = aws.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return False  # the key carries the hash: the same bytes are there
    except Exception as exc:
        if _code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(package.path), bucket, key, ExtraArgs={"Metadata": {"sha256": package.sha256}})
    return True


def _template_source(aws: AwsSession, bucket: str, stack: str, body: str) -> dict[str, str]:
    if len(body.encode()) <= _TEMPLATE_BODY_LIMIT:
        return {"TemplateBody": body}
    import hashlib

    key = f"{stack}/template-{hashlib.sha256(body.encode()).hexdigest()[:20]}.json"
    s3 = aws.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
    return {"TemplateURL": url}


def _wait(aws: AwsSession, stack: str, success: str, seen: set[str], on_event: OnEvent | None) -> None:
    """Wait until the stack's operation ends, reporting its events (but the ``seen`` ones, from
    before it began); raise unless it ends in ``success``."""
    cloudformation = aws.client("cloudformation")
    failures: list[StackEvent] = []
    deadline = time.monotonic() + aws.timeout_s
    while True:
        described = describe_stack(aws, stack)
        status = described["StackStatus"] if described else "DELETE_COMPLETE"
        for event in _new_events(cloudformation, stack, seen):
            if event.failed and event.reason and "cancelled" not in event.reason.lower():
                failures.append(event)
            if on_event is not None:
                on_event(event)
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise StackError(stack, f"still {status} after {aws.timeout_s:.0f} s", status)
        time.sleep(aws.poll_s)
    if status != success:
        reasons = "; ".join(f"{e.logical_id} ({e.resource_type}): {e.reason}" for e in failures[:10])
        raise StackError(stack, f"ended {status}" + (f": {reasons}" if reasons else ""), status)


def _event_ids(aws: AwsSession, stack: str) -> set[str]:
    return {item["EventId"] for item in _raw_events(aws.client("cloudformation"), stack)}


def _raw_events(cloudformation: Any, stack: str) -> list[dict[str, Any]]:
    """The stack's latest events (the first page, newest first)."""
    try:
        events: list[dict[str, Any]] = cloudformation.describe_stack_events(StackName=stack)["StackEvents"]
    except Exception as exc:
        if "does not exist" in str(exc):
            return []
        raise
    return events


def _new_events(cloudformation: Any, stack: str, seen: set[str]) -> list[StackEvent]:
    fresh = []
    for item in _raw_events(cloudformation, stack):
        if item["EventId"] in seen:
            continue
        seen.add(item["EventId"])
        fresh.append(
            StackEvent(
                timestamp=item["Timestamp"],
                logical_id=item.get("LogicalResourceId", ""),
                resource_type=item.get("ResourceType", ""),
                status=item.get("ResourceStatus", ""),
                reason=item.get("ResourceStatusReason", ""),
            )
        )
    return sorted(fresh, key=lambda e: e.timestamp)


def _delete_and_wait(aws: AwsSession, stack: str, on_event: OnEvent | None) -> None:
    described = describe_stack(aws, stack)
    if described is None:
        return
    seen = _event_ids(aws, described["StackId"])
    # delete by id: once deleted, the name no longer answers on AWS
    aws.client("cloudformation").delete_stack(StackName=described["StackId"])
    _wait(aws, described["StackId"], "DELETE_COMPLETE", seen, on_event)


def _empty_bucket(aws: AwsSession, bucket: str, prefix: str = "") -> int:
    """Delete every object (and version) under ``prefix``; return how many."""
    s3 = aws.client("s3")
    deleted = 0
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            objects = [
                {"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for start in range(0, len(objects), 1000):
                chunk = objects[start : start + 1000]
                s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
                deleted += len(chunk)
    except Exception as exc:
        if _code(exc) != "NoSuchBucket":
            raise
    return deleted


def _delete_bucket(aws: AwsSession, bucket: str) -> None:
    _empty_bucket(aws, bucket)
    s3 = aws.client("s3")
    _ignore_missing(lambda: s3.delete_bucket(Bucket=bucket))


def _delete_table(aws: AwsSession, table: str) -> None:
    dynamodb = aws.client("dynamodb")
    _ignore_missing(lambda: dynamodb.delete_table(TableName=table))


def _ignore_missing(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception as exc:
        if _code(exc) not in ("NoSuchBucket", "ResourceNotFoundException", "404"):
            raise


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
