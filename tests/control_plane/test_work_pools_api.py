"""Work pools through the API and both clients, on memory, SQLite and DynamoDB (moto's server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import START, FakeClock, as_datetime

from overcast.client import Client, DirectClient
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.events import EventFilter
from overcast.core.ports import KeyValueStore
from overcast.core.schemas import FlowRunCreate
from overcast.core.services import ControlPlane
from overcast.core.services.work_pools import WorkPoolExistsError, WorkQueueExistsError
from overcast.core.states import Scheduled
from overcast.core.work_pools import (
    AwsLambdaPoolCreate,
    ProcessPoolCreate,
    WorkerFilter,
    WorkerStatus,
    WorkPoolFilter,
    WorkPoolStatus,
    WorkPoolUpdate,
    WorkQueueCreate,
    WorkQueueUpdate,
)
from overcast.http_client import HttpClient


@pytest.fixture
def plane(kv_backend: Any, clock: FakeClock) -> Iterator[ControlPlane]:
    store: KeyValueStore = kv_backend.open(clock)
    yield ControlPlane(store, clock=as_datetime(clock))
    store.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["direct", "http"])
def client(request: pytest.FixtureRequest, plane: ControlPlane, api: TestClient) -> Client:
    if request.param == "direct":
        return DirectClient(plane)
    return HttpClient("http://testserver", http=api)


# -- both clients ---------------------------------------------------------------------------------


def test_both_clients_manage_pools_queues_and_workers_alike(client: Client, clock: FakeClock) -> None:
    pool = client.create_work_pool(ProcessPoolCreate(name="local", concurrency_limit=2))
    assert (pool.name, pool.status, pool.concurrency_limit) == ("local", WorkPoolStatus.NOT_READY, 2)
    with pytest.raises(WorkPoolExistsError):
        client.create_work_pool(ProcessPoolCreate(name="local"))
    lam = client.create_work_pool(AwsLambdaPoolCreate(name="lam"))
    assert lam.status is WorkPoolStatus.NOT_READY
    lam = client.update_work_pool("lam", WorkPoolUpdate(config={"function": "runner", "region": "us-east-1"}))
    assert lam.status is WorkPoolStatus.READY
    with pytest.raises(InvalidValueError, match="function"):
        client.update_work_pool("lam", WorkPoolUpdate(config={"url": "https://x.example"}))
    cleared = client.update_work_pool("local", WorkPoolUpdate.model_validate({"concurrency_limit": None}))
    assert cleared.concurrency_limit is None
    assert [p.name for p in client.filter_work_pools(WorkPoolFilter()).items] == ["lam", "local"]

    queue = client.create_work_queue("local", WorkQueueCreate(name="gpu", concurrency_limit=1))
    assert (queue.name, queue.priority, queue.status) == ("gpu", 2, WorkPoolStatus.NOT_READY)
    with pytest.raises(WorkQueueExistsError):
        client.create_work_queue("local", WorkQueueCreate(name="gpu"))
    assert client.update_work_queue("local", "gpu", WorkQueueUpdate(priority=1)).priority == 1
    assert [q.name for q in client.read_work_queues("local")] == ["default", "gpu"]
    assert client.pause_work_queue("local", "gpu").status is WorkPoolStatus.PAUSED
    assert client.resume_work_queue("local", "gpu").paused is False
    assert client.read_work_queue("local", "gpu").name == "gpu"

    with pytest.raises(InvalidValueError, match="worker name"):
        client.send_worker_heartbeat("local", "Box 1")
    with pytest.raises(InvalidValueError, match="queue name"):
        client.send_worker_heartbeat("local", "box-1", queues=["GPU"])
    worker = client.send_worker_heartbeat("local", "box-1", queues=["gpu"])
    assert worker.status is WorkerStatus.ONLINE and worker.queues == ["gpu"]
    assert client.read_work_pool("local").status is WorkPoolStatus.READY
    statuses = {q.name: q.status for q in client.read_work_queues("local")}
    assert statuses == {"default": WorkPoolStatus.NOT_READY, "gpu": WorkPoolStatus.READY}
    clock.advance(timedelta(minutes=5).total_seconds())
    [gone] = client.filter_workers("local", WorkerFilter()).items
    assert gone.status is WorkerStatus.OFFLINE

    assert client.pause_work_pool("local").status is WorkPoolStatus.PAUSED
    assert client.resume_work_pool("local").status is WorkPoolStatus.NOT_READY
    assert client.delete_worker("local", "box-1") is True
    assert client.delete_worker("local", "box-1") is False
    with pytest.raises(InvalidValueError):
        client.delete_work_queue("local", "default")
    assert client.delete_work_queue("local", "gpu") is True
    assert client.delete_work_queue("local", "gpu") is False
    assert client.delete_work_pool("local") is True
    assert client.delete_work_pool("local") is False
    with pytest.raises(NotFoundError):
        client.read_work_pool("local")
    with pytest.raises(NotFoundError):
        client.send_worker_heartbeat("local", "box-1")

    names = [e.event for e in client.filter_events(EventFilter(name_prefix="overcast.", limit=500)).items]
    for expected in [
        "overcast.work-pool.created",
        "overcast.work-pool.ready",
        "overcast.work-pool.paused",
        "overcast.work-queue.paused",
        "overcast.worker.online",
        "overcast.worker.offline",
        "overcast.work-pool.deleted",
    ]:
        assert expected in names


def test_both_clients_hand_out_the_runs_to_start(client: Client, plane: ControlPlane) -> None:
    client.create_work_pool(ProcessPoolCreate(name="local"))
    client.create_work_queue("local", WorkQueueCreate(name="urgent", priority=1))
    client.update_work_queue("local", "default", WorkQueueUpdate(priority=2))
    now = datetime.fromtimestamp(START, UTC)
    for name, queue, offset in [("slow", "default", -60), ("fast", "urgent", -1), ("later", "urgent", 30)]:
        plane.flow_runs.create(
            FlowRunCreate.model_validate(
                {
                    "flow_name": "etl",
                    "name": name,
                    "state": Scheduled(now + timedelta(seconds=offset)).model_dump(mode="json"),
                    "work_pool_name": "local",
                    "work_queue_name": queue,
                }
            )
        )
    assert [r.name for r in client.get_scheduled_flow_runs("local")] == ["fast", "slow"]
    soon = client.get_scheduled_flow_runs("local", scheduled_before=now + timedelta(minutes=1), limit=2)
    assert [r.name for r in soon] == ["fast", "later"]
    assert [r.name for r in client.get_scheduled_flow_runs("local", work_queue_names=["default"])] == ["slow"]


def test_both_clients_emit_events_once(client: Client) -> None:
    from overcast.core.events import Event, resource

    now = datetime.fromtimestamp(START, UTC)
    made = [
        Event(event="shop.order.placed", resource=resource(f"shop.order.{n}"), occurred=now) for n in range(3)
    ]
    assert client.emit_events(made) == 3
    assert client.emit_events(made) == 0
    listed = client.filter_events(EventFilter(name_prefix="shop."))
    assert [e.id for e in listed.items] == [e.id for e in reversed(made)]


# -- the API itself -------------------------------------------------------------------------------


def test_the_api_creates_reads_and_pauses_pools(api: TestClient) -> None:
    created = api.post(
        "/api/work_pools", json={"name": "q", "type": "queue", "config": {"url": "sqs://runs"}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "READY" and created.json()["config"] == {"url": "sqs://runs"}
    assert api.post("/api/work_pools", json={"name": "q", "type": "process"}).status_code == 409
    assert api.get("/api/work_pools/q").json()["type"] == "queue"
    assert api.post("/api/work_pools/q/pause").json()["status"] == "PAUSED"
    assert api.post("/api/work_pools/q/resume").json()["status"] == "READY"
    queues = api.get("/api/work_pools/q/queues").json()
    assert [q["name"] for q in queues] == ["default"]
    beat = api.post("/api/work_pools/q/workers/heartbeat", json={"name": "w-1"})
    assert beat.status_code == 200 and beat.json()["status"] == "ONLINE"
    workers = api.post("/api/work_pools/q/workers/filter", json={"status": "ONLINE"}).json()
    assert [w["name"] for w in workers["items"]] == ["w-1"]
    assert api.post("/api/work_pools/q/get_scheduled_flow_runs", json={}).json() == []
    assert api.delete("/api/work_pools/q").status_code == 204
    assert api.get("/api/work_pools/q").status_code == 404
    assert api.delete("/api/work_pools/q").status_code == 404
    assert api.post("/api/work_pools/q/queues", json={"name": "x"}).status_code == 404
    assert api.post("/api/work_pools/q/workers/filter", json={}).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/work_pools", {"name": "Bad Name", "type": "process"}),
        ("post", "/api/work_pools", {"name": "x" * 101, "type": "process"}),
        ("post", "/api/work_pools", {"name": "", "type": "process"}),
        ("post", "/api/work_pools", {"name": "ok", "type": "kubernetes"}),
        ("post", "/api/work_pools", {"name": "ok"}),
        ("post", "/api/work_pools", {"name": "ok", "type": "aws-lambda", "config": {"function": "a b"}}),
        ("post", "/api/work_pools", {"name": "ok", "type": "queue", "config": {"url": "http://x"}}),
        ("post", "/api/work_pools", {"name": "ok", "type": "gcp-functions", "config": {"url": "ftp://x"}}),
        ("post", "/api/work_pools", {"name": "ok", "type": "process", "concurrency_limit": -1}),
        ("post", "/api/work_pools", {"name": "ok", "type": "process", "paused": "yes"}),
        ("post", "/api/work_pools", {"name": "ok", "type": "process", "extra": 1}),
        ("get", "/api/work_pools/UPPER", None),
        ("get", "/api/work_pools/has%20space", None),
        ("post", "/api/work_pools/filter", {"limit": 0}),
        ("post", "/api/work_pools/filter", {"type": ["docker"]}),
        ("post", "/api/work_pools/filter", {"cursor": "garbage"}),
        ("post", "/api/work_pools/ok/queues", {"name": "Nope!"}),
        ("post", "/api/work_pools/ok/queues", {"name": "q", "priority": 0}),
        ("patch", "/api/work_pools/ok/queues/default", {"priority": None}),
        ("post", "/api/work_pools/ok/workers/heartbeat", {"name": "a/b"}),
        ("post", "/api/work_pools/ok/workers/heartbeat", {"name": "w", "queues": ["Q"]}),
        ("post", "/api/work_pools/ok/get_scheduled_flow_runs", {"limit": 0}),
        ("post", "/api/work_pools/ok/get_scheduled_flow_runs", {"scheduled_before": 5}),
        ("patch", "/api/work_pools/ok", {"config": {"function": "x"}}),
        ("delete", "/api/work_pools/ok/queues/default", None),
        ("delete", "/api/work_pools/ok/workers/UP", None),
    ],
)
def test_bad_input_is_a_422(api: TestClient, method: str, path: str, body: Any) -> None:
    assert api.post("/api/work_pools", json={"name": "ok", "type": "process"}).status_code == 201
    response = api.request(method.upper(), path, json=body)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
