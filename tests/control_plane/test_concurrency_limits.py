"""Global concurrency limits and rate limits on memory, SQLite and DynamoDB (moto's server).

Single-process behaviour runs on a fake clock (the store and the service share it, so leases
lapse and slots decay when the test moves it); the race runs real threads on the real clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from support import FakeClock, as_datetime

from overcast.core.concurrency import (
    ConcurrencyLimitCreate,
    ConcurrencyLimitExistsError,
    ConcurrencyLimitFilter,
    ConcurrencyLimitUpdate,
    NotARateLimitError,
    SlotAcquisition,
    SlotRequest,
)
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.ports import KeyValueStore
from overcast.core.services import ControlPlane
from overcast.core.services.concurrency import BLOCKED_RETRY_S, ConcurrencyLimits


@pytest.fixture
def limits(store: KeyValueStore, clock: FakeClock) -> ConcurrencyLimits:
    return ConcurrencyLimits(store, clock=as_datetime(clock))


def create(limits: ConcurrencyLimits, name: str, limit: int, **settings: Any) -> None:
    limits.create(ConcurrencyLimitCreate(name=name, limit=limit, **settings))


def take(limits: ConcurrencyLimits, *names: str, slots: int = 1, **request: Any) -> SlotAcquisition:
    return limits.acquire(SlotRequest(names=list(names), slots=slots, **request))


def occupied(limits: ConcurrencyLimits, name: str) -> int:
    return limits.get(name).active_slots


# -- concurrency limits ---------------------------------------------------------------------------


def test_a_limit_admits_its_slots_and_the_next_taker_waits_until_one_is_given_back(
    limits: ConcurrencyLimits,
) -> None:
    create(limits, "db", 2)
    first, second = take(limits, "db"), take(limits, "db")
    assert first.acquired and second.acquired and first.lease_id != second.lease_id
    assert first.limits == ["db"] and first.lease_id is not None

    third = take(limits, "db")
    assert third.status == "WAIT" and third.lease_id is None and third.blocked_by == ["db"]
    assert third.reason == "limit 'db' has 0 of 2 slots free, 1 asked"
    assert third.retry_after_seconds is not None and third.retry_after_seconds > 0
    read = limits.get("db")
    assert (read.active_slots, read.denied_slots) == (2, 1)

    assert limits.release(first.lease_id) is True
    assert limits.release(first.lease_id) is False  # twice is harmless
    assert occupied(limits, "db") == 1
    assert take(limits, "db").acquired
    assert occupied(limits, "db") == 2 and limits.get("db").denied_slots == 0  # a grant resets it


def test_a_taker_may_occupy_several_slots_at_once(limits: ConcurrencyLimits) -> None:
    create(limits, "gpu", 4)
    big = take(limits, "gpu", slots=3)
    assert big.acquired and occupied(limits, "gpu") == 3
    assert take(limits, "gpu", slots=2).status == "WAIT"
    assert take(limits, "gpu", slots=1).acquired
    assert big.lease_id is not None and limits.release(big.lease_id)
    assert occupied(limits, "gpu") == 1


def test_slots_are_taken_in_every_limit_named_or_in_none(limits: ConcurrencyLimits) -> None:
    create(limits, "db", 1)
    create(limits, "api", 2)
    holding_db = take(limits, "db")
    assert holding_db.lease_id is not None

    both = take(limits, "db", "api")
    assert both.status == "WAIT" and both.blocked_by == ["db"]
    assert occupied(limits, "api") == 0  # api had room, and gave nothing

    limits.release(holding_db.lease_id)
    both = take(limits, "api", "db", "api")  # a name given twice counts once
    assert both.acquired and both.limits == ["api", "db"]
    assert (occupied(limits, "db"), occupied(limits, "api")) == (1, 1)
    assert both.lease_id is not None
    lease = limits.read_lease(both.lease_id)
    assert (sorted(lease.limits), lease.slots) == (["api", "db"], 1)
    limits.release(both.lease_id)
    assert (occupied(limits, "db"), occupied(limits, "api")) == (0, 0)


def test_a_holder_that_stops_renewing_loses_its_slots_when_its_lease_lapses(
    limits: ConcurrencyLimits, clock: FakeClock
) -> None:
    create(limits, "db", 1)
    held = take(limits, "db", lease_seconds=30, holder="worker-1")
    assert held.lease_id is not None
    clock.advance(20)
    renewed = limits.renew(held.lease_id)
    assert renewed.holder == "worker-1" and renewed.limits == ["db"]
    assert renewed.expires_at.timestamp() == pytest.approx(clock.now + 30)
    clock.advance(29)
    assert take(limits, "db").status == "WAIT"  # renewed: still held

    clock.advance(2)  # the holder died: no renewal came
    assert occupied(limits, "db") == 0
    survivor = take(limits, "db")
    assert survivor.acquired

    with pytest.raises(NotFoundError, match="given to others"):
        limits.renew(held.lease_id)
    limits.release(held.lease_id)  # a late release of the lapsed lease leaves the survivor alone
    assert occupied(limits, "db") == 1


def test_a_lapsed_lease_no_one_needed_can_still_be_renewed(
    limits: ConcurrencyLimits, clock: FakeClock
) -> None:
    create(limits, "db", 1)
    held = take(limits, "db", lease_seconds=10)
    assert held.lease_id is not None
    clock.advance(15)
    limits.renew(held.lease_id)
    assert occupied(limits, "db") == 1 and take(limits, "db").status == "WAIT"


def test_renewing_or_releasing_an_unknown_lease(limits: ConcurrencyLimits) -> None:
    import uuid

    unknown = uuid.uuid4()
    assert limits.release(unknown) is False
    with pytest.raises(NotFoundError):
        limits.renew(unknown)
    with pytest.raises(NotFoundError):
        limits.read_lease(unknown)


# -- rate limits ----------------------------------------------------------------------------------


def test_a_rate_limit_lets_a_burst_through_then_one_slot_per_decay_interval(
    limits: ConcurrencyLimits, clock: FakeClock
) -> None:
    create(limits, "openai", 3, slot_decay_per_second=2)
    burst = [take(limits, "openai", mode="rate_limit") for _ in range(3)]
    assert all(a.acquired and a.lease_id is None for a in burst)  # nothing to give back

    refused = take(limits, "openai", mode="rate_limit")
    assert refused.status == "WAIT" and refused.retry_after_seconds == pytest.approx(0.5)
    clock.advance(0.25)
    assert occupied(limits, "openai") == 3  # half a slot has decayed: none is free
    assert take(limits, "openai", mode="rate_limit").status == "WAIT"
    clock.advance(0.25)
    assert take(limits, "openai", mode="rate_limit").acquired
    assert take(limits, "openai", mode="rate_limit").status == "WAIT"
    clock.advance(10)
    assert occupied(limits, "openai") == 0
    assert take(limits, "openai", slots=3, mode="rate_limit").acquired


def test_rate_limiting_needs_limits_whose_slots_decay(limits: ConcurrencyLimits) -> None:
    create(limits, "db", 5)
    create(limits, "openai", 5, slot_decay_per_second=1)
    with pytest.raises(NotARateLimitError, match="no slot decay") as refused:
        take(limits, "openai", "db", mode="rate_limit")
    assert refused.value.names == ["db"]
    assert (occupied(limits, "db"), occupied(limits, "openai")) == (0, 0)


def test_holding_a_rate_limit_as_a_concurrency_limit_takes_slots_that_decay(
    limits: ConcurrencyLimits, clock: FakeClock
) -> None:
    create(limits, "db", 1)
    create(limits, "openai", 1, slot_decay_per_second=1)
    held = take(limits, "db", "openai")
    assert held.acquired and held.lease_id is not None
    assert limits.read_lease(held.lease_id).limits == ["db"]  # the rate limit's slot is not leased
    clock.advance(1)
    assert occupied(limits, "openai") == 0 and occupied(limits, "db") == 1


def test_turning_a_rate_limit_into_a_concurrency_limit_frees_its_decaying_slots(
    limits: ConcurrencyLimits,
) -> None:
    create(limits, "openai", 2, slot_decay_per_second=0.001)
    take(limits, "openai", slots=2, mode="rate_limit")
    assert occupied(limits, "openai") == 2
    changed = limits.update("openai", ConcurrencyLimitUpdate(slot_decay_per_second=0))
    assert (changed.active_slots, changed.is_rate_limit) == (0, False)
    assert take(limits, "openai", slots=2).acquired


# -- inactive, empty and missing limits -----------------------------------------------------------


def test_an_inactive_limit_lets_everything_through_without_taking_slots(limits: ConcurrencyLimits) -> None:
    create(limits, "db", 1, active=False)
    for _ in range(3):
        answer = take(limits, "db")
        assert answer.acquired and answer.lease_id is None and answer.limits == []
    assert occupied(limits, "db") == 0

    limits.update("db", ConcurrencyLimitUpdate(active=True))
    assert take(limits, "db").acquired
    assert take(limits, "db").status == "WAIT"


def test_a_limit_of_zero_blocks_everything_until_it_is_raised(limits: ConcurrencyLimits) -> None:
    create(limits, "paused", 0)
    create(limits, "small", 2)
    for answer in (take(limits, "paused"), take(limits, "small", slots=3)):
        assert answer.status == "WAIT" and answer.retry_after_seconds == BLOCKED_RETRY_S
    assert take(limits, "paused").reason == "1 slots asked, and limit 'paused' has 0"
    limits.update("paused", ConcurrencyLimitUpdate(limit=1))
    assert take(limits, "paused").acquired


def test_a_missing_limit_lets_everything_through_unless_strict(limits: ConcurrencyLimits) -> None:
    create(limits, "db", 1)
    lenient = take(limits, "nope")
    assert lenient.acquired and lenient.lease_id is None and lenient.missing == ["nope"]

    with pytest.raises(NotFoundError, match=r"\['nope'\] do not exist"):
        take(limits, "db", "nope", strict=True)
    assert occupied(limits, "db") == 0  # nothing was taken
    partly = take(limits, "db", "nope")
    assert partly.acquired and partly.limits == ["db"] and partly.missing == ["nope"]


# -- the limits themselves ------------------------------------------------------------------------


def test_create_read_list_update_and_delete(limits: ConcurrencyLimits) -> None:
    create(limits, "db", 5)
    with pytest.raises(ConcurrencyLimitExistsError, match="already exists") as taken:
        create(limits, "db", 6)
    assert isinstance(taken.value, ValueError)
    for name in ("tag:etl", "openai.api", "Zeta_1"):
        create(limits, name, 1)

    first = limits.filter(ConcurrencyLimitFilter(limit=2))
    assert [limit.name for limit in first.items] == ["Zeta_1", "db"] and first.next_cursor
    rest = limits.filter(ConcurrencyLimitFilter(limit=2, cursor=first.next_cursor))
    assert [limit.name for limit in rest.items] == ["openai.api", "tag:etl"]
    assert [x.name for x in limits.filter(ConcurrencyLimitFilter(name_prefix="tag:")).items] == ["tag:etl"]

    read = limits.get("db")
    assert (read.limit, read.active, read.slot_decay_per_second, read.active_slots) == (5, True, 0.0, 0)
    changed = limits.update("db", ConcurrencyLimitUpdate(limit=7, active=False, slot_decay_per_second=0.5))
    assert (changed.limit, changed.active, changed.slot_decay_per_second) == (7, False, 0.5)
    assert changed.id == read.id and changed.created == read.created and changed.is_rate_limit
    assert limits.get("db") == changed
    unchanged = limits.update("db", ConcurrencyLimitUpdate())
    assert unchanged == changed

    assert limits.delete("db") is True and limits.delete("db") is False
    with pytest.raises(NotFoundError):
        limits.get("db")
    with pytest.raises(NotFoundError):
        limits.update("db", ConcurrencyLimitUpdate(limit=1))


def test_a_deleted_limit_no_longer_limits_and_its_leases_still_release(limits: ConcurrencyLimits) -> None:
    create(limits, "db", 1)
    held = take(limits, "db")
    assert held.lease_id is not None
    limits.delete("db")
    assert take(limits, "db").missing == ["db"]
    limits.renew(held.lease_id)  # nothing left to hold: the lease lives on, harmlessly
    assert limits.release(held.lease_id) is True


@pytest.mark.parametrize(
    "request_fields",
    [
        {"names": []},
        {"names": [f"l{i}" for i in range(51)]},
        {"names": ["a/b"]},
        {"names": ["."]},
        {"names": ["with space"]},
        {"names": ["x" * 201]},
        {"names": ["db"], "slots": 0},
        {"names": ["db"], "slots": True},
        {"names": ["db"], "slots": "2"},
        {"names": ["db"], "lease_seconds": 0},
        {"names": ["db"], "lease_seconds": 86_401},
        {"names": ["db"], "lease_seconds": float("nan")},
        {"names": ["db"], "mode": "burst"},
        {"names": ["db"], "holder": ""},
        {"names": ["db"], "strict": 1},
        {"names": ["db"], "unknown": 1},
    ],
)
def test_malformed_slot_requests_are_refused(request_fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SlotRequest.model_validate(request_fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "db", "limit": -1},
        {"name": "db", "limit": 1_000_001},
        {"name": "db", "limit": 1.5},
        {"name": "db", "limit": True},
        {"name": "db", "limit": 1, "slot_decay_per_second": -0.1},
        {"name": "db", "limit": 1, "slot_decay_per_second": float("inf")},
        {"name": "db/x", "limit": 1},
        {"name": "", "limit": 1},
    ],
)
def test_malformed_limits_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConcurrencyLimitCreate.model_validate(fields)


def test_malformed_names_and_leases_given_to_the_service_are_refused(limits: ConcurrencyLimits) -> None:
    for call in (lambda: limits.get("a/b"), lambda: limits.delete(".."), lambda: limits.get("")):
        with pytest.raises(InvalidValueError, match="is invalid"):
            call()
    create(limits, "db", 1)
    held = take(limits, "db")
    assert held.lease_id is not None
    with pytest.raises(InvalidValueError, match="lease_seconds"):
        limits.renew(held.lease_id, lease_seconds=0)


# -- races ----------------------------------------------------------------------------------------


@pytest.fixture
def live_plane(kv_backend: Any) -> Iterator[ControlPlane]:
    """A control plane on the real clock."""
    kv = kv_backend.open()
    yield ControlPlane(kv)
    kv.close()  # type: ignore[attr-defined]


def test_threads_racing_for_slots_never_exceed_the_limit(kv_backend: Any, live_plane: ControlPlane) -> None:
    kv_backend.skip_racing_transactions()
    limits = live_plane.concurrency_limits
    limits.create(ConcurrencyLimitCreate(name="db", limit=3))
    inside, most_inside, guard = 0, 0, threading.Lock()
    full_house = threading.Barrier(3, timeout=60)  # first rounds: three holders meet inside
    refused = threading.Event()
    workers, rounds = 6, 4
    request = SlotRequest(names=["db"], lease_seconds=60)

    def work(_worker: int) -> int:
        nonlocal inside, most_inside
        waits = 0
        for round_ in range(rounds):
            answer = limits.acquire(request)
            while not answer.acquired:
                waits += 1
                refused.set()
                time.sleep(min(answer.retry_after_seconds or 0.01, 0.01))  # poll, as clients do
                answer = limits.acquire(request)
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            if round_ == 0:
                full_house.wait()  # the limit is full ...
                assert refused.wait(timeout=60)  # ... and stays full until another taker was refused
            assert limits.get("db").active_slots <= 3
            with guard:
                inside -= 1
            assert answer.lease_id is not None and limits.release(answer.lease_id)
        return waits

    with ThreadPoolExecutor(workers) as pool:
        waits = sum(pool.map(work, range(workers)))
    assert most_inside == 3 and waits > 0
    assert limits.get("db").active_slots == 0


# -- the API --------------------------------------------------------------------------------------


def test_the_api_creates_limits_and_hands_out_slots(api: TestClient) -> None:
    created = api.post("/api/concurrency_limits", json={"name": "db", "limit": 1})
    assert created.status_code == 201 and created.json()["active_slots"] == 0
    again = api.post("/api/concurrency_limits", json={"name": "db", "limit": 2})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]

    taken = api.post("/api/concurrency_limits/increment", json={"names": ["db"], "holder": "me"})
    assert taken.status_code == 200 and taken.json()["status"] == "ACQUIRED"
    lease_id = taken.json()["lease_id"]
    full = api.post("/api/concurrency_limits/increment", json={"names": ["db"]})
    assert full.status_code == 200 and full.json()["status"] == "WAIT"
    assert full.json()["blocked_by"] == ["db"] and int(full.headers["Retry-After"]) >= 1
    assert api.get("/api/concurrency_limits/db").json()["active_slots"] == 1

    lease = api.get(f"/api/concurrency_limits/leases/{lease_id}").json()
    assert (lease["limits"], lease["holder"]) == (["db"], "me")
    renewed = api.post(f"/api/concurrency_limits/leases/{lease_id}/renew")
    assert renewed.status_code == 200 and renewed.json()["id"] == lease_id
    released = api.post("/api/concurrency_limits/decrement", json={"lease_id": lease_id})
    assert released.json() == {"released": True}
    assert api.post("/api/concurrency_limits/decrement", json={"lease_id": lease_id}).json() == {
        "released": False
    }
    assert api.post(f"/api/concurrency_limits/leases/{lease_id}/renew").status_code == 404
    assert api.get("/api/concurrency_limits/db").json()["active_slots"] == 0

    patched = api.patch("/api/concurrency_limits/db", json={"limit": 3, "active": False})
    assert patched.status_code == 200 and (patched.json()["limit"], patched.json()["active"]) == (3, False)
    page = api.post("/api/concurrency_limits/filter", json={}).json()
    assert [limit["name"] for limit in page["items"]] == ["db"]
    assert api.delete("/api/concurrency_limits/db").status_code == 204
    for method, path in [
        ("GET", "/api/concurrency_limits/db"),
        ("PATCH", "/api/concurrency_limits/db"),
        ("DELETE", "/api/concurrency_limits/db"),
    ]:
        answer = api.request(method, path, json={} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, answer.text)


def test_the_api_says_when_a_limit_is_missing_or_not_a_rate_limit(api: TestClient) -> None:
    api.post("/api/concurrency_limits", json={"name": "db", "limit": 1})
    lenient = api.post("/api/concurrency_limits/increment", json={"names": ["nope"]}).json()
    assert lenient["status"] == "ACQUIRED" and lenient["missing"] == ["nope"]
    strict = api.post("/api/concurrency_limits/increment", json={"names": ["nope"], "strict": True})
    assert strict.status_code == 404 and "do not exist" in strict.json()["detail"]
    rate = api.post("/api/concurrency_limits/increment", json={"names": ["db"], "mode": "rate_limit"})
    assert rate.status_code == 409 and "no slot decay" in rate.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/concurrency_limits", {"name": "db", "limit": -1}),
        ("POST", "/api/concurrency_limits", {"name": "a b", "limit": 1}),
        ("POST", "/api/concurrency_limits", {"name": "db", "limit": 1, "extra": True}),
        ("POST", "/api/concurrency_limits/increment", {"names": []}),
        ("POST", "/api/concurrency_limits/increment", {"names": ["db"], "slots": 0}),
        ("POST", "/api/concurrency_limits/increment", {"names": ["db"], "lease_seconds": -5}),
        ("POST", "/api/concurrency_limits/decrement", {"lease_id": "not-a-uuid"}),
        ("PATCH", "/api/concurrency_limits/db", {"slot_decay_per_second": -1}),
        ("GET", "/api/concurrency_limits/.hidden", None),
        ("GET", "/api/concurrency_limits/a%20b", None),
        ("POST", "/api/concurrency_limits/leases/not-a-uuid/renew", None),
    ],
)
def test_bad_input_is_a_422_with_a_message(
    api: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    api.post("/api/concurrency_limits", json={"name": "db", "limit": 1})
    answer = api.request(method, path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["msg"]
