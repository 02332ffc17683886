"""Flows: register by name, read by id or name, list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from overcast.core.models import Flow
from overcast.core.schemas import Cursor, FlowCreate, Page
from overcast.core.types import Int
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/flows", tags=["flows"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such flow"}}


class FlowListing(BaseModel):
    """Which page of flows to list."""

    limit: Int = Field(default=100, ge=1, le=500)
    cursor: Cursor | None = None


@router.post(
    "",
    response_model=Flow,
    status_code=201,
    responses={200: {"model": Flow, "description": "Already registered"}},
)
def create_flow(body: FlowCreate, plane: Plane, response: Response) -> Flow:
    """Register a flow by name; registering it again returns it (200)."""
    flow, created = plane.flows.ensure(body.name, body.tags)
    if not created:
        response.status_code = 200
    return flow


@router.post("/filter", response_model=Page[Flow])
def list_flows(body: FlowListing, plane: Plane) -> Page[Flow]:
    """List flows by name, a page at a time."""
    return plane.flows.list(limit=body.limit, cursor=body.cursor)


@router.get("/name/{name}", response_model=Flow, responses=NOT_FOUND)
def read_flow_by_name(name: Annotated[str, Path(min_length=1, max_length=200)], plane: Plane) -> Flow:
    """Read a flow by name."""
    return plane.flows.get_by_name(name)


@router.get("/{flow_id:uuid}", response_model=Flow, responses=NOT_FOUND)
def read_flow(flow_id: uuid.UUID, plane: Plane) -> Flow:
    """Read a flow by id."""
    return plane.flows.get(flow_id)
