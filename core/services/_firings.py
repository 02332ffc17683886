"""Firings: recorded once, announced, acted on; a compound trigger's children collected.

A firing of an automation's root trigger gets a record keyed by its deterministic id, written
only when absent: whichever evaluation writes it announces it (``overcast.automation.triggered``
or ``.resolved``, about ``overcast.automation.<id>``, the triggering event related as
``overcast.event.<id>`` in role ``triggering-event``), runs its actions and stores their
outcomes on the record; the others know it fired already.

Actions run at least once. Until its outcomes are stored, a record is listed as unfinished
with a lease (``ACTIONS_LEASE``); a process that dies in between (a function timed out, a
flow process killed) leaves it listed, and the tick runs its actions again once the lease has
lapsed (``resume``), up to ``MAX_ACTION_ATTEMPTS`` times. Running a deployment is idempotent
per firing; a webhook or notification may then be sent twice. A firing of a child trigger is
noted in its parent's item (under the item's version) and, when enough children fired (in
order, for a sequence) within the parent's window, makes the parent's firing.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from overcast.core import keys
from overcast.core.automations import (
    ActionOutcome,
    Automation,
    CompoundTrigger,
    EventTrigger,
    Firing,
    FiringKind,
    firing_id,
)
from overcast.core.errors import ConditionFailedError, NotFoundError, OvercastError
from overcast.core.events import Event, related, resource
from overcast.core.ports import Item, KeyValueStore
from overcast.core.schemas import json_bytes
from overcast.core.services._buckets import Intent
from overcast.core.services._listing import due_items
from overcast.core.services._trigger_index import AUTOMATION_RESOURCE, trigger_at
from overcast.core.services.events import Events
from overcast.core.states import utcnow

logger = logging.getLogger("overcast.automations")

Act = Callable[[Automation, Firing], list[ActionOutcome]]
"""Runs a firing's actions and says what each did (``Actions.run``)."""

MAX_ATTEMPTS = 25
FIRING_RETENTION = timedelta(days=7)
MAX_DONE = 100
"""How many child firings a compound trigger remembers having used (a redelivered one is ignored)."""
MAX_FIRING_BYTES = 300_000
"""The most a firing record's firing may take as JSON; its oldest events are left out past it."""
TRIGGERED_EVENT = "overcast.automation.triggered"
RESOLVED_EVENT = "overcast.automation.resolved"
ACTIONS_LEASE = timedelta(minutes=15)
"""How long a firing's actions may run before the tick runs them again: a cloud function's
longest timeout (Lambda's), well past an action's own retries."""
MAX_ACTION_ATTEMPTS = 3
"""How many times a firing's actions are started before it is finished as abandoned."""
MAX_RESUMED = 100
"""The most unfinished firings one tick takes over (per shard); the next tick takes the rest."""


class ChildFiringsConflictError(ConditionFailedError):
    """Raised when a compound trigger's child firings kept changing under a write."""


