"""AWS Lambda entry for storage events: ``overcast.handlers.aws.events.handler``.

S3 announces uploads and removals; this function turns them into ``aws.s3.object.created`` and
``aws.s3.object.deleted`` events (see ``overcast.handlers.storage``), stored with one ``emit``
per invocation, where reactive automations see them. Three ways in:

- an SQS batch (``Records`` with ``eventSource: aws:sqs``) whose bodies are S3 notifications
  (S3's ``s3:TestEvent`` is skipped), EventBridge S3 events, or either wrapped by SNS. The
  answer lists the messages to redeliver as ``batchItemFailures`` (the event source mapping
  needs ``FunctionResponseTypes: ["ReportBatchItemFailures"]``): a malformed message, or one
  from another source, fails alone (and reaches the dead-letter queue after its retries) while
  its batch-mates are stored; if the store fails, every message that carried an event fails;
- S3 invoking the function directly (``Records`` with ``eventSource: aws:s3``, or SNS records);
- one EventBridge event (a rule targeting the function).

A direct invocation answers ``{"stored": n, "duplicates": n, "failed": [{"index": i, "error":
"…"}]}``: the records that could not be read are listed (by their place in ``Records``) and the
others are stored. If the store fails it raises, so that the asynchronous invocation is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from overcast.core.errors import OvercastError
from overcast.core.events import Event
from overcast.handlers.storage import NotificationError, ingest, read_notification, read_record

logger = logging.getLogger("overcast.storage_events")


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Store the storage events the invocation carries; answer as its source expects."""
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list):
        if any(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records):
            return _sqs_batch(records)
        return _direct(records, read_record)
    return _direct([event], read_notification)


def _sqs_batch(records: list[Any]) -> dict[str, Any]:
    failed: list[str] = []
    carried: list[tuple[str, list[Event]]] = []  # each message's id and its events
    for position, record in enumerate(records):
        message_id = record.get("messageId") if isinstance(record, dict) else None
        if not isinstance(message_id, str) or not message_id:
            message_id = f"record-{position}"  # not an SQS message: Lambda fails the whole batch
        try:
            if not isinstance(record, dict) or record.get("eventSource") != "aws:sqs":
                raise NotificationError("not an SQS message in an SQS batch")
            carried.append((message_id, read_notification(record.get("body"))))
        except NotificationError as exc:
            logger.error("message %s refused: %s", message_id, exc)
            failed.append(message_id)
    try:
        ingest([event for _, events in carried for event in events])
    except OvercastError:
        logger.exception("the events could not be stored; their messages will come again")
        failed += [message_id for message_id, events in carried if events]
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def _direct(items: list[Any], read: Callable[[Any], list[Event]]) -> dict[str, Any]:
    events: list[Event] = []
    failed: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            events += read(item)
        except NotificationError as exc:
            logger.error("record %d refused: %s", index, exc)
            failed.append({"index": index, "error": str(exc)})
    emitted = ingest(events)  # a store failure raises: the invocation is retried
    return {"stored": emitted.stored, "duplicates": emitted.duplicates, "failed": failed}
