"""``concurrency`` and ``rate_limit`` as a Prefect 3 user calls them, over the in-process client and HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from support import wait_until

from overcast import flow, task
from overcast.concurrency import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencyLimitExistsError,
    NotARateLimitError,
    aconcurrency,
    arate_limit,
    concurrency,
    rate_limit,
)
from overcast.core.concurrency import (
    ConcurrencyLimitCreate,
    ConcurrencyLimitFilter,
    ConcurrencyLimitUpdate,
    SlotRequest,
)
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.testing import Harness


def create(harness: Harness, name: str, limit: int, **settings: Any) -> None:
    harness.runtime.client.create_concurrency_limit(
        ConcurrencyLimitCreate(name=name, limit=limit, **settings)
    )


def occupied(harness: Harness, name: str) -> int:
    return harness.plane.concurrency_limits.get(name).active_slots


def refused_since_granted(harness: Harness, name: str) -> bool:
    """Whether a taker was turned away since the limit last granted slots."""
    return harness.plane.concurrency_limits.get(name).denied_slots > 0


def assert_no_overlap(events: list[tuple[str, Any]]) -> None:
    """Each enter is followed by its own exit before anyone else enters."""
    assert len(events) % 2 == 0
    for enter, leave in zip(events[::2], events[1::2], strict=True):
        assert (enter[0], leave) == ("enter", ("exit", enter[1])), events


def test_two_threads_holding_a_limit_of_one_never_overlap(harness: Harness) -> None:
    create(harness, "db", 1)
    events: list[tuple[str, Any]] = []
    guard = threading.Lock()
    errors: list[BaseException] = []
    done: set[str] = set()

    def worker(name: str, other: str) -> None:
        try:
            for _ in range(3):
                with concurrency("db", occupy=1, timeout_seconds=60):
                    with guard:
                        events.append(("enter", name))
                    # hold the slot until the other thread has been turned away (or has finished)
                    wait_until(lambda: refused_since_granted(harness, "db") or other in done)
                    with guard:
                        events.append(("exit", name))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.add(name)

    threads = [threading.Thread(target=worker, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert len(events) == 12
    assert_no_overlap(events)
    assert occupied(harness, "db") == 0


def test_the_slots_are_given_back_when_the_block_raises(harness: Harness) -> None:
    create(harness, "db", 1)
    with pytest.raises(ValueError, match="boom"), concurrency("db"):
        assert occupied(harness, "db") == 1
        raise ValueError("boom")
    assert occupied(harness, "db") == 0


def test_a_wait_past_the_timeout_raises_a_timeout_error_naming_the_limits(harness: Harness) -> None:
    create(harness, "db", 1)
    create(harness, "cache", 5)
    holder = harness.plane.concurrency_limits.acquire(SlotRequest(names=["db"]))
    ran = False
    with (
        pytest.raises(AcquireConcurrencySlotTimeoutError) as timed_out,
        concurrency(["cache", "db"], timeout_seconds=0.3),
    ):
        ran = True
    assert not ran and isinstance(timed_out.value, TimeoutError)
    assert "['cache', 'db']" in str(timed_out.value) and "limit 'db' has 0 of 1 slots free" in str(
        timed_out.value
    )
    assert occupied(harness, "cache") == 0  # all or nothing: cache gave no slot either

    assert holder.lease_id is not None
    harness.plane.concurrency_limits.release(holder.lease_id)
    with concurrency(["cache", "db"], timeout_seconds=0):
        assert (occupied(harness, "cache"), occupied(harness, "db")) == (1, 1)


def test_a_missing_limit_lets_the_block_run_unless_strict(harness: Harness) -> None:
    with concurrency("nope"):
        pass
    rate_limit("nope")
    with pytest.raises(NotFoundError, match="nope"), concurrency("nope", strict=True):
        pytest.fail("the block ran without its limit")
    with pytest.raises(NotFoundError, match="nope"):
        rate_limit("nope", strict=True)


def test_an_inactive_limit_lets_everyone_in(harness: Harness) -> None:
    create(harness, "db", 1, active=False)
    with concurrency("db", timeout_seconds=0), concurrency("db", timeout_seconds=0):
        assert occupied(harness, "db") == 0


def test_rate_limit_lets_a_burst_through_then_waits_for_slots_to_decay(harness: Harness) -> None:
    create(harness, "api", 2, slot_decay_per_second=1)  # a slot frees every second
    rate_limit("api", occupy=2, timeout_seconds=0)
    assert occupied(harness, "api") == 2
    with pytest.raises(AcquireConcurrencySlotTimeoutError, match="api"):
        rate_limit("api", timeout_seconds=0)
    wait_until(lambda: occupied(harness, "api") < 2)  # decay, not a release, frees it
    rate_limit("api", timeout_seconds=0)
    rate_limit("api", timeout_seconds=10)  # waits for the next slot to decay
    assert occupied(harness, "api") == 2


def test_rate_limit_refuses_limits_that_do_not_decay(harness: Harness) -> None:
    create(harness, "db", 5)
    with pytest.raises(NotARateLimitError, match="no slot decay"):
        rate_limit("db")
    assert occupied(harness, "db") == 0


def test_a_block_that_outlives_its_lease_keeps_its_slot(harness: Harness) -> None:
    create(harness, "db", 1)
    with concurrency("db", lease_duration=1.0):
        entered = time.monotonic()
        wait_until(lambda: time.monotonic() > entered + 2.5)  # two and a half leases
        other = harness.plane.concurrency_limits.acquire(SlotRequest(names=["db"]))
        assert other.status == "WAIT"  # renewed in the background: never lapsed
    assert occupied(harness, "db") == 0


@task
def guarded_write(n: int) -> int:
    with concurrency("db"):
        return n * 10


@task
def throttled_call(n: int) -> int:
    rate_limit("api")
    return n


@flow
def writes(count: int) -> list[int]:
    futures = guarded_write.map(range(count))
    return [f.result() for f in futures] + [throttled_call(i) for i in range(count)]


def test_concurrency_and_rate_limit_work_inside_flows_and_tasks(harness: Harness) -> None:
    create(harness, "db", 1)
    create(harness, "api", 10, slot_decay_per_second=0.001)
    assert writes(3) == [0, 10, 20, 0, 1, 2]
    assert occupied(harness, "db") == 0 and occupied(harness, "api") == 3
    [run] = harness.flow_runs()
    assert run.state.is_completed()


def test_aconcurrency_and_arate_limit_in_async_code(harness: Harness) -> None:
    create(harness, "db", 1)
    create(harness, "api", 1, slot_decay_per_second=0.001)
    events: list[tuple[str, Any]] = []

    done: set[str] = set()

    async def turned_away(other: str) -> None:
        deadline = time.monotonic() + 10
        while not (refused_since_granted(harness, "db") or other in done):
            assert time.monotonic() < deadline, "the other task never asked"
            await asyncio.sleep(0.01)  # the event loop keeps running while we hold the slot

    async def worker(name: str, other: str) -> None:
        for _ in range(2):
            async with aconcurrency("db", timeout_seconds=60):
                events.append(("enter", name))
                await turned_away(other)
                events.append(("exit", name))
        done.add(name)

    async def main() -> None:
        await asyncio.gather(worker("a", "b"), worker("b", "a"))
        await arate_limit("api")
        with pytest.raises(AcquireConcurrencySlotTimeoutError):
            await arate_limit("api", timeout_seconds=0)

    asyncio.run(main())
    assert len(events) == 8
    assert_no_overlap(events)
    assert occupied(harness, "db") == 0 and occupied(harness, "api") == 1


def test_the_client_manages_limits(harness: Harness) -> None:
    client = harness.runtime.client
    create(harness, "db", 2)
    with pytest.raises(ConcurrencyLimitExistsError, match="already exists"):
        create(harness, "db", 3)
    create(harness, "tag:etl", 1)
    assert [x.name for x in client.filter_concurrency_limits(ConcurrencyLimitFilter()).items] == [
        "db",
        "tag:etl",
    ]
    changed = client.update_concurrency_limit("db", ConcurrencyLimitUpdate(limit=4, slot_decay_per_second=1))
    assert (changed.limit, changed.slot_decay_per_second) == (4, 1.0)
    assert client.read_concurrency_limit("db") == changed
    assert client.delete_concurrency_limit("db") is True
    assert client.delete_concurrency_limit("db") is False
    with pytest.raises(NotFoundError):
        client.read_concurrency_limit("db")
    with pytest.raises(InvalidValueError):
        client.read_concurrency_limit("..")
    with pytest.raises(ValueError, match="concurrency limit name"), concurrency("a/b"):
        pytest.fail("ran with an invalid name")
