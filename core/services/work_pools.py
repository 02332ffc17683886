"""Work pools, their queues and their workers: settings, heartbeats, statuses and their events.

A pool, its queues and its workers are items of one partition (see ``keys``), so one query
reads everything a status is derived from. Statuses are derived when read (``_pool_status``);
each item also keeps the status last reported for it, and every write that changes what an
item's status should be records the new one together with its event, in one transaction
guarded by the item's version. A change that comes with time alone (a worker whose heartbeat
grew old) is found by ``sweep``, which the tick calls: two sweeps racing over the same change
cannot both win the version, so each change is announced exactly once.

Every change of status emits ``overcast.work-pool.ready|not-ready|paused``,
``overcast.work-queue.ready|not-ready|paused`` or ``overcast.worker.online|offline``; creating,
changing and deleting pools and queues emit ``.created``, ``.updated`` and ``.deleted``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from overcast.core import keys
from overcast.core.errors import (
    ConditionFailedError,
    InvalidValueError,
    NotFoundError,
    TransactionConflictError,
)
from overcast.core.events import Event
from overcast.core.models import WORK_POOL_NAME_PATTERN, FlowRun
from overcast.core.ports import Check, Delete, Item, KeyValueStore, Put
from overcast.core.schemas import Page
from overcast.core.services import _pool_items as pooled
from overcast.core.services import _pool_runs
from overcast.core.services import _pool_status as status
from overcast.core.services._listing import list_by_name, list_partition
from overcast.core.services._pool_items import Snapshot
from overcast.core.services.events import Events
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.states import utcnow
from overcast.core.work_pools import (
    DEFAULT_QUEUE,
    PoolConfig,
    ProcessConfig,
    Worker,
    WorkerFilter,
    WorkerStatus,
    WorkPool,
    WorkPoolFilter,
    WorkPoolRequest,
    WorkPoolType,
    WorkPoolUpdate,
    WorkQueue,
    WorkQueueCreate,
    WorkQueueUpdate,
    parse_config,
)

DEFAULT_OFFLINE_AFTER = timedelta(seconds=90)
"""A worker whose last heartbeat is this old is OFFLINE (three missed 30-second heartbeats)."""
DEFAULT_WORKER_RETENTION = timedelta(days=1)
"""How long a worker's item outlives its last heartbeat (then it expires)."""
MAX_ATTEMPTS = 25
_NAME = re.compile(WORK_POOL_NAME_PATTERN)


