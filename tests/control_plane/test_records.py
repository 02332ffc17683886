"""Transaction records (committed cache entries) on memory, SQLite and DynamoDB (moto's server)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier
from typing import Any

import pytest
from support import START, FakeClock

from overcast.core import keys
from overcast.core.errors import InvalidKeyError, InvalidValueError, ItemTooLargeError, LockLostError
from overcast.core.ports import KeyValueStore
from overcast.core.services import ControlPlane, Records

NOW = datetime.fromtimestamp(START, UTC)
RESULT = {
    "storage_key": "results/3f2a",
    "serializer": "pickle",
    "storage_url": "s3://bucket/results/3f2a",
    "task_run_id": "0190c0de-0000-7000-8000-000000000001",
    "inline": {"rows": [1, 2.5, None, True, "é😀"], "nested": {"empty": {}, "list": []}},
}


@pytest.fixture
def plane(store: KeyValueStore, clock: FakeClock) -> ControlPlane:
    return ControlPlane(store, clock=lambda: datetime.fromtimestamp(clock(), UTC))


@pytest.fixture
def records(plane: ControlPlane) -> Records:
    return plane.records


def test_a_record_commits_once(records: Records, clock: FakeClock) -> None:
    assert records.read("task-abc") is None
    first = records.commit("task-abc", RESULT)
    assert first.written
    assert (first.record.key, first.record.data, first.record.created, first.record.expires_at) == (
        "task-abc",
        RESULT,
        NOW,
        None,
    )
    clock.advance(60)
    second = records.commit("task-abc", {"storage_key": "results/other"})
    assert not second.written and second.record == first.record  # committed work is never redone
    assert records.read("task-abc") == first.record


def test_overwrite_replaces_a_live_record(records: Records, clock: FakeClock) -> None:
    records.commit("task-abc", RESULT)
    clock.advance(60)
    refreshed = records.commit("task-abc", {"storage_key": "results/new"}, overwrite=True)
    assert refreshed.written and refreshed.record.created == NOW + timedelta(seconds=60)
    assert records.read("task-abc") == refreshed.record


def test_a_record_counts_until_its_expiry_and_not_after(records: Records, clock: FakeClock) -> None:
    expiry = NOW + timedelta(seconds=90.5)  # not a whole second: the store's ttl is
    committed = records.commit("task-abc", RESULT, expires_at=expiry)
    assert committed.record.expires_at == expiry
    clock.advance(90.4)
    assert records.read("task-abc") == committed.record
    assert not records.commit("task-abc", {"storage_key": "results/new"}).written
    clock.advance(0.1)
    assert records.read("task-abc") is None
    recomputed = records.commit("task-abc", {"storage_key": "results/new"})
    assert recomputed.written and records.read("task-abc") == recomputed.record
    assert recomputed.record.expires_at is None


def test_a_naive_expiry_is_taken_as_utc(records: Records, clock: FakeClock) -> None:
    naive = (NOW + timedelta(seconds=30)).replace(tzinfo=None)
    committed = records.commit("k", RESULT, expires_at=naive)
    assert committed.record.expires_at == NOW + timedelta(seconds=30)
    clock.advance(30)
    assert records.read("k") is None


def test_delete_invalidates_a_record(records: Records) -> None:
    records.commit("task-abc", RESULT)
    assert records.delete("task-abc") is True
    assert records.read("task-abc") is None
    assert records.delete("task-abc") is False
    assert records.commit("task-abc", {"storage_key": "again"}).written


def test_a_commit_under_a_lock_needs_the_current_fencing_token(plane: ControlPlane, clock: FakeClock) -> None:
    paused = plane.locks.acquire("task-abc", "paused-worker", lease_s=10)
    clock.advance(10)
    current = plane.locks.acquire("task-abc", "fresh-worker", lease_s=10)

    with pytest.raises(LockLostError):
        plane.records.commit("task-abc", {"by": "paused"}, fencing_token=paused.token)
    with pytest.raises(LockLostError):
        plane.records.commit("task-abc", {"by": "paused"}, fencing_token=paused.token, overwrite=True)
    assert plane.records.read("task-abc") is None

    committed = plane.records.commit("task-abc", {"by": "fresh"}, fencing_token=current.token)
    assert committed.written and plane.records.read("task-abc") == committed.record
    again = plane.records.commit("task-abc", {"by": "fresh, twice"}, fencing_token=current.token)
    assert not again.written and again.record == committed.record

    plane.locks.release(current)
    with pytest.raises(LockLostError, match="released"):
        plane.records.commit("task-abc", {"by": "late"}, fencing_token=current.token, overwrite=True)
    with pytest.raises(LockLostError, match="no lock"):
        plane.records.commit("never-locked", {"by": "anyone"}, fencing_token=1)


class _RenewsBeforeTheFirstTransaction:
    """A store through which a lease renewal lands between a commit's fence read and its write."""

    def __init__(self, store: KeyValueStore, renew: Callable[[], object]) -> None:
        self._store, self._renew = store, renew
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def transact(self, operations: Any) -> None:
        self.transactions += 1
        if self.transactions == 1:
            self._renew()
        self._store.transact(operations)


