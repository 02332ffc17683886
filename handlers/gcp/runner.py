"""Google Cloud Functions entry for the runner: the CloudEvent function ``runner``.

Deploy with ``--entry-point runner --trigger-topic TOPIC`` (a Pub/Sub trigger). Each message's
data is ``{"flow_run_id": "…"}`` (base64 in the CloudEvent, as Pub/Sub delivers it). The run
is claimed, executed and flushed by the same logic as the Lambda runner. A message to deliver
again (the control plane was unreachable, or the message is malformed) raises, so that
Pub/Sub retries it and, after the subscription's attempts, moves it to its dead-letter topic.
"""

from __future__ import annotations

import base64
from typing import Any

import functions_framework

from overcast.handlers.runner import handle, parse_message


class RedeliverError(RuntimeError):
    """Raised so that Pub/Sub delivers the message again."""


@functions_framework.cloud_event
def runner(event: Any) -> None:
    """Run the flow run a Pub/Sub message names."""
    data = event.data if isinstance(event.data, dict) else {}
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    message_id = str(message.get("messageId") or message.get("message_id") or event["id"])
    try:
        body: Any = base64.b64decode(message.get("data", ""), validate=True)
    except (ValueError, TypeError):
        body = None
    outcome = handle([parse_message(message_id, body)])[message_id]
    if outcome == "retry":
        raise RedeliverError(f"message {message_id} is to be delivered again")
