"""Locks of SERIALIZABLE transactions on memory, SQLite and DynamoDB (moto's server).

Single-process behaviour runs on a fake clock (the store, the service and its waits share it);
the races run real threads and real processes on the real clock.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import START, FakeClock, as_datetime

from overcast.adapters.factory import open_store
from overcast.core.errors import InvalidKeyError, InvalidValueError, LockLostError, LockTimeoutError
from overcast.core.ports import KeyValueStore
from overcast.core.services import ControlPlane
from overcast.core.services.locks import LOCK_RETENTION_S, Lease, Locks


@pytest.fixture
def locks(store: KeyValueStore, clock: FakeClock) -> Locks:
    # Waiting moves the fake clock: a wait for a lease to end takes no real time.
    return Locks(store, clock=as_datetime(clock), sleep=clock.advance)


# -- one holder at a time -----------------------------------------------------------------------


def test_a_lock_has_one_holder_until_it_is_released(locks: Locks) -> None:
    first = locks.acquire("report-2026", "alice", lease_s=30)
    assert (first.key, first.holder, first.lease_s) == ("report-2026", "alice", 30)
    assert first.expires_at == datetime.fromtimestamp(START + 30, UTC)

    with pytest.raises(LockTimeoutError) as refused:
        locks.acquire("report-2026", "bob", lease_s=30)
    assert refused.value.current_holder == "alice" and refused.value.expires_at == START + 30
    assert locks.read("report-2026") == first

    locks.release(first)
    assert locks.read("report-2026") is None
    second = locks.acquire("report-2026", "bob", lease_s=30)
    assert second.holder == "bob" and second.token > first.token


def test_a_waiting_acquirer_takes_the_lock_when_the_holder_releases_or_the_lease_ends(
    locks: Locks, clock: FakeClock
) -> None:
    held = locks.acquire("k", "alice", lease_s=10)
    with pytest.raises(LockTimeoutError) as timed_out:
        locks.acquire("k", "bob", lease_s=10, wait_s=4)
    assert timed_out.value.waited_s == pytest.approx(4)
    assert clock.now == pytest.approx(START + 4)  # it waited its whole wait, no longer

    taken = locks.acquire("k", "bob", lease_s=10, wait_s=60)
    assert clock.now == pytest.approx(START + 10)  # not a moment before alice's lease ended
    assert taken.holder == "bob" and taken.token > held.token


def test_a_lapsed_lease_is_taken_over_and_its_holder_is_fenced_out(locks: Locks, clock: FakeClock) -> None:
    old = locks.acquire("k", "paused-worker", lease_s=5)
    clock.advance(5)
    new = locks.acquire("k", "fresh-worker", lease_s=5)
    assert new.token > old.token

    for stale_use in (locks.renew, locks.release, locks.check):
        with pytest.raises(LockLostError) as lost:
            stale_use(old)
        assert lost.value.token == old.token and "has taken the lock" in str(lost.value)
    assert locks.read("k") == new  # the stale release left the new holder alone
    assert locks.check(new) == new


def test_fencing_tokens_strictly_increase_across_releases_takeovers_and_forgotten_locks(
    locks: Locks, clock: FakeClock
) -> None:
    tokens = []
    lease = locks.acquire("k", "a", lease_s=5)
    tokens.append(lease.token)
    locks.release(lease)
    lease = locks.acquire("k", "b", lease_s=5)  # after a release
    tokens.append(lease.token)
    clock.advance(5)
    lease = locks.acquire("k", "c", lease_s=5)  # a takeover of a lapsed lease
    tokens.append(lease.token)
    lease = locks.acquire("k", "c", lease_s=5)  # the holder again: the same lease
    assert lease.token == tokens[-1]
    locks.release(lease)
    clock.advance(5 + LOCK_RETENTION_S + 1)  # the idle lock's item has expired from the store
    lease = locks.acquire("k", "d", lease_s=5)
    tokens.append(lease.token)
    assert tokens == sorted(set(tokens)) and len(tokens) == 4


def test_acquiring_again_as_the_holder_renews_the_same_lease(locks: Locks, clock: FakeClock) -> None:
    # An HTTP retry whose first answer was lost must not wait on its own lock.
    first = locks.acquire("k", "alice", lease_s=10)
    clock.advance(4)
    again = locks.acquire("k", "alice", lease_s=10)
    assert again.token == first.token and again.expires_at > first.expires_at
    assert locks.check(first).expires_at == again.expires_at


def test_renewing_keeps_the_lock_past_the_first_lease(locks: Locks, clock: FakeClock) -> None:
    lease = locks.acquire("k", "alice", lease_s=10)
    clock.advance(8)
    renewed = locks.renew(lease)
    assert renewed.token == lease.token and renewed.expires_at == datetime.fromtimestamp(START + 18, UTC)
    clock.advance(8)  # past the first lease's end
    with pytest.raises(LockTimeoutError):
        locks.acquire("k", "bob", lease_s=10)
    longer = locks.renew(renewed, lease_s=100)
    assert longer.lease_s == 100 and longer.expires_at == datetime.fromtimestamp(START + 116, UTC)


def test_a_lapsed_lease_that_no_one_took_over_can_still_be_renewed(locks: Locks, clock: FakeClock) -> None:
    lease = locks.acquire("k", "alice", lease_s=10)
    clock.advance(30)
    assert locks.read("k") is None  # free for the taking …
    assert locks.check(lease).token == lease.token  # … but still alice's until someone takes it
    renewed = locks.renew(lease)
    assert locks.read("k") == renewed


def test_release_is_idempotent_and_a_released_lease_is_dead(locks: Locks) -> None:
    lease = locks.acquire("k", "alice", lease_s=10)
    locks.release(lease)
    locks.release(lease)  # a retried release
    with pytest.raises(LockLostError, match="released"):
        locks.renew(lease)
    with pytest.raises(LockLostError, match="released"):
        locks.check(lease)


def test_a_forged_lease_is_refused(locks: Locks) -> None:
    real = locks.acquire("k", "alice", lease_s=10)
    with pytest.raises(LockLostError):
        locks.release(real.model_copy(update={"holder": "mallory"}))
    with pytest.raises(LockLostError):
        locks.renew(real.model_copy(update={"token": real.token + 1}))
    with pytest.raises(LockLostError, match="no lock"):
        locks.check(real.model_copy(update={"key": "other"}))
    assert locks.read("k") == real


def test_keys_are_taken_verbatim(locks: Locks) -> None:
    names = ["a/b", "a%2Fb", "a b", "TXN#a", "é😀", "a\x00b", "../../etc", "x" * 500]
    leases = [locks.acquire(name, "alice", lease_s=10) for name in names]
    assert [locks.read(name) for name in names] == leases
    assert locks.read("a") is None


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"key": ""}, InvalidKeyError),
        ({"key": "x" * 501}, InvalidKeyError),
        ({"key": 7}, InvalidKeyError),
        ({"key": "\ud800"}, InvalidKeyError),
        ({"holder": ""}, InvalidValueError),
        ({"holder": "h" * 201}, InvalidValueError),
        ({"lease_s": 0}, InvalidValueError),
        ({"lease_s": -1}, InvalidValueError),
        ({"lease_s": float("nan")}, InvalidValueError),
        ({"lease_s": True}, InvalidValueError),
        ({"lease_s": 86_401}, InvalidValueError),
        ({"wait_s": -1}, InvalidValueError),
        ({"poll_s": 0}, InvalidValueError),
    ],
)
def test_bad_arguments_are_refused(locks: Locks, arguments: dict[str, Any], error: type[Exception]) -> None:
    call = {"key": "k", "holder": "alice", "lease_s": 10, **arguments}
    with pytest.raises(error):
        locks.acquire(**call)
    assert locks.read("k") is None


# -- races between threads and processes --------------------------------------------------------


@pytest.fixture
def live_plane(kv_backend: Any) -> Iterator[ControlPlane]:
    """A control plane on the real clock."""
    kv = kv_backend.open()
    yield ControlPlane(kv)
    kv.close()  # type: ignore[attr-defined]


def test_threads_take_turns(live_plane: ControlPlane) -> None:
    store, locks = live_plane.store, live_plane.locks
    store.put({"pk": "C", "sk": "counter", "n": 0})
    inside, most_inside, guard = 0, 0, threading.Lock()
    workers, rounds = 6, 4

    def work(worker: int) -> None:
        nonlocal inside, most_inside
        for _ in range(rounds):
            lease = locks.acquire("counter", f"worker-{worker}", lease_s=60, wait_s=60, poll_s=0.01)
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            item = store.get("C", "counter")
            assert item is not None
            store.put({"pk": "C", "sk": "counter", "n": item["n"] + 1})  # unguarded: the lock is the guard
            with guard:
                inside -= 1
            locks.release(lease)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))
    final = store.get("C", "counter")
    assert final is not None and final["n"] == workers * rounds
    assert most_inside == 1


def serializable_worker(url: str, key: str, holder: str, log: str, barrier: Any, results: Any) -> None:
    """A SERIALIZABLE transaction in its own process: the body runs only without a record."""
    plane = ControlPlane(open_store(url))
    barrier.wait(timeout=60)
    lease = plane.locks.acquire(key, holder, lease_s=30, wait_s=60, poll_s=0.02)
    try:
        record = plane.records.read(key)
        if record is None:  # the body
            with open(log, "a") as file:
                file.write(f"{holder}\n")
            time.sleep(0.2)  # the body's work, long enough for the other process to meet the lock
            committed = plane.records.commit(
                key, {"value": f"computed by {holder}"}, fencing_token=lease.token
            )
            record = committed.record
    finally:
        plane.locks.release(lease)
    results.put((holder, record.data))


def test_two_processes_racing_one_key_run_the_body_once_and_both_see_its_value(
    kv_backend: Any, tmp_path: Path
) -> None:
    if kv_backend.url is None:
        pytest.skip("a memory store lives in one process")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    log = tmp_path / "body.log"
    processes = [
        ctx.Process(
            target=serializable_worker, args=(kv_backend.url, "nightly", name, str(log), barrier, results)
        )
        for name in ("first", "second")
    ]
    for process in processes:
        process.start()
    seen = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    runners = log.read_text().splitlines()
    assert len(runners) == 1
    assert seen == {name: {"value": f"computed by {runners[0]}"} for name in ("first", "second")}


def doomed_holder(url: str, key: str, log: str, leases: Any) -> None:
    """Take the lock, start the body, and hang there until killed."""
    plane = ControlPlane(open_store(url))
    lease = plane.locks.acquire(key, "doomed", lease_s=1.5)
    with open(log, "a") as file:
        file.write("started\n")
    leases.put(lease.model_dump(mode="json"))
    threading.Event().wait()


def test_a_killed_holder_loses_its_lock_after_the_lease(kv_backend: Any, tmp_path: Path) -> None:
    if kv_backend.url is None:
        pytest.skip("a memory store lives in one process")
    ctx = multiprocessing.get_context("spawn")
    leases = ctx.Queue()
    log = tmp_path / "body.log"
    process = ctx.Process(target=doomed_holder, args=(kv_backend.url, "nightly", str(log), leases))
    process.start()
    dead = Lease.model_validate(leases.get(timeout=120))
    process.kill()  # SIGKILL mid-transaction: no release, no cleanup
    process.join(timeout=30)
    assert process.exitcode == -9 and log.read_text() == "started\n"

    plane = ControlPlane(open_store(kv_backend.url))
    survivor = plane.locks.acquire("nightly", "survivor", lease_s=30, wait_s=60, poll_s=0.05)
    assert time.time() >= dead.expires_at.timestamp()  # never handed over while the lease ran
    assert survivor.token > dead.token
    with pytest.raises(LockLostError):
        plane.records.commit("nightly", {"value": "from the dead"}, fencing_token=dead.token)
    assert plane.records.read("nightly") is None
    assert plane.records.commit("nightly", {"value": "rerun"}, fencing_token=survivor.token).written
    plane.locks.release(survivor)
