"""Storage notifications become events: an upload to S3 or Cloud Storage is something automations see.

The cloud entries (``overcast.handlers.aws.events``, ``overcast.handlers.gcp.events``) unwrap
their deliveries and hand the notifications here:

- ``read_notification`` reads one message: an S3 notification (``{"Records": [...]}``), S3's
  ``s3:TestEvent`` (nothing to announce), an EventBridge S3 event, or either inside an SNS
  envelope;
- ``read_record`` reads one record of a direct invocation (an S3 record, or an SNS record);
- ``gcs_event`` reads a Cloud Storage CloudEvent;
- ``ingest`` stores a batch of events with one ``emit``.

An upload to S3 becomes ``aws.s3.object.created`` (a removal, ``aws.s3.object.deleted``) about
the resource ``s3://<bucket>/<key>``, labelled ``aws.s3.bucket``, ``aws.s3.key`` (decoded),
``aws.s3.size``, ``aws.s3.etag``, ``aws.s3.version-id`` and ``aws.s3.event-name``
(``ObjectCreated:Put``); its payload is the record as delivered. A Cloud Storage change becomes
``gcp.storage.object.<finalized|deleted|archived|metadataUpdated>`` about ``gs://<bucket>/<name>``.

S3 delivers at least once and Eventarc retries: an event's id is a UUID5 of what identifies the
notification (for S3 the kind of change, bucket, key, version, sequencer, eTag, time and
request id; for Cloud Storage the CloudEvent's source and id), so a redelivery is the same
event, and ingest, idempotent by id, stores it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from pydantic import ValidationError

from overcast.core.errors import OvercastError
from overcast.core.events import MAX_RESOURCE_ID, Emitted, Event, related, resource
from overcast.core.states import utcnow

logger = logging.getLogger("overcast.storage_events")

S3_CREATED = "aws.s3.object.created"
S3_DELETED = "aws.s3.object.deleted"
GCS_EVENTS = {
    "google.cloud.storage.object.v1.finalized": "gcp.storage.object.finalized",
    "google.cloud.storage.object.v1.deleted": "gcp.storage.object.deleted",
    "google.cloud.storage.object.v1.archived": "gcp.storage.object.archived",
    "google.cloud.storage.object.v1.metadataUpdated": "gcp.storage.object.metadataUpdated",
}
"""Cloud Storage's CloudEvent types and the events they become."""

_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-5b07-9c2a-3e1f0b7d4a96")  # of storage event ids; never change it

# S3 notification kinds that announce a new object, or one gone (lifecycle expiry included)
_S3_FAMILIES = {
    "ObjectCreated": S3_CREATED,
    "ObjectRemoved": S3_DELETED,
    "LifecycleExpiration": S3_DELETED,
}
# EventBridge's ``reason`` of an upload, as a notification's ``eventName`` says it (another
# reason, such as moto's "ObjectCreated", is named for the family alone)
_EVENTBRIDGE_CREATED = {
    "PutObject": "ObjectCreated:Put",
    "POST Object": "ObjectCreated:Post",
    "CopyObject": "ObjectCreated:Copy",
    "CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
}


class NotificationError(OvercastError, ValueError):
    """Raised when a notification cannot become an event: it is malformed, or not a storage
    notification at all (another source). The entries report it as a failed message."""


# -- reading ----------------------------------------------------------------------------------------


def read_notification(message: Any) -> list[Event]:
    """Read one message (JSON text or a decoded object) into the events it announces.

    Accepted: an S3 notification ``{"Records": [...]}``, S3's ``s3:TestEvent`` (no event), an
    EventBridge event from ``aws.s3``, or any of them as the ``Message`` of an SNS
    notification. S3 kinds other than created and removed (restores, tagging…) announce nothing.

    Raises:
        NotificationError: the message is malformed or comes from another source.
    """
    message = _json_object(message, "the message")
    if message.get("Event") == "s3:TestEvent":
        logger.info("S3 test event for bucket %s: nothing to announce", message.get("Bucket"))
        return []
    if "Records" in message:
        records = message["Records"]
        if not isinstance(records, list):
            raise NotificationError("'Records' is not a list")
        return [event for record in records for event in read_record(record)]
    if message.get("Type") == "Notification" and "Message" in message:
        return read_notification(message["Message"])  # SNS (without raw message delivery)
    if "detail-type" in message and "source" in message:
        event = eventbridge_event(message)
        return [] if event is None else [event]
    keys = ", ".join(sorted(map(str, message))[:10]) or "none"
    raise NotificationError(f"not a storage notification (its keys: {keys})")


