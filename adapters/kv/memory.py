"""An in-process key-value store: the reference backend, and the test harness's store."""

from __future__ import annotations

import threading
import time

from overcast.adapters.kv._base import BaseKeyValueStore, Clock, Condition, EncodedOp, QuerySpec
from overcast.adapters.kv._codec import Record
from overcast.core.errors import ConditionFailedError, TransactionConflictError
from overcast.core.ports import INDEXES


class MemoryKeyValueStore(BaseKeyValueStore):
    """A ``KeyValueStore`` in a dict, safe across threads, gone with the process.

    Items are held encoded, exactly as the other backends store them, so values read back
    identical to SQLite's and DynamoDB's and callers cannot mutate stored items by accident.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        self._lock = threading.RLock()
        self._partitions: dict[str, dict[str, Record]] = {}
        # index name -> index partition key -> {(pk, sk)}
        self._indexes: dict[str, dict[str, set[tuple[str, str]]]] = {name: {} for name in INDEXES}

    def _get(self, pk: str, sk: str) -> Record | None:
        return self._partitions.get(pk, {}).get(sk)

    def _put(self, record: Record, condition: Condition, now: float) -> int:
        with self._lock:
            current = self._get(record.pk, record.sk)
            if not condition.holds(current, now):
                raise ConditionFailedError(record.pk, record.sk, condition.describe())
            version = condition.next_version(current.v if current else None)
            self._store(record.with_version(version))
            return version

    def _delete(self, pk: str, sk: str, condition: Condition, now: float) -> bool:
        with self._lock:
            current = self._get(pk, sk)
            if not condition.holds(current, now):
                raise ConditionFailedError(pk, sk, condition.describe())
            self._remove(pk, sk)
            return current is not None and current.alive(now)

    def _query(self, spec: QuerySpec, want: int | None, now: float) -> list[Record]:
        with self._lock:
            if spec.index is None:
                candidates = [r for sk, r in self._partitions.get(spec.pk, {}).items() if spec.matches_sk(sk)]
            else:
                keys = self._indexes[spec.index].get(spec.pk, ())
                candidates = [self._partitions[pk][sk] for pk, sk in keys]
                candidates = [r for r in candidates if spec.matches_sk(r.index_key(spec.index)[1] or "")]
        candidates = [r for r in candidates if r.alive(now)]
        candidates.sort(key=spec.sort_key, reverse=spec.descending)
        start = spec.after_sort_key()
        if start is not None:
            if spec.descending:
                candidates = [r for r in candidates if spec.sort_key(r) < start]
            else:
                candidates = [r for r in candidates if spec.sort_key(r) > start]
        return candidates if want is None else candidates[:want]

    def _transact(self, operations: list[EncodedOp], now: float) -> None:
        with self._lock:
            for index, op in enumerate(operations):
                if not op.condition.holds(self._get(op.pk, op.sk), now):
                    raise TransactionConflictError(op.pk, op.sk, op.condition.describe(), index=index)
            for op in operations:
                if op.kind == "put" and op.record is not None:
                    current = self._get(op.pk, op.sk)
                    self._store(
                        op.record.with_version(op.condition.next_version(current.v if current else None))
                    )
                elif op.kind == "delete":
                    self._remove(op.pk, op.sk)

    def _batch_put(self, records: list[Record]) -> None:
        with self._lock:
            for record in records:
                self._store(record)

    def _store(self, record: Record) -> None:
        self._remove(record.pk, record.sk)
        self._partitions.setdefault(record.pk, {})[record.sk] = record
        for name in INDEXES:
            ipk, _ = record.index_key(name)
            if ipk is not None:
                self._indexes[name].setdefault(ipk, set()).add((record.pk, record.sk))

    def _remove(self, pk: str, sk: str) -> None:
        partition = self._partitions.get(pk)
        old = partition.pop(sk, None) if partition is not None else None
        if old is None:
            return
        if not partition:
            del self._partitions[pk]
        for name in INDEXES:
            ipk, _ = old.index_key(name)
            if ipk is not None:
                members = self._indexes[name][ipk]
                members.discard((pk, sk))
                if not members:
                    del self._indexes[name][ipk]