def test_a_renewal_racing_a_fenced_commit_does_not_lose_it(plane: ControlPlane, store: KeyValueStore) -> None:
    lease = plane.locks.acquire("task-abc", "worker", lease_s=30)
    racing = _RenewsBeforeTheFirstTransaction(store, lambda: plane.locks.renew(lease))
    records = Records(racing, plane.locks, clock=lambda: NOW)  # type: ignore[arg-type]
    committed = records.commit("task-abc", RESULT, fencing_token=lease.token)
    assert committed.written and racing.transactions == 2  # the first attempt met the renewal
    assert plane.records.read("task-abc") == committed.record


def test_records_and_locks_of_one_key_are_independent(plane: ControlPlane) -> None:
    lease = plane.locks.acquire("k", "alice", lease_s=10)
    plane.records.commit("k", RESULT, fencing_token=lease.token)
    plane.locks.release(lease)
    assert plane.records.read("k") is not None and plane.locks.read("k") is None
    plane.records.delete("k")
    assert plane.locks.acquire("k", "bob", lease_s=10).token > lease.token


def test_keys_are_taken_verbatim(records: Records) -> None:
    names = ["a/b", "a%2Fb", "a b", "RECORD", "TXN#a", "é😀", "a\x00b", "../../etc", "x" * 500]
    for number, name in enumerate(names):
        records.commit(name, {"n": number})
    assert [records.read(name).data for name in names] == [{"n": n} for n in range(len(names))]  # type: ignore[union-attr]
    assert records.read("a") is None


@pytest.mark.parametrize("key", ["", "x" * 501, None, 7, "\udc80"])
def test_malformed_keys_are_refused(records: Records, key: Any) -> None:
    with pytest.raises(InvalidKeyError):
        records.commit(key, RESULT)
    with pytest.raises(InvalidKeyError):
        records.read(key)
    with pytest.raises(InvalidKeyError):
        records.delete(key)


@pytest.mark.parametrize(
    "data",
    [["not", "an", "object"], "text", {"raw": b"bytes"}, {"s": {1, 2}}, {"t": (1, 2)}, {"k": {1: "int key"}}],
)
def test_data_must_be_a_json_object(records: Records, data: Any) -> None:
    with pytest.raises(InvalidValueError):
        records.commit("k", data)
    assert records.read("k") is None


@pytest.mark.parametrize(
    "data",
    [
        {"int": 2**63 + 1, "negative": -(10**30)},  # ids and hashes as numbers, beyond 64 bits
        {"float": 0.1, "tiny": 1e-300, "zero": -0.0, "unicode": "\x00 é 😀", "empty": ""},
        {"deep": [[[{"a": [None, True, False]}]]]},
    ],
)
def test_data_reads_back_exactly_as_committed(records: Records, data: dict[str, Any]) -> None:
    records.commit("k", data)
    stored = records.read("k")
    assert stored is not None
    assert stored.data == data and repr(stored.data) == repr(data)  # same types too: 1 != 1.0 here


def test_a_record_over_the_item_limit_is_refused(records: Records) -> None:
    with pytest.raises(ItemTooLargeError):
        records.commit("k", {"inline": "x" * 410_000})
    assert records.read("k") is None


def test_a_record_is_stored_under_its_documented_key(records: Records, store: KeyValueStore) -> None:
    records.commit("task-abc", RESULT, expires_at=NOW + timedelta(seconds=10))
    item = store.get(*keys.transaction_record("task-abc"))
    assert item is not None and item["pk"] == "TXN#task-abc" and item["sk"] == "RECORD"
    assert item["data"] == RESULT and item["ttl"] == int(START) + 10


def test_threads_racing_one_commit_agree_on_one_record(store: KeyValueStore, plane: ControlPlane) -> None:
    contenders = 8
    barrier = Barrier(contenders)

    def commit(number: int) -> Any:
        barrier.wait()
        return plane.records.commit("race", {"by": number})

    with ThreadPoolExecutor(contenders) as pool:
        outcomes = list(pool.map(commit, range(contenders)))
    assert sum(outcome.written for outcome in outcomes) == 1
    assert len({outcome.record.data["by"] for outcome in outcomes}) == 1
