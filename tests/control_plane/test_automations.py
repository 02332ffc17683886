"""Automations on memory, SQLite and DynamoDB (moto's server): storage and trigger evaluation.

Firings are observed through a recording ``act`` given to the control plane (what the actions
executor would be asked to do) and through the firing records. Time is a fake clock: events
occur at its time, and the tick closes proactive windows when it is moved past their end.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from support import FakeClock

from overcast.adapters.kv.memory import MemoryKeyValueStore
from overcast.core.automations import (
    ActionOutcome,
    Automation,
    AutomationCreate,
    AutomationUpdate,
    Firing,
    FiringKind,
)
from overcast.core.errors import NotFoundError
from overcast.core.events import Event, related, resource
from overcast.core.ports import KeyValueStore
from overcast.core.services import ControlPlane

START = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


class Recorder:
    """A stand-in for the actions executor: remembers each firing it is asked to act on."""

    def __init__(self) -> None:
        self.calls: list[tuple[Automation, Firing]] = []
        self._lock = threading.Lock()

    def __call__(self, automation: Automation, firing: Firing) -> list[ActionOutcome]:
        with self._lock:
            self.calls.append((automation, firing))
        return [ActionOutcome(index=0, type="do-nothing", ok=True, detail=f"acted on {firing.kind}")]

    def of(self, automation: Automation, kind: FiringKind | None = None) -> list[Firing]:
        return [f for a, f in self.calls if a.id == automation.id and (kind is None or f.kind is kind)]


class Env:
    """A control plane on a fake clock, acting through a recorder."""

    def __init__(self, store: KeyValueStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.recorder = Recorder()
        self.plane = self.plane_on(store)

    def plane_on(self, store: KeyValueStore) -> ControlPlane:
        return ControlPlane(store, act=self.recorder, clock=self.now)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def automation(self, **fields: Any) -> Automation:
        body = {"name": "test", "actions": [{"type": "do-nothing"}], **fields}
        return self.plane.automations.create(AutomationCreate.model_validate(body))

    def emit(self, name: str, subject: str = "shop.order.1", *, region: str = "eu", **extra: Any) -> Event:
        sent = Event(
            event=name,
            occurred=self.now(),
            resource=resource(subject, subject.rsplit(".", 1)[-1], **{"shop.region": region}),
            **extra,
        )
        self.plane.events.emit([sent])
        return sent

    def fired(self, automation: Automation, kind: FiringKind | None = FiringKind.TRIGGERED) -> list[Firing]:
        return self.recorder.of(automation, kind)


@pytest.fixture
def env(kv_backend: Any) -> Iterator[Env]:
    clock = FakeClock(START.timestamp())
    store = kv_backend.open(clock)
    yield Env(store, clock)
    store.close()  # type: ignore[attr-defined]


# -- storage ------------------------------------------------------------------------------------


def test_an_automation_is_created_read_listed_changed_paused_and_deleted(env: Env) -> None:
    automations = env.plane.automations
    first = env.automation(name="first", trigger={"expect": ["order.placed"]}, tags=["shop", "shop"])
    env.advance(1)
    second = env.automation(name="second", trigger={"expect": ["order.shipped"]})
    assert first.tags == ["shop"] and first.enabled and first.version == 1
    assert automations.get(first.id) == first
    assert [a.name for a in automations.list().items] == ["first", "second"]
    page = automations.list(limit=1)
    assert [a.name for a in page.items] == ["first"]
    assert [a.name for a in automations.list(cursor=page.next_cursor).items] == ["second"]

    changed = automations.update(first.id, AutomationUpdate(name="renamed", description="orders"))
    assert (changed.name, changed.description, changed.version) == ("renamed", "orders", 2)
    assert changed.trigger == first.trigger and automations.get(first.id) == changed
    assert automations.update(first.id, AutomationUpdate(name="renamed")) == changed  # nothing changes

    paused = automations.set_enabled(first.id, False)
    assert not paused.enabled and not automations.get(first.id).enabled
    assert automations.set_enabled(first.id, True).enabled

    automations.delete(first.id)
    with pytest.raises(NotFoundError):
        automations.get(first.id)
    with pytest.raises(NotFoundError):
        automations.delete(first.id)
    with pytest.raises(NotFoundError):
        automations.firings(first.id)
    assert [a.id for a in automations.list().items] == [second.id]


@pytest.mark.parametrize(
    ("trigger", "complaint"),
    [
        ({"posture": "Proactive", "expect": ["x"], "within": 5}, "window must be at least 10"),
        (
            {"type": "compound", "require": 3, "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
            "between 1 and 2",
        ),
        ({"type": "sequence", "triggers": []}, "at least 1"),
        ({"type": "metric"}, "does not match any of the expected tags"),
        ({"expect": ["has space"]}, "should match pattern"),
        ({"threshold": 0}, "greater than or equal to 1"),
    ],
)
def test_an_invalid_trigger_is_refused_with_the_reason(trigger: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        AutomationCreate.model_validate({"name": "bad", "trigger": trigger})


def test_a_proactive_trigger_without_a_window_gets_the_shortest_one() -> None:
    made = AutomationCreate.model_validate(
        {"name": "x", "trigger": {"posture": "Proactive", "expect": ["x"]}}
    )
    assert made.trigger.within == timedelta(seconds=10)  # type: ignore[union-attr]


def test_a_resources_automations_are_replaced_keeping_the_unchanged_ones(env: Env) -> None:
    automations = env.plane.automations
    owner = f"overcast.deployment.{uuid.uuid4()}"

    def request(name: str, expect: str) -> AutomationCreate:
        return AutomationCreate.model_validate({"name": name, "trigger": {"expect": [expect]}})

    first = automations.replace_owned_by(owner, [request("a", "x"), request("b", "y"), request("c", "z")])
    assert [a.owner_resource for a in first] == [owner] * 3
    mine = env.automation(name="unowned", trigger={"expect": ["x"]})
    second = automations.replace_owned_by(owner, [request("b", "y"), request("a", "x2"), request("d", "w")])
    assert second[0] == first[1]  # unchanged: the same automation
    assert second[1].id == first[0].id and second[1].version == 2  # same name: changed in place
    assert second[2].id not in {a.id for a in first}  # new
    assert {a.id for a in automations.list(owner_resource=owner).items} == {a.id for a in second}
    with pytest.raises(NotFoundError):
        automations.get(first[2].id)  # no longer requested: deleted
    assert automations.delete_owned_by(owner) == 3
    assert automations.list(owner_resource=owner).items == []
    assert [a.id for a in automations.list().items] == [mine.id]


# -- reactive triggers ------------------------------------------------------------------------


def test_a_reactive_trigger_fires_on_each_matching_event(env: Env) -> None:
    automation = env.automation(trigger={"match": {"shop.region": "eu"}, "expect": ["order.placed"]})
    placed = env.emit("order.placed")
    env.emit("order.placed", "shop.order.2", region="us")  # another region
    env.emit("order.shipped")  # another name
    [firing] = env.fired(automation)
    assert firing.triggering_event is not None and firing.triggering_event.id == placed.id
    assert [e.id for e in firing.events] == [placed.id] and firing.trigger_path == ""
    env.emit("order.placed", "shop.order.3")
    assert len(env.fired(automation)) == 2


def test_names_match_by_prefix_and_labels_by_prefix_and_negation(env: Env) -> None:
    automation = env.automation(
        trigger={
            "match": {"overcast.resource.id": "shop.order.*", "shop.region": "!us"},
            "expect": ["order.*"],
        }
    )
    env.emit("order.placed")
    env.emit("order.shipped", "shop.order.2")
    env.emit("order.placed", "shop.order.3", region="us")  # negated
    env.emit("order.placed", "shop.cart.1")  # another resource
    env.emit("cart.created")  # another name
    assert [f.triggering_event.event for f in env.fired(automation) if f.triggering_event] == [
        "order.placed",
        "order.shipped",
    ]


def test_match_related_needs_a_related_resource_with_those_labels(env: Env) -> None:
    automation = env.automation(
        trigger={
            "expect": ["order.placed"],
            "match_related": {"overcast.resource.role": "customer", "tier": "gold"},
        }
    )
    env.emit("order.placed", related=[related("shop.customer.1", "customer", tier="gold")])
    env.emit("order.placed", related=[related("shop.customer.2", "customer", tier="silver")])
    env.emit("order.placed")
    assert len(env.fired(automation)) == 1


def test_after_arms_the_trigger_and_events_before_it_are_ignored(env: Env) -> None:
    automation = env.automation(
        trigger={
            "after": ["order.placed"],
            "expect": ["order.paid"],
            "for_each": ["overcast.resource.id"],
            "within": 60,
        }
    )
    env.emit("order.paid")  # not armed yet
    env.emit("order.placed")
    env.emit("order.paid", "shop.order.2")  # another order: not armed
    assert env.fired(automation) == []
    env.advance(10)
    paid = env.emit("order.paid")
    [firing] = env.fired(automation)
    assert firing.triggering_event is not None and firing.triggering_event.id == paid.id
    assert firing.triggering_labels == {"overcast.resource.id": "shop.order.1"}
    env.emit("order.paid")  # the bucket reset: armed again only by another order.placed
    assert len(env.fired(automation)) == 1


def test_threshold_counts_events_within_the_window_per_for_each_bucket(env: Env) -> None:
    automation = env.automation(
        trigger={
            "expect": ["order.failed"],
            "for_each": ["shop.region"],
            "threshold": 3,
            "within": 10,
        }
    )
    for _ in range(2):
        env.emit("order.failed")
        env.emit("order.failed", "shop.order.9", region="us")
        env.advance(2)
    assert env.fired(automation) == []
    third = env.emit("order.failed", "shop.order.5")
    [firing] = env.fired(automation)
    assert firing.triggering_labels == {"shop.region": "eu"}
    assert firing.triggering_event is not None and firing.triggering_event.id == third.id
    assert len(firing.events) == 3
    env.emit("order.failed")  # counting starts afresh after a firing
    assert len(env.fired(automation)) == 1


def test_events_spread_beyond_the_window_do_not_fire(env: Env) -> None:
    automation = env.automation(trigger={"expect": ["order.failed"], "threshold": 3, "within": 10})
    for _ in range(5):
        env.emit("order.failed")
        env.advance(6)  # at most two events in any 10 s window
    assert env.fired(automation) == []


def test_a_threshold_without_a_window_counts_forever(env: Env) -> None:
    automation = env.automation(trigger={"expect": ["order.failed"], "threshold": 2})
    env.emit("order.failed")
    env.advance(86_400)
    env.emit("order.failed")
    assert len(env.fired(automation)) == 1


def test_a_redelivered_event_does_not_fire_or_count_twice(env: Env) -> None:
    each = env.automation(name="each", trigger={"expect": ["order.placed"]})
    pair = env.automation(name="pair", trigger={"expect": ["order.placed"], "threshold": 2})
    placed = env.emit("order.placed")
    env.plane.events.emit([placed])  # a repeat is not stored again
    env.plane.automations.ingest([placed])  # and evaluating it again changes nothing
    assert len(env.fired(each)) == 1
    assert env.fired(pair) == []
    assert len(env.plane.automations.firings(each.id)) == 1


def test_a_redelivered_event_does_not_complete_a_compound_trigger_again(env: Env) -> None:
    automation = env.automation(trigger=compound("all", "a", "b"))
    first = env.emit("a")
    env.emit("b")
    env.plane.automations.ingest([first])
    env.emit("b")
    assert len(env.fired(automation)) == 1


def test_a_paused_automation_ignores_events_until_resumed(env: Env) -> None:
    automation = env.automation(trigger={"expect": ["order.placed"], "threshold": 2})
    env.emit("order.placed")
    env.plane.automations.set_enabled(automation.id, False)
    env.emit("order.placed")
    env.emit("order.placed")
    assert env.fired(automation) == []
    env.plane.automations.set_enabled(automation.id, True)
    env.emit("order.placed")  # resumed afresh: the count before the pause is gone
    assert env.fired(automation) == []
    env.emit("order.placed")
    assert len(env.fired(automation)) == 1


def test_an_automation_created_in_another_process_is_seen_by_the_next_batch(
    env: Env, kv_backend: Any
) -> None:
    if kv_backend.name == "memory":
        pytest.skip("a memory store lives in one process")
    other = env.plane_on(kv_backend.open(env.clock))
    other.events.emit([Event(event="warm.up", occurred=env.now(), resource=resource("x"))])  # caches none
    automation = env.automation(trigger={"expect": ["order.placed"]})
    other.events.emit([Event(event="order.placed", occurred=env.now(), resource=resource("shop.order.1"))])
    assert len(env.fired(automation)) == 1
    env.plane.automations.set_enabled(automation.id, False)
    other.events.emit([Event(event="order.placed", occurred=env.now(), resource=resource("shop.order.2"))])
    assert len(env.fired(automation)) == 1


def test_events_ingested_at_once_by_several_threads_are_each_counted_once(env: Env, kv_backend: Any) -> None:
    automation = env.automation(trigger={"expect": ["order.failed"], "threshold": 10, "within": 3600})

    def send(worker: int) -> None:
        for n in range(5):
            subject = f"shop.order.{worker}-{n}"
            env.plane.events.emit(
                [Event(event="order.failed", occurred=env.now(), resource=resource(subject))]
            )

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fired = env.fired(automation)
    assert len(fired) == 2
    assert len({e.id for f in fired for e in f.events}) == 20


def test_a_firing_is_recorded_with_its_outcomes_and_announced(env: Env) -> None:
    automation = env.automation(trigger={"expect": ["order.placed"]})
    first = env.emit("order.placed")
    env.advance(1)
    second = env.emit("order.placed", "shop.order.2")
    records = env.plane.automations.firings(automation.id)
    assert [r.firing.triggering_event.id for r in records if r.firing.triggering_event] == [
        second.id,
        first.id,
    ]
    assert records[0].outcomes == [
        ActionOutcome(index=0, type="do-nothing", ok=True, detail="acted on triggered")
    ]
    assert records[0].finished == env.now()
    assert len(env.plane.automations.firings(automation.id, limit=1)) == 1
    announced = env.plane.events.query(resource_id=f"overcast.automation.{automation.id}").items
    assert [e.event for e in announced] == ["overcast.automation.triggered"] * 2
    assert (
        announced[0].related_in_role("triggering-event")[0]["overcast.resource.id"]
        == f"overcast.event.{second.id}"
    )
    assert announced[0].payload["firing_id"] == str(records[0].firing.id)


def test_an_automation_does_not_fire_on_its_own_announcements(env: Env) -> None:
    watcher = env.automation(name="watcher", trigger={"expect": ["overcast.automation.triggered"]})
    orders = env.automation(name="orders", trigger={"expect": ["order.placed"]})
    env.emit("order.placed")
    assert len(env.fired(orders)) == 1
    [seen] = env.fired(watcher)  # orders' announcement, not its own
    assert seen.triggering_event is not None
    assert seen.triggering_event.resource_id == f"overcast.automation.{orders.id}"


def test_an_action_that_raises_is_recorded_as_failed(kv_backend: Any) -> None:
    clock = FakeClock(START.timestamp())

    def broken(automation: Automation, firing: Firing) -> list[ActionOutcome]:
        raise RuntimeError("the executor broke")

    plane = ControlPlane(
        kv_backend.open(clock), act=broken, clock=lambda: datetime.fromtimestamp(clock(), UTC)
    )
    automation = plane.automations.create(
        AutomationCreate.model_validate({"name": "x", "trigger": {"expect": ["order.placed"]}})
    )
    plane.events.emit([Event(event="order.placed", occurred=START, resource=resource("shop.order.1"))])
    [record] = plane.automations.firings(automation.id)
    assert [(o.ok, o.detail) for o in record.outcomes] == [(False, "RuntimeError: the executor broke")]


# -- proactive triggers -----------------------------------------------------------------------


def test_a_proactive_trigger_fires_once_when_the_expected_event_does_not_arrive(env: Env) -> None:
    automation = env.automation(trigger={"posture": "Proactive", "expect": ["heartbeat"], "within": 60})
    env.advance(30)
    assert env.plane.tick.run().firings == []
    env.advance(31)
    report = env.plane.tick.run()
    [firing] = env.fired(automation)
    assert report.firings == [str(firing.id)] and firing.triggering_event is None
    assert env.plane.tick.run().firings == []  # a second tick: the window is closed already
    env.advance(60)  # the next window passes without a heartbeat too
    assert len(env.plane.automations.evaluate_proactive()) == 1
    assert len(env.fired(automation)) == 2


def test_two_processes_closing_the_same_window_fire_once(env: Env, kv_backend: Any) -> None:
    if kv_backend.name == "memory":
        pytest.skip("a memory store lives in one process")
    automation = env.automation(trigger={"posture": "Proactive", "expect": ["heartbeat"], "within": 60})
    other = env.plane_on(kv_backend.open(env.clock))
    env.advance(61)
    results: list[list[Firing]] = []
    threads = [
        threading.Thread(target=lambda p=p: results.append(p.automations.evaluate_proactive()))
        for p in (env.plane, other)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(r) for r in results) == 1
    assert len(env.fired(automation)) == 1


def test_a_proactive_trigger_does_not_fire_when_the_event_arrives_in_time(env: Env) -> None:
    automation = env.automation(trigger={"posture": "Proactive", "expect": ["heartbeat"], "within": 60})
    env.advance(50)
    env.emit("heartbeat")
    env.advance(11)
    assert env.plane.tick.run().firings == []
    env.advance(50)
    env.emit("heartbeat")
    env.advance(20)
    assert env.plane.tick.run().firings == []
    assert env.fired(automation) == []


def test_a_late_event_resolves_the_proactive_firing(env: Env) -> None:
    automation = env.automation(trigger={"posture": "Proactive", "expect": ["heartbeat"], "within": 60})
    env.advance(61)
    [triggered] = env.plane.automations.evaluate_proactive()
    env.advance(5)
    beat = env.emit("heartbeat")
    [resolved] = env.fired(automation, FiringKind.RESOLVED)
    assert resolved.triggering_event is not None and resolved.triggering_event.id == beat.id
    kinds = [r.firing.kind for r in env.plane.automations.firings(automation.id)]
    assert kinds == [FiringKind.RESOLVED, FiringKind.TRIGGERED]
    announced = env.plane.events.query(resource_id=f"overcast.automation.{automation.id}").items
    assert [e.event for e in announced] == ["overcast.automation.resolved", "overcast.automation.triggered"]
    assert triggered.id != resolved.id


def test_after_opens_a_proactive_window_per_bucket(env: Env) -> None:
    automation = env.automation(
        trigger={
            "posture": "Proactive",
            "after": ["order.placed"],
            "expect": ["order.shipped"],
            "for_each": ["overcast.resource.id"],
            "within": 3600,
        }
    )
    env.advance(7200)
    assert env.plane.tick.run().firings == []  # nothing placed: no window
    placed = env.emit("order.placed", "shop.order.1")
    env.emit("order.placed", "shop.order.2")
    env.advance(600)
    env.emit("order.shipped", "shop.order.2")
    env.advance(3001)
    env.plane.tick.run()
    [firing] = env.fired(automation)
    assert firing.triggering_labels == {"overcast.resource.id": "shop.order.1"}
    assert firing.triggering_event is not None and firing.triggering_event.id == placed.id
    env.advance(7200)
    assert env.plane.tick.run().firings == []  # no new window until another order.placed


def test_a_paused_automation_ignores_its_proactive_windows(env: Env) -> None:
    automation = env.automation(trigger={"posture": "Proactive", "expect": ["heartbeat"], "within": 60})
    env.plane.automations.set_enabled(automation.id, False)
    env.advance(61)
    assert env.plane.tick.run().firings == []
    env.plane.automations.set_enabled(automation.id, True)  # its window starts now
    env.advance(59)
    assert env.plane.tick.run().firings == []
    env.advance(2)
    assert len(env.plane.tick.run().firings) == 1


# -- compound and sequence triggers -----------------------------------------------------------


def compound(require: Any, *names: str, within: int | None = None) -> dict[str, Any]:
    return {
        "type": "compound",
        "require": require,
        "within": within,
        "triggers": [{"expect": [n]} for n in names],
    }


def test_a_compound_trigger_fires_when_all_children_fired(env: Env) -> None:
    automation = env.automation(trigger=compound("all", "a", "b"))
    env.emit("a")
    env.emit("a")
    assert env.fired(automation) == []
    last = env.emit("b")
    [firing] = env.fired(automation)
    assert firing.trigger_path == "" and firing.triggering_event is not None
    assert firing.triggering_event.id == last.id
    assert {e.event for e in firing.events} == {"a", "b"}
    env.emit("b")  # the children start over
    assert len(env.fired(automation)) == 1


def test_a_compound_trigger_fires_on_any_child_or_a_number_of_them(env: Env) -> None:
    anyone = env.automation(name="any", trigger=compound("any", "a", "b"))
    two = env.automation(name="two", trigger=compound(2, "a", "b", "c"))
    env.emit("a")
    assert len(env.fired(anyone)) == 1 and env.fired(two) == []
    env.emit("c")
    assert len(env.fired(anyone)) == 1 and len(env.fired(two)) == 1
    env.emit("b")
    assert len(env.fired(anyone)) == 2 and len(env.fired(two)) == 1


def test_a_compound_trigger_counts_children_within_its_window(env: Env) -> None:
    automation = env.automation(trigger=compound("all", "a", "b", within=60))
    env.emit("a")
    env.advance(61)
    env.emit("b")
    assert env.fired(automation) == []
    env.emit("a")
    assert len(env.fired(automation)) == 1


def test_a_sequence_trigger_fires_only_in_order(env: Env) -> None:
    automation = env.automation(
        trigger={"type": "sequence", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}, {"expect": ["c"]}]}
    )
    env.emit("b")
    env.emit("a")
    env.emit("c")
    assert env.fired(automation) == []  # b came before a
    env.emit("b")
    env.emit("c")
    assert len(env.fired(automation)) == 1


def test_a_compound_trigger_can_wait_for_an_absence(env: Env) -> None:
    automation = env.automation(
        trigger={
            "type": "compound",
            "require": "all",
            "triggers": [
                {"expect": ["deploy.finished"]},
                {"posture": "Proactive", "expect": ["heartbeat"], "within": 60},
            ],
        }
    )
    env.emit("deploy.finished")
    assert env.fired(automation) == []
    env.advance(61)
    env.plane.tick.run()
    [firing] = env.fired(automation)
    assert firing.trigger_path == ""


# -- cost -------------------------------------------------------------------------------------


class CountingStore(MemoryKeyValueStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.reads: list[tuple[str, str]] = []

    def get(self, pk: str, sk: str) -> Any:
        self.reads.append((pk, sk))
        return super().get(pk, sk)


def test_a_batch_that_concerns_no_trigger_costs_one_read() -> None:
    clock = FakeClock(START.timestamp())
    store = CountingStore(clock)
    plane = ControlPlane(store, act=Recorder(), clock=lambda: datetime.fromtimestamp(clock(), UTC))
    batch = [
        Event(event="order.placed", occurred=START, resource=resource(f"shop.order.{n}")) for n in range(20)
    ]
    store.reads.clear()
    plane.automations.ingest(batch)
    assert len(store.reads) == 1
    plane.automations.create(
        AutomationCreate.model_validate({"name": "x", "trigger": {"expect": ["order.paid"]}})
    )
    plane.automations.ingest(batch)  # the cache is refreshed once
    store.reads.clear()
    plane.automations.ingest(batch)
    assert len(store.reads) == 1


def test_catch_all_automations_do_not_fire_on_each_others_firings(plane: Any) -> None:
    """A trigger with no ``expect`` counts every event, but not automations' own events: one
    event fires each catch-all automation once, not a cascade of firings on firings."""
    from overcast.core.automations import AutomationCreate
    from overcast.core.events import Event, resource

    made = [
        plane.automations.create(
            AutomationCreate.model_validate(
                {"name": f"all {i}", "trigger": {}, "actions": [{"type": "do-nothing"}]}
            )
        )
        for i in range(5)
    ]
    plane.events.emit([Event(event="thing.happened", resource=resource("thing.1"))])
    assert [len(plane.automations.firings(a.id)) for a in made] == [1] * 5


# -- actions run at least once ------------------------------------------------------------------


class _Killed(BaseException):
    """The evaluating process dying mid-actions (no ``except Exception`` stops it)."""


class Dying(Recorder):
    """An actions executor whose process dies on its first ``deaths`` calls."""

    def __init__(self, deaths: int) -> None:
        super().__init__()
        self.deaths = deaths

    def __call__(self, automation: Automation, firing: Firing) -> list[ActionOutcome]:
        if self.deaths:
            self.deaths -= 1
            raise _Killed
        return super().__call__(automation, firing)


def _dying_plane(env: Env, deaths: int) -> tuple[ControlPlane, Dying, Automation]:
    act = Dying(deaths)
    plane = ControlPlane(env.store, act=act, clock=env.now)
    automation = plane.automations.create(
        AutomationCreate.model_validate(
            {"name": "x", "trigger": {"expect": ["order.placed"]}, "actions": [{"type": "do-nothing"}]}
        )
    )
    with pytest.raises(_Killed):
        plane.events.emit(
            [Event(event="order.placed", occurred=env.now(), resource=resource("shop.order.1"))]
        )
    return plane, act, automation


def test_the_tick_runs_the_actions_of_a_firing_whose_process_died_once_its_lease_lapses(env: Env) -> None:
    from overcast.core.services._firings import ACTIONS_LEASE

    plane, act, automation = _dying_plane(env, deaths=1)
    [record] = plane.automations.firings(automation.id)
    assert record.finished is None and record.outcomes == []
    env.advance(ACTIONS_LEASE.total_seconds() - 1)
    assert plane.tick.run().firings == []  # the process may still be running them
    assert act.calls == []

    env.advance(2)
    report = plane.tick.run()
    [(acted_for, firing)] = act.calls
    assert acted_for.id == automation.id and report.firings == [str(firing.id)] == [str(record.firing.id)]
    [record] = plane.automations.firings(automation.id)
    assert record.finished is not None and [o.ok for o in record.outcomes] == [True]
    env.advance(ACTIONS_LEASE.total_seconds() * 2)
    assert plane.tick.run().firings == [] and len(act.calls) == 1  # finished: never again


def test_an_unfinished_firing_of_a_paused_automation_is_finished_without_its_actions(env: Env) -> None:
    from overcast.core.services._firings import ACTIONS_LEASE

    plane, act, automation = _dying_plane(env, deaths=1)
    plane.automations.set_enabled(automation.id, False)
    env.advance(ACTIONS_LEASE.total_seconds() + 1)
    assert plane.tick.run().firings == [] and act.calls == []
    [record] = plane.automations.firings(automation.id)
    assert record.finished is not None
    assert [(o.ok, o.detail) for o in record.outcomes] == [
        (False, "the automation was paused before its actions finished")
    ]


def test_actions_that_never_finish_are_abandoned_after_their_attempts(env: Env) -> None:
    from overcast.core.services._firings import ACTIONS_LEASE, MAX_ACTION_ATTEMPTS

    plane, act, automation = _dying_plane(env, deaths=MAX_ACTION_ATTEMPTS)
    for _ in range(MAX_ACTION_ATTEMPTS - 1):  # each retry dies too
        env.advance(ACTIONS_LEASE.total_seconds() + 1)
        with pytest.raises(_Killed):
            plane.tick.run()
    env.advance(ACTIONS_LEASE.total_seconds() + 1)
    assert plane.tick.run().firings == [] and act.calls == []
    [record] = plane.automations.firings(automation.id)
    assert record.finished is not None and not record.outcomes[0].ok
    assert f"started {MAX_ACTION_ATTEMPTS} times" in record.outcomes[0].detail


def test_a_firing_left_by_a_killed_process_is_acted_on_by_the_next_tick(tmp_path: Any) -> None:
    """A real process records the firing, then dies inside its actions (``os._exit``)."""
    import subprocess
    import sys
    import time

    from overcast.adapters.factory import open_store
    from overcast.core.services._firings import ACTIONS_LEASE

    url = f"sqlite://{tmp_path / 'kv.db'}"
    store = open_store(url)
    clock = FakeClock(time.time())  # the child runs on the real clock
    recorder = Recorder()
    plane = ControlPlane(store, act=recorder, clock=lambda: datetime.fromtimestamp(clock(), UTC))
    automation = plane.automations.create(
        AutomationCreate.model_validate({"name": "x", "trigger": {"expect": ["order.placed"]}})
    )
    child = (
        "import os, sys\n"
        "from overcast.adapters.factory import open_store\n"
        "from overcast.core.events import Event, resource\n"
        "from overcast.core.services import ControlPlane\n"
        "plane = ControlPlane(open_store(sys.argv[1]), act=lambda automation, firing: os._exit(9))\n"
        "plane.events.emit([Event(event='order.placed', resource=resource('shop.order.1'))])\n"
    )
    done = subprocess.run([sys.executable, "-c", child, url], capture_output=True, timeout=60, check=False)
    assert done.returncode == 9, done.stderr.decode()
    [record] = plane.automations.firings(automation.id)
    assert record.finished is None

    clock.advance(ACTIONS_LEASE.total_seconds() + 1)
    assert plane.tick.run().firings == [str(record.firing.id)]
    assert [firing.id for firing in recorder.of(automation)] == [record.firing.id]
    store.close()  # type: ignore[attr-defined]
