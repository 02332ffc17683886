"""Storage triggers: S3 and Cloud Storage notifications become events in the control plane.

The Lambda entry ``overcast.handlers.aws.events.handler`` is fed SQS batches built from the
messages moto's S3 and EventBridge really deliver to SQS, and the shapes AWS documents (under
``events/``); the Cloud Functions entry ``storage`` is driven through functions-framework's
own app with structured and binary CloudEvents.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from support import wait_until

from overcast.core.errors import ThrottledError
from overcast.core.events import Event
from overcast.core.services import ControlPlane
from overcast.handlers import bootstrap
from overcast.handlers.aws.events import handler

EVENTS = Path(__file__).parent / "events"
TIME_FIELDS = {"eventTime", "time", "Time", "timeCreated", "updated", "timeStorageClassUpdated"}

_spec = importlib.util.find_spec("overcast.handlers.gcp.events")
assert _spec is not None and _spec.origin is not None
GCP_SOURCE = Path(_spec.origin)


def fixture(name: str, *, at: datetime | None = None) -> Any:
    """A stored event shape, its times moved to ``at`` (events older than retention are not kept)."""
    stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def fresh(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: stamp if k in TIME_FIELDS else fresh(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fresh(v) for v in value]
        if isinstance(value, str) and value.startswith('{"'):  # an SQS body: JSON text
            return json.dumps(fresh(json.loads(value)))
        return value

    return fresh(json.loads((EVENTS / f"{name}.json").read_text()))


def sqs_event(
    bodies: list[Any], *, arn: str = "arn:aws:sqs:us-east-1:123456789012:uploads"
) -> dict[str, Any]:
    """An SQS batch as Lambda delivers it, one message per body (objects are sent as JSON)."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": uuid.uuid4().hex,
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795577687414"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for body in bodies
        ]
    }


def stored(plane: ControlPlane, **criteria: Any) -> list[Event]:
    return list(plane.events.query(order="asc", limit=100, **criteria).items)


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    """The control plane a cold-started function builds (an embedded store in ``tmp_path``)."""
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    monkeypatch.setenv("OVERCAST_STORE", f"sqlite://{tmp_path / 'overcast.db'}")
    bootstrap.reset()
    yield bootstrap.control_plane()
    bootstrap.reset()


@pytest.fixture
def batches(plane: ControlPlane) -> list[list[Event]]:
    """Each batch of new events the store announced to its listeners (automations hook there)."""
    seen: list[list[Event]] = []
    plane.events.subscribe(seen.append)
    return seen


# -- S3 → SQS on moto's server ---------------------------------------------------------------------


class Uploads:
    """A bucket whose notifications go to an SQS queue, and the Lambda events built from it."""

    def __init__(self, aws: Any, unique: Callable[[str], str]) -> None:
        self.s3, self.sqs = aws.client("s3"), aws.client("sqs")
        self.bucket = unique("overcast-uploads")
        self.queue_url = self.sqs.create_queue(QueueName=unique("overcast-uploads"))["QueueUrl"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        self.queue_arn = attributes["Attributes"]["QueueArn"]
        self.sqs.set_queue_attributes(  # what real S3 and EventBridge need to send (moto does without)
            QueueUrl=self.queue_url, Attributes={"Policy": json.dumps(_send_policy(self.queue_arn))}
        )
        self.s3.create_bucket(Bucket=self.bucket)
        self.region = aws.region

    def receive(self, count: int) -> list[dict[str, Any]]:
        """Wait for ``count`` messages (S3 delivers asynchronously on AWS, at once on moto)."""
        got: dict[str, dict[str, Any]] = {}

        def enough() -> bool:
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1
            )
            got.update({m["MessageId"]: m for m in answer.get("Messages", [])})
            return len(got) >= count

        wait_until(enough, timeout=60)
        return list(got.values())

    def lambda_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The SQS event Lambda's event source mapping would deliver with these messages."""
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m["Attributes"],
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": self.region,
                }
                for m in messages
            ]
        }

    def delete(self) -> None:
        for version in self.s3.list_object_versions(Bucket=self.bucket).get("Versions", []):
            self.s3.delete_object(Bucket=self.bucket, Key=version["Key"], VersionId=version["VersionId"])
        self.s3.delete_bucket(Bucket=self.bucket)
        self.sqs.delete_queue(QueueUrl=self.queue_url)


