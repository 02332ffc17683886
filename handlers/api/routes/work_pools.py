"""Work pools, their queues and workers: settings, pause and resume, heartbeats, runs to start."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from overcast.core.errors import NotFoundError
from overcast.core.models import FlowRun, WorkerName, WorkPoolName, WorkQueueName
from overcast.core.schemas import Page
from overcast.core.work_pools import (
    ScheduledRunsRequest,
    Worker,
    WorkerFilter,
    WorkerHeartbeat,
    WorkPool,
    WorkPoolCreate,
    WorkPoolFilter,
    WorkPoolUpdate,
    WorkQueue,
    WorkQueueCreate,
    WorkQueueUpdate,
)
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/work_pools", tags=["work pools"])
PoolName = Annotated[WorkPoolName, Path()]
QueueName = Annotated[WorkQueueName, Path()]
Name = Annotated[WorkerName, Path()]
NO_POOL = {404: {"model": ErrorResponse, "description": "No such work pool"}}
NO_QUEUE = {404: {"model": ErrorResponse, "description": "No such work pool, or no such queue in it"}}
CONTENDED = {409: {"model": ErrorResponse, "description": "It kept changing; try again"}}


# -- pools -----------------------------------------------------------------------------------------


@router.post(
    "",
    response_model=WorkPool,
    status_code=201,
    responses={409: {"model": ErrorResponse, "description": "A pool of that name exists"}},
)
def create_work_pool(body: WorkPoolCreate, plane: Plane) -> WorkPool:
    """Create a work pool (with its ``default`` queue); ``type`` decides the shape of ``config``."""
    return plane.work_pools.create_pool(body)


@router.post("/filter", response_model=Page[WorkPool])
def filter_work_pools(body: WorkPoolFilter, plane: Plane) -> Page[WorkPool]:
    """List work pools by name, each with its status, a page at a time."""
    return plane.work_pools.filter_pools(body)


@router.get("/{name}", response_model=WorkPool, responses=NO_POOL)
def read_work_pool(name: PoolName, plane: Plane) -> WorkPool:
    """Read a work pool, with its status (READY, NOT_READY or PAUSED) as of now."""
    return plane.work_pools.get_pool(name)


@router.patch("/{name}", response_model=WorkPool, responses={**NO_POOL, **CONTENDED})
def update_work_pool(name: PoolName, body: WorkPoolUpdate, plane: Plane) -> WorkPool:
    """Change a pool's description, concurrency limit or config (validated against its type)."""
    return plane.work_pools.update_pool(name, body)


@router.delete("/{name}", status_code=204, response_class=Response, responses={**NO_POOL, **CONTENDED})
def delete_work_pool(name: PoolName, plane: Plane) -> Response:
    """Delete a pool with its queues and workers (runs waiting in it stay SCHEDULED)."""
    if not plane.work_pools.delete_pool(name):
        raise NotFoundError("work pool", name)
    return Response(status_code=204)


@router.post("/{name}/pause", response_model=WorkPool, responses={**NO_POOL, **CONTENDED})
def pause_work_pool(name: PoolName, plane: Plane) -> WorkPool:
    """Pause a pool: it hands out no runs until resumed."""
    return plane.work_pools.pause_pool(name)


@router.post("/{name}/resume", response_model=WorkPool, responses={**NO_POOL, **CONTENDED})
def resume_work_pool(name: PoolName, plane: Plane) -> WorkPool:
    """Resume a paused pool."""
    return plane.work_pools.resume_pool(name)


@router.post("/{name}/get_scheduled_flow_runs", response_model=list[FlowRun], responses=NO_POOL)
def get_scheduled_flow_runs(name: PoolName, body: ScheduledRunsRequest, plane: Plane) -> list[FlowRun]:
    """The SCHEDULED runs the pool should start next: by queue priority, then expected start,
    within the pool's and queues' concurrency limits (paused pools and queues give none)."""
    return plane.work_pools.next_runs(
        name, body.work_queue_names, before=body.scheduled_before, limit=body.limit
    )