def read_record(record: Any) -> list[Event]:
    """Read one record of a ``Records`` list: an S3 record, or an SNS record wrapping a message.

    Raises:
        NotificationError: the record is malformed or comes from another source.
    """
    if not isinstance(record, dict):
        raise NotificationError(f"a record is not a JSON object but {type(record).__name__}")
    if record.get("eventSource") == "aws:s3":
        event = s3_event(record)
        return [] if event is None else [event]
    if record.get("EventSource") == "aws:sns":
        sns = record.get("Sns")
        if not isinstance(sns, dict) or "Message" not in sns:
            raise NotificationError("an SNS record without 'Sns.Message'")
        return read_notification(sns["Message"])
    source = record.get("eventSource", record.get("EventSource"))
    raise NotificationError(f"not a storage event: a record from {source!r}, expected 'aws:s3'")


def s3_event(record: Mapping[str, Any]) -> Event | None:
    """The event of one S3 notification record (``None``: a kind of change not announced).

    Raises:
        NotificationError: a field is missing or of the wrong type.
    """
    event_name = _text(record, "eventName")
    family = _S3_FAMILIES.get(event_name.partition(":")[0])
    if family is None:
        logger.info("S3 %s notification: not announced (only created and removed objects are)", event_name)
        return None
    s3 = _object(record, "s3")
    bucket = _text(_object(s3, "bucket", "s3"), "name", "s3.bucket")
    obj = _object(s3, "object", "s3")
    key = unquote_plus(_text(obj, "key", "s3.object"))  # S3 form-encodes keys; moto also encodes '/'
    response = record.get("responseElements")
    return _s3_object_event(
        family,
        event_name,
        bucket=bucket,
        key=key,
        obj=obj,
        occurred=_time(record, "eventTime"),
        request_id=response.get("x-amz-request-id") if isinstance(response, dict) else None,
        payload=dict(record),
    )


def eventbridge_event(message: Mapping[str, Any]) -> Event | None:
    """The event of an EventBridge event from S3 (``None``: a kind of change not announced).

    Raises:
        NotificationError: it comes from another source, or a field is missing or wrong.
    """
    source, detail_type = message.get("source"), message.get("detail-type")
    if source != "aws.s3":
        raise NotificationError(
            f"not a storage event: an EventBridge event from {source!r} ({detail_type!r})"
        )
    detail = _object(message, "detail")
    reason = detail.get("reason")
    if detail_type == "Object Created":
        family, event_name = S3_CREATED, _EVENTBRIDGE_CREATED.get(str(reason), "ObjectCreated")
    elif detail_type == "Object Deleted":
        cause = "LifecycleExpiration" if reason == "Lifecycle Expiration" else "ObjectRemoved"
        marker = detail.get("deletion-type") == "Delete Marker Created"
        family, event_name = S3_DELETED, f"{cause}:{'DeleteMarkerCreated' if marker else 'Delete'}"
    else:
        logger.info("S3 %r event from EventBridge: not announced", detail_type)
        return None
    obj = _object(detail, "object", "detail")
    return _s3_object_event(
        family,
        event_name,
        bucket=_text(_object(detail, "bucket", "detail"), "name", "detail.bucket"),
        key=_text(obj, "key", "detail.object"),  # EventBridge keys are not encoded
        obj=obj,
        occurred=_time(message, "time"),
        request_id=f"{message.get('id')}/{detail.get('request-id')}",
        payload=dict(message),
    )


def gcs_event(attributes: Mapping[str, Any], data: Any) -> Event:
    """The event of a Cloud Storage CloudEvent: its attributes (``id``, ``type``, ``source``,
    ``subject``, ``time``…) and its data, the object resource (JSON text or decoded).

    Raises:
        NotificationError: another type of event, or malformed data.
    """
    kind = attributes.get("type")
    name = GCS_EVENTS.get(str(kind))
    if name is None:
        raise NotificationError(
            f"not a storage event: CloudEvent type {kind!r}, expected one of {sorted(GCS_EVENTS)}"
        )
    event_id, source = attributes.get("id"), attributes.get("source")
    if not isinstance(event_id, str) or not event_id:
        raise NotificationError("the CloudEvent has no 'id'")
    data = _json_object(data, "the CloudEvent's data")
    bucket = _text(data, "bucket", "data")
    object_name = _text(data, "name", "data")
    labels = {
        "gcp.storage.bucket": bucket,
        "gcp.storage.name": object_name,
        "gcp.storage.size": _number(data.get("size"), "data.size"),
        "gcp.storage.generation": _number(data.get("generation"), "data.generation"),
        "gcp.storage.metageneration": _number(data.get("metageneration"), "data.metageneration"),
        "gcp.storage.md5": data.get("md5Hash"),
        "gcp.storage.content-type": data.get("contentType"),
        "gcp.storage.storage-class": data.get("storageClass"),
    }
    when = attributes.get("time") or data.get("updated") or data.get("timeCreated")
    envelope = {k: v for k, v in attributes.items() if k in ("id", "type", "source", "subject", "time")}
    return _event(
        _event_id(name, str(source), event_id),
        name,
        occurred=_parse_time(when, "time") if when else utcnow(),
        resource_id=_resource_id("gs", bucket, object_name),
        object_name=object_name,
        labels=labels,
        bucket=("gs", bucket),
        payload={**_json(envelope), "data": _json(data)},
    )