def _send_policy(queue_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["s3.amazonaws.com", "events.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            }
        ],
    }


@pytest.fixture
def uploads(aws: Any, unique: Callable[[str], str]) -> Iterator[Uploads]:
    built = Uploads(aws, unique)
    yield built
    built.delete()


@pytest.fixture
def notified(uploads: Uploads) -> dict[str, Any]:
    """An upload and a removal of ``in/my file+1.csv``, as the SQS batch Lambda would get."""
    uploads.s3.put_bucket_notification_configuration(
        Bucket=uploads.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "overcast-events",
                    "QueueArn": uploads.queue_arn,
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                }
            ]
        },
    )
    uploads.s3.put_object(Bucket=uploads.bucket, Key="in/my file+1.csv", Body=b"a,b\n1,2\n")
    uploads.s3.delete_object(Bucket=uploads.bucket, Key="in/my file+1.csv")
    messages = uploads.receive(3)  # S3's test event, the upload, the removal
    assert any("s3:TestEvent" in m["Body"] for m in messages)
    return uploads.lambda_event(messages)


@pytest.mark.aws
def test_an_upload_and_a_removal_on_s3_become_events(
    plane: ControlPlane, uploads: Uploads, notified: dict[str, Any], batches: list[list[Event]]
) -> None:
    assert handler(notified, None) == {"batchItemFailures": []}  # the test event is skipped, not failed

    resource_id = f"s3://{uploads.bucket}/in/my file+1.csv"
    created, deleted = sorted(stored(plane, resource_id=resource_id), key=lambda e: e.event)
    assert (created.event, deleted.event) == ("aws.s3.object.created", "aws.s3.object.deleted")
    assert created.resource["aws.s3.bucket"] == uploads.bucket
    assert created.resource["aws.s3.key"] == created.resource["overcast.resource.name"] == "in/my file+1.csv"
    assert created.resource["aws.s3.size"] == "8"
    assert created.resource["aws.s3.etag"] == "e5ebd4c02cefbe7955977c67ada242b7"  # MD5 of the body
    assert created.resource["aws.s3.event-name"] == "ObjectCreated:Put"
    assert deleted.resource["aws.s3.event-name"] == "ObjectRemoved:Delete"
    assert created.related_in_role("bucket")[0]["overcast.resource.id"] == f"s3://{uploads.bucket}"
    record = json.loads(next(r["body"] for r in notified["Records"] if "ObjectCreated" in r["body"]))
    assert created.payload == record["Records"][0]  # the record as S3 sent it
    assert created.occurred == datetime.fromisoformat(record["Records"][0]["eventTime"])
    assert [len(batch) for batch in batches] == [2]  # one emit for the whole batch


@pytest.mark.aws
def test_a_redelivered_batch_stores_nothing_new(
    plane: ControlPlane, notified: dict[str, Any], batches: list[list[Event]]
) -> None:
    handler(notified, None)
    first = stored(plane, name_prefix="aws.s3.")
    assert handler(notified, None) == {"batchItemFailures": []}
    again = copy.deepcopy(notified)  # the same messages, received again: new receipts and counts
    for record in again["Records"]:
        record["receiptHandle"] = uuid.uuid4().hex
        record["attributes"]["ApproximateReceiveCount"] = "2"
    handler(again, None)
    assert stored(plane, name_prefix="aws.s3.") == first
    assert len(first) == 2 and len(batches) == 1  # automations saw each event once


