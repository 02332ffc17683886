"""Work pools, queues and workers on memory, SQLite and DynamoDB (moto's server).

Statuses are derived on a fake clock (the store's TTL and the services share it); the race
between sweeps runs real threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import START, FakeClock, as_datetime

from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.events import Event
from overcast.core.ports import KeyValueStore
from overcast.core.schemas import FlowRunCreate
from overcast.core.services import ControlPlane
from overcast.core.services.work_pools import (
    DEFAULT_OFFLINE_AFTER,
    WorkPoolExistsError,
    WorkQueueExistsError,
)
from overcast.core.states import Pending, Running, Scheduled
from overcast.core.work_pools import (
    AwsLambdaConfig,
    AwsLambdaPoolCreate,
    GcpFunctionsPoolCreate,
    ProcessConfig,
    ProcessPoolCreate,
    QueuePoolCreate,
    WorkerFilter,
    WorkerStatus,
    WorkPoolFilter,
    WorkPoolStatus,
    WorkPoolUpdate,
    WorkQueueCreate,
    WorkQueueUpdate,
    work_pool_create,
)

READY, NOT_READY, PAUSED = WorkPoolStatus.READY, WorkPoolStatus.NOT_READY, WorkPoolStatus.PAUSED


@pytest.fixture
def plane(store: KeyValueStore, clock: FakeClock) -> ControlPlane:
    return ControlPlane(store, clock=as_datetime(clock))


def names(events: list[Event]) -> list[str]:
    return [e.event for e in events]


def stored(plane: ControlPlane, prefix: str = "overcast.") -> list[Event]:
    """Every stored event whose name starts with ``prefix``, oldest first."""
    found: list[Event] = []
    cursor = None
    while True:
        page = plane.events.query(name_prefix=prefix, limit=500, cursor=cursor)
        found += page.items
        if (cursor := page.next_cursor) is None:
            return found[::-1]


# -- pools and queues -----------------------------------------------------------------------------


def test_a_pool_is_created_with_its_default_queue_and_announced(plane: ControlPlane) -> None:
    pool = plane.work_pools.create_pool(ProcessPoolCreate(name="local", description="laptops"))
    assert (pool.name, pool.type.value, pool.description) == ("local", "process", "laptops")
    assert pool.config == ProcessConfig()  # a process pool always has (default) settings
    queues = plane.work_pools.list_queues("local")
    assert [(q.name, q.priority) for q in queues] == [("default", 1)]
    [created] = stored(plane)
    assert created.event == "overcast.work-pool.created"
    assert created.resource["overcast.resource.id"] == f"overcast.work-pool.{pool.id}"
    assert created.resource["overcast.resource.name"] == "local"
    assert plane.events.query(resource_id=f"overcast.work-pool.{pool.id}").items == [created]

    with pytest.raises(WorkPoolExistsError):
        plane.work_pools.create_pool(AwsLambdaPoolCreate(name="local"))
    with pytest.raises(NotFoundError):
        plane.work_pools.get_pool("nope")


def test_pools_are_listed_by_name_and_type(plane: ControlPlane) -> None:
    for name in ["b-pool", "a-pool", "c-pool"]:
        plane.work_pools.create_pool(ProcessPoolCreate(name=name))
    plane.work_pools.create_pool(
        QueuePoolCreate.model_validate({"name": "a-queue", "config": {"url": "sqs://runs"}})
    )
    listed = plane.work_pools.filter_pools(WorkPoolFilter())
    assert [p.name for p in listed.items] == ["a-pool", "a-queue", "b-pool", "c-pool"]
    only_queue = plane.work_pools.filter_pools(WorkPoolFilter(type=["queue"]))  # type: ignore[list-item]
    assert [(p.name, p.status) for p in only_queue.items] == [("a-queue", READY)]
    prefixed = plane.work_pools.filter_pools(WorkPoolFilter(name_prefix="a-", limit=1))
    assert [p.name for p in prefixed.items] == ["a-pool"] and prefixed.next_cursor
    rest = plane.work_pools.filter_pools(WorkPoolFilter(name_prefix="a-", cursor=prefixed.next_cursor))
    assert [p.name for p in rest.items] == ["a-queue"] and rest.next_cursor is None


def test_queues_are_served_by_priority_and_new_ones_go_last(plane: ControlPlane) -> None:
    plane.work_pools.create_pool(ProcessPoolCreate(name="local"))
    plane.work_pools.create_queue("local", WorkQueueCreate(name="bulk"))
    plane.work_pools.create_queue("local", WorkQueueCreate(name="urgent", priority=1, concurrency_limit=2))
    assert [(q.name, q.priority) for q in plane.work_pools.list_queues("local")] == [
        ("default", 1),
        ("urgent", 1),
        ("bulk", 2),
    ]
    changed = plane.work_pools.update_queue(
        "local", "default", WorkQueueUpdate(priority=3, description="slow")
    )
    assert (changed.priority, changed.description) == (3, "slow")
    cleared = plane.work_pools.update_queue(
        "local", "urgent", WorkQueueUpdate.model_validate({"concurrency_limit": None})
    )
    assert cleared.concurrency_limit is None
    assert [q.name for q in plane.work_pools.list_queues("local")] == ["urgent", "bulk", "default"]

    with pytest.raises(WorkQueueExistsError):
        plane.work_pools.create_queue("local", WorkQueueCreate(name="bulk"))
    with pytest.raises(NotFoundError):
        plane.work_pools.create_queue("nope", WorkQueueCreate(name="bulk"))
    with pytest.raises(NotFoundError):
        plane.work_pools.get_queue("local", "nope")
    with pytest.raises(InvalidValueError, match="default"):
        plane.work_pools.delete_queue("local", "default")
    assert plane.work_pools.delete_queue("local", "bulk") is True
    assert plane.work_pools.delete_queue("local", "bulk") is False
    assert "overcast.work-queue.deleted" in names(stored(plane))


def test_a_deleted_pool_takes_its_queues_and_workers_and_its_name_is_free_again(plane: ControlPlane) -> None:
    plane.work_pools.create_pool(ProcessPoolCreate(name="local"))
    plane.work_pools.create_queue("local", WorkQueueCreate(name="gpu"))
    plane.work_pools.heartbeat("local", "worker-1")
    assert plane.work_pools.delete_pool("local") is True
    assert plane.work_pools.delete_pool("local") is False
    with pytest.raises(NotFoundError):
        plane.work_pools.get_pool("local")
    with pytest.raises(NotFoundError):
        plane.work_pools.heartbeat("local", "worker-1")
    again = plane.work_pools.create_pool(ProcessPoolCreate(name="local"))
    assert again.status is NOT_READY  # the old worker is gone
    assert [q.name for q in plane.work_pools.list_queues("local")] == ["default"]
    assert plane.work_pools.filter_workers("local", WorkerFilter()).items == []
    assert "overcast.work-pool.deleted" in names(stored(plane))


def test_configs_are_checked_against_the_pool_type(plane: ControlPlane) -> None:
    pool = plane.work_pools.create_pool(
        work_pool_create({"name": "lam", "type": "aws-lambda", "config": {"function": "overcast-runner"}})
    )
    assert pool.config == AwsLambdaConfig(function="overcast-runner")
    with pytest.raises(InvalidValueError, match="url"):
        plane.work_pools.update_pool("lam", WorkPoolUpdate(config={"url": "https://example.com"}))
    with pytest.raises(InvalidValueError, match="function"):
        plane.work_pools.update_pool("lam", WorkPoolUpdate(config={"function": "no spaces allowed"}))
    with pytest.raises(ValueError, match="queue URL"):
        work_pool_create({"name": "q", "type": "queue", "config": {"url": "https://not-a-queue"}})
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:runner:live"
    updated = plane.work_pools.update_pool(
        "lam", WorkPoolUpdate(config={"function": arn, "region": "eu-west-1"}, concurrency_limit=4)
    )
    assert updated.config == AwsLambdaConfig(function=arn, region="eu-west-1")
    assert updated.concurrency_limit == 4
    assert plane.work_pools.get_pool("lam").config == updated.config


# -- statuses -------------------------------------------------------------------------------------


def test_a_pull_pool_is_ready_while_a_worker_heartbeats(plane: ControlPlane, clock: FakeClock) -> None:
    pools = plane.work_pools
    pool = pools.create_pool(ProcessPoolCreate(name="local"))
    assert pool.status is NOT_READY and "heartbeat" in (pool.status_detail or "")

    worker = pools.heartbeat("local", "worker-1")
    assert worker.status is WorkerStatus.ONLINE
    assert pools.get_pool("local").status is READY
    assert [q.status for q in pools.list_queues("local")] == [READY]
    assert names(stored(plane)) == [
        "overcast.work-pool.created",
        "overcast.worker.online",
        "overcast.work-pool.ready",
        "overcast.work-queue.ready",
    ]

    clock.advance(DEFAULT_OFFLINE_AFTER.total_seconds() - 1)
    assert pools.get_pool("local").status is READY
    clock.advance(1)  # the heartbeat is now exactly as old as the threshold: derived on read
    assert pools.get_pool("local").status is NOT_READY
    [listed] = pools.filter_workers("local", WorkerFilter()).items
    assert listed.status is WorkerStatus.OFFLINE
    assert pools.filter_workers("local", WorkerFilter(status=WorkerStatus.ONLINE)).items == []

    pools.heartbeat("local", "worker-1")
    assert pools.get_pool("local").status is READY


def test_a_sweep_records_each_change_once(plane: ControlPlane, clock: FakeClock) -> None:
    pools = plane.work_pools
    pools.create_pool(ProcessPoolCreate(name="local"))
    pools.heartbeat("local", "worker-1")
    assert pools.sweep() == []  # nothing changed with time yet

    clock.advance(DEFAULT_OFFLINE_AFTER.total_seconds() + 1)
    changes = pools.sweep()
    assert names(changes) == [
        "overcast.worker.offline",
        "overcast.work-pool.not-ready",
        "overcast.work-queue.not-ready",
    ]
    offline = changes[0]
    assert offline.payload["previous_status"] == "ONLINE" and offline.payload["status"] == "OFFLINE"
    assert offline.related_in_role("work-pool")[0]["overcast.resource.name"] == "local"
    assert pools.sweep() == []
    assert Counter(names(stored(plane)))["overcast.worker.offline"] == 1

    pools.heartbeat("local", "worker-1")  # back: online again, announced by the heartbeat itself
    assert Counter(names(stored(plane)))["overcast.worker.online"] == 2
    assert pools.sweep() == []


def test_racing_sweeps_announce_each_change_once(
    plane: ControlPlane, clock: FakeClock, kv_backend: Any
) -> None:
    kv_backend.skip_racing_transactions()
    pools = plane.work_pools
    pools.create_pool(ProcessPoolCreate(name="local"))
    workers, sweepers, rounds = 3, 4, 3
    returned: list[Event] = []
    for _ in range(rounds):
        for n in range(workers):
            pools.heartbeat("local", f"worker-{n}")
        clock.advance(DEFAULT_OFFLINE_AFTER.total_seconds() + 1)
        barrier = threading.Barrier(sweepers)

        def sweep(barrier: threading.Barrier = barrier) -> list[Event]:
            barrier.wait(timeout=30)
            return pools.sweep()

        with ThreadPoolExecutor(sweepers) as executor:
            for events in executor.map(lambda _: sweep(), range(sweepers)):
                returned += events

    counts = Counter(names(stored(plane)))
    assert counts["overcast.worker.offline"] == workers * rounds
    assert counts["overcast.work-pool.not-ready"] == rounds
    assert counts["overcast.work-queue.not-ready"] == rounds
    # what the sweeps say they recorded is exactly what is stored: no change twice
    assert Counter(names(returned)) == {
        "overcast.worker.offline": workers * rounds,
        "overcast.work-pool.not-ready": rounds,
        "overcast.work-queue.not-ready": rounds,
    }


def test_push_pools_are_ready_once_configured(plane: ControlPlane) -> None:
    pools = plane.work_pools
    bare = pools.create_pool(AwsLambdaPoolCreate(name="lam"))
    assert bare.status is NOT_READY and "config" in (bare.status_detail or "")
    assert pools.list_queues("lam")[0].status is NOT_READY
    configured = pools.update_pool("lam", WorkPoolUpdate(config={"function": "overcast-runner"}))
    assert configured.status is READY
    assert pools.list_queues("lam")[0].status is READY
    gcp = pools.create_pool(
        GcpFunctionsPoolCreate.model_validate(
            {"name": "gcf", "config": {"url": "https://europe-west1-p.cloudfunctions.net/run"}}
        )
    )
    queue = pools.create_pool(
        QueuePoolCreate.model_validate({"name": "q", "config": {"url": "local:///tmp/q.db"}})
    )
    assert gcp.status is READY and queue.status is READY
    assert pools.sweep() == []  # a push pool needs no worker
    events = names(stored(plane, "overcast.work-pool."))
    assert events.count("overcast.work-pool.ready") == 1 and "overcast.work-pool.updated" in events
    unconfigured = pools.update_pool("lam", WorkPoolUpdate(config=None))
    assert unconfigured.status is NOT_READY
    assert names(stored(plane, "overcast.work-pool.not-ready")) == ["overcast.work-pool.not-ready"]


def test_pause_and_resume_are_announced(plane: ControlPlane) -> None:
    pools = plane.work_pools
    pools.create_pool(ProcessPoolCreate(name="local"))
    pools.heartbeat("local", "worker-1")
    before = len(stored(plane))

    paused = pools.pause_pool("local")
    assert paused.paused and paused.status is PAUSED
    assert pools.pause_pool("local").status is PAUSED  # again: nothing changes
    assert pools.list_queues("local")[0].status is NOT_READY
    assert names(stored(plane)[before:]) == ["overcast.work-pool.paused", "overcast.work-queue.not-ready"]

    resumed = pools.resume_pool("local")
    assert not resumed.paused and resumed.status is READY
    assert names(stored(plane)[before + 2 :]) == ["overcast.work-pool.ready", "overcast.work-queue.ready"]

    queue = pools.pause_queue("local", "default")
    assert queue.paused and queue.status is PAUSED
    assert pools.get_pool("local").status is READY  # a paused queue leaves its pool ready
    assert pools.resume_queue("local", "default").status is READY
    assert names(stored(plane)[before + 4 :]) == ["overcast.work-queue.paused", "overcast.work-queue.ready"]
    paused_event = stored(plane, "overcast.work-queue.paused")[0]
    assert paused_event.payload == {
        "status": "PAUSED",
        "previous_status": "READY",
        "detail": "the queue is paused",
    }


def test_a_worker_makes_ready_only_the_queues_it_polls(plane: ControlPlane) -> None:
    pools = plane.work_pools
    pools.create_pool(ProcessPoolCreate(name="local"))
    pools.create_queue("local", WorkQueueCreate(name="gpu"))
    pools.heartbeat("local", "cpu-box", queues=["default"])
    statuses = {q.name: q.status for q in pools.list_queues("local")}
    assert statuses == {"default": READY, "gpu": NOT_READY}
    assert "no online worker" in (pools.get_queue("local", "gpu").status_detail or "")
    pools.heartbeat("local", "gpu-box", queues=["gpu"])
    assert pools.get_queue("local", "gpu").status is READY


def test_a_removed_worker_is_announced_offline(plane: ControlPlane) -> None:
    pools = plane.work_pools
    pools.create_pool(ProcessPoolCreate(name="local"))
    pools.heartbeat("local", "worker-1")
    assert pools.delete_worker("local", "worker-1") is True
    assert pools.delete_worker("local", "worker-1") is False
    assert pools.get_pool("local").status is NOT_READY
    assert names(stored(plane))[-3:] == [
        "overcast.worker.offline",
        "overcast.work-pool.not-ready",
        "overcast.work-queue.not-ready",
    ]


def test_workers_are_forgotten_a_day_after_their_last_heartbeat(
    plane: ControlPlane, clock: FakeClock
) -> None:
    pools = plane.work_pools
    pools.create_pool(ProcessPoolCreate(name="local"))
    pools.heartbeat("local", "worker-1")
    clock.advance(timedelta(hours=23).total_seconds())
    assert [w.name for w in pools.filter_workers("local", WorkerFilter()).items] == ["worker-1"]
    clock.advance(timedelta(hours=2).total_seconds())
    assert pools.filter_workers("local", WorkerFilter()).items == []
    assert pools.get_pool("local").status is NOT_READY


# -- runs to start --------------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(START + seconds, UTC)


def scheduled(plane: ControlPlane, pool: str, queue: str | None, start: float, name: str) -> str:
    run, _ = plane.flow_runs.create(
        FlowRunCreate.model_validate(
            {
                "flow_name": "etl",
                "name": name,
                "state": Scheduled(at(start)).model_dump(mode="json"),
                "work_pool_name": pool,
                "work_queue_name": queue,
            }
        )
    )
    return run.name


def started(plane: ControlPlane, pool: str, queue: str | None, state: str) -> None:
    created = {"PENDING": Pending(), "RUNNING": Running()}[state]
    plane.flow_runs.create(
        FlowRunCreate.model_validate(
            {
                "flow_name": "etl",
                "state": created.model_dump(mode="json"),
                "work_pool_name": pool,
                "work_queue_name": queue,
            }
        )
    )


@pytest.fixture
def pool_with_queues(plane: ControlPlane) -> ControlPlane:
    pools = plane.work_pools
    pools.create_pool(ProcessPoolCreate(name="local"))
    pools.create_queue("local", WorkQueueCreate(name="urgent", priority=1))
    pools.create_queue("local", WorkQueueCreate(name="bulk", priority=5))
    pools.update_queue("local", "default", WorkQueueUpdate(priority=3))
    return plane


def test_next_runs_come_by_queue_priority_then_expected_start(pool_with_queues: ControlPlane) -> None:
    plane = pool_with_queues
    scheduled(plane, "local", "bulk", -300, "bulk-early")
    scheduled(plane, "local", None, -100, "default-late")  # no queue: the default one
    scheduled(plane, "local", "default", -200, "default-early")
    scheduled(plane, "local", "urgent", -10, "urgent-late")
    scheduled(plane, "local", "urgent", -20, "urgent-early")
    scheduled(plane, "local", "urgent", 60, "urgent-future")
    scheduled(plane, "other", "urgent", -500, "other-pool")

    def next_names(**kwargs: Any) -> list[str]:
        return [r.name for r in plane.work_pools.next_runs("local", **kwargs)]

    assert next_names() == ["urgent-early", "urgent-late", "default-early", "default-late", "bulk-early"]
    assert next_names(limit=3) == ["urgent-early", "urgent-late", "default-early"]
    assert next_names(before=at(60))[:3] == ["urgent-early", "urgent-late", "urgent-future"]
    assert next_names(queues=["bulk", "default"]) == ["default-early", "default-late", "bulk-early"]
    assert next_names(queues=["nope"]) == []
    assert next_names(before=at(-150)) == ["default-early", "bulk-early"]

    plane.work_pools.pause_queue("local", "urgent")
    assert next_names() == ["default-early", "default-late", "bulk-early"]
    plane.work_pools.pause_pool("local")
    assert next_names() == []
    with pytest.raises(NotFoundError):
        plane.work_pools.next_runs("nope")


def test_next_runs_respect_pool_and_queue_concurrency_limits(pool_with_queues: ControlPlane) -> None:
    plane = pool_with_queues
    for n in range(3):
        scheduled(plane, "local", "urgent", -100 + n, f"urgent-{n}")
        scheduled(plane, "local", "bulk", -100 + n, f"bulk-{n}")

    def next_names() -> list[str]:
        return [r.name for r in plane.work_pools.next_runs("local")]

    plane.work_pools.update_queue("local", "urgent", WorkQueueUpdate(concurrency_limit=2))
    started(plane, "local", "urgent", "RUNNING")
    assert next_names() == ["urgent-0", "bulk-0", "bulk-1", "bulk-2"]  # one slot left in urgent

    plane.work_pools.update_pool("local", WorkPoolUpdate(concurrency_limit=3))
    started(plane, "local", "bulk", "PENDING")
    assert next_names() == ["urgent-0"]  # two of three pool slots are taken

    started(plane, "local", None, "RUNNING")
    assert next_names() == []  # the pool is full
    plane.work_pools.update_pool("local", WorkPoolUpdate(concurrency_limit=None))
    assert next_names() == ["urgent-0", "bulk-0", "bulk-1", "bulk-2"]


def test_a_run_handed_out_and_claimed_leaves_the_next_runs(pool_with_queues: ControlPlane) -> None:
    plane = pool_with_queues
    scheduled(plane, "local", "urgent", -10, "first")
    scheduled(plane, "local", "urgent", -5, "second")
    [run, _] = plane.work_pools.next_runs("local")
    assert plane.flow_runs.set_state(run.id, Pending()).status.value == "ACCEPT"
    assert [r.name for r in plane.work_pools.next_runs("local")] == ["second"]
    plane.work_pools.update_queue("local", "urgent", WorkQueueUpdate(concurrency_limit=1))
    assert plane.work_pools.next_runs("local") == []  # the claimed run holds urgent's one slot
