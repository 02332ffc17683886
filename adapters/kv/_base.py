"""What every key-value backend shares: validation, encoding, cursors and paging.

``BaseKeyValueStore`` implements the public methods of the ``KeyValueStore`` port once; a
backend fills in a few private hooks that move ``Record``s with conditions. This keeps the
backends thin and makes them refuse the same input with the same errors.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from overcast.adapters.kv._codec import Record, check_key, to_item, to_record
from overcast.core.errors import InvalidValueError
from overcast.core.ports import (
    INDEXES,
    MAX_TRANSACTION_ITEMS,
    Check,
    Delete,
    Item,
    Operation,
    Page,
    Put,
)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Condition:
    """A write condition: ``absent`` (no live item), ``version`` (live item at that version), or none."""

    absent: bool = False
    version: int | None = None
    exists: bool = False  # for Check: a live item, any version

    @classmethod
    def of(cls, if_absent: bool, if_version: int | None) -> Condition:
        if if_version is None:  # the common conditions, made once
            return _IF_ABSENT if if_absent else _ALWAYS
        if if_absent:
            raise InvalidValueError("give if_absent or if_version, not both")
        if if_version is not None and (isinstance(if_version, bool) or not isinstance(if_version, int)):
            raise InvalidValueError(f"if_version must be an int, not {if_version!r}")
        return cls(absent=if_absent, version=if_version)

    @property
    def unconditional(self) -> bool:
        return not (self.absent or self.exists or self.version is not None)

    def holds(self, current: Record | None, now: float) -> bool:
        """Say whether the condition holds against the stored record ``current``."""
        live = current is not None and current.alive(now)
        if self.absent:
            return not live
        if self.exists:
            return live
        if self.version is not None:
            return live and current is not None and current.v == self.version
        return True

    def describe(self) -> str:
        if self.absent:
            return "the item must not exist"
        if self.exists:
            return "the item must exist"
        if self.version is not None:
            return f"the item must exist at version {self.version}"
        return "none"

    def next_version(self, current_v: int | None) -> int:
        """The version a put under this condition writes, given the stored version (live or not)."""
        if self.absent:
            return 1
        if self.version is not None:
            return self.version + 1
        return (current_v or 0) + 1


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A validated query: the partition, the sort-key condition, where to start and how many."""

    pk: str
    index: str | None
    prefix: str | None
    low: str | None
    high: str | None
    after: tuple[str, ...] | None  # the cursor's key: (pk, sk) or (pk, sk, index pk, index sk)
    limit: int | None
    descending: bool

    def sort_key(self, record: Record) -> tuple[str, ...]:
        """The order of records within the queried partition (ties in an index by table key)."""
        if self.index is None:
            return (record.sk,)
        return (record.index_key(self.index)[1] or "", record.pk, record.sk)

    def cursor_key(self, record: Record) -> tuple[str, ...]:
        if self.index is None:
            return (record.pk, record.sk)
        ipk, isk = record.index_key(self.index)
        return (record.pk, record.sk, ipk or "", isk or "")

    def after_sort_key(self) -> tuple[str, ...] | None:
        """The cursor's position in ``sort_key`` terms."""
        if self.after is None:
            return None
        if self.index is None:
            return (self.after[1],)
        return (self.after[3], self.after[0], self.after[1])

    def matches_sk(self, sk: str) -> bool:
        if self.prefix is not None:
            return sk.startswith(self.prefix)
        return (self.low is None or sk >= self.low) and (self.high is None or sk <= self.high)


_IF_ABSENT = Condition(absent=True)
_ALWAYS = Condition()


class EncodedOp(NamedTuple):
    """A transaction operation with its record encoded and its condition resolved."""

    kind: str  # "put" | "delete" | "check"
    pk: str
    sk: str
    condition: Condition
    record: Record | None = None


