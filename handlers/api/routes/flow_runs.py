"""Flow runs: create (idempotent by key), read, list, and propose states."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from overcast.core.models import FlowRun
from overcast.core.schemas import FlowRunCreate, FlowRunFilter, OrchestrationResult, Page, SetState
from overcast.core.services.leases import DEFAULT_LEASE_S, MAX_LEASE_S
from overcast.core.states import State
from overcast.core.types import Float
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/flow_runs", tags=["flow runs"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such flow run"}}
CONFLICT = {409: {"model": ErrorResponse, "description": "The run kept changing; propose again"}}


@router.post(
    "",
    response_model=FlowRun,
    status_code=201,
    responses={200: {"model": FlowRun, "description": "The run that already holds this idempotency key"}},
)
def create_flow_run(body: FlowRunCreate, plane: Plane, response: Response) -> FlowRun:
    """Create a flow run (registering its flow); a repeated idempotency key returns the first run (200)."""
    run, created = plane.flow_runs.create(body)
    if not created:
        response.status_code = 200
    return run


@router.post("/filter", response_model=Page[FlowRun])
def filter_flow_runs(body: FlowRunFilter, plane: Plane) -> Page[FlowRun]:
    """List flow runs by state, flow, deployment, tags and expected start time, a page at a time."""
    return plane.flow_runs.filter(body)


@router.get("/{run_id:uuid}", response_model=FlowRun, responses=NOT_FOUND)
def read_flow_run(run_id: uuid.UUID, plane: Plane) -> FlowRun:
    """Read a flow run."""
    return plane.flow_runs.get(run_id)


@router.get("/{run_id:uuid}/states", response_model=list[State], responses=NOT_FOUND)
def read_flow_run_states(run_id: uuid.UUID, plane: Plane) -> list[State]:
    """Read a flow run's state history, oldest first."""
    return plane.flow_runs.states(run_id)


@router.post(
    "/{run_id:uuid}/set_state", response_model=OrchestrationResult, responses={**NOT_FOUND, **CONFLICT}
)
def set_flow_run_state(run_id: uuid.UUID, body: SetState, plane: Plane) -> OrchestrationResult:
    """Propose a state; the answer says whether it was accepted, rejected, must wait, or must abort."""
    return plane.flow_runs.set_state(run_id, body.state, force=body.force)


@router.post("/{run_id:uuid}/cancel", response_model=OrchestrationResult, responses={**NOT_FOUND, **CONFLICT})
def cancel_flow_run(run_id: uuid.UUID, plane: Plane) -> OrchestrationResult:
    """Cancel a run: Cancelling while its process stops, or Cancelled at once when none runs it."""
    return plane.flow_runs.cancel(run_id)


@router.post("/{run_id:uuid}/resume", response_model=OrchestrationResult, responses={**NOT_FOUND, **CONFLICT})
def resume_flow_run(run_id: uuid.UUID, plane: Plane) -> OrchestrationResult:
    """Resume a paused run (a suspended one is scheduled again)."""
    return plane.flow_runs.resume(run_id)


class Heartbeat(BaseModel):
    """A runner vouching for a running flow run."""

    model_config = ConfigDict(extra="forbid")

    lease_s: Float = Field(
        default=DEFAULT_LEASE_S, gt=0, le=MAX_LEASE_S, description="Seconds the run is vouched for."
    )


class LeaseEnd(BaseModel):
    """When a run's lease ends, unless its runner heartbeats again."""

    expires_at: datetime


@router.post("/{run_id:uuid}/heartbeat", response_model=LeaseEnd, responses=NOT_FOUND)
def heartbeat_flow_run(run_id: uuid.UUID, body: Heartbeat, plane: Plane) -> LeaseEnd:
    """Extend a running run's lease: the tick reaps (Crashed) runs whose lease lapsed."""
    plane.flow_runs.get(run_id)  # 404 for a run that does not exist
    return LeaseEnd(expires_at=plane.leases.heartbeat(run_id, body.lease_s))
