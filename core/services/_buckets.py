"""Trigger buckets: the state of one event trigger for one value of its ``for_each`` labels.

A bucket is a window (``start`` to ``end``; no ``end``: no limit) and the expected events
counted in it. The functions here are pure: given a trigger, a bucket (``None``: none is
stored) and an event, or the time at which a proactive window closed, they return the
bucket's next state (``None``: delete it) and the firings it makes, as ``Intent``s. The
automations service reads and writes the bucket under its version and retries a lost race,
so these functions may run more than once for one event.

Reactive: an ``after`` event arms a bucket (events before it are ignored); without ``after``
the first expected event opens one. Each expected event in the window counts; reaching the
threshold fires, and the bucket goes (the next event starts afresh). An event past the
window's end starts a new window; one older than its start is ignored.

Proactive: an ``after`` event arms a bucket; without ``after`` a bucket opens when the
automation is enabled (without ``for_each``) or on a key's first expected event, and a new
window follows each one that closes. A window that closes with fewer than ``threshold``
events fires; the firing waits (``fired``) for the expected event, whose arrival resolves it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from overcast.core import keys
from overcast.core.automations import EventTrigger, FiringKind, Posture, firing_id
from overcast.core.events import Event

MAX_BUCKET_EVENTS = 50
"""The most event ids a bucket remembers (a firing lists at most 50 events)."""
RESOLVE_FOR = timedelta(days=7)
"""How long a proactive firing waits for the late event that resolves it."""
REACTIVE_GRACE = timedelta(days=1)
"""How long a reactive window's bucket is kept past its end (it then expires)."""


