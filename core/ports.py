"""The four ports every backend implements: key-value store, blob store, queue, invoker.

Each is a ``typing.Protocol``; adapters in ``overcast.adapters`` implement them and pass one
conformance suite per port. The ports are synchronous: boto3, sqlite3 and function handlers
are, and an adapter that profits from concurrency fans out inside.

A fifth, smaller port, ``WebhookSender``, is how automations call the outside world over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Item = dict[str, Any]
"""A key-value item: ``pk`` and ``sk`` (non-empty strings) plus attributes.

Reserved attributes, managed or interpreted by the store:

- ``v``: the item's version, set by the store (1 on creation, +1 on each put);
- ``ttl``: epoch seconds after which the item is invisible to every read and condition;
- ``gsi1pk``/``gsi1sk``, ``gsi2pk``/``gsi2sk``: keys of the two secondary indexes (strings,
  both or neither of a pair); an item is in an index only when it has that pair.

Other attributes take JSON-like values plus ``bytes`` and ``Decimal``: ``None``, ``bool``,
``int`` (any size), ``float``, ``Decimal``, ``str``, ``bytes``, ``list`` and ``dict``. A value
reads back with the same type and value on every backend; tuples read back as lists, and map
keys that are int, float, bool or None read back as strings, as in JSON.
"""

RESERVED_ATTRIBUTES = frozenset({"pk", "sk", "v", "ttl", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"})
INDEXES: Mapping[str, tuple[str, str]] = {"gsi1": ("gsi1pk", "gsi1sk"), "gsi2": ("gsi2pk", "gsi2sk")}
MAX_ITEM_BYTES = 400 * 1024
MAX_TRANSACTION_ITEMS = 100


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a query.

    Attributes:
        items: the items, in key order (reversed when the query was descending).
        cursor: an opaque string that continues the query after the last item, or ``None``
            when no item is left.
    """

    items: list[Item]
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Put:
    """A put inside ``KeyValueStore.transact``; conditions as for ``KeyValueStore.put``."""

    item: Item
    if_absent: bool = False
    if_version: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """A delete inside ``KeyValueStore.transact``; the condition as for ``KeyValueStore.delete``."""

    pk: str
    sk: str
    if_version: int | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """A condition on an item that a transaction writes nothing to.

    Exactly one of ``version`` (the item exists with that version), ``exists=True`` or
    ``exists=False`` must be given.
    """

    pk: str
    sk: str
    version: int | None = None
    exists: bool | None = None


Operation = Put | Delete | Check


@runtime_checkable
class KeyValueStore(Protocol):
    """A DynamoDB-shaped key-value store with versions, TTL, two indexes and transactions."""

    def get(self, pk: str, sk: str) -> Item | None:
        """Return the item, or ``None`` when it does not exist or its ``ttl`` has passed.

        Reads are strongly consistent.
        """
        ...

    def put(self, item: Item, *, if_absent: bool = False, if_version: int | None = None) -> int:
        """Write the whole item (replacing any previous one) and return its new version.

        Args:
            item: the item; its ``v``, if present, is ignored: the store sets the version.
            if_absent: write only when no (live) item has this key.
            if_version: write only when the live item has exactly this version.

        Raises:
            ConditionFailedError: a condition did not hold; nothing was written.
            ItemTooLargeError: the encoded item is over 400 KB.
            InvalidKeyError, InvalidValueError: the item is malformed.
        """
        ...

    def delete(self, pk: str, sk: str, *, if_version: int | None = None) -> bool:
        """Delete the item; return whether a live item was there.

        Raises:
            ConditionFailedError: ``if_version`` was given and the live item has another
                version or does not exist.
        """
        ...

    def query(
        self,
        pk: str,
        *,
        sk_prefix: str | None = None,
        sk_range: tuple[str | None, str | None] | None = None,
        index: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        descending: bool = False,
    ) -> Page:
        """Return the live items of one partition in sort-key order.

        Args:
            pk: the partition key (of the index, when ``index`` is given).
            sk_prefix: keep sort keys that start with this.
            sk_range: keep sort keys within ``(low, high)``, both inclusive; ``None`` leaves
                that end open. Exclusive with ``sk_prefix``.
            index: ``None`` for the table, ``"gsi1"`` or ``"gsi2"`` for a secondary index;
                index reads are eventually consistent on DynamoDB.
            limit: the most items to return; ``None`` returns them all.
            cursor: the ``cursor`` of the previous page, to continue after it.
            descending: newest-first order.

        Returns:
            A page whose ``cursor`` is ``None`` exactly when no further item matches.
        """
        ...

    def transact(self, operations: Sequence[Operation]) -> None:
        """Apply up to 100 operations on distinct items, all or nothing.

        Raises:
            TransactionConflictError: a condition failed (``index`` names the operation) or
                another transaction conflicted; nothing was written.
            InvalidValueError: too many operations, or one item named twice.
        """
        ...

    def batch_put(self, items: Sequence[Item]) -> None:
        """Write many items unconditionally, each with version 1.

        Meant for append-only items (logs, events) that are never updated under a version
        guard. Not atomic as a whole: after an error some items may have been written.
        The adapter chunks to the backend's limit and retries what the backend left out.
        """
        ...