@pytest.mark.aws
def test_s3_through_eventbridge_to_sqs_becomes_the_same_events(
    plane: ControlPlane, aws: Any, uploads: Uploads, unique: Callable[[str], str]
) -> None:
    events_client = aws.client("events")
    rule = unique("overcast-uploads")
    uploads.s3.put_bucket_notification_configuration(
        Bucket=uploads.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {"bucket": {"name": [uploads.bucket]}},
    }
    events_client.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    events_client.put_targets(Rule=rule, Targets=[{"Id": "events-queue", "Arn": uploads.queue_arn}])
    try:
        uploads.s3.put_object(Bucket=uploads.bucket, Key="in/my file+1.csv", Body=b"a,b\n1,2\n")
        uploads.s3.delete_object(Bucket=uploads.bucket, Key="in/my file+1.csv")
        batch = uploads.lambda_event(uploads.receive(2))
    finally:
        events_client.remove_targets(Rule=rule, Ids=["events-queue"])
        events_client.delete_rule(Name=rule)

    assert handler(batch, None) == {"batchItemFailures": []}
    events = stored(plane, resource_id=f"s3://{uploads.bucket}/in/my file+1.csv")
    assert sorted(e.event for e in events) == ["aws.s3.object.created", "aws.s3.object.deleted"]
    created = next(e for e in events if e.event == "aws.s3.object.created")
    assert created.resource["aws.s3.key"] == "in/my file+1.csv"  # EventBridge keys are not encoded
    assert created.resource["aws.s3.size"] == "8"
    assert created.resource["aws.s3.etag"] == "e5ebd4c02cefbe7955977c67ada242b7"
    assert created.payload["detail-type"] == "Object Created"


# -- the documented shapes, and what goes wrong ---------------------------------------------------------