def key_hash(labels: dict[str, str]) -> str:
    """The hash of a bucket's ``for_each`` labels, for its key (stable across processes)."""
    text = json.dumps(labels, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Where:
    """Which bucket: the automation (and the generation of its trigger the bucket counts
    for), the trigger's path, the bucket's labels and their hash."""

    automation_id: uuid.UUID
    generation: str
    path: str
    labels: dict[str, str]
    key: str


@dataclass
class Bucket:
    """A bucket's state.

    Attributes:
        generation: the generation of the trigger it counts for (another's bucket is stale:
            the trigger changed, or the automation was paused).
        start: the window's start; ``None``: not armed (a proactive firing waiting for its
            expected event).
        end: the window's end; ``None``: no limit.
        count: the expected events counted in the window.
        event_ids: the latest events counted (or arming), at most ``MAX_BUCKET_EVENTS``.
        last_event: the latest of them (a proactive firing's triggering event).
        fired: the id of a proactive firing its expected event would resolve.
        resolve_until: until when a bucket that is not armed waits for that event.
    """

    generation: str
    start: datetime | None = None
    end: datetime | None = None
    count: int = 0
    event_ids: list[str] = field(default_factory=list)
    last_event: str | None = None
    fired: str | None = None
    resolve_until: datetime | None = None

    def copy(self) -> Bucket:
        """A copy that can be changed without changing this one."""
        return dataclasses.replace(self, event_ids=list(self.event_ids))

    def remember(self, event_id: str) -> None:
        """Note an event as counted (or arming)."""
        self.event_ids = [*self.event_ids, event_id][-MAX_BUCKET_EVENTS:]
        self.last_event = event_id

    def expires(self) -> datetime | None:
        """When the bucket's item may expire (it is of no use after)."""
        if self.end is not None:
            return self.end + max(REACTIVE_GRACE, RESOLVE_FOR if self.fired else timedelta(0))
        return self.resolve_until

    def as_json(self) -> dict[str, Any]:
        """The state as JSON for its item."""
        return {
            "generation": self.generation,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "count": self.count,
            "event_ids": self.event_ids,
            "last_event": self.last_event,
            "fired": self.fired,
            "resolve_until": self.resolve_until.isoformat() if self.resolve_until else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bucket:
        """The state stored by ``as_json``."""

        def moment(name: str) -> datetime | None:
            value = data.get(name)
            return datetime.fromisoformat(value) if value else None

        return cls(
            generation=str(data["generation"]),
            start=moment("start"),
            end=moment("end"),
            count=int(data["count"]),
            event_ids=[str(e) for e in data["event_ids"]],
            last_event=data.get("last_event"),
            fired=data.get("fired"),
            resolve_until=moment("resolve_until"),
        )


@dataclass(frozen=True)
class Intent:
    """A firing a transition makes (the service turns it into a ``Firing``).

    Attributes:
        id: the firing's deterministic id.
        kind: triggered or resolved.
        labels: the bucket's ``for_each`` labels.
        event_ids: the events counted toward it.
        triggering_event: the event that completed it (a proactive firing: the bucket's last event).
    """

    id: uuid.UUID
    kind: FiringKind
    labels: dict[str, str]
    event_ids: tuple[str, ...]
    triggering_event: str | None


def window(trigger: EventTrigger, start: datetime, where: Where, *, fired: str | None = None) -> Bucket:
    """A new, empty window of ``trigger`` from ``start``."""
    end = start + trigger.within if trigger.within else None
    return Bucket(generation=where.generation, start=start, end=end, fired=fired)


def on_event(
    trigger: EventTrigger, where: Where, bucket: Bucket | None, event: Event
) -> tuple[Bucket | None, list[Intent]]:
    """The bucket after ``event`` (one the trigger covers), and the firings it makes.

    The state returned equals ``bucket`` when the event changes nothing.
    """
    if bucket is not None and str(event.id) in bucket.event_ids:
        return bucket, []  # seen already: a redelivery, or a retry after a lost race
    if trigger.posture is Posture.PROACTIVE:
        return _proactive(trigger, where, bucket, event)
    return _reactive(trigger, where, bucket, event)


def _reactive(
    trigger: EventTrigger, where: Where, bucket: Bucket | None, event: Event
) -> tuple[Bucket | None, list[Intent]]:
    at, event_id = event.occurred, str(event.id)
    live = bucket if bucket is not None and (bucket.end is None or at <= bucket.end) else None
    if live is None:
        if trigger.after:
            if not trigger.is_after(event.event):
                return None, []  # not armed: the event does not count
            armed = window(trigger, at, where)
            armed.remember(event_id)
            return armed, []
        counting = window(trigger, at, where)
    elif (live.start is not None and at < live.start) or not trigger.is_expected(event.event):
        return bucket, []
    else:
        counting = live.copy()
    counting.count += 1
    counting.remember(event_id)
    if counting.count < trigger.threshold:
        return counting, []
    fired = Intent(
        id=firing_id(where.automation_id, "reactive", where.path, where.key, event_id),
        kind=FiringKind.TRIGGERED,
        labels=where.labels,
        event_ids=tuple(counting.event_ids),
        triggering_event=event_id,
    )
    return None, [fired]  # the bucket resets


def _proactive(
    trigger: EventTrigger, where: Where, bucket: Bucket | None, event: Event
) -> tuple[Bucket | None, list[Intent]]:
    at, event_id = event.occurred, str(event.id)
    intents: list[Intent] = []
    state = bucket.copy() if bucket is not None else None
    if state is not None and state.end is not None and at > state.end:
        state, intents = close(trigger, where, state, at)  # as the tick would have, had it run
    expected, arming = trigger.is_expected(event.event), trigger.is_after(event.event)
    if state is not None and state.fired and expected:
        intents.append(
            Intent(
                id=firing_id(where.automation_id, "resolved", state.fired),
                kind=FiringKind.RESOLVED,
                labels=where.labels,
                event_ids=(event_id,),
                triggering_event=event_id,
            )
        )
        state.fired = None
    if state is None or state.start is None:
        if arming:
            armed = window(trigger, at, where, fired=state.fired if state else None)
            armed.remember(event_id)
            return armed, intents
        if trigger.after or not expected:
            return (state if state is not None and state.fired else None), intents
        state = window(trigger, at, where)  # without after: a key's first event opens its window
    elif (state.start is not None and at < state.start) or not expected:
        return state, intents
    state.count += 1
    state.remember(event_id)
    if trigger.after and state.count >= trigger.threshold:
        return None, intents  # this window is satisfied: nothing can fire for it
    return state, intents


def close(
    trigger: EventTrigger, where: Where, bucket: Bucket, now: datetime
) -> tuple[Bucket | None, list[Intent]]:
    """Close a proactive window that ended (at or before ``now``): fire when it fell short.

    Returns the next state: with ``after``, nothing (or, after a firing, a bucket waiting for
    the event that resolves it); without, the next window (from the end of this one, or from
    ``now`` when whole windows were missed: one firing covers the gap).
    """
    assert bucket.start is not None and bucket.end is not None
    intents: list[Intent] = []
    fired: str | None = None
    if bucket.count < trigger.threshold:
        fid = firing_id(where.automation_id, "proactive", where.path, where.key, keys.ts(bucket.start))
        intents.append(
            Intent(
                id=fid,
                kind=FiringKind.TRIGGERED,
                labels=where.labels,
                event_ids=tuple(bucket.event_ids),
                triggering_event=bucket.last_event,
            )
        )
        fired = str(fid)
    if trigger.after:
        if fired is None:
            return None, intents
        waiting = Bucket(generation=where.generation, fired=fired, resolve_until=now + RESOLVE_FOR)
        waiting.event_ids, waiting.last_event = list(bucket.event_ids), bucket.last_event
        return waiting, intents
    start = bucket.end if now <= bucket.end + trigger.within else now
    return window(trigger, start, where, fired=fired), intents
