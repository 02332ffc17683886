"""A queue-to-function event source mapping: Lambda's SQS trigger, for the local stack.

It receives messages from a queue in batches, hands each batch to a function as an SQS event
(``Records`` with ``messageId``, ``receiptHandle``, ``body``, ``attributes`` and
``eventSource: aws:sqs``), and then, as Lambda does with ``ReportBatchItemFailures``, deletes
the messages the function did not list in ``batchItemFailures``. A listed message, or every
message of a batch whose invocation failed, becomes visible again after its visibility timeout
and is delivered again, until the queue moves it to its dead-letter queue.

The same mapping runs against the local queue or SQS (moto's server in tests) and the local
function host or any ``Invoker``: the handler cannot tell it from Lambda's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from overcast.core.errors import OvercastError
from overcast.core.ports import Invoker, Message, Queue

logger = logging.getLogger("overcast.event_source")

LOCAL_QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:{name}"


@dataclass
class BatchReport:
    """What one poll did."""

    received: int = 0
    acked: int = 0
    retried: list[str] = field(default_factory=list)  # message ids left for redelivery


class EventSourceMapping:
    """Feeds a queue's messages to a function in SQS-shaped batches.

    Args:
        queue: where messages come from.
        invoker: how the function is called (synchronously: the answer decides the acks).
        function: the function's name for the invoker.
        batch_size: messages per invocation (1-10, as SQS delivers at most 10 per receive).
        visibility_s: how long a batch stays hidden while the function works on it; it should
            exceed the function's timeout, or a slow batch is delivered twice (harmless to an
            idempotent handler, but wasted).
        source_name: the queue's name in the records' ``eventSourceARN``.
    """

    def __init__(
        self,
        queue: Queue,
        invoker: Invoker,
        function: str,
        *,
        batch_size: int = 10,
        visibility_s: int = 900,
        source_name: str = "overcast-runs",
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError(f"batch_size must be 1-10, not {batch_size}")
        self.queue, self.invoker, self.function = queue, invoker, function
        self.batch_size, self.visibility_s = batch_size, visibility_s
        self.arn = LOCAL_QUEUE_ARN.format(name=source_name)

    def poll(self, wait_s: float = 0) -> BatchReport:
        """Receive one batch (waiting up to ``wait_s`` for a first message), invoke, ack."""
        messages = self.queue.receive(self.batch_size, visibility_s=self.visibility_s, wait_s=wait_s)
        report = BatchReport(received=len(messages))
        if not messages:
            return report
        event = {"Records": [self._record(m) for m in messages]}
        try:
            answer = self.invoker.invoke(self.function, event)
        except OvercastError:
            logger.exception(
                "%s failed on a batch of %d; it will be delivered again", self.function, len(messages)
            )
            report.retried = [m.id for m in messages]
            return report
        failed = _failed_ids(answer, messages)
        for message in messages:
            if message.id in failed:
                report.retried.append(message.id)
            else:
                self.queue.ack(message.receipt)
                report.acked += 1
        return report

    def run(
        self,
        stop: threading.Event,
        *,
        wait_s: float = 1.0,
        on_batch: Callable[[BatchReport], Any] | None = None,
    ) -> None:
        """Poll until ``stop`` is set (long polls of ``wait_s`` seconds keep an idle loop cheap)."""
        while not stop.is_set():
            try:
                report = self.poll(wait_s=wait_s)
            except OvercastError:
                logger.exception("polling the queue failed; trying again")
                stop.wait(1.0)
                continue
            if on_batch is not None and report.received:
                on_batch(report)

    def _record(self, message: Message) -> dict[str, Any]:
        return {
            "messageId": message.id,
            "receiptHandle": message.receipt,
            "body": message.body,
            "attributes": {"ApproximateReceiveCount": str(message.receive_count)},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": "us-east-1",
        }


def _failed_ids(answer: Any, messages: list[Message]) -> set[str]:
    """The message ids an SQS-batch answer asks to redeliver (all of them if it is malformed)."""
    if isinstance(answer, dict) and isinstance(answer.get("batchItemFailures"), list):
        failed = set()
        for entry in answer["batchItemFailures"]:
            if isinstance(entry, dict) and isinstance(entry.get("itemIdentifier"), str):
                failed.add(entry["itemIdentifier"])
            else:  # Lambda fails the whole batch on a malformed failure list
                return {m.id for m in messages}
        return failed
    return set()  # no partial failures reported: the whole batch succeeded
