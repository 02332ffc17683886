"""Deployments: upsert, read (by id or by flow and name), list, change, pause, resume, delete, run;
and ``POST /schedules/tick``, the scheduler on demand."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Path, Response

from overcast.core.deployments import (
    Deployment,
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    DeploymentUpdate,
    ScheduleTick,
    TickResult,
)
from overcast.core.errors import NotFoundError
from overcast.core.models import FlowRun, Name
from overcast.core.schemas import Page
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/deployments", tags=["deployments"])
schedules_router = APIRouter(prefix="/schedules", tags=["deployments"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such deployment"}}
CONFLICT = {409: {"model": ErrorResponse, "description": "The deployment kept changing; try again"}}


@router.post(
    "",
    response_model=Deployment,
    status_code=201,
    responses={200: {"model": Deployment, "description": "An existing deployment, updated"}, **CONFLICT},
)
def create_deployment(body: DeploymentCreate, plane: Plane, response: Response) -> Deployment:
    """Create a deployment, or update the one of that flow and name with the fields given (200)."""
    deployment, created = plane.deployments.create(body)
    if not created:
        response.status_code = 200
    return deployment


@router.post("/filter", response_model=Page[Deployment])
def filter_deployments(body: DeploymentFilter, plane: Plane) -> Page[Deployment]:
    """List deployments by ``<flow name>/<name>``, a page at a time."""
    return plane.deployments.filter(body)


@router.get("/name/{flow_name}/{deployment_name}", response_model=Deployment, responses=NOT_FOUND)
def read_deployment_by_name(
    flow_name: Annotated[Name, Path()], deployment_name: Annotated[Name, Path()], plane: Plane
) -> Deployment:
    """Read a deployment by its flow's name and its own."""
    return plane.deployments.get_by_name(f"{flow_name}/{deployment_name}")


@router.get("/{deployment_id:uuid}", response_model=Deployment, responses=NOT_FOUND)
def read_deployment(deployment_id: uuid.UUID, plane: Plane) -> Deployment:
    """Read a deployment."""
    return plane.deployments.get(deployment_id)


@router.patch("/{deployment_id:uuid}", response_model=Deployment, responses={**NOT_FOUND, **CONFLICT})
def update_deployment(deployment_id: uuid.UUID, body: DeploymentUpdate, plane: Plane) -> Deployment:
    """Change the fields given (``schedules`` given replace the schedules)."""
    return plane.deployments.update(deployment_id, body)


@router.post("/{deployment_id:uuid}/pause", response_model=Deployment, responses={**NOT_FOUND, **CONFLICT})
def pause_deployment(deployment_id: uuid.UUID, plane: Plane) -> Deployment:
    """Pause a deployment: no more scheduled runs; those waiting are deleted."""
    return plane.deployments.pause(deployment_id)


@router.post("/{deployment_id:uuid}/resume", response_model=Deployment, responses={**NOT_FOUND, **CONFLICT})
def resume_deployment(deployment_id: uuid.UUID, plane: Plane) -> Deployment:
    """Resume a paused deployment: the next tick schedules its runs."""
    return plane.deployments.resume(deployment_id)


@router.delete(
    "/{deployment_id:uuid}", status_code=204, response_class=Response, responses={**NOT_FOUND, **CONFLICT}
)
def delete_deployment(deployment_id: uuid.UUID, plane: Plane) -> Response:
    """Delete a deployment and its runs that wait to start."""
    if not plane.deployments.delete(deployment_id):
        raise NotFoundError("deployment", str(deployment_id))
    return Response(status_code=204)


@router.post(
    "/{deployment_id:uuid}/create_flow_run",
    response_model=FlowRun,
    status_code=201,
    responses={
        200: {"model": FlowRun, "description": "The run that already holds this idempotency key"},
        **NOT_FOUND,
    },
)
def create_deployment_flow_run(
    deployment_id: uuid.UUID,
    plane: Plane,
    response: Response,
    body: Annotated[DeploymentFlowRunCreate | None, Body()] = None,
) -> FlowRun:
    """Make a run of a deployment; its parameters are checked against the deployment's schema (422)."""
    run, created = plane.run_deployment(deployment_id, body)
    if not created:
        response.status_code = 200
    return run


@schedules_router.post("/tick", response_model=TickResult)
def tick(plane: Plane, body: Annotated[ScheduleTick | None, Body()] = None) -> TickResult:
    """Run the scheduler now: make the runs due deployments' schedules call for (the local stack's tick)."""
    request = body or ScheduleTick()
    return plane.scheduler.schedule(
        horizon=timedelta(seconds=request.horizon_seconds), max_runs=request.max_runs
    )
