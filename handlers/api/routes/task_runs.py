"""Task runs: batch upsert from the client-side engine, read, list by flow run."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from overcast.core.models import TaskRun
from overcast.core.schemas import Page, TaskRunBatch, TaskRunFilter, TaskRunUpsert
from overcast.core.states import State
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/task_runs", tags=["task runs"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such task run"}}


@router.post("/batch", response_model=list[TaskRunUpsert])
def upsert_task_runs(body: TaskRunBatch, plane: Plane) -> list[TaskRunUpsert]:
    """Report task runs and their states; replays and older states change nothing."""
    return plane.task_runs.upsert(body.updates)


@router.post("/filter", response_model=Page[TaskRun])
def filter_task_runs(body: TaskRunFilter, plane: Plane) -> Page[TaskRun]:
    """List the task runs of a flow run, oldest first, a page at a time."""
    return plane.task_runs.filter(body)


@router.get("/{task_run_id:uuid}", response_model=TaskRun, responses=NOT_FOUND)
def read_task_run(task_run_id: uuid.UUID, plane: Plane) -> TaskRun:
    """Read a task run."""
    return plane.task_runs.get(task_run_id)


@router.get("/{task_run_id:uuid}/states", response_model=list[State], responses=NOT_FOUND)
def read_task_run_states(task_run_id: uuid.UUID, plane: Plane) -> list[State]:
    """Read a task run's state history, oldest first."""
    return plane.task_runs.states(task_run_id)