class WorkPoolExistsError(ConditionFailedError, ValueError):
    """Raised when a pool is created under a name that is taken.

    Attributes:
        name: the pool's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(*keys.work_pool(name), "absent")
        self.args = (f"work pool {name!r} already exists",)


class WorkQueueExistsError(ConditionFailedError, ValueError):
    """Raised when a queue is created under a name its pool already has.

    Attributes:
        pool, name: the pool's and the queue's names.
    """

    def __init__(self, pool: str, name: str) -> None:
        self.pool, self.name = pool, name
        super().__init__(*keys.work_queue(pool, name), "absent")
        self.args = (f"work pool {pool!r} already has a queue {name!r}",)


class WorkPools:
    """Creates, reads, changes, pauses and deletes pools and queues; registers workers; tracks statuses.

    Args:
        store: the key-value store.
        events: where status changes and lifecycle events are recorded.
        flow_runs: the flow runs (``next_runs`` reads the runs waiting in a pool).
        offline_after: a worker is OFFLINE once its last heartbeat is this old (a pull pool
            with no ONLINE worker is NOT_READY).
        worker_retention: how long a worker's record outlives its last heartbeat.
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        events: Events,
        flow_runs: FlowRuns,
        *,
        offline_after: timedelta = DEFAULT_OFFLINE_AFTER,
        worker_retention: timedelta = DEFAULT_WORKER_RETENTION,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if worker_retention <= offline_after:
            raise InvalidValueError("worker_retention must be longer than offline_after")
        self._store = store
        self._events = events
        self._flow_runs = flow_runs
        self._offline_after = offline_after
        self._worker_retention = worker_retention
        self._clock = clock

    @property
    def offline_after(self) -> timedelta:
        """The age of a heartbeat past which a worker is OFFLINE."""
        return self._offline_after

    # -- pools ------------------------------------------------------------------------------------

    def create_pool(self, request: WorkPoolRequest) -> WorkPool:
        """Create a pool, with its ``default`` queue.

        Args:
            request: the pool's name, type, settings (``config``) and limits.

        Returns:
            The pool, with its status.

        Raises:
            WorkPoolExistsError: a pool of that name exists.
        """
        now = self._clock()
        pooled.clear_leftovers(self._store, request.name)
        pool_type = WorkPoolType(request.type)
        pool = WorkPool(
            name=request.name,
            type=pool_type,
            description=request.description,
            paused=request.paused,
            concurrency_limit=request.concurrency_limit,
            config=_config(pool_type, request.config),
            created=now,
            updated=now,
        )
        queue = WorkQueue(pool_name=pool.name, name=DEFAULT_QUEUE, priority=1, created=now, updated=now)
        derived = status.derive(pool, [queue], [], now=now, offline_after=self._offline_after)
        pool = pooled.with_status(pool, derived.pool)
        queue = pooled.with_status(queue, derived.queues[queue.name])
        created = status.lifecycle_event(
            "work-pool",
            "created",
            status.pool_resource(pool),
            now,
            {"type": pool.type.value, "status": pool.status},
        )
        try:
            self._events.transact(
                [Put(pooled.pool_item(pool), if_absent=True), Put(pooled.queue_item(queue))], [created]
            )
        except TransactionConflictError as exc:
            if exc.index == 0:
                raise WorkPoolExistsError(pool.name) from None
            raise
        return pool

    def get_pool(self, name: str) -> WorkPool:
        """Return the pool, with its status as of now.

        Raises:
            NotFoundError: there is no such pool.
        """
        now = self._clock()
        snap = self._load(name)
        return pooled.with_status(snap.pool, snap.derive(now, self._offline_after).pool)

    def filter_pools(self, query: WorkPoolFilter) -> Page[WorkPool]:
        """List pools by name (see ``WorkPoolFilter``), each with its status as of now."""
        types = {t.value for t in query.type} if query.type else None
        items, cursor = list_by_name(
            self._store,
            keys.work_pools_index(),
            prefix=query.name_prefix,
            cursor=query.cursor,
            limit=query.limit,
            keep=lambda item: types is None or item["pool"]["type"] in types,
        )
        now = self._clock()
        pools = []
        for item in items:
            pool = WorkPool.model_validate(item["pool"])
            workers = [] if pool.is_push else pooled.workers_of(self._store, pool.name)
            online = [
                w for w in workers if status.worker_status(w, now, self._offline_after) is WorkerStatus.ONLINE
            ]
            pools.append(pooled.with_status(pool, status.pool_status(pool, online, self._offline_after)))
        return Page[WorkPool](items=pools, next_cursor=cursor)

    def update_pool(self, name: str, update: WorkPoolUpdate) -> WorkPool:
        """Change a pool's description, concurrency limit or settings (the fields set on ``update``).

        Raises:
            NotFoundError: there is no such pool.
            InvalidValueError: ``config`` is not valid for the pool's type.
        """
        fields = update.model_fields_set
        changes: dict[str, Any] = {}
        if "description" in fields:
            changes["description"] = update.description
        if "concurrency_limit" in fields:
            changes["concurrency_limit"] = update.concurrency_limit
        for _ in range(MAX_ATTEMPTS):
            snap = self._load(name)
            if "config" in fields:
                config = None if update.config is None else parse_config(snap.pool.type, update.config)
                changes["config"] = _config(snap.pool.type, config)
            if not changes:
                return pooled.with_status(snap.pool, snap.derive(self._clock(), self._offline_after).pool)
            if self._save_pool(snap, changes, "updated", {"changed": sorted(changes)}):
                return self.get_pool(name)
        raise _contention(*keys.work_pool(name))

    def pause_pool(self, name: str) -> WorkPool:
        """Pause a pool: it hands out no runs until resumed (``overcast.work-pool.paused``).

        Raises:
            NotFoundError: there is no such pool.
        """
        return self._set_pool_paused(name, paused=True)

    def resume_pool(self, name: str) -> WorkPool:
        """Resume a paused pool (its status becomes READY or NOT_READY, with that event).

        Raises:
            NotFoundError: there is no such pool.
        """
        return self._set_pool_paused(name, paused=False)

    def delete_pool(self, name: str) -> bool:
        """Delete a pool with its queues and workers; return whether there was one.

        Runs still waiting in the pool stay SCHEDULED; no worker will pick them up.
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                snap = self._load(name)
            except NotFoundError:
                return False
            deleted = status.lifecycle_event(
                "work-pool", "deleted", status.pool_resource(snap.pool), self._clock(), {}
            )
            try:
                self._events.transact([Delete(*keys.work_pool(name), if_version=snap.version)], [deleted])
            except TransactionConflictError:
                continue  # changed since we read it
            pooled.clear_leftovers(self._store, name)
            return True
        raise _contention(*keys.work_pool(name))

    # -- queues -----------------------------------------------------------------------------------

    def create_queue(self, pool: str, request: WorkQueueCreate) -> WorkQueue:
        """Create a queue in a pool.

        Args:
            pool: the pool's name.
            request: the queue's name, priority (by default one below the pool's lowest),
                concurrency limit, description and whether it starts paused.

        Raises:
            NotFoundError: there is no such pool.
            WorkQueueExistsError: the pool has a queue of that name.
        """
        now = self._clock()
        snap = self._load(pool)
        if request.name in snap.queues:
            raise WorkQueueExistsError(pool, request.name)
        lowest = max((q.priority for q, _ in snap.queues.values()), default=0)
        queue = WorkQueue(
            pool_name=pool,
            name=request.name,
            description=request.description,
            priority=request.priority if request.priority is not None else lowest + 1,
            concurrency_limit=request.concurrency_limit,
            paused=request.paused,
            created=now,
            updated=now,
        )
        snap.queues[queue.name] = (queue, 0)
        queue = pooled.with_status(queue, snap.derive(now, self._offline_after).queues[queue.name])
        created = status.lifecycle_event(
            "work-queue",
            "created",
            status.queue_resource(queue),
            now,
            {"priority": queue.priority, "status": queue.status},
            snap.pool,
        )
        try:
            self._events.transact(
                [Check(*keys.work_pool(pool), exists=True), Put(pooled.queue_item(queue), if_absent=True)],
                [created],
            )
        except TransactionConflictError as exc:
            if exc.index == 0:
                raise NotFoundError("work pool", pool) from None
            if exc.index == 1:
                raise WorkQueueExistsError(pool, request.name) from None
            raise
        return queue

    def get_queue(self, pool: str, name: str) -> WorkQueue:
        """Return a queue, with its status as of now.

        Raises:
            NotFoundError: there is no such pool, or it has no such queue.
        """
        snap = self._load(pool)
        if name not in snap.queues:
            raise NotFoundError("work queue", f"{pool}/{name}")
        return pooled.with_status(
            snap.queues[name][0], snap.derive(self._clock(), self._offline_after).queues[name]
        )

    def list_queues(self, pool: str) -> list[WorkQueue]:
        """Return a pool's queues in the order they are served: by priority (1 first), then name.

        Raises:
            NotFoundError: there is no such pool.
        """
        snap = self._load(pool)
        derived = snap.derive(self._clock(), self._offline_after)
        queues = [pooled.with_status(q, derived.queues[q.name]) for q, _ in snap.queues.values()]
        return sorted(queues, key=lambda q: (q.priority, q.name))

    def update_queue(self, pool: str, name: str, update: WorkQueueUpdate) -> WorkQueue:
        """Change a queue's description, priority or concurrency limit (the fields set on ``update``).

        Raises:
            NotFoundError: there is no such pool, or it has no such queue.
        """
        changes = {f: getattr(update, f) for f in update.model_fields_set}
        return self._change_queue(pool, name, changes, "updated")

    def pause_queue(self, pool: str, name: str) -> WorkQueue:
        """Pause a queue: it hands out no runs until resumed (``overcast.work-queue.paused``).

        Raises:
            NotFoundError: there is no such pool, or it has no such queue.
        """
        return self._change_queue(pool, name, {"paused": True}, None)

    def resume_queue(self, pool: str, name: str) -> WorkQueue:
        """Resume a paused queue.

        Raises:
            NotFoundError: there is no such pool, or it has no such queue.
        """
        return self._change_queue(pool, name, {"paused": False}, None)

    def delete_queue(self, pool: str, name: str) -> bool:
        """Delete a queue; return whether there was one. Its waiting runs stay SCHEDULED.

        Raises:
            InvalidValueError: it is the pool's ``default`` queue, which cannot be deleted.
        """
        if name == DEFAULT_QUEUE:
            raise InvalidValueError(f"the {DEFAULT_QUEUE!r} queue of a pool cannot be deleted")
        for _ in range(MAX_ATTEMPTS):
            try:
                snap = self._load(pool)
            except NotFoundError:
                return False
            if name not in snap.queues:
                return False
            queue, version = snap.queues[name]
            deleted = status.lifecycle_event(
                "work-queue", "deleted", status.queue_resource(queue), self._clock(), {}, snap.pool
            )
            try:
                self._events.transact([Delete(*keys.work_queue(pool, name), if_version=version)], [deleted])
            except TransactionConflictError:
                continue
            return True
        raise _contention(*keys.work_queue(pool, name))

    # -- workers ----------------------------------------------------------------------------------

    def heartbeat(
        self, pool: str, worker_name: str, *, queues: list[str] | None = None, now: datetime | None = None
    ) -> Worker:
        """Register a worker on its first heartbeat, keep it ONLINE after.

        A worker that was new or OFFLINE goes ONLINE (``overcast.worker.online``), and its pool
        and queues become READY if it made them so (with their events).

        Args:
            pool: the pool's name.
            worker_name: the worker's name, unique within the pool.
            queues: the queues it polls (``None`` or empty: all of the pool's).
            now: the heartbeat's time (default: the clock's).

        Returns:
            The worker, ONLINE.

        Raises:
            NotFoundError: there is no such pool.
            InvalidValueError: the worker's or a queue's name breaks the naming rule.
        """
        _check_name("worker", worker_name)
        for queue in queues or []:
            _check_name("work queue", queue)
        now = now or self._clock()
        for _ in range(MAX_ATTEMPTS):
            snap = self._load(pool)
            known = snap.workers.get(worker_name)
            ttl = pooled.epoch(now + self._worker_retention)
            try:
                if known is None:
                    worker = Worker(
                        pool_name=pool, name=worker_name, queues=queues or [], last_heartbeat=now, created=now
                    )
                    online = status.worker_status_event(
                        snap.pool, worker, None, WorkerStatus.ONLINE, now, None
                    )
                    self._events.transact([Put(pooled.worker_item(worker, ttl), if_absent=True)], [online])
                else:
                    before, version, _ = known
                    worker = before.model_copy(
                        update={"queues": queues or [], "last_heartbeat": now, "status": WorkerStatus.ONLINE}
                    )
                    put = Put(pooled.worker_item(worker, ttl), if_version=version)
                    if before.status is WorkerStatus.ONLINE:
                        self._store.put(put.item, if_version=version)  # no change of status: no event
                    else:
                        online = status.worker_status_event(
                            snap.pool, worker, before.status, WorkerStatus.ONLINE, now, None
                        )
                        self._events.transact([put], [online])
            except ConditionFailedError:
                continue  # another heartbeat of this worker, or the pool was deleted and made anew
            snap.workers[worker_name] = (worker, (known[1] + 1) if known else 1, ttl)
            pooled.reconcile(self._events, snap, now, self._offline_after)
            return worker
        raise _contention(*keys.worker(pool, worker_name))

    def filter_workers(self, pool: str, query: WorkerFilter) -> Page[Worker]:
        """List a pool's workers by name, with their status as of now (see ``WorkerFilter``).

        Raises:
            NotFoundError: there is no such pool.
        """
        if self._store.get(*keys.work_pool(pool)) is None:
            raise NotFoundError("work pool", pool)
        now = self._clock()

        def current(item: Item) -> Worker:
            worker = Worker.model_validate(item["worker"])
            return worker.model_copy(
                update={"status": status.worker_status(worker, now, self._offline_after)}
            )

        items, cursor = list_partition(
            self._store,
            keys.work_pool_partition(pool),
            sort_attr="sk",
            low=keys.WORKER_PREFIX,
            high=keys.WORKER_PREFIX + "~",
            cursor=query.cursor,
            limit=query.limit,
            keep=lambda item: query.status is None or current(item).status is query.status,
        )
        return Page[Worker](items=[current(i) for i in items], next_cursor=cursor)

    def delete_worker(self, pool: str, name: str) -> bool:
        """Forget a worker (one that stopped for good); return whether there was one.

        An ONLINE worker is announced OFFLINE, and its pool and queues lose it at once.
        """
        now = self._clock()
        for _ in range(MAX_ATTEMPTS):
            try:
                snap = self._load(pool)
            except NotFoundError:
                return False
            if name not in snap.workers:
                return False
            worker, version, _ = snap.workers[name]
            delete = Delete(*keys.worker(pool, name), if_version=version)
            current = status.worker_status(worker, now, self._offline_after)
            try:
                if worker.status is WorkerStatus.ONLINE or current is WorkerStatus.ONLINE:
                    stopped = worker.model_copy(update={"status": WorkerStatus.OFFLINE})
                    offline = status.worker_status_event(
                        snap.pool, stopped, worker.status, WorkerStatus.OFFLINE, now, "the worker was removed"
                    )
                    self._events.transact([delete], [offline])
                else:
                    self._store.transact([delete])
            except TransactionConflictError:
                continue
            del snap.workers[name]
            pooled.reconcile(self._events, snap, now, self._offline_after)
            return True
        raise _contention(*keys.worker(pool, name))

    # -- runs ---------------------------------------------------------------------------------------

    def next_runs(
        self,
        pool: str,
        queues: Sequence[str] | None = None,
        *,
        before: datetime | None = None,
        limit: int = 10,
    ) -> list[FlowRun]:
        """The SCHEDULED runs a pool should start next, within its concurrency limits.

        Runs come from the pool's unpaused queues (those named in ``queues``, or all), highest
        priority first (1), then by expected start time. A paused pool gives none. With a
        ``concurrency_limit`` on the pool or a queue, runs already PENDING or RUNNING there count
        against it, and no more are handed out than the room left. (The runs are only read:
        the caller proposes PENDING for each, which one caller wins.)

        Args:
            pool: the pool's name.
            queues: only runs of these queues (names the pool does not have give nothing).
            before: only runs expected to start at or before this (default: now).
            limit: the most runs to return.

        Returns:
            The runs, in the order to start them.

        Raises:
            NotFoundError: there is no such pool.
        """
        now = self._clock()
        return _pool_runs.select(
            self._store, self._flow_runs, self._load(pool), queues, before=before or now, now=now, limit=limit
        )

    # -- statuses ---------------------------------------------------------------------------------

    def sweep(self, now: datetime | None = None) -> list[Event]:
        """Find the status changes that came with time alone and record each, with its event.

        The tick calls this every minute or so: a worker whose heartbeat grew old goes OFFLINE
        (``overcast.worker.offline``), and a pull pool left without an online worker goes
        NOT_READY (``overcast.work-pool.not-ready``), its queues with it. Sweeps may race: each
        change is recorded (and announced) once.

        Args:
            now: the moment to derive statuses at (default: the clock's).

        Returns:
            The events of the changes this sweep recorded.
        """
        now = now or self._clock()
        emitted: list[Event] = []
        cursor: str | None = None
        while True:
            items, cursor = list_partition(
                self._store,
                keys.work_pools_index(),
                index="gsi2",
                sort_attr="gsi2sk",
                cursor=cursor,
                limit=100,
            )
            for item in items:
                try:
                    snap = self._load(item["pool"]["name"])
                except NotFoundError:
                    continue  # deleted since it was listed
                emitted += pooled.reconcile(self._events, snap, now, self._offline_after)
            if cursor is None:
                return emitted

    # -- internals --------------------------------------------------------------------------------

    def _load(self, name: str) -> Snapshot:
        return pooled.load(self._store, name)

    def _save_pool(
        self, snap: Snapshot, changes: dict[str, Any], lifecycle: str | None, payload: dict[str, Any]
    ) -> bool:
        """Write changes to a pool with its new status (and events); then bring its queues along.

        Returns whether the write won (``False``: the pool changed since ``snap``; read again).
        """
        now = self._clock()
        previous = snap.pool
        snap.pool = previous.model_copy(update={**changes, "updated": now})
        derived = snap.derive(now, self._offline_after)
        pool = pooled.with_status(snap.pool, derived.pool)
        events = []
        if lifecycle is not None:
            events.append(
                status.lifecycle_event("work-pool", lifecycle, status.pool_resource(pool), now, payload)
            )
        if previous.status is not derived.pool.value:
            events.append(status.pool_status_event(pool, previous.status, derived.pool, now))
        try:
            self._events.transact([Put(pooled.pool_item(pool), if_version=snap.version)], events)
        except TransactionConflictError:
            return False
        snap.pool, snap.version = pool, snap.version + 1
        pooled.reconcile(self._events, snap, now, self._offline_after)
        return True

    def _set_pool_paused(self, name: str, *, paused: bool) -> WorkPool:
        for _ in range(MAX_ATTEMPTS):
            snap = self._load(name)
            if snap.pool.paused is paused:
                return pooled.with_status(snap.pool, snap.derive(self._clock(), self._offline_after).pool)
            if self._save_pool(snap, {"paused": paused}, None, {}):
                return snap.pool
        raise _contention(*keys.work_pool(name))

    def _change_queue(
        self, pool: str, name: str, changes: dict[str, Any], lifecycle: str | None
    ) -> WorkQueue:
        for _ in range(MAX_ATTEMPTS):
            snap = self._load(pool)
            if name not in snap.queues:
                raise NotFoundError("work queue", f"{pool}/{name}")
            previous, version = snap.queues[name]
            now = self._clock()
            if all(getattr(previous, k) == v for k, v in changes.items()):
                return pooled.with_status(previous, snap.derive(now, self._offline_after).queues[name])
            snap.queues[name] = (previous.model_copy(update={**changes, "updated": now}), version)
            state = snap.derive(now, self._offline_after).queues[name]
            queue = pooled.with_status(snap.queues[name][0], state)
            events = []
            if lifecycle is not None:
                events.append(
                    status.lifecycle_event(
                        "work-queue",
                        lifecycle,
                        status.queue_resource(queue),
                        now,
                        {"changed": sorted(changes)},
                        snap.pool,
                    )
                )
            if previous.status is not state.value:
                events.append(status.queue_status_event(snap.pool, queue, previous.status, state, now))
            try:
                self._events.transact([Put(pooled.queue_item(queue), if_version=version)], events)
            except TransactionConflictError:
                continue
            return queue
        raise _contention(*keys.work_queue(pool, name))


def _config(pool_type: WorkPoolType, config: PoolConfig | None) -> PoolConfig | None:
    """A pool's settings; a ``process`` pool always has some (the defaults: a worker needs none)."""
    return ProcessConfig() if config is None and pool_type is WorkPoolType.PROCESS else config


def _check_name(what: str, name: str) -> None:
    if not (0 < len(name) <= 100 and _NAME.fullmatch(name)):
        raise InvalidValueError(
            f"{what} name {name!r} is invalid: use 1-100 lowercase letters, digits, underscores and dashes"
        )


def _contention(pk: str, sk: str) -> ConditionFailedError:
    return ConditionFailedError(pk, sk, f"it kept changing; gave up after {MAX_ATTEMPTS} tries")
