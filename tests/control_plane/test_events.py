"""The events store on memory, SQLite and DynamoDB (moto's server), and its API.

Idempotent ingest by event id, listings newest first across day partitions and shards, and
retention through the store's TTL on a fake clock.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from support import START, FakeClock, as_datetime

from overcast.core import keys
from overcast.core.errors import NotFoundError, TransactionConflictError
from overcast.core.events import Event, related, resource
from overcast.core.ports import KeyValueStore, Put
from overcast.core.services import ControlPlane
from overcast.core.services.events import Events
from overcast.core.settings import Settings
from overcast.handlers.api import create_app


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


def test_the_api_filters_by_pattern_resource_and_related_resource(api: TestClient) -> None:
    run = related("overcast.flow-run.9", "flow-run")
    sent = [
        Event(
            event="order.placed", occurred=datetime.fromtimestamp(START - 3, UTC), resource=resource("o.1")
        ),
        Event(
            event="order.paid",
            occurred=datetime.fromtimestamp(START - 2, UTC),
            resource=resource("o.1", **{"shop.region": "eu"}),
            related=[run],
        ),
        Event(event="order.paid", occurred=datetime.fromtimestamp(START - 1, UTC), resource=resource("o.2")),
    ]
    body = {"events": [e.model_dump(mode="json", exclude={"received"}) for e in sent]}
    assert api.post("/api/events", json=body).json() == {"stored": 3, "duplicates": 0}
    assert api.post("/api/events", json=body).json() == {"stored": 0, "duplicates": 3}

    def listed(query: dict[str, Any]) -> list[str]:
        answer = api.post("/api/events/filter", json=query)
        assert answer.status_code == 200, answer.text
        return [e["id"] for e in answer.json()["items"]]

    ids = [str(e.id) for e in sent]
    assert listed({"names": ["*.paid"]}) == [ids[2], ids[1]]
    assert listed({"names": ["order.*"], "order": "asc"}) == ids
    assert listed({"related_resource_id": "overcast.flow-run.9", "related_role": "flow-run"}) == [ids[1]]
    assert listed({"resource_id": "o.1", "exclude_names": ["*.placed"]}) == [ids[1]]
    assert listed({"resource_labels": {"shop.region": "e*"}}) == [ids[1]]
    until = datetime.fromtimestamp(START - 2, UTC).isoformat()
    assert listed({"until": until, "resource_id_prefix": "o."}) == [ids[1], ids[0]]
    assert api.get(f"/api/events/{ids[1]}").json()["related"] == [run]


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
    "query",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "garbage"},
        {"since": "yesterday"},
        {"nope": 1},
        {"names": "order.*"},
        {"names": ["has space"]},
        {"names": ["x"] * 51},
        {"order": "up"},
        {"resource_labels": {"shop.region": ["eu"] * 51}},
        {"resource_labels": {"shop.region": 5}},
        {"related_role": "line\nbreak"},
        {"resource_id": ""},
        {"resource_id_prefix": "x" * 501},
    ],
)
def test_the_api_refuses_malformed_filters_with_422(api: TestClient, query: Any) -> None:
    assert api.post("/api/events/filter", json=query).status_code == 422


# -- queries --------------------------------------------------------------------------------------


def named(name: str, *, ago: float = 0, subject: str = "shop.order.1", **labels: str) -> Event:
    return Event(
        event=name,
        occurred=datetime.fromtimestamp(START - ago, UTC),
        resource=resource(subject, **labels),
    )


def names_of(found: list[Event]) -> list[str]:
    return [e.event for e in found]


def test_names_are_matched_exactly_by_prefix_or_with_wildcards(events: Events) -> None:
    for ago, name in enumerate(
        [
            "overcast.flow-run.Running",
            "overcast.flow-run.Failed",
            "overcast.task-run.Failed",
            "overcast.task-run.Completed",
            "shop.order.placed",
            "shop.order.paid",
        ]
    ):
        events.emit([named(name, ago=ago)])

    # newest first: the order emitted above
    assert names_of(everything(events, names=["overcast.flow-run.*"])) == [
        "overcast.flow-run.Running",
        "overcast.flow-run.Failed",
    ]
    assert names_of(everything(events, names=["*.Failed"])) == [
        "overcast.flow-run.Failed",
        "overcast.task-run.Failed",
    ]
    assert names_of(everything(events, names=["overcast.*.Failed", "shop.order.paid"])) == [
        "overcast.flow-run.Failed",
        "overcast.task-run.Failed",
        "shop.order.paid",
    ]
    assert names_of(everything(events, names=["shop.order"])) == []  # exact: not a prefix
    assert names_of(everything(events, exclude_names=["overcast.*"])) == [
        "shop.order.placed",
        "shop.order.paid",
    ]
    assert names_of(everything(events, name_prefix="overcast.task-run.", exclude_names=["*.Completed"])) == [
        "overcast.task-run.Failed"
    ]
    oldest_first = everything(events, names=["overcast.*"], order="asc", limit=1)
    assert names_of(oldest_first) == [
        "overcast.task-run.Completed",
        "overcast.task-run.Failed",
        "overcast.flow-run.Failed",
        "overcast.flow-run.Running",
    ]


def test_events_are_filtered_by_resource_id_prefix_and_labels(events: Events) -> None:
    events.emit(
        [
            named(
                "order.placed",
                ago=3,
                subject="shop.order.1",
                **{"shop.region": "eu-west", "shop.tier": "gold"},
            ),
            named("order.placed", ago=2, subject="shop.order.2", **{"shop.region": "us-east"}),
            named("order.placed", ago=1, subject="shop.basket.3", **{"shop.region": "eu-central"}),
        ]
    )

    def subjects(**query: Any) -> list[str]:
        return [e.resource_id for e in everything(events, **query)]

    assert subjects(resource_id="shop.order.2") == ["shop.order.2"]
    assert subjects(resource_id_prefix="shop.order.") == ["shop.order.2", "shop.order.1"]
    assert subjects(resource_labels={"shop.region": "eu-*"}) == ["shop.basket.3", "shop.order.1"]
    assert subjects(resource_labels={"shop.region": ["us-east", "eu-central"]}) == [
        "shop.basket.3",
        "shop.order.2",
    ]
    assert subjects(resource_labels={"shop.tier": "*"}) == ["shop.order.1"]  # the label must be there
    assert subjects(resource_labels={"shop.region": "eu-*"}, resource_id_prefix="shop.order.") == [
        "shop.order.1"
    ]
    assert subjects(resource_id="shop.order.1", resource_labels={"shop.region": "us-*"}) == []


def test_events_are_filtered_by_related_resource_and_role(events: Events) -> None:
    run = related("overcast.flow-run.7", "flow-run", "amber-lynx")
    deployment = related("overcast.deployment.3", "deployment")
    made = [
        Event(
            event="a.b",
            occurred=datetime.fromtimestamp(START - 3, UTC),
            resource=resource("x.1"),
            related=[run],
        ),
        Event(
            event="a.c",
            occurred=datetime.fromtimestamp(START - 2, UTC),
            resource=resource("x.2"),
            related=[run, deployment],
        ),
        Event(event="a.d", occurred=datetime.fromtimestamp(START - 1, UTC), resource=resource("x.3")),
        Event(  # the run's id in another role: not the run
            event="a.e",
            occurred=datetime.fromtimestamp(START, UTC),
            resource=resource("x.4"),
            related=[related("overcast.flow-run.7", "parent")],
        ),
    ]
    events.emit(made)
    assert names_of(
        everything(events, related_resource_id="overcast.flow-run.7", related_role="flow-run")
    ) == [
        "a.c",
        "a.b",
    ]
    assert names_of(everything(events, related_resource_id="overcast.flow-run.7")) == ["a.e", "a.c", "a.b"]
    assert names_of(everything(events, related_role="deployment")) == ["a.c"]
    assert everything(events, related_resource_id="overcast.deployment.3", related_role="flow-run") == []


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 3, 8])
def test_filtered_time_spans_page_across_days_in_either_order(
    store: KeyValueStore, clock: FakeClock, order: str, limit: int
) -> None:
    sharded = Events(store, clock=as_datetime(clock), shards=2)
    run = related("overcast.flow-run.1", "flow-run")
    made = [
        Event(
            event="tick.odd" if n % 2 else "tick.even",
            occurred=datetime.fromtimestamp(START - n * 3600 * 4, UTC),  # 4 hours apart: 5 days
            resource=resource(f"clock.{n % 3}"),
            related=[run] if n % 3 else [],
        )
        for n in range(30)
    ]
    sharded.emit(made)
    since = datetime.fromtimestamp(START - 3600 * 4 * 25, UTC)
    until = datetime.fromtimestamp(START - 3600 * 4 * 3, UTC)
    expected = [e.id for e in made if e.event == "tick.even" and e.related and since <= e.occurred <= until]
    if order == "asc":
        expected.reverse()
    query = {
        "names": ["*.even"],
        "related_resource_id": "overcast.flow-run.1",
        "since": since,
        "until": until,
    }
    pages: list[list[uuid.UUID]] = []
    cursor = None
    while True:
        page = sharded.query(order=order, limit=limit, cursor=cursor, **query)
        pages.append([e.id for e in page.items])
        if (cursor := page.next_cursor) is None:
            break
    assert [i for page in pages for i in page] == expected
    assert all(len(page) <= limit for page in pages)
    assert len(pages) >= len(expected) // limit  # it did page


def test_a_filter_says_whether_an_event_matches_it() -> None:
    from overcast.core.events import EventFilter

    made = Event(
        event="overcast.flow-run.Failed",
        occurred=datetime.fromtimestamp(START, UTC),
        resource=resource("overcast.flow-run.1", "r", **{"overcast.state-type": "FAILED"}),
        related=[related("overcast.flow.2", "flow", "etl")],
    )
    assert EventFilter(names=["*.Failed"], related_role="flow").matches(made)
    assert EventFilter(resource_labels={"overcast.state-type": "FAIL*"}).matches(made)
    assert not EventFilter(exclude_names=["overcast.flow-run.*"]).matches(made)
    assert not EventFilter(since=datetime.fromtimestamp(START + 1, UTC)).matches(made)


# -- run events -----------------------------------------------------------------------------------


@pytest.fixture
def plane(store: KeyValueStore, clock: FakeClock) -> ControlPlane:
    return ControlPlane(store, clock=as_datetime(clock))


def run_events(plane: ControlPlane, run_id: uuid.UUID) -> list[Event]:
    return plane.events.query(resource_id=f"overcast.flow-run.{run_id}", order="asc", limit=100).items


def test_every_accepted_flow_run_transition_is_announced(plane: ControlPlane, clock: FakeClock) -> None:
    from overcast.core.schemas import FlowRunCreate
    from overcast.core.states import Completed, Running
    from overcast.core.work_pools import ProcessPoolCreate

    pool = plane.work_pools.create_pool(ProcessPoolCreate(name="local"))
    deployment_id = uuid.uuid4()
    heard: list[str] = []
    plane.events.subscribe(lambda batch: heard.extend(e.event for e in batch))
    run, _ = plane.flow_runs.create(
        FlowRunCreate(
            flow_name="etl", tags=["nightly", "eu"], deployment_id=deployment_id, work_pool_name="local"
        )
    )
    clock.advance(1)
    plane.flow_runs.set_state(run.id, Running())
    clock.advance(1)
    plane.flow_runs.set_state(run.id, Running())  # refused (already running): no event
    plane.flow_runs.set_state(run.id, Completed())

    pending, running, completed = run_events(plane, run.id)
    assert [pending.event, running.event, completed.event] == [
        "overcast.flow-run.Pending",
        "overcast.flow-run.Running",
        "overcast.flow-run.Completed",
    ]
    assert [e for e in heard if e.startswith("overcast.flow-run.")] == [
        pending.event,
        running.event,
        completed.event,
    ]
    assert completed.resource == {
        "overcast.resource.id": f"overcast.flow-run.{run.id}",
        "overcast.resource.name": run.name,
        "overcast.state-type": "COMPLETED",
        "overcast.state-name": "Completed",
    }
    roles = {r["overcast.resource.role"]: r for r in completed.related}
    assert roles["flow"] == {
        "overcast.resource.id": f"overcast.flow.{run.flow_id}",
        "overcast.resource.role": "flow",
        "overcast.resource.name": "etl",
    }
    assert roles["deployment"]["overcast.resource.id"] == f"overcast.deployment.{deployment_id}"
    assert roles["work-pool"]["overcast.resource.id"] == f"overcast.work-pool.{pool.id}"
    assert roles["work-pool"]["overcast.resource.name"] == "local"
    assert sorted(r["overcast.resource.id"] for r in completed.related_in_role("tag")) == [
        "overcast.tag.eu",
        "overcast.tag.nightly",
    ]
    assert completed.payload == {
        "intended": {"from": "RUNNING", "to": "COMPLETED"},
        "initial_state": {"type": "RUNNING", "name": "Running"},
        "validated_state": {"type": "COMPLETED", "name": "Completed"},
    }
    assert pending.payload["intended"] == {"to": "PENDING"} and pending.follows is None
    assert running.follows == pending.id and completed.follows == running.id
    assert completed.occurred == plane.flow_runs.get(run.id).state.timestamp


def test_a_failure_and_its_retry_are_announced(plane: ControlPlane, clock: FakeClock) -> None:
    from overcast.core.models import RetryPolicy
    from overcast.core.schemas import FlowRunCreate
    from overcast.core.states import Failed, Running

    run, _ = plane.flow_runs.create(FlowRunCreate(flow_name="flaky", retry_policy=RetryPolicy(retries=1)))
    for proposed in (Running(), Failed("boom\nat line 3"), Running(), Failed("boom again")):
        clock.advance(1)
        plane.flow_runs.set_state(run.id, proposed)  # the first failure is retried: AwaitingRetry
    names = [e.event for e in run_events(plane, run.id)]
    assert names == [
        "overcast.flow-run.Pending",
        "overcast.flow-run.Running",
        "overcast.flow-run.AwaitingRetry",
        "overcast.flow-run.Running",
        "overcast.flow-run.Failed",
    ]
    failed = run_events(plane, run.id)[-1]
    assert failed.payload["validated_state"] == {"type": "FAILED", "name": "Failed", "message": "boom again"}
    assert [e.event for e in everything(plane.events, names=["*.Failed"])] == ["overcast.flow-run.Failed"]


def _document(task_run_id: str, flow_run_id: uuid.UUID, states: list[tuple[str, str]]) -> dict[str, Any]:
    stamps = [f"2027-01-15T07:59:5{n}.000000Z" for n in range(len(states))]
    history = [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{task_run_id}/{n}")),
            "type": t,
            "name": name,
            "timestamp": ts,
        }
        for n, ((t, name), ts) in enumerate(zip(states, stamps, strict=True))
    ]
    return {
        "task_run": {
            "id": task_run_id,
            "task_key": "add-1",
            "name": f"add-{task_run_id[-1]}",
            "dynamic_key": "0",
            "flow_run_id": str(flow_run_id),
            "tags": ["math"],
            "state": history[-1],
            "run_count": 1,
            "created": stamps[0],
            "updated": stamps[-1],
        },
        "states": history,
    }


@pytest.mark.parametrize("mode", ["final", "all", "off"])
def test_task_runs_announce_the_states_each_report_brings(
    store: KeyValueStore, clock: FakeClock, mode: Any
) -> None:
    from overcast.core.schemas import FlowRunCreate

    plane = ControlPlane(store, clock=as_datetime(clock), task_run_events=mode)
    run, _ = plane.flow_runs.create(FlowRunCreate(flow_name="etl"))
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    running = _document(first, run.id, [("PENDING", "Pending"), ("RUNNING", "Running")])
    done = _document(
        first, run.id, [("PENDING", "Pending"), ("RUNNING", "Running"), ("COMPLETED", "Completed")]
    )
    short = _document(second, run.id, [("PENDING", "Pending"), ("RUNNING", "Running"), ("FAILED", "Failed")])
    orphan = _document(str(uuid.uuid4()), uuid.uuid4(), [("COMPLETED", "Completed")])  # no such flow run

    plane.task_runs.write_documents([running, short, orphan])
    plane.task_runs.write_documents([done])
    plane.task_runs.write_documents([done, short])  # a replayed report: nothing new

    found = everything(plane.events, resource_id_prefix="overcast.task-run.", order="asc")
    by_run = {
        task_run_id: [
            e.event.removeprefix("overcast.task-run.") for e in found if e.resource_id.endswith(task_run_id)
        ]
        for task_run_id in (first, second)
    }
    expected = {
        "final": {first: ["Running", "Completed"], second: ["Failed"]},
        "all": {first: ["Pending", "Running", "Completed"], second: ["Pending", "Running", "Failed"]},
        "off": {first: [], second: []},
    }[mode]
    assert by_run == expected
    assert len(found) == sum(len(v) for v in expected.values())  # the orphan's was not announced
    if mode == "off":
        return
    failed = next(e for e in found if e.event == "overcast.task-run.Failed")
    assert failed.id == uuid.UUID(short["task_run"]["state"]["id"])  # the state's id: stored once
    assert failed.resource["overcast.resource.name"] == short["task_run"]["name"]
    assert failed.payload["intended"] == {"from": "RUNNING", "to": "FAILED"}
    assert [(r["overcast.resource.role"], r["overcast.resource.id"]) for r in failed.related] == [
        ("flow-run", f"overcast.flow-run.{run.id}"),
        ("flow", f"overcast.flow.{run.flow_id}"),
        ("tag", "overcast.tag.math"),
    ]
    assert failed.follows == (uuid.UUID(short["states"][1]["id"]) if mode == "all" else None)
    of_run = everything(
        plane.events, related_resource_id=f"overcast.flow-run.{run.id}", related_role="flow-run"
    )
    assert len(of_run) == len(found)


def _count_reads(monkeypatch: pytest.MonkeyPatch, store: KeyValueStore, key: tuple[str, str]) -> list[str]:
    """From now on, every read of the item ``key`` in ``store`` is appended to the list returned."""
    reads: list[str] = []
    real_get = store.get

    def get(pk: str, sk: str, *args: Any, **kwargs: Any) -> Any:
        if (pk, sk) == key:
            reads.append(pk)
        return real_get(pk, sk, *args, **kwargs)

    monkeypatch.setattr(store, "get", get)
    return reads


def test_task_runs_are_announced_by_default_only_while_an_automation_listens(
    store: KeyValueStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from overcast.core.automations import AutomationCreate
    from overcast.core.schemas import FlowRunCreate

    plane = ControlPlane(store, clock=as_datetime(clock))  # task_run_events="auto"
    run, _ = plane.flow_runs.create(FlowRunCreate(flow_name="etl"))
    unheard = _document(str(uuid.uuid4()), run.id, [("RUNNING", "Running"), ("FAILED", "Failed")])
    plane.task_runs.write_documents([unheard])
    assert everything(plane.events, resource_id_prefix="overcast.task-run.") == []

    plane.automations.create(
        AutomationCreate.model_validate(
            {"name": "task failures", "trigger": {"expect": ["overcast.task-run.Failed"]}}
        )
    )
    heard = _document(str(uuid.uuid4()), run.id, [("RUNNING", "Running"), ("FAILED", "Failed")])
    marker_reads = _count_reads(monkeypatch, store, keys.enabled_automations())
    plane.task_runs.write_documents([heard])
    # one read of the enabled automations serves both the question and the evaluation
    assert len(marker_reads) == 1
    found = everything(plane.events, resource_id_prefix="overcast.task-run.")
    assert [(e.event, e.resource_id) for e in found] == [
        ("overcast.task-run.Failed", f"overcast.task-run.{heard['task_run']['id']}")
    ]
    (automation,) = plane.automations.list().items
    assert len(plane.automations.firings(automation.id)) == 1