# -- ingest -----------------------------------------------------------------------------------------


def ingest(events: Sequence[Event]) -> Emitted:
    """Store ``events`` with one ``emit`` on the process's control plane; say how many were new.

    Reactive automations see the new ones (the events service's listeners). A repeat is not
    new (a ``duplicate``); neither is an event older than the events' retention, which is
    not stored (and logged).

    Raises:
        OvercastError: the store failed; nothing may be assumed stored.
    """
    if not events:
        return Emitted(stored=0, duplicates=0)
    from overcast.handlers import bootstrap

    plane = bootstrap.control_plane()
    new = plane.events.emit(events)
    oldest = utcnow() - plane.events.retention
    expired = sum(1 for e in events if e.occurred <= oldest)
    if expired:
        logger.warning(
            "%d notification(s) occurred more than %s ago, past the events' retention: not stored",
            expired,
            plane.events.retention,
        )
    emitted = Emitted(stored=len(new), duplicates=len(events) - len(new) - expired)
    logger.info("storage events: %d stored, %d duplicates", emitted.stored, emitted.duplicates)
    return emitted


# -- helpers ----------------------------------------------------------------------------------------


def _s3_object_event(
    family: str,
    event_name: str,
    *,
    bucket: str,
    key: str,
    obj: Mapping[str, Any],
    occurred: datetime,
    request_id: str | None,
    payload: dict[str, Any],
) -> Event:
    version = obj.get("versionId", obj.get("version-id"))
    version = None if version in (None, "", "null") else str(version)  # "null": not versioned
    etag = obj.get("eTag", obj.get("etag"))
    etag = str(etag).strip('"') if etag not in (None, "") else None
    sequencer = obj.get("sequencer")
    identity = (family, bucket, key, version, sequencer, etag, occurred.isoformat(), request_id)
    labels = {
        "aws.s3.bucket": bucket,
        "aws.s3.key": key,
        "aws.s3.size": _number(obj.get("size"), "size"),
        "aws.s3.etag": etag,
        "aws.s3.version-id": version,
        "aws.s3.event-name": event_name,
    }
    return _event(
        _event_id(*identity),
        family,
        occurred=occurred,
        resource_id=_resource_id("s3", bucket, key),
        object_name=key,
        labels=labels,
        bucket=("s3", bucket),
        payload=_json(payload),
    )


def _event(
    event_id: uuid.UUID,
    name: str,
    *,
    occurred: datetime,
    resource_id: str,
    object_name: str,
    labels: Mapping[str, str | None],
    bucket: tuple[str, str],
    payload: dict[str, Any],
) -> Event:
    scheme, bucket_name = bucket
    try:
        return Event(
            id=event_id,
            occurred=occurred,
            event=name,
            resource=resource(resource_id, object_name, **{k: v for k, v in labels.items() if v is not None}),
            related=[related(f"{scheme}://{bucket_name}", "bucket", bucket_name)],
            payload=payload,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise NotificationError(f"{resource_id} cannot be an event: {problems}") from exc


def _event_id(*identity: Any) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, json.dumps(identity, default=str))


def _resource_id(scheme: str, bucket: str, key: str) -> str:
    """``scheme://bucket/key``; a long one keeps its start and a digest of the whole, to fit."""
    full = f"{scheme}://{bucket}/{key}"
    if len(full) <= MAX_RESOURCE_ID:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:32]
    return f"{full[: MAX_RESOURCE_ID - len(digest) - 1]}#{digest}"


def _object(parent: Mapping[str, Any], field: str, where: str = "") -> Mapping[str, Any]:
    value = parent.get(field)
    if not isinstance(value, dict):
        raise NotificationError(f"'{_path(where, field)}' is missing or not an object")
    return value


def _text(parent: Mapping[str, Any], field: str, where: str = "") -> str:
    value = parent.get(field)
    if not isinstance(value, str) or not value:
        raise NotificationError(f"'{_path(where, field)}' is missing or not a non-empty string")
    return value


def _number(value: Any, field: str) -> str | None:
    """A whole number (S3 sends ints, Cloud Storage strings) as label text; ``None`` when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise NotificationError(f"'{field}' is not a whole number: {value!r}")
    return str(int(value))


def _time(parent: Mapping[str, Any], field: str) -> datetime:
    return _parse_time(parent.get(field), field)


def _parse_time(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise NotificationError(f"'{field}' is missing or not a date-time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise NotificationError(f"'{field}' is not an ISO 8601 date-time: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _path(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _json(value: Any) -> Any:
    """``value`` as plain JSON types (a CloudEvent's attributes may hold datetimes)."""
    return json.loads(json.dumps(value, default=str))


def _json_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a JSON object: decoded when it is text, refused (naming ``what``) otherwise."""
    if isinstance(value, str | bytes | bytearray):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise NotificationError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise NotificationError(f"{what} is not a JSON object but {type(value).__name__}")
    return value
