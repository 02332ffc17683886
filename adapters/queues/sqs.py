"""The SQS queue: the ``Queue`` port translated onto Amazon SQS with boto3.

Ordering (``group``) and deduplication (``dedup_id``) are guaranteed only by FIFO queues (a
URL ending in ``.fifo``) and by ``LocalQueue``: a standard SQS queue cannot carry them, so it
accepts and ignores them. FIFO queues in turn have no per-message delay, so ``delay_s > 0`` is
refused there. Throttling is retried with the shared backoff; every other AWS error becomes a
``BackendError`` in ``_call``. boto3 is imported only when a client is built.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Collection
from typing import Any

from overcast.adapters._aws import client_from_url, error_code, is_throttle
from overcast.adapters._retry import DEFAULT_BACKOFF
from overcast.adapters.queues._limits import (
    check_max_receives,
    check_receive,
    check_send,
    check_visibility,
)
from overcast.core.errors import BackendError, ConfigurationError, InvalidValueError
from overcast.core.ports import Message
from overcast.core.settings import BackendURL

logger = logging.getLogger(__name__)

_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})
# A receipt from an earlier delivery, of a deleted message, or of a message no longer in flight.
_STALE_RECEIPT = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight"})
_UNSET: Any = object()


def _call(method: Callable[..., Any], *, ignore: Collection[str] = (), **kwargs: Any) -> Any:
    """Call one SQS API, retrying throttling; return ``None`` for an error code in ``ignore``.

    Raises:
        ThrottledError: still throttled after the retries.
        BackendError: any other AWS or botocore error (chained).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    what = f"SQS {method.__name__}"
    try:
        return DEFAULT_BACKOFF.run(lambda: method(**kwargs), is_throttle=is_throttle, what=what)
    except ClientError as exc:
        if error_code(exc) in ignore:
            logger.debug("%s: ignoring %s", what, error_code(exc))
            return None
        raise BackendError(f"{what} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise BackendError(f"{what} failed: {exc}") from exc


def create_queue(
    client: Any, name: str, *, fifo: bool = False, max_receives: int = 5, visibility_s: int = 30
) -> str:
    """Create a queue and its dead-letter queue ``NAME-dlq``, and return the queue's URL.

    Idempotent: existing queues are kept and given these settings.

    Args:
        client: a boto3 SQS client.
        name: the queue's name; a FIFO queue's must end in ``.fifo`` (its DLQ's does too).
        fifo: create FIFO queues (ordering groups and deduplication).
        max_receives: deliveries after which a message moves to the dead-letter queue.
        visibility_s: the queue's default visibility timeout.

    Raises:
        InvalidValueError: ``fifo`` disagrees with the name's suffix, or a number is out of range.
        BackendError: SQS refused.
    """
    if fifo != name.endswith(".fifo"):
        raise InvalidValueError(f"queue name {name!r}: FIFO queue names, and only they, end in '.fifo'")
    check_max_receives(max_receives)
    check_visibility(visibility_s)
    kind = {"FifoQueue": "true"} if fifo else {}
    dlq_url = _ensure_queue(client, f"{name.removesuffix('.fifo')}-dlq{'.fifo' if fifo else ''}", kind)
    dlq_arn = _call(client.get_queue_attributes, QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": str(max_receives)}
    attributes = {**kind, "VisibilityTimeout": str(visibility_s), "RedrivePolicy": json.dumps(policy)}
    return _ensure_queue(client, name, attributes)


def _ensure_queue(client: Any, name: str, attributes: dict[str, str]) -> str:
    created = _call(client.create_queue, ignore=_EXISTS, QueueName=name, Attributes=attributes)
    if created is not None:
        return str(created["QueueUrl"])
    # CreateQueue refuses an existing name with other attributes: converge them instead.
    url = str(_call(client.get_queue_url, QueueName=name)["QueueUrl"])
    settable = {key: value for key, value in attributes.items() if key != "FifoQueue"}
    if settable:
        _call(client.set_queue_attributes, QueueUrl=url, Attributes=settable)
    return url


class SqsQueue:
    """A ``Queue`` on one SQS queue (``sqs://QUEUE_NAME?region=R&endpoint=URL``).

    On a FIFO queue, a send without ``group`` goes to the group ``"default"`` (so ungrouped
    messages are delivered one at a time, in order) and one without ``dedup_id`` gets a fresh
    one, so that only an explicit ``dedup_id`` deduplicates. On a
    standard queue ``group`` and ``dedup_id`` are ignored. ``ack`` and ``extend`` with a receipt
    SQS no longer accepts do nothing (logged at debug level); note that SQS itself may still
    act on a receipt from an earlier delivery of the same message.

    Args:
        queue_url: the queue's URL.
        client: a boto3 SQS client (shared clients are fine: boto3 clients are thread-safe).
    """

    def __init__(self, queue_url: str, *, client: Any) -> None:
        self.url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        self._client = client
        self._owns_client = False
        self._dead_letter: SqsQueue | None = _UNSET

    @classmethod
    def from_url(cls, url: BackendURL) -> SqsQueue:
        """Build a queue from ``sqs://QUEUE_NAME?region=R&endpoint=URL``, resolving its URL.

        Raises:
            ConfigurationError: no queue name, or no queue of that name.
        """
        name = url.require_netloc("queue name")
        client = client_from_url("sqs", url)
        found = _call(client.get_queue_url, ignore=_NO_QUEUE, QueueName=name)
        if found is None:
            raise ConfigurationError(
                f"{url.url!r}: SQS queue {name!r} does not exist (create it with "
                "overcast.adapters.queues.sqs.create_queue, or check region and endpoint)"
            )
        queue = cls(found["QueueUrl"], client=client)
        queue._owns_client = True
        return queue

    @property
    def dead_letter(self) -> SqsQueue | None:
        """The dead-letter queue named in the queue's RedrivePolicy, or ``None`` when it has none."""
        if self._dead_letter is _UNSET:
            attributes = _call(
                self._client.get_queue_attributes, QueueUrl=self.url, AttributeNames=["RedrivePolicy"]
            )
            policy = attributes.get("Attributes", {}).get("RedrivePolicy")
            self._dead_letter = None
            if policy:
                # arn:aws:sqs:REGION:ACCOUNT:NAME
                *_, account, name = json.loads(policy)["deadLetterTargetArn"].split(":")
                found = _call(self._client.get_queue_url, QueueName=name, QueueOwnerAWSAccountId=account)
                self._dead_letter = SqsQueue(found["QueueUrl"], client=self._client)
        return self._dead_letter

    def send(
        self, body: str, *, delay_s: int = 0, group: str | None = None, dedup_id: str | None = None
    ) -> str:
        """Enqueue ``body`` and return the message id.

        Args:
            body: the text (up to SQS's size limit).
            delay_s: seconds (0-900) before the message can be received; standard queues only.
            group: ordering group (FIFO queues; ignored by standard queues).
            dedup_id: deduplication id (FIFO queues; ignored by standard queues).

        Raises:
            InvalidValueError: an argument is out of range, or ``delay_s > 0`` on a FIFO queue.
            BackendError: SQS refused.
        """
        check_send(body, delay_s, group, dedup_id)
        request: dict[str, Any] = {"QueueUrl": self.url, "MessageBody": body}
        if self.fifo:
            if delay_s:
                raise InvalidValueError(
                    "FIFO SQS queues have no per-message delay (delay_s); set DelaySeconds on the queue"
                )
            request["MessageGroupId"] = group or "default"
            request["MessageDeduplicationId"] = dedup_id or uuid.uuid4().hex
        else:
            request["DelaySeconds"] = delay_s
        return str(_call(self._client.send_message, **request)["MessageId"])

    def receive(self, max_messages: int = 1, *, visibility_s: int = 30, wait_s: float = 0) -> list[Message]:
        """Receive up to ``max_messages`` (1-10), hiding them for ``visibility_s`` seconds.

        Args:
            max_messages: the most messages to return.
            visibility_s: seconds (0-43200) before an unacknowledged message is delivered again.
            wait_s: seconds (0-20) to long-poll for a first message; SQS counts whole seconds,
                so a fraction is rounded up.

        Raises:
            InvalidValueError: an argument is out of range.
            BackendError: SQS refused.
        """
        check_receive(max_messages, visibility_s, wait_s)
        response = _call(
            self._client.receive_message,
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            VisibilityTimeout=visibility_s,
            WaitTimeSeconds=math.ceil(wait_s),
            MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
        )
        messages = []
        for raw in response.get("Messages", []):
            attributes = raw.get("Attributes", {})
            messages.append(
                Message(
                    id=raw["MessageId"],
                    body=raw["Body"],
                    receipt=raw["ReceiptHandle"],
                    receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
                    group=attributes.get("MessageGroupId"),
                    attributes=attributes,
                )
            )
        return messages

    def ack(self, receipt: str) -> None:
        """Delete the delivered message (idempotent; an invalid receipt does nothing)."""
        _call(self._client.delete_message, ignore=_STALE_RECEIPT, QueueUrl=self.url, ReceiptHandle=receipt)

    def extend(self, receipt: str, visibility_s: int) -> None:
        """Make the delivered message visible again ``visibility_s`` (0-43200) seconds from now.

        A receipt of a message that is deleted or no longer in flight does nothing.

        Raises:
            InvalidValueError: ``visibility_s`` is out of range.
            BackendError: SQS refused for another reason.
        """
        check_visibility(visibility_s)
        _call(
            self._client.change_message_visibility,
            ignore=_STALE_RECEIPT,
            QueueUrl=self.url,
            ReceiptHandle=receipt,
            VisibilityTimeout=visibility_s,
        )

    def approximate_count(self) -> int:
        """Return SQS's approximate number of visible messages."""
        response = _call(
            self._client.get_queue_attributes,
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages"],
        )
        return int(response["Attributes"]["ApproximateNumberOfMessages"])

    def close(self) -> None:
        """Close the client when this queue built it (``from_url``); a given client is left open."""
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"SqsQueue({self.url!r})"