class Firings:
    """Records, announces and acts on firings.

    Args:
        store: the key-value store.
        events: where firings are announced, and the events they list are read from.
        act: runs a firing's actions; without it firings are recorded and announced only.
        clock: the current time (injected for tests).
        shards: how many partitions list the unfinished firings.
    """

    def __init__(
        self,
        store: KeyValueStore,
        events: Events,
        *,
        act: Act | None = None,
        clock: Callable[[], datetime] = utcnow,
        shards: int = keys.SHARDS,
    ) -> None:
        self._store = store
        self._events = events
        self._act = act
        self._clock = clock
        self._shards = shards

    def deliver(
        self,
        automation: Automation,
        made: str,
        path: str,
        intents: list[Intent],
        known: dict[uuid.UUID, Event],
        now: datetime | None = None,
    ) -> list[Firing]:
        """Record and act on the firings of the trigger at ``path``, or note a child's in its parent.

        Args:
            automation: the automation whose trigger fired.
            made: the generation of its trigger (see ``_trigger_index.generation``).
            path: the trigger that fired (``""`` the root).
            intents: its firings.
            known: events at hand by id (others are read from the events store).
            now: when they fired (default: the clock's now).

        Returns:
            The automation's new firings (a firing recorded before is not new).
        """
        fired: list[Firing] = []
        for intent in intents:
            if not path:
                firing = self._firing(automation, path, intent, known, now or self._clock())
                if self._record(automation, firing):
                    fired.append(firing)
            elif intent.kind is FiringKind.TRIGGERED:
                parent_path, _, position = path.rpartition(".")
                parent = self._child_fired(automation, made, parent_path, int(position), intent)
                if parent is not None:
                    fired += self.deliver(automation, made, parent_path, [parent], known, now)
        return fired

    def _child_fired(
        self, automation: Automation, made: str, path: str, position: int, child: Intent
    ) -> Intent | None:
        """Note a child trigger's firing; return the compound (or sequence) firing it completes."""
        parent = trigger_at(automation.trigger, path)
        assert not isinstance(parent, EventTrigger)
        pk, sk = keys.automation_children(automation.id, path)
        for _ in range(MAX_ATTEMPTS):
            now = self._clock()
            item = self._store.get(pk, sk)
            fresh = item is not None and item["generation"] == made
            children: dict[str, dict[str, Any]] = dict(item["children"]) if item and fresh else {}
            seq = int(item["seq"]) if item and fresh else 0
            done: list[str] = list(item["done"]) if item and fresh else []
            if str(child.id) in done or any(c["id"] == str(child.id) for c in children.values()):
                return None  # this firing was noted already (a redelivery)
            if parent.within is not None:
                oldest = now - parent.within
                children = {k: c for k, c in children.items() if datetime.fromisoformat(c["at"]) >= oldest}
            children[str(position)] = {
                "id": str(child.id),
                "at": now.isoformat(),
                "seq": seq + 1,
                "labels": child.labels,
                "events": list(child.event_ids),
                "event": child.triggering_event,
            }
            ordered = [children[k] for k in sorted(children, key=int)]
            if isinstance(parent, CompoundTrigger):
                complete = len(ordered) >= parent.required
            else:
                complete = len(ordered) == len(parent.triggers) and all(
                    a["seq"] < b["seq"] for a, b in itertools.pairwise(ordered)
                )
            try:  # emptied when complete, not deleted (see ``_step``)
                self._store.put(
                    {
                        "pk": pk,
                        "sk": sk,
                        "generation": made,
                        "seq": seq + 1,
                        "children": {} if complete else children,
                        "done": [*done, *(c["id"] for c in ordered)][-MAX_DONE:] if complete else done,
                    },
                    if_absent=item is None,
                    if_version=int(item["v"]) if item is not None else None,
                )
            except ConditionFailedError:
                continue
            if not complete:
                return None
            latest = max(ordered, key=lambda c: int(c["seq"]))
            event_ids = list(dict.fromkeys(e for c in ordered for e in c["events"]))
            return Intent(
                id=firing_id(automation.id, "compound", path, *(c["id"] for c in ordered)),
                kind=FiringKind.TRIGGERED,
                labels=dict(latest["labels"]),
                event_ids=tuple(event_ids[-50:]),
                triggering_event=latest["event"],
            )
        raise ChildFiringsConflictError(pk, sk, "the child firings kept changing")

    def _firing(
        self,
        automation: Automation,
        path: str,
        intent: Intent,
        known: dict[uuid.UUID, Event],
        now: datetime,
    ) -> Firing:
        def load(event_id: str) -> Event | None:
            ident = uuid.UUID(event_id)
            if ident not in known:
                try:
                    known[ident] = self._events.get(ident)
                except NotFoundError:
                    return None  # expired
            return known[ident]

        counted = [e for e in map(load, intent.event_ids) if e is not None]
        return Firing(
            id=intent.id,
            automation_id=automation.id,
            kind=intent.kind,
            occurred=now,
            trigger_path=path,
            triggering_event=load(intent.triggering_event) if intent.triggering_event else None,
            triggering_labels=intent.labels,
            events=counted[-50:],
        )

    def _record(self, automation: Automation, firing: Firing) -> bool:
        """Record a new firing, announce it and run its actions; ``False`` when it was recorded before."""
        pk, sk = keys.automation_firing(automation.id, firing.id)
        item: Item = {
            "pk": pk,
            "sk": sk,
            "gsi1pk": keys.automation_firings(automation.id),
            "gsi1sk": f"{keys.ts(firing.occurred)}#{firing.id}",
            "ttl": int((firing.occurred + FIRING_RETENTION).timestamp()),
            "firing": _bounded(firing),
            "outcomes": [],
            "finished": None,
            "attempts": 1,
            **self._lease(automation.id, firing.id, self._clock()),
        }
        try:
            self._store.put(item, if_absent=True)
        except ConditionFailedError:
            return False  # fired already: by another process, or for a redelivered event
        self._announce(automation, firing)
        self._finish(item, self._run(automation, firing))
        return True

    def resume(self, now: datetime, read: Callable[[uuid.UUID], Automation | None]) -> list[Firing]:
        """Run again the actions of the firings whose lease lapsed before they finished.

        Each is claimed first (a versioned write that renews its lease), so two ticks racing
        run it once. A firing whose automation is gone or paused, or whose actions were
        started ``MAX_ACTION_ATTEMPTS`` times, is finished with a failed outcome saying so.

        Args:
            now: the current time.
            read: the automation of an id as it stands now (``None``: deleted).

        Returns:
            The firings whose actions this call ran.
        """
        resumed: list[Firing] = []
        partitions = map(keys.firings_unfinished, range(self._shards))
        for item in due_items(self._store, partitions, index="gsi2", now=now, limit=MAX_RESUMED):
            try:
                firing = self._resume_one(item, now, read)
            except OvercastError:
                logger.exception("could not resume the unfinished firing %s", item["sk"])
                continue
            if firing is not None:
                resumed.append(firing)
        return resumed

    def _resume_one(
        self, item: Item, now: datetime, read: Callable[[uuid.UUID], Automation | None]
    ) -> Firing | None:
        firing = Firing.model_validate(item["firing"])
        claimed = {k: v for k, v in item.items() if k != "v"}
        claimed["attempts"] = int(item.get("attempts", 1)) + 1
        claimed.update(self._lease(firing.automation_id, firing.id, now))
        try:
            self._store.put(claimed, if_version=int(item["v"]))
        except ConditionFailedError:
            return None  # finished or claimed meanwhile
        automation = read(firing.automation_id)
        if claimed["attempts"] > MAX_ACTION_ATTEMPTS:
            why = f"abandoned: its actions were started {MAX_ACTION_ATTEMPTS} times and never finished"
        elif automation is None:
            why = "the automation was deleted before its actions finished"
        elif not automation.enabled:
            why = "the automation was paused before its actions finished"
        else:
            logger.warning(
                "automation %s: running the actions of firing %s again (attempt %d)",
                automation.id,
                firing.id,
                claimed["attempts"],
            )
            self._finish(claimed, self._run(automation, firing))
            return firing
        self._finish(claimed, [ActionOutcome(index=-1, type="error", ok=False, detail=why)])
        return None

    def _lease(self, automation_id: uuid.UUID, ident: uuid.UUID, now: datetime) -> Item:
        """The index attributes listing a firing as unfinished until ``now + ACTIONS_LEASE``."""
        return {
            "gsi2pk": keys.firings_unfinished(keys.shard_of(ident, self._shards)),
            "gsi2sk": f"{keys.ts(now + ACTIONS_LEASE)}#{automation_id}#{ident}",
        }

    def _finish(self, item: Item, outcomes: list[ActionOutcome]) -> None:
        """Store a firing's outcomes; it leaves the unfinished list."""
        done = {k: v for k, v in item.items() if k not in ("v", "gsi2pk", "gsi2sk")}
        done["outcomes"] = [o.model_dump(mode="json") for o in outcomes]
        done["finished"] = self._clock().isoformat()
        try:
            self._store.put(done)
        except OvercastError:  # left unfinished: the tick runs its actions again after the lease
            logger.exception(
                "automation %s: could not record the outcomes of firing %s", item["sk"], item["pk"]
            )

    def _run(self, automation: Automation, firing: Firing) -> list[ActionOutcome]:
        if self._act is None:
            return []
        try:
            return list(self._act(automation, firing))
        except Exception as exc:  # an action executor's bug must not lose the firing's record
            logger.exception("automation %s: the actions of firing %s failed", automation.id, firing.id)
            return [ActionOutcome(index=-1, type="error", ok=False, detail=f"{type(exc).__name__}: {exc}")]

    def _announce(self, automation: Automation, firing: Firing) -> None:
        """Emit ``overcast.automation.triggered`` (or ``.resolved``) for a new firing."""
        triggering = firing.triggering_event
        event = Event(
            id=firing_id(firing.id, "announced"),
            occurred=firing.occurred,
            event=TRIGGERED_EVENT if firing.kind is FiringKind.TRIGGERED else RESOLVED_EVENT,
            resource=resource(f"{AUTOMATION_RESOURCE}{automation.id}", automation.name),
            related=(
                [related(f"overcast.event.{triggering.id}", "triggering-event", triggering.event)]
                if triggering is not None
                else []
            ),
            payload={
                "firing_id": str(firing.id),
                "trigger_path": firing.trigger_path,
                "triggering_labels": dict(firing.triggering_labels),
            },
        )
        try:
            self._events.emit([event])
        except OvercastError:  # the firing stands; its announcement is best effort
            logger.warning("automation %s: could not emit %s", automation.id, event.event, exc_info=True)


def _bounded(firing: Firing) -> dict[str, Any]:
    """The firing as JSON for its record, its oldest events left out past ``MAX_FIRING_BYTES``."""
    data = firing.model_dump(mode="json")
    while json_bytes(data) > MAX_FIRING_BYTES and data["events"]:
        data["events"] = data["events"][1:]
    if json_bytes(data) > MAX_FIRING_BYTES and data["triggering_event"] is not None:
        data["triggering_event"] = None  # one event alone too large to keep twice
    return data
