"""How an action finds its target in the triggering event, and how it says it could not.

An inferred target is the resource the event is about when that is of the kind wanted
(``overcast.flow-run.<id>``), else the first related resource in the kind's role
(``deployment``, ``flow-run``, ``work-pool``, ``work-queue``). Pools are found by name: their
own events name them by id and carry the name, deployments' events name them by name.
"""

from __future__ import annotations

import uuid

from overcast.core.events import RESOURCE_ID, RESOURCE_NAME, Event, related


class ActionError(Exception):
    """An action that could not be done: its reason, and the resources it was about."""

    def __init__(self, reason: str, related: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.related = related or []


def as_target(resource_id: str, name: str | None = None) -> dict[str, str]:
    """What an action touched, as a related resource of its event (role ``target``)."""
    return related(resource_id, "target", name)


def find(event: Event | None, kind: str, role: str) -> dict[str, str] | None:
    """The event's resource when it is an ``overcast.<kind>.…``, else its first related one in ``role``."""
    if event is None:
        return None
    prefix = f"overcast.{kind}."
    if event.resource_id.startswith(prefix):
        return event.resource
    return next((r for r in event.related_in_role(role) if r[RESOURCE_ID].startswith(prefix)), None)


def id_of(labels: dict[str, str], kind: str) -> uuid.UUID:
    """The id in ``overcast.<kind>.<id>``; raises ``ActionError`` when it is not a UUID."""
    resource_id = labels[RESOURCE_ID]
    try:
        return uuid.UUID(resource_id.removeprefix(f"overcast.{kind}."))
    except ValueError:
        raise ActionError(f"{resource_id!r} does not name a {kind} by its id") from None


def pool_name(labels: dict[str, str]) -> str:
    """A work pool's name: its ``overcast.resource.name``, else what follows ``overcast.work-pool.``."""
    return labels.get(RESOURCE_NAME) or labels[RESOURCE_ID].removeprefix("overcast.work-pool.")


def inferred_pool(event: Event | None) -> str:
    """The name of the work pool the event is about or related to."""
    labels = find(event, "work-pool", "work-pool")
    if labels is None:
        raise ActionError(not_inferred(event, "work-pool"))
    return pool_name(labels)


def inferred_queue(event: Event | None) -> tuple[str, str]:
    """The pool and name of the work queue the event is about or related to."""
    queue = find(event, "work-queue", "work-queue")
    pool = find(event, "work-pool", "work-pool")
    if queue is None or pool is None or not queue.get(RESOURCE_NAME):
        raise ActionError(
            not_inferred(event, "work-queue")
            + " (a queue is found by its name and its pool's, related in role 'work-pool')"
        )
    return pool_name(pool), queue[RESOURCE_NAME]


def not_inferred(event: Event | None, kind: str) -> str:
    """Why no ``kind`` could be inferred from the event, and what to do instead."""
    if event is None:
        return (
            f"cannot infer the {kind}: the firing has no triggering event (a proactive trigger "
            f"fired); select the {kind} in the action instead"
        )
    return (
        f"cannot infer the {kind}: event {event.event} on {event.resource_id} is not about an "
        f"overcast.{kind}.<id> and has no related resource in role {kind!r}"
    )
