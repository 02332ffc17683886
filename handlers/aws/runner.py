"""AWS Lambda entry for the runner: ``overcast.handlers.aws.runner.handler``.

Two event shapes:

- an SQS batch (``Records`` with ``eventSource: aws:sqs``), each body ``{"flow_run_id": "…"}``.
  The answer lists the messages to redeliver as ``batchItemFailures`` (the event source
  mapping needs ``FunctionResponseTypes: ["ReportBatchItemFailures"]``), so one poison message
  never fails its batch-mates;
- a direct invocation with the same payload (the ``aws-lambda`` push pool's): the answer is
  ``{"flow_run_id": …, "outcome": …}``.
"""

from __future__ import annotations

from typing import Any

from overcast.handlers.runner import RunRequest, handle, parse_message


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run the flow runs the event names; answer as its source expects."""
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list):
        requests = [_from_record(i, record) for i, record in enumerate(records)]
        outcomes = handle(requests)
        failed = [message_id for message_id, outcome in outcomes.items() if outcome == "retry"]
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
    request = parse_message("direct", event)
    outcome = handle([request])["direct"]
    return {"flow_run_id": str(request.flow_run_id) if request.flow_run_id else None, "outcome": outcome}


def _from_record(position: int, record: Any) -> RunRequest:
    if not isinstance(record, dict) or not isinstance(record.get("messageId"), str):
        return RunRequest(f"record-{position}", None, "an SQS record without a messageId")
    return parse_message(record["messageId"], record.get("body"))
