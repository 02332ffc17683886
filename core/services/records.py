"""Transaction records: what a committed transaction (a cached task) left, stored once per key.

One item per key, ``TXN#<key>`` / ``RECORD`` (see ``keys``)::

    data        the record's body exactly as committed: a JSON object the SDK fills (a result
                reference or a small inlined value, the serializer, the storage URL, the task
                run's id …); the control plane never looks inside
    created     when it was committed (ISO 8601, UTC)
    expires_at  when it stops counting (ISO 8601, UTC), or ``null`` for never
    ttl         ``expires_at`` rounded up to a second, so the store drops it afterwards

A record commits once: a second commit of a live record writes nothing and returns the first
(committed work is never redone), unless it asks to ``overwrite`` (``refresh_cache``). An
expired record counts as absent. A commit may require a lock's fencing token (SERIALIZABLE
transactions): then the record is written in one store transaction with a check that the
token is still the lock's current one, so a holder that lost its lock cannot commit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter, ValidationError

from overcast.core import keys
from overcast.core.errors import ConditionFailedError, InvalidValueError
from overcast.core.ports import Item, KeyValueStore, Operation, Put
from overcast.core.services.locks import Locks, TransactionKey
from overcast.core.states import utcnow
from overcast.core.types import UtcDateTime

MAX_ATTEMPTS = 25
_JSON_OBJECT: TypeAdapter[dict[str, JsonValue]] = TypeAdapter(dict[str, JsonValue])


class TransactionRecord(BaseModel):
    """A committed transaction record.

    Attributes:
        key: the transaction (cache) key.
        data: the body, as committed (opaque to the control plane).
        created: when it was committed.
        expires_at: when it stops counting (``None``: never).
    """

    model_config = ConfigDict(frozen=True)

    key: TransactionKey
    data: dict[str, JsonValue]
    created: UtcDateTime
    expires_at: UtcDateTime | None = None


class CommitResult(BaseModel):
    """What a commit did.

    Attributes:
        written: whether this commit wrote the record (``False``: a live record was there and
            ``overwrite`` was not asked, so nothing changed).
        record: the record now stored: this commit's, or the one that was already there.
    """

    written: bool
    record: TransactionRecord


class Records:
    """Reads, commits and deletes transaction records.

    Args:
        store: the key-value store.
        locks: the locks whose fencing tokens a commit may require.
        clock: the current time (injected for tests).
    """

    def __init__(self, store: KeyValueStore, locks: Locks, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._locks = locks
        self._clock = clock

    def read(self, key: str) -> TransactionRecord | None:
        """Return the record committed under ``key``, or ``None`` when there is none or it expired.

        Raises:
            InvalidKeyError: a malformed key.
        """
        pk, sk = keys.transaction_record(key)
        item = self._store.get(pk, sk)
        if item is None:
            return None
        record = _record(key, item)
        return None if _expired(record, self._clock()) else record

    def commit(
        self,
        key: str,
        data: Mapping[str, Any],
        *,
        expires_at: datetime | None = None,
        overwrite: bool = False,
        fencing_token: int | None = None,
    ) -> CommitResult:
        """Commit ``data`` as the record of ``key``, once.

        Args:
            key: the transaction (cache) key, 1-500 characters.
            data: the record's body: a JSON object (stored as given; up to the store's item
                size, about 390 KB: keep large results in the blob store and reference them).
            expires_at: when the record stops counting (``cache_expiration``); ``None``: never.
                A naive datetime is taken as UTC.
            overwrite: replace a live record (``refresh_cache``); without it a live record is
                kept and returned.
            fencing_token: write only while this is the current token of the lock on ``key``.

        Returns:
            Whether this commit wrote, and the record now stored.

        Raises:
            LockLostError: ``fencing_token`` is not the lock's current token (nothing written).
            InvalidKeyError: a malformed key.
            InvalidValueError: ``data`` is not a JSON object, or is too large for one item.
        """
        pk, sk = keys.transaction_record(key)
        body = _json_object(data)
        expiry = _utc(expires_at) if expires_at is not None else None
        for _ in range(MAX_ATTEMPTS):
            now = self._clock()
            record = TransactionRecord.model_construct(key=key, data=body, created=now, expires_at=expiry)
            item = _item(pk, sk, record)
            current: Item | None = None
            if not overwrite:
                current = self._store.get(pk, sk)
                if current is not None:
                    existing = _record(key, item=current)
                    if not _expired(existing, now):
                        return CommitResult(written=False, record=existing)
            if current is not None:  # expired, but not yet gone from the store
                put = Put(item, if_version=current["v"])
            else:  # absent, or overwrite
                put = Put(item, if_absent=not overwrite)
            operations: list[Operation] = [put]
            if fencing_token is not None:
                operations.insert(0, self._locks.fence(key, fencing_token))  # raises LockLostError
            try:
                if len(operations) == 1:
                    self._store.put(put.item, if_absent=put.if_absent, if_version=put.if_version)
                else:
                    self._store.transact(operations)
            except ConditionFailedError:
                continue  # the record or the lock changed under us: look again
            return CommitResult(written=True, record=record)
        raise ConditionFailedError(pk, sk, f"the record kept changing; gave up after {MAX_ATTEMPTS} tries")

    def delete(self, key: str) -> bool:
        """Delete the record of ``key`` (to invalidate a cache entry); return whether one was there.

        Raises:
            InvalidKeyError: a malformed key.
        """
        pk, sk = keys.transaction_record(key)
        return self._store.delete(pk, sk)


def _item(pk: str, sk: str, record: TransactionRecord) -> Item:
    item: Item = {
        "pk": pk,
        "sk": sk,
        "data": record.data,
        "created": record.created.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at is not None else None,
    }
    if record.expires_at is not None:
        item["ttl"] = math.ceil(record.expires_at.timestamp())
    return item


def _record(key: str, item: Item) -> TransactionRecord:
    expires = item.get("expires_at")
    return TransactionRecord.model_construct(
        key=key,
        data=item["data"],
        created=datetime.fromisoformat(item["created"]),
        expires_at=datetime.fromisoformat(expires) if expires is not None else None,
    )


def _expired(record: TransactionRecord, now: datetime) -> bool:
    return record.expires_at is not None and record.expires_at <= now


def _utc(moment: datetime) -> datetime:
    if not isinstance(moment, datetime):
        raise InvalidValueError(f"expires_at must be a datetime, not {type(moment).__name__}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json_object(data: Mapping[str, Any]) -> dict[str, JsonValue]:
    if not isinstance(data, Mapping):
        raise InvalidValueError(f"a record's data must be a JSON object, not {type(data).__name__}")
    try:
        return _JSON_OBJECT.validate_python(dict(data), strict=True)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise InvalidValueError(f"a record's data must be JSON: at {where}: {problem['msg']}") from exc