@runtime_checkable
class BlobStore(Protocol):
    """A flat store of byte blobs under slash-separated keys (``runs/abc/result.pkl``).

    Keys are validated by ``overcast.core.blobkeys.validate_blob_key``: no ``..`` or ``.``
    segments, no absolute paths, no NUL or backslash, no empty segments.
    """

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, atomically replacing any previous blob."""
        ...

    def get(self, key: str) -> bytes:
        """Return the blob. Raises ``NotFoundError`` when there is none."""
        ...

    def exists(self, key: str) -> bool:
        """Say whether a blob is stored under ``key``."""
        ...

    def delete(self, key: str) -> bool:
        """Delete the blob; return whether there was one."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield, in sorted order, every key that starts with ``prefix`` (a plain string prefix)."""
        ...

    def url(self, key: str) -> str:
        """Return a URL naming the blob (``file://…`` or ``s3://bucket/…``)."""
        ...


@dataclass(frozen=True, slots=True)
class Message:
    """A message received from a queue.

    Attributes:
        id: the message's id, stable across redeliveries.
        body: the text that was sent.
        receipt: the handle that acknowledges or extends this delivery (not the id:
            a redelivery has a new receipt).
        receive_count: how many times the message has been delivered, this one included.
        group: the ordering group it was sent with, if any.
        attributes: backend-specific extras.
    """

    id: str
    body: str
    receipt: str
    receive_count: int
    group: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Queue(Protocol):
    """An at-least-once message queue with visibility timeouts and a dead-letter queue.

    A message received and not acknowledged within its visibility timeout is delivered
    again; after ``max_receives`` deliveries it moves to the dead-letter queue. Consumers
    must be idempotent.

    Arguments are held to SQS's limits on every backend (so code tested locally behaves the
    same in the cloud): body up to 1 MiB, ``delay_s`` 0-900, ``max_messages`` 1-10,
    ``visibility_s`` 0-43,200, ``wait_s`` 0-20; a value out of range raises
    ``InvalidValueError``. Ordering groups and deduplication hold on the local queue and on
    FIFO SQS queues; a standard SQS queue ignores them, and a FIFO SQS queue refuses
    ``delay_s``. A receipt from an earlier delivery acknowledges or extends nothing locally;
    SQS may still act on it, which is one more reason consumers must be idempotent.
    """

    def send(
        self,
        body: str,
        *,
        delay_s: int = 0,
        group: str | None = None,
        dedup_id: str | None = None,
    ) -> str:
        """Enqueue ``body`` and return the message id.

        Args:
            delay_s: seconds before the message can be received (0-900).
            group: ordering group: messages of one group are delivered in order, none while
                an earlier one of the group is in flight (FIFO SQS may hand several, in order,
                in one batch).
            dedup_id: a second send with the same id within five minutes is dropped
                (FIFO queues), and the first message's id is returned.
        """
        ...

    def receive(self, max_messages: int = 1, *, visibility_s: int = 30, wait_s: float = 0) -> list[Message]:
        """Receive up to ``max_messages`` (1-10), hiding them for ``visibility_s`` seconds.

        Waits up to ``wait_s`` seconds for a first message when none is ready.
        """
        ...

    def ack(self, receipt: str) -> None:
        """Delete the delivered message (idempotent)."""
        ...

    def extend(self, receipt: str, visibility_s: int) -> None:
        """Set the delivered message to become visible again ``visibility_s`` seconds from now.

        A stale or unknown receipt does nothing (the message was acknowledged or redelivered).
        """
        ...


@runtime_checkable
class Invoker(Protocol):
    """Invokes named functions with a JSON payload, like Lambda's Invoke API.

    Handlers have Lambda's signature ``handler(event, context)``; payloads and results are
    JSON values.
    """

    def invoke(self, function: str, payload: Any, *, wait: bool = True) -> Any:
        """Invoke ``function`` with ``payload``.

        Args:
            function: the function's name (or, for local invokers, a ``module:attr`` handler path).
            payload: a JSON value, the handler's ``event``.
            wait: ``True`` waits and returns the handler's result (RequestResponse);
                ``False`` queues the invocation and returns ``None`` at once (Event).

        Raises:
            FunctionNotFoundError: no such function.
            FunctionError: the handler raised; its type and message are kept.
            InvocationTimeoutError: the handler ran past its timeout and was stopped.
            FunctionCrashedError: the handler's process died.
            InvalidValueError: the payload is not JSON or is over Lambda's limits (6 MB
                waiting, 1 MB queued).
            ThrottledError: the backend kept refusing for load.
        """
        ...


@runtime_checkable
class WebhookSender(Protocol):
    """Sends one HTTP request (an automation's webhook or notification) and reports the status.

    Retries are the caller's: one call is one attempt. Redirects are not followed.
    """

    def send(self, method: str, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        """Send the request and return the response's HTTP status code.

        Raises:
            OSError: no answer (the connection failed or broke; ``TimeoutError``, an
                ``OSError``, when no answer came within ``timeout_s``).
            InvalidValueError: the URL or the method cannot be sent at all.
        """
        ...