class BaseKeyValueStore(ABC):
    """The ``KeyValueStore`` port's public methods over a backend's record hooks."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock

    # -- the port ---------------------------------------------------------------------------

    def get(self, pk: str, sk: str) -> Item | None:
        """Return the live item at (pk, sk), or ``None``."""
        check_key(pk, sk)
        record = self._get(pk, sk)
        if record is None or not record.alive(self._clock()):
            return None
        return to_item(record)

    def put(self, item: Item, *, if_absent: bool = False, if_version: int | None = None) -> int:
        """Write the whole item and return its new version (see ``KeyValueStore.put``)."""
        condition = Condition.of(if_absent, if_version)
        return self._put(to_record(item), condition, self._clock())

    def delete(self, pk: str, sk: str, *, if_version: int | None = None) -> bool:
        """Delete the item; return whether a live item was there (see ``KeyValueStore.delete``)."""
        check_key(pk, sk)
        return self._delete(pk, sk, Condition.of(False, if_version), self._clock())

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
        """Return one page of a partition's live items (see ``KeyValueStore.query``)."""
        spec = self._query_spec(pk, sk_prefix, sk_range, index, limit, cursor, descending)
        want = None if spec.limit is None else spec.limit + 1
        records = self._query(spec, want, self._clock())
        if spec.limit is not None and len(records) > spec.limit:
            records = records[: spec.limit]
            next_cursor = _encode_cursor(spec, spec.cursor_key(records[-1]))
        else:
            next_cursor = None
        return Page([to_item(r) for r in records], next_cursor)

    def transact(self, operations: Sequence[Operation]) -> None:
        """Apply up to 100 operations on distinct items, all or nothing (see ``KeyValueStore.transact``)."""
        if not operations:
            return
        if len(operations) > MAX_TRANSACTION_ITEMS:
            raise InvalidValueError(
                f"a transaction holds at most {MAX_TRANSACTION_ITEMS} operations, not {len(operations)}"
            )
        encoded: list[EncodedOp] = []
        seen: set[tuple[str, str]] = set()
        for op in operations:
            enc = _encode_op(op)
            if (enc.pk, enc.sk) in seen:
                raise InvalidValueError(
                    f"a transaction may name each item once; ({enc.pk!r}, {enc.sk!r}) is repeated"
                )
            seen.add((enc.pk, enc.sk))
            encoded.append(enc)
        self._transact(encoded, self._clock())

    def batch_put(self, items: Sequence[Item]) -> None:
        """Write many items unconditionally with version 1 (see ``KeyValueStore.batch_put``)."""
        # The last write of a key wins, as it would with sequential puts; backends such as
        # DynamoDB refuse a batch that names one key twice.
        records: dict[tuple[str, str], Record] = {}
        for item in items:
            record = to_record(item, 1)
            records[(record.pk, record.sk)] = record
        if records:
            self._batch_put(list(records.values()))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads; the store is unusable afterwards."""

    def __enter__(self) -> BaseKeyValueStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hooks --------------------------------------------------------------------------------

    @abstractmethod
    def _get(self, pk: str, sk: str) -> Record | None:
        """Return the stored record, live or expired, or ``None``."""

    @abstractmethod
    def _put(self, record: Record, condition: Condition, now: float) -> int:
        """Store ``record`` under ``condition`` with ``condition.next_version``; return that version."""

    @abstractmethod
    def _delete(self, pk: str, sk: str, condition: Condition, now: float) -> bool:
        """Delete under ``condition``; return whether a live record was there."""

    @abstractmethod
    def _query(self, spec: QuerySpec, want: int | None, now: float) -> list[Record]:
        """Return up to ``want`` live records of the query in order, starting after ``spec.after``."""

    @abstractmethod
    def _transact(self, operations: list[EncodedOp], now: float) -> None:
        """Apply the operations all or nothing; raise ``TransactionConflictError`` naming the failed one."""

    @abstractmethod
    def _batch_put(self, records: list[Record]) -> None:
        """Write the records (distinct keys, version 1) unconditionally."""

    # -- helpers ------------------------------------------------------------------------------

    def _query_spec(
        self,
        pk: str,
        sk_prefix: str | None,
        sk_range: tuple[str | None, str | None] | None,
        index: str | None,
        limit: int | None,
        cursor: str | None,
        descending: bool,
    ) -> QuerySpec:
        if not isinstance(pk, str) or not pk:
            raise InvalidValueError("query needs a non-empty partition key")
        if index is not None and index not in INDEXES:
            raise InvalidValueError(f"unknown index {index!r}; the store has {sorted(INDEXES)}")
        if sk_prefix is not None and sk_range is not None:
            raise InvalidValueError("give sk_prefix or sk_range, not both")
        if sk_prefix is not None and (not isinstance(sk_prefix, str) or not sk_prefix):
            raise InvalidValueError("sk_prefix must be a non-empty string")
        low = high = None
        if sk_range is not None:
            if not isinstance(sk_range, tuple | list) or len(sk_range) != 2:
                raise InvalidValueError("sk_range must be a (low, high) pair")
            low, high = sk_range
            for bound in (low, high):
                if bound is not None and (not isinstance(bound, str) or not bound):
                    raise InvalidValueError("sk_range bounds must be non-empty strings or None")
            if low is not None and high is not None and low > high:
                raise InvalidValueError(f"sk_range low {low!r} is above high {high!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidValueError(f"limit must be a positive int, not {limit!r}")
        after = _decode_cursor(cursor, pk, index) if cursor is not None else None
        return QuerySpec(pk, index, sk_prefix, low, high, after, limit, bool(descending))


def _encode_op(op: Operation) -> EncodedOp:
    if isinstance(op, Put):
        record = to_record(op.item)
        return EncodedOp("put", record.pk, record.sk, Condition.of(op.if_absent, op.if_version), record)
    if isinstance(op, Delete):
        check_key(op.pk, op.sk)
        return EncodedOp("delete", op.pk, op.sk, Condition.of(False, op.if_version))
    if isinstance(op, Check):
        check_key(op.pk, op.sk)
        given = [op.version is not None, op.exists is not None]
        if sum(given) != 1:
            raise InvalidValueError("a Check needs exactly one of version= or exists=")
        if op.version is not None:
            condition = Condition.of(False, op.version)
        else:
            condition = Condition(absent=not op.exists, exists=bool(op.exists))
        return EncodedOp("check", op.pk, op.sk, condition)
    raise InvalidValueError(f"a transaction takes Put, Delete and Check operations, not {type(op).__name__}")


def _encode_cursor(spec: QuerySpec, key: tuple[str, ...]) -> str:
    payload = json.dumps({"p": spec.pk, "i": spec.index, "k": list(key)}, ensure_ascii=False)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, pk: str, index: str | None) -> tuple[str, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        key = tuple(payload["k"])
        ok = payload["p"] == pk and payload["i"] == index and len(key) == (2 if index is None else 4)
        ok = ok and all(isinstance(part, str) for part in key)
    except (binascii.Error, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise InvalidValueError("the cursor is invalid or belongs to another query")
    return key


def prefix_successor(prefix: str) -> str | None:
    """Return the least string above every string that starts with ``prefix`` (``None``: no bound).

    Strings starting with ``prefix`` are exactly those in ``[prefix, successor)`` in code-point
    order, which is also UTF-8 byte order (SQLite's BINARY collation and DynamoDB's).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # skip the surrogate block, which UTF-8 cannot hold
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
