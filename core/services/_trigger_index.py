"""The enabled automations' event triggers, indexed by the event names they react to.

Every stored batch of events is evaluated against it, often on a run's hot path: finding the
triggers an event concerns must not mean trying every trigger. Triggers are found by exact
name, then by the prefixes (``overcast.flow-run.*``) that match, then among those that take
any name (no ``expect``); only those are matched against the event's resources.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from overcast.core.automations import (
    Automation,
    CompoundTrigger,
    EventTrigger,
    SequenceTrigger,
    event_triggers,
)
from overcast.core.events import Event

AUTOMATION_RESOURCE = "overcast.automation."
"""The prefix of an automation's resource id (``overcast.automation.<id>``)."""
AUTOMATION_EVENTS = "overcast.automation."
"""The prefix of the events automations emit (``triggered``, ``resolved``, ``action.executed`` …)."""


def generation(automation: Automation) -> str:
    """A hash of the automation's trigger: the state counted for one trigger means nothing to another.

    Lists of strings (sets, in the model) are sorted, so every process computes the same hash.
    """

    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [canonical(v) for v in value]
            return sorted(items) if all(isinstance(i, str) for i in items) else items
        return value

    data = canonical(automation.trigger.model_dump(mode="json"))
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Entry:
    """One event trigger of an enabled automation, at ``path`` in its trigger tree."""

    automation: Automation
    generation: str
    path: str
    trigger: EventTrigger


class TriggerIndex:
    """The event triggers of some automations, found by event name.

    Args:
        automations: the enabled automations.
    """

    def __init__(self, automations: Iterable[Automation] = ()) -> None:
        self.automations: dict[uuid.UUID, Automation] = {}
        self._entries: dict[tuple[uuid.UUID, str], Entry] = {}
        self._exact: dict[str, list[Entry]] = {}
        self._prefixes: list[tuple[str, Entry]] = []
        self._any: list[Entry] = []
        for automation in automations:
            self.automations[automation.id] = automation
            made = generation(automation)
            for path, trigger in event_triggers(automation.trigger):
                entry = Entry(automation, made, path, trigger)
                self._entries[(automation.id, path)] = entry
                if not trigger.expect:  # it counts every event its resources match
                    self._any.append(entry)
                    continue
                for name in sorted(trigger.expect | trigger.after):
                    if name.endswith("*"):
                        self._prefixes.append((name[:-1], entry))
                    else:
                        self._exact.setdefault(name, []).append(entry)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def listens_for(self, prefix: str) -> bool:
        """Whether some trigger may count or be armed by an event whose name starts with ``prefix``."""
        if self._any:
            return True
        if any(name.startswith(prefix) for name in self._exact):
            return True
        return any(p.startswith(prefix) or prefix.startswith(p) for p, _ in self._prefixes)

    def entry(self, automation_id: uuid.UUID, path: str) -> Entry | None:
        """The event trigger at ``path`` of an enabled automation, if any."""
        return self._entries.get((automation_id, path))

    def entries(self) -> list[Entry]:
        """Every event trigger."""
        return list(self._entries.values())

    def matching(self, event: Event) -> list[Entry]:
        """The event triggers ``event`` concerns (each once), in a stable order.

        An automation never reacts to an event about itself (its own ``triggered`` event),
        which would make it fire forever, and automations' events reach only the triggers
        that name them (``overcast.automation.triggered``, ``overcast.automation.*``).
        """
        name = event.event
        if name.startswith(AUTOMATION_EVENTS):
            # Automations' own events reach only triggers that name them: a catch-all trigger
            # (or ``overcast.*``) firing on every firing's event would set off a cascade.
            candidates = [
                *self._exact.get(name, ()),
                *(
                    entry
                    for prefix, entry in self._prefixes
                    if prefix.startswith(AUTOMATION_EVENTS) and name.startswith(prefix)
                ),
            ]
        else:
            candidates = [
                *self._exact.get(name, ()),
                *(entry for prefix, entry in self._prefixes if name.startswith(prefix)),
                *self._any,
            ]
        found: dict[tuple[uuid.UUID, str], Entry] = {}
        own = (
            event.resource_id.removeprefix(AUTOMATION_RESOURCE)
            if event.resource_id.startswith(AUTOMATION_RESOURCE)
            else None
        )
        for entry in candidates:
            key = (entry.automation.id, entry.path)
            if key in found or own == str(entry.automation.id):
                continue
            if entry.trigger.covers(event):
                found[key] = entry
        return list(found.values())


def trigger_at(
    trigger: EventTrigger | CompoundTrigger | SequenceTrigger, path: str
) -> EventTrigger | CompoundTrigger | SequenceTrigger:
    """The trigger at ``path`` (``""`` the root, ``"0.1"`` the second child of the first).

    Raises:
        KeyError: no trigger is at that path.
    """
    node = trigger
    for part in path.split(".") if path else []:
        if isinstance(node, EventTrigger):
            raise KeyError(path)
        node = node.triggers[int(part)]
    return node
