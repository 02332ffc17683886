"""A pool's items in the store: read as one snapshot, written back, status changes recorded.

A pool, its queues and its workers share one partition (``keys.work_pool_partition``), so
``load`` is one query. Each item keeps the status last recorded for it; ``reconcile`` writes
every status that differs from the derived one, each under its item's version and together
with its event, so a change is recorded and announced once however many callers race.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from overcast.core import keys
from overcast.core.errors import NotFoundError, TransactionConflictError
from overcast.core.events import Event
from overcast.core.ports import Item, KeyValueStore, Put
from overcast.core.services import _pool_status as status
from overcast.core.services.events import Events
from overcast.core.work_pools import Worker, WorkerStatus, WorkPool, WorkQueue

M = TypeVar("M", WorkPool, WorkQueue)


@dataclass
class Snapshot:
    """A pool's items as read at one moment, with their versions.

    Attributes:
        pool: the pool as stored (its ``status``: the last one recorded).
        version: the pool item's version.
        queues: queue name -> (queue as stored, version).
        workers: worker name -> (worker as stored, version, ttl).
    """

    pool: WorkPool
    version: int
    queues: dict[str, tuple[WorkQueue, int]] = field(default_factory=dict)
    workers: dict[str, tuple[Worker, int, int]] = field(default_factory=dict)

    def derive(self, now: datetime, offline_after: timedelta) -> status.Derived:
        """Every status of the pool at ``now``."""
        return status.derive(
            self.pool,
            [q for q, _ in self.queues.values()],
            [w for w, _, _ in self.workers.values()],
            now=now,
            offline_after=offline_after,
        )


def load(store: KeyValueStore, name: str) -> Snapshot:
    """Read a pool with its queues and workers. Raises ``NotFoundError`` when there is no such pool."""
    page = store.query(keys.work_pool_partition(name))
    pool_item = next((i for i in page.items if i["sk"] == keys.META), None)
    if pool_item is None:
        raise NotFoundError("work pool", name)
    snap = Snapshot(WorkPool.model_validate(pool_item["pool"]), int(pool_item["v"]))
    for item in page.items:
        if item["sk"].startswith(keys.QUEUE_PREFIX):
            queue = WorkQueue.model_validate(item["queue"])
            snap.queues[queue.name] = (queue, int(item["v"]))
        elif item["sk"].startswith(keys.WORKER_PREFIX):
            worker = Worker.model_validate(item["worker"])
            snap.workers[worker.name] = (worker, int(item["v"]), int(item["ttl"]))
    return snap


def workers_of(store: KeyValueStore, pool: str) -> list[Worker]:
    """A pool's workers as stored (their ``status``: the last one recorded)."""
    page = store.query(keys.work_pool_partition(pool), sk_prefix=keys.WORKER_PREFIX)
    return [Worker.model_validate(item["worker"]) for item in page.items]


def clear_leftovers(store: KeyValueStore, name: str) -> None:
    """Delete the queues and workers of a pool that no longer exists (what a delete leaves behind
    until it finishes, or for good when it was interrupted)."""
    page = store.query(keys.work_pool_partition(name))
    if any(item["sk"] == keys.META for item in page.items):
        return
    for item in page.items:
        store.delete(item["pk"], item["sk"])


def reconcile(events: Events, snap: Snapshot, now: datetime, offline_after: timedelta) -> list[Event]:
    """Record every stored status of ``snap`` that differs from the derived one, each with its event.

    Workers first, then the pool, then its queues (whose status follows the pool's). A change
    whose item moved on since ``snap`` was read is skipped: its writer, or the next sweep,
    records what is true then. ``snap`` is updated with what was written.

    Returns:
        The events recorded.
    """
    derived = snap.derive(now, offline_after)
    emitted: list[Event] = []
    for name, (worker, version, ttl) in list(snap.workers.items()):
        new = derived.workers[name]
        if worker.status is not new:
            changed = worker.model_copy(update={"status": new})
            detail = None if new is WorkerStatus.ONLINE else "no heartbeat within the threshold"
            event = status.worker_status_event(snap.pool, changed, worker.status, new, now, detail)
            if _record(events, Put(worker_item(changed, ttl), if_version=version), event, emitted):
                snap.workers[name] = (changed, version + 1, ttl)
    if snap.pool.status is not derived.pool.value:
        pool = with_status(snap.pool, derived.pool)
        event = status.pool_status_event(pool, snap.pool.status, derived.pool, now)
        if _record(events, Put(pool_item(pool), if_version=snap.version), event, emitted):
            snap.pool, snap.version = pool, snap.version + 1
    for name, (queue, version) in list(snap.queues.items()):
        state = derived.queues[name]
        if queue.status is not state.value:
            changed_queue = with_status(queue, state)
            event = status.queue_status_event(snap.pool, changed_queue, queue.status, state, now)
            if _record(events, Put(queue_item(changed_queue), if_version=version), event, emitted):
                snap.queues[name] = (changed_queue, version + 1)
    return emitted


def _record(events: Events, put: Put, event: Event, emitted: list[Event]) -> bool:
    try:
        emitted += events.transact([put], [event])
    except TransactionConflictError:
        return False  # the item changed first: whoever changed it decides
    return True


def with_status(model: M, state: status.Status) -> M:
    """``model`` (a pool or a queue) with a derived status."""
    return model.model_copy(update={"status": state.value, "status_detail": state.detail})


def epoch(moment: datetime) -> int:
    """Epoch seconds, as a ``ttl`` attribute takes them."""
    return int(moment.timestamp())


def pool_item(pool: WorkPool) -> Item:
    """The store item of a pool."""
    pk, sk = keys.work_pool(pool.name)
    return {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.work_pools_index(keys.shard_of(pool.name)),
        "gsi2sk": pool.name,
        "pool": pool.model_dump(mode="json"),
    }


def queue_item(queue: WorkQueue) -> Item:
    """The store item of a queue."""
    pk, sk = keys.work_queue(queue.pool_name, queue.name)
    return {"pk": pk, "sk": sk, "queue": queue.model_dump(mode="json")}


def worker_item(worker: Worker, ttl: int) -> Item:
    """The store item of a worker; it expires at ``ttl`` (epoch seconds)."""
    pk, sk = keys.worker(worker.pool_name, worker.name)
    return {"pk": pk, "sk": sk, "ttl": ttl, "worker": worker.model_dump(mode="json")}


def changed_fields(model: Any, changes: dict[str, Any]) -> bool:
    """Whether ``changes`` would change any field of ``model``."""
    return any(getattr(model, k) != v for k, v in changes.items())