# -- queues ----------------------------------------------------------------------------------------


@router.post(
    "/{name}/queues",
    response_model=WorkQueue,
    status_code=201,
    responses={**NO_POOL, 409: {"model": ErrorResponse, "description": "The pool has a queue of that name"}},
)
def create_work_queue(name: PoolName, body: WorkQueueCreate, plane: Plane) -> WorkQueue:
    """Create a queue in a pool."""
    return plane.work_pools.create_queue(name, body)


@router.get("/{name}/queues", response_model=list[WorkQueue], responses=NO_POOL)
def list_work_queues(name: PoolName, plane: Plane) -> list[WorkQueue]:
    """A pool's queues in the order they are served (priority 1 first), each with its status."""
    return plane.work_pools.list_queues(name)


@router.get("/{name}/queues/{queue}", response_model=WorkQueue, responses=NO_QUEUE)
def read_work_queue(name: PoolName, queue: QueueName, plane: Plane) -> WorkQueue:
    """Read a queue, with its status as of now."""
    return plane.work_pools.get_queue(name, queue)


@router.patch("/{name}/queues/{queue}", response_model=WorkQueue, responses={**NO_QUEUE, **CONTENDED})
def update_work_queue(name: PoolName, queue: QueueName, body: WorkQueueUpdate, plane: Plane) -> WorkQueue:
    """Change a queue's description, priority or concurrency limit."""
    return plane.work_pools.update_queue(name, queue, body)


@router.delete(
    "/{name}/queues/{queue}",
    status_code=204,
    response_class=Response,
    responses={**NO_QUEUE, **CONTENDED},
)
def delete_work_queue(name: PoolName, queue: QueueName, plane: Plane) -> Response:
    """Delete a queue (not the pool's ``default``, which is refused with 422)."""
    if not plane.work_pools.delete_queue(name, queue):
        raise NotFoundError("work queue", f"{name}/{queue}")
    return Response(status_code=204)


@router.post("/{name}/queues/{queue}/pause", response_model=WorkQueue, responses={**NO_QUEUE, **CONTENDED})
def pause_work_queue(name: PoolName, queue: QueueName, plane: Plane) -> WorkQueue:
    """Pause a queue: it hands out no runs until resumed."""
    return plane.work_pools.pause_queue(name, queue)


@router.post("/{name}/queues/{queue}/resume", response_model=WorkQueue, responses={**NO_QUEUE, **CONTENDED})
def resume_work_queue(name: PoolName, queue: QueueName, plane: Plane) -> WorkQueue:
    """Resume a paused queue."""
    return plane.work_pools.resume_queue(name, queue)


# -- workers ---------------------------------------------------------------------------------------


@router.post("/{name}/workers/heartbeat", response_model=Worker, responses={**NO_POOL, **CONTENDED})
def worker_heartbeat(name: PoolName, body: WorkerHeartbeat, plane: Plane) -> Worker:
    """A worker's heartbeat: registers it on the first, keeps it ONLINE after."""
    return plane.work_pools.heartbeat(name, body.name, queues=body.queues)


@router.post("/{name}/workers/filter", response_model=Page[Worker], responses=NO_POOL)
def filter_workers(name: PoolName, body: WorkerFilter, plane: Plane) -> Page[Worker]:
    """List a pool's workers by name, each with its status (ONLINE or OFFLINE) as of now."""
    return plane.work_pools.filter_workers(name, body)


@router.delete(
    "/{name}/workers/{worker}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorResponse, "description": "No such pool or worker"}, **CONTENDED},
)
def delete_worker(name: PoolName, worker: Name, plane: Plane) -> Response:
    """Forget a worker that stopped for good (an ONLINE one is announced OFFLINE)."""
    if not plane.work_pools.delete_worker(name, worker):
        raise NotFoundError("worker", f"{name}/{worker}")
    return Response(status_code=204)
