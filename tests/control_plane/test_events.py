"""The events store on memory, SQLite and DynamoDB (moto's server), and its API.

Idempotent ingest by event id, listings newest first across day partitions and shards, and
retention through the store's TTL on a fake clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from support import FakeClock

from overcast.core.errors import NotFoundError, TransactionConflictError
from overcast.core.events import Event, related, resource
from overcast.core.ports import KeyValueStore, Put
from overcast.core.services import ControlPlane
from overcast.core.services.events import Events
from overcast.core.settings import Settings
from overcast.handlers.api import create_app

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def as_datetime(clock: Callable[[], float]) -> Callable[[], datetime]:
    return lambda: datetime.fromtimestamp(clock(), UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store(kv_backend: Any, clock: FakeClock) -> Iterator[KeyValueStore]:
    kv = kv_backend.open(clock)
    yield kv
    kv.close()  # type: ignore[attr-defined]


@pytest.fixture
def events(store: KeyValueStore, clock: FakeClock) -> Events:
    return Events(store, clock=as_datetime(clock))


def event(
    name: str = "order.placed", *, ago: float = 0, subject: str = "shop.order.1", **extra: Any
) -> Event:
    return Event(
        event=name,
        occurred=datetime.fromtimestamp(START - ago, UTC),
        resource=resource(subject, "order 1", **{"shop.region": "eu"}),
        **extra,
    )


def everything(events: Events, **query: Any) -> list[Event]:
    found: list[Event] = []
    cursor = None
    while True:
        page = events.query(cursor=cursor, **query)
        found += page.items
        if (cursor := page.next_cursor) is None:
            return found


# -- ingest ---------------------------------------------------------------------------------------


def test_an_event_is_stored_once_however_often_it_is_sent(events: Events) -> None:
    first, second, third = event(ago=3), event(ago=2), event(ago=1)
    stored = events.emit([first, second])
    assert [e.id for e in stored] == [first.id, second.id]
    assert all(e.received == datetime.fromtimestamp(START, UTC) for e in stored)

    again = events.emit([first, third, third])  # a replay, and a repeat within the batch
    assert [e.id for e in again] == [third.id]
    assert [e.id for e in everything(events)] == [third.id, second.id, first.id]
    assert events.get(first.id).received == stored[0].received


def test_large_batches_with_some_repeats_store_each_event_once(events: Events) -> None:
    batch = [event(ago=n) for n in range(250)]
    events.emit(batch[100:120])
    stored = events.emit(batch)
    assert len(stored) == 230
    assert {e.id for e in everything(events, limit=500)} == {e.id for e in batch}


def test_a_transaction_stores_its_events_only_with_its_changes(events: Events, store: KeyValueStore) -> None:
    store.put({"pk": "THING#1", "sk": "META", "n": 1})
    changed = event("thing.changed")
    with pytest.raises(TransactionConflictError):
        events.transact([Put({"pk": "THING#1", "sk": "META", "n": 2}, if_absent=True)], [changed])
    with pytest.raises(NotFoundError):
        events.get(changed.id)
    [recorded] = events.transact([Put({"pk": "THING#1", "sk": "META", "n": 2}, if_version=1)], [changed])
    assert events.get(changed.id) == recorded


# -- listings -------------------------------------------------------------------------------------


def test_events_are_listed_newest_first_across_days(events: Events) -> None:
    made = [event(f"tick.{n % 3}", ago=n * 3600 * 5) for n in range(30)]  # 5 hours apart: 6 days
    events.emit(made)
    newest_first = [e.id for e in made]
    assert [e.id for e in everything(events, limit=7)] == newest_first
    assert [e.id for e in everything(events, limit=1)] == newest_first
    page = events.query(limit=4)
    assert len(page.items) == 4 and page.next_cursor is not None

    named = everything(events, name_prefix="tick.1", limit=3)
    assert [e.id for e in named] == [e.id for e in made if e.event == "tick.1"]
    since = datetime.fromtimestamp(START - 3600 * 5 * 10, UTC)
    until = datetime.fromtimestamp(START - 3600 * 5 * 2, UTC)
    span = everything(events, since=since, until=until, limit=4)
    assert [e.id for e in span] == newest_first[2:11]  # both ends inclusive


def test_events_are_listed_by_resource(events: Events) -> None:
    mine = [event(ago=n, subject="shop.order.7") for n in range(5)]
    events.emit([*mine, event(subject="shop.order.8")])
    listed = everything(events, resource_id="shop.order.7", limit=2)
    assert [e.id for e in listed] == [e.id for e in mine]
    assert everything(events, resource_id="shop.order.7", name_prefix="nope") == []
    recent = events.query(resource_id="shop.order.7", since=datetime.fromtimestamp(START - 1, UTC))
    assert [e.id for e in recent.items] == [mine[0].id, mine[1].id]


def test_sharded_day_partitions_list_in_the_same_order(store: KeyValueStore, clock: FakeClock) -> None:
    sharded = Events(store, clock=as_datetime(clock), shards=3)
    made = [event(ago=n * 1800) for n in range(60)]
    sharded.emit(made)
    expected = [e.id for e in made]
    for limit in (1, 7, 50):
        assert [e.id for e in everything(sharded, limit=limit)] == expected


def test_events_expire_after_the_retention_period(
    events: Events, clock: FakeClock, store: KeyValueStore
) -> None:
    old, new = event(ago=3600), event()
    events.emit([old, new])
    clock.advance(timedelta(days=7).total_seconds() - 3600)
    with pytest.raises(NotFoundError):
        events.get(old.id)
    assert [e.id for e in everything(events)] == [new.id]
    clock.advance(3600)
    assert everything(events) == []
    assert events.emit([new]) == []  # older than the retention: not stored again

    hourly = Events(store, clock=as_datetime(clock), retention=timedelta(hours=1))
    recent = Event(event="x.y", resource=resource("z"), occurred=as_datetime(clock)())
    hourly.emit([recent])
    clock.advance(3599)
    assert hourly.get(recent.id).id == recent.id
    clock.advance(1)
    with pytest.raises(NotFoundError):
        hourly.get(recent.id)


def test_a_forged_cursor_is_refused(events: Events) -> None:
    from overcast.core.errors import InvalidValueError
    from overcast.core.schemas import encode_cursor

    with pytest.raises(InvalidValueError, match="cursor"):
        events.query(cursor="not-a-cursor")
    with pytest.raises(InvalidValueError, match="cursor"):
        events.query(cursor=encode_cursor("0-garbage"))


# -- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resource": {"name": "x"}}, "overcast.resource.id"),
        ({"resource": {"overcast.resource.id": ""}}, "overcast.resource.id"),
        ({"related": [{"overcast.resource.id": "a"}]}, "overcast.resource.role"),
        ({"event": "has spaces"}, "pattern"),
        ({"event": ""}, "at least 1"),
        ({"payload": {"blob": "x" * 300_000}}, "over the limit"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_malformed_events_are_refused(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"event": "a.b", "resource": {"overcast.resource.id": "x"}}
    with pytest.raises(ValidationError, match=message):
        Event.model_validate({**base, **fields})


def test_related_resources_carry_their_role() -> None:
    made = Event(
        event="overcast.worker.offline",
        resource=resource("overcast.worker.1", "w1"),
        related=[related("overcast.work-pool.2", "work-pool", "local")],
    )
    assert made.resource_id == "overcast.worker.1"
    assert made.related_in_role("work-pool")[0]["overcast.resource.name"] == "local"
    assert made.related_in_role("flow-run") == []
    later = Event(event="x", resource=resource("y"))
    assert later.id > made.id  # ids made later sort later


# -- the API --------------------------------------------------------------------------------------


@pytest.fixture
def api(store: KeyValueStore, clock: FakeClock) -> TestClient:
    plane = ControlPlane(store, clock=as_datetime(clock))
    return TestClient(create_app(plane, settings=Settings(api_key="")))


def test_the_api_ingests_idempotently_and_lists(api: TestClient) -> None:
    body = event(ago=5).model_dump(mode="json", exclude={"received"})
    other = event("order.paid", ago=1).model_dump(mode="json", exclude={"received"})
    first = api.post("/api/events", json={"events": [body]})
    assert first.status_code == 200 and first.json() == {"stored": 1, "duplicates": 0}
    second = api.post("/api/events", json={"events": [body, other]})
    assert second.json() == {"stored": 1, "duplicates": 1}

    listed = api.post("/api/events/filter", json={"name_prefix": "order.", "limit": 1})
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["items"]] == [other["id"]]
    rest = api.post("/api/events/filter", json={"cursor": listed.json()["next_cursor"]})
    assert [e["id"] for e in rest.json()["items"]] == [body["id"]]
    assert api.get(f"/api/events/{body['id']}").json()["event"] == "order.placed"
    assert api.get(f"/api/events/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize(
    "request_body",
    [
        {"events": []},
        {"events": [{"event": "a", "resource": {}}]},
        {"events": [{"event": "a", "resource": {"overcast.resource.id": "x"}, "related": [{"a": "b"}]}]},
        {"events": [{"event": "a", "resource": {"overcast.resource.id": "x"}, "occurred": 5}]},
        {"events": "nope"},
    ],
)
def test_the_api_refuses_malformed_events_with_422(api: TestClient, request_body: Any) -> None:
    assert api.post("/api/events", json=request_body).status_code == 422


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 501}, {"cursor": "garbage"}, {"since": "yesterday"}, {"nope": 1}]
)
def test_the_api_refuses_malformed_filters_with_422(api: TestClient, query: Any) -> None:
    assert api.post("/api/events/filter", json=query).status_code == 422