def test_a_malformed_message_fails_alone_and_its_batch_mates_are_stored(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    batch = sqs_event(
        [
            fixture("s3_notification_aws"),
            '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"',  # cut short
            fixture("eventbridge_s3_object_created"),
        ]
    )
    malformed = batch["Records"][1]["messageId"]
    with caplog.at_level(logging.ERROR, logger="overcast.storage_events"):
        answer = handler(batch, None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": malformed}]}
    assert f"message {malformed} refused: the message is not JSON" in caplog.text
    assert sorted(e.resource_id for e in stored(plane)) == [
        "s3://amzn-s3-demo-bucket/reports/2024/Happy Face(1).jpg",
        "s3://amzn-s3-demo-bucket1/in/my file+1.csv",
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"flow_run_id": str(uuid.UUID(int=7))}, "not a storage notification (its keys: flow_run_id)"),
        (
            {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}},
            "not a storage event: an EventBridge event from 'aws.ec2'",
        ),
        ({"Records": [{"eventSource": "aws:dynamodb"}]}, "not a storage event: a record from 'aws:dynamodb'"),
        (
            {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": "now"}]},
            "'s3' is missing or not an object",
        ),
    ],
    ids=["flow-run-message", "ec2-event", "dynamodb-record", "s3-record-without-s3"],
)
def test_a_message_that_is_not_a_storage_notification_is_a_failure_that_says_why(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture, body: Any, reason: str
) -> None:
    batch = sqs_event([body, fixture("s3_notification_aws")])
    with caplog.at_level(logging.ERROR, logger="overcast.storage_events"):
        answer = handler(batch, None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": batch["Records"][0]["messageId"]}]}
    assert reason in caplog.text
    assert [e.event for e in stored(plane)] == ["aws.s3.object.created"]


def test_the_documented_s3_record_becomes_an_event_with_its_version(plane: ControlPlane) -> None:
    notification = fixture("s3_notification_aws")
    assert handler(notification, None) == {"stored": 1, "duplicates": 0, "failed": []}  # S3 invoking directly
    (event,) = stored(plane)
    assert event.resource_id == "s3://amzn-s3-demo-bucket/reports/2024/Happy Face(1).jpg"
    assert event.resource["aws.s3.version-id"] == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert event.resource["aws.s3.size"] == "1024"
    assert event.payload["responseElements"] == notification["Records"][0]["responseElements"]
    assert handler(notification, None) == {"stored": 0, "duplicates": 1, "failed": []}


def test_a_direct_invocation_stores_the_good_records_and_lists_the_bad_ones(plane: ControlPlane) -> None:
    (good,) = fixture("s3_notification_aws")["Records"]
    other = copy.deepcopy(good)
    other["s3"]["object"]["key"] = "reports/2024/other.jpg"
    missing_key = copy.deepcopy(good)
    del missing_key["s3"]["object"]["key"]
    answer = handler({"Records": [good, missing_key, other, "junk"]}, None)
    assert answer == {
        "stored": 2,
        "duplicates": 0,
        "failed": [
            {"index": 1, "error": "'s3.object.key' is missing or not a non-empty string"},
            {"index": 3, "error": "a record is not a JSON object but str"},
        ],
    }
    assert len(stored(plane)) == 2


def test_eventbridge_events_invoking_the_function_directly(plane: ControlPlane) -> None:
    created, deleted = fixture("eventbridge_s3_object_created"), fixture("eventbridge_s3_object_deleted")
    assert handler(created, None) == {"stored": 1, "duplicates": 0, "failed": []}
    assert handler(deleted, None) == {"stored": 1, "duplicates": 0, "failed": []}
    upload, removal = sorted(
        stored(plane, resource_id="s3://amzn-s3-demo-bucket1/in/my file+1.csv"), key=lambda e: e.event
    )
    assert upload.event == "aws.s3.object.created"
    assert upload.resource["aws.s3.event-name"] == "ObjectCreated:Put"
    assert upload.resource["aws.s3.version-id"] == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    assert upload.occurred == datetime.fromisoformat(created["time"])
    assert removal.event == "aws.s3.object.deleted"
    assert removal.resource["aws.s3.event-name"] == "ObjectRemoved:DeleteMarkerCreated"
    assert "aws.s3.size" not in removal.resource
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    answer = handler(scheduled, None)
    assert answer["stored"] == 0
    assert answer["failed"] == [
        {
            "index": 0,
            "error": "not a storage event: an EventBridge event from 'aws.events' ('Scheduled Event')",
        }
    ]


def test_s3_notifications_through_sns_are_read_inside_their_envelope(plane: ControlPlane) -> None:
    notification = fixture("s3_notification_aws")
    envelope = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:uploads",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(notification),
        "Timestamp": notification["Records"][0]["eventTime"],
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe",
    }
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-25T03:34:47.407Z"}
    skipped = {**envelope, "Message": json.dumps({**test_event, "Bucket": "amzn-s3-demo-bucket"})}
    assert handler(sqs_event([envelope, skipped]), None) == {"batchItemFailures": []}
    sns_record = {"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": envelope}
    assert handler({"Records": [sns_record]}, None) == {"stored": 0, "duplicates": 1, "failed": []}
    assert [e.resource["aws.s3.key"] for e in stored(plane)] == ["reports/2024/Happy Face(1).jpg"]


def test_the_moto_fixture_batch_is_read_as_moto_delivered_it(plane: ControlPlane) -> None:
    batch = fixture("s3_notifications_sqs_moto")
    assert handler(batch, None) == {"batchItemFailures": []}
    assert sorted((e.event, e.resource["aws.s3.key"]) for e in stored(plane)) == [
        ("aws.s3.object.created", "in/my file+1.csv"),
        ("aws.s3.object.deleted", "in/my file+1.csv"),
    ]


