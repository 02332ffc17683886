"""Helpers for tests: waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest


def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


class FakeClock:
    """A clock the test moves by hand (epoch seconds)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def increment_counter(store: Any, worker: int, rounds: int) -> list[int]:
    """Increment the counter item ``("C", "counter")`` ``rounds`` times under version guards.

    Each attempt reads the item and writes it back with ``if_version``; a lost race re-reads.
    Returns the versions this worker won (the version it read before each successful write).
    """
    from overcast.core.errors import ConditionFailedError

    wins = []
    for _ in range(rounds):
        while True:
            item = store.get("C", "counter")
            assert item is not None
            try:
                store.put({**item, "n": item["n"] + 1, "by": [*item["by"], worker]}, if_version=item["v"])
            except ConditionFailedError:
                continue
            wins.append(item["v"])
            break
    return wins


def kv_increment_worker(url: str, worker: int, rounds: int) -> list[int]:
    """``increment_counter`` in a child process, on the store that ``url`` names."""
    from overcast.adapters.factory import open_store

    return increment_counter(open_store(url), worker, rounds)


START = 1_800_000_000.0
"""Where the control-plane suites' fake clocks start: 2027-01-15T08:00:00Z."""


def as_datetime(clock: Callable[[], float]) -> Callable[[], datetime]:
    """A clock of datetimes (UTC) reading an epoch-seconds clock such as ``FakeClock``."""
    return lambda: datetime.fromtimestamp(clock(), UTC)
