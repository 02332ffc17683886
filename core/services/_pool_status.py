"""How the status of a pool, its queues and its workers is derived, and the events that announce it.

Pure functions: a snapshot of a pool's items and the current time in, statuses and events out.
``WorkPools`` compares what they derive with the status stored on each item and records each
difference with a conditional write that carries its event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from overcast.core.events import Event, related, resource
from overcast.core.work_pools import (
    Worker,
    WorkerStatus,
    WorkPool,
    WorkPoolStatus,
    WorkQueue,
)

ROLE_POOL = "work-pool"


@dataclass(frozen=True, slots=True)
class Status:
    """A derived status and, when it is not READY (or ONLINE), why."""

    value: WorkPoolStatus
    detail: str | None = None


def worker_status(worker: Worker, now: datetime, offline_after: timedelta) -> WorkerStatus:
    """ONLINE while the worker's last heartbeat is younger than ``offline_after``."""
    return WorkerStatus.ONLINE if now - worker.last_heartbeat < offline_after else WorkerStatus.OFFLINE


def pool_status(pool: WorkPool, online: list[Worker], offline_after: timedelta) -> Status:
    """A pool's status, given its online workers.

    PAUSED when paused; a push pool is READY once configured; a pull pool is READY while at
    least one worker is online.
    """
    if pool.paused:
        return Status(WorkPoolStatus.PAUSED, "the pool is paused")
    if pool.is_push:
        if pool.config is None:
            return Status(WorkPoolStatus.NOT_READY, f"the {pool.type.value} pool has no config yet")
        return Status(WorkPoolStatus.READY)
    if online:
        return Status(WorkPoolStatus.READY)
    seconds = int(offline_after.total_seconds())
    return Status(WorkPoolStatus.NOT_READY, f"no worker has sent a heartbeat in the last {seconds} s")


def queue_status(pool: WorkPool, pool_state: Status, queue: WorkQueue, online: list[Worker]) -> Status:
    """A queue's status: PAUSED when paused; READY when its pool is READY and, for a pull pool,
    an online worker polls it."""
    if queue.paused:
        return Status(WorkPoolStatus.PAUSED, "the queue is paused")
    if pool_state.value is not WorkPoolStatus.READY:
        return Status(WorkPoolStatus.NOT_READY, f"its pool is not ready: {pool_state.detail}")
    if pool.is_push or any(w.serves(queue.name) for w in online):
        return Status(WorkPoolStatus.READY)
    return Status(WorkPoolStatus.NOT_READY, "no online worker polls this queue")


@dataclass(frozen=True, slots=True)
class Derived:
    """The statuses of a pool and of its queues and workers at one moment."""

    pool: Status
    queues: dict[str, Status]
    workers: dict[str, WorkerStatus]


def derive(
    pool: WorkPool,
    queues: Sequence[WorkQueue],
    workers: Sequence[Worker],
    *,
    now: datetime,
    offline_after: timedelta,
) -> Derived:
    """Derive every status of a pool from its items at ``now``."""
    statuses = {w.name: worker_status(w, now, offline_after) for w in workers}
    online = [w for w in workers if statuses[w.name] is WorkerStatus.ONLINE]
    state = pool_status(pool, online, offline_after)
    return Derived(
        pool=state,
        queues={q.name: queue_status(pool, state, q, online) for q in queues},
        workers=statuses,
    )


# -- events ------------------------------------------------------------------------------------


def pool_resource(pool: WorkPool) -> dict[str, str]:
    """The resource labels of a pool: ``overcast.work-pool.<id>``, its name and type."""
    return resource(
        f"overcast.work-pool.{pool.id}", pool.name, **{"overcast.work-pool.type": pool.type.value}
    )


def pool_related(pool: WorkPool) -> dict[str, str]:
    """The pool as a related resource (role ``work-pool``)."""
    return related(
        f"overcast.work-pool.{pool.id}", ROLE_POOL, pool.name, **{"overcast.work-pool.type": pool.type.value}
    )


def queue_resource(queue: WorkQueue) -> dict[str, str]:
    """The resource labels of a queue: ``overcast.work-queue.<id>`` and its name."""
    return resource(f"overcast.work-queue.{queue.id}", queue.name)


def worker_resource(worker: Worker) -> dict[str, str]:
    """The resource labels of a worker: ``overcast.worker.<id>`` and its name."""
    return resource(f"overcast.worker.{worker.id}", worker.name)


def _suffix(status: str) -> str:
    return status.lower().replace("_", "-")


def pool_status_event(pool: WorkPool, previous: str | None, state: Status, now: datetime) -> Event:
    """``overcast.work-pool.ready`` / ``.not-ready`` / ``.paused``."""
    return Event(
        occurred=now,
        event=f"overcast.work-pool.{_suffix(state.value)}",
        resource=pool_resource(pool),
        payload=_status_payload(previous, state.value, state.detail),
    )


def queue_status_event(
    pool: WorkPool, queue: WorkQueue, previous: str | None, state: Status, now: datetime
) -> Event:
    """``overcast.work-queue.ready`` / ``.not-ready`` / ``.paused``."""
    return Event(
        occurred=now,
        event=f"overcast.work-queue.{_suffix(state.value)}",
        resource=queue_resource(queue),
        related=[pool_related(pool)],
        payload=_status_payload(previous, state.value, state.detail),
    )


def worker_status_event(
    pool: WorkPool,
    worker: Worker,
    previous: str | None,
    status: WorkerStatus,
    now: datetime,
    detail: str | None,
) -> Event:
    """``overcast.worker.online`` / ``.offline``."""
    payload = _status_payload(previous, status.value, detail)
    payload["last_heartbeat"] = worker.last_heartbeat.isoformat()
    return Event(
        occurred=now,
        event=f"overcast.worker.{_suffix(status.value)}",
        resource=worker_resource(worker),
        related=[pool_related(pool)],
        payload=payload,
    )


def lifecycle_event(
    kind: str,
    what: str,
    labels: dict[str, str],
    now: datetime,
    payload: dict[str, Any],
    pool: WorkPool | None = None,
) -> Event:
    """``overcast.<kind>.<what>``: ``work-pool.created``, ``work-queue.deleted`` …"""
    return Event(
        occurred=now,
        event=f"overcast.{kind}.{what}",
        resource=labels,
        related=[pool_related(pool)] if pool is not None else [],
        payload=payload,
    )


def _status_payload(previous: str | None, status: str, detail: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": status, "previous_status": previous}
    if detail:
        payload["detail"] = detail
    return payload