def test_notifications_past_the_retention_are_not_stored_and_say_so(
    plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    old = fixture("s3_notification_aws", at=datetime.now(UTC) - plane.events.retention - timedelta(hours=1))
    with caplog.at_level(logging.WARNING, logger="overcast.storage_events"):
        assert handler(old, None) == {"stored": 0, "duplicates": 0, "failed": []}
    assert "past the events' retention: not stored" in caplog.text


def test_when_the_store_fails_the_messages_with_events_come_again(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(events: Any) -> list[Event]:
        raise ThrottledError("the store kept refusing", attempts=5)

    monkeypatch.setattr(plane.events, "emit", unreachable)
    batch = fixture("s3_notifications_sqs_moto")
    _test_event, upload, removal = (r["messageId"] for r in batch["Records"])
    answer = handler(batch, None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": upload}, {"itemIdentifier": removal}]}
    with pytest.raises(ThrottledError):  # a direct invocation is retried by Lambda
        handler(fixture("s3_notification_aws"), None)


# -- Cloud Storage through functions-framework ---------------------------------------------------------


@pytest.fixture
def gcs(plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    """The ``storage`` function served by functions-framework, over ``plane``'s store."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # functions-framework adds the source's folder
    previous = sys.modules.get(GCP_SOURCE.stem)
    app = functions_framework.create_app(
        target="storage", source=str(GCP_SOURCE), signature_type="cloudevent"
    )
    yield app.test_client()
    if previous is None:
        sys.modules.pop(GCP_SOURCE.stem, None)
    else:
        sys.modules[GCP_SOURCE.stem] = previous


def _cloud_event(**changes: Any) -> CloudEvent:
    shape = fixture("gcs_object_finalized")
    data = {**shape.pop("data"), **changes.pop("data", {})}
    return CloudEvent({**shape, **changes}, data)


def test_a_cloud_storage_upload_becomes_an_event_once(
    plane: ControlPlane, gcs: FlaskClient, batches: list[list[Event]]
) -> None:
    event = _cloud_event()
    headers, body = to_structured(event)
    assert gcs.post("/", headers=headers, data=body).status_code == 200
    headers, body = to_binary(event)  # Eventarc retrying, in binary mode this time
    assert gcs.post("/", headers=headers, data=body).status_code == 200

    (stored_event,) = stored(plane)
    assert stored_event.event == "gcp.storage.object.finalized"
    assert stored_event.resource_id == "gs://sample-bucket/in/my file+1.csv"
    assert stored_event.resource["overcast.resource.name"] == "in/my file+1.csv"
    assert stored_event.resource["gcp.storage.bucket"] == "sample-bucket"
    assert stored_event.resource["gcp.storage.size"] == "352"
    assert stored_event.resource["gcp.storage.generation"] == "1601377920000000"
    assert stored_event.resource["gcp.storage.md5"] == "ImIEBA0Bz8/xO3Xr/OzB4w=="
    assert stored_event.resource["gcp.storage.content-type"] == "text/csv"
    assert stored_event.occurred == datetime.fromisoformat(event["time"])
    assert stored_event.payload["data"]["crc32c"] == "MtGkPA=="
    assert len(batches) == 1


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("google.cloud.storage.object.v1.deleted", "gcp.storage.object.deleted"),
        ("google.cloud.storage.object.v1.archived", "gcp.storage.object.archived"),
        ("google.cloud.storage.object.v1.metadataUpdated", "gcp.storage.object.metadataUpdated"),
    ],
    ids=["deleted", "archived", "metadataUpdated"],
)
def test_other_cloud_storage_changes_have_their_own_names(
    plane: ControlPlane, gcs: FlaskClient, kind: str, name: str
) -> None:
    headers, body = to_binary(_cloud_event(type=kind))
    assert gcs.post("/", headers=headers, data=body).status_code == 200
    assert [e.event for e in stored(plane)] == [name]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (lambda: _cloud_event(data={"bucket": None}), "'data.bucket' is missing"),
        (lambda: _cloud_event(data={"size": "large"}), "'data.size' is not a whole number"),
        (lambda: _cloud_event(type="google.cloud.pubsub.topic.v1.messagePublished"), "not a storage event"),
    ],
    ids=["no-bucket", "bad-size", "pubsub"],
)
def test_a_cloud_event_that_is_not_a_storage_change_is_refused_with_its_reason(
    plane: ControlPlane, gcs: FlaskClient, event: Callable[[], CloudEvent], reason: str
) -> None:
    headers, body = to_structured(event())
    response = gcs.post("/", headers=headers, data=body)
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    assert stored(plane) == []
