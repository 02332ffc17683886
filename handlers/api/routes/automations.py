"""Automations: create, read, list, change, pause, resume and delete them; a resource's own
automations (a deployment's triggers) replaced or deleted together; an automation's firings.

An action's templates (a run's parameters, a webhook's body …) are compiled when the automation
is saved, so a broken template is a 422 now rather than a failed action later. A
``run-deployment`` action naming a deployment that does not exist is accepted: deployments and
automations come and go independently (a deployment's triggers are saved right after it), and
a firing whose deployment is gone records the failure in its outcome.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from overcast.core.automations import (
    Automation,
    AutomationCreate,
    AutomationUpdate,
    FiringRecord,
    validate_action_templates,
)
from overcast.core.schemas import Cursor, Page
from overcast.core.types import Int
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/automations", tags=["automations"])
Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "No such automation"}}
CONFLICT: Responses = {
    409: {"model": ErrorResponse, "description": "The automation kept changing; try again"}
}
# ``{resource_id:path}`` takes ids holding ``/`` (``s3://bucket/key``); one holding a line break
# matches no route
NO_ROUTE: Responses = {
    404: {"model": ErrorResponse, "description": "No route: the resource id holds a line break"}
}
MAX_OWNED = 100
"""The most automations one resource may own (a deployment's triggers)."""

ResourceId = Annotated[
    str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$"), Path()
]


class AutomationFilter(BaseModel):
    """Which automations to list, a page at a time (by creation).

    Attributes:
        owner_resource: only the automations this resource owns (``overcast.deployment.<id>``).
        limit: the most automations in a page.
        cursor: the ``next_cursor`` of the previous page.
    """

    model_config = ConfigDict(extra="forbid")

    owner_resource: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    limit: Int = Field(default=200, ge=1, le=200)
    cursor: Cursor | None = None


class Deleted(BaseModel):
    """How many automations a request deleted."""

    deleted: int


@router.post("", response_model=Automation, status_code=201)
def create_automation(body: AutomationCreate, plane: Plane) -> Automation:
    """Create an automation; its actions' templates are checked now (422 when one is broken)."""
    validate_action_templates(body)
    return plane.automations.create(body)


@router.post("/filter", response_model=Page[Automation])
def filter_automations(
    plane: Plane, body: Annotated[AutomationFilter | None, Body()] = None
) -> Page[Automation]:
    """List automations (those a resource owns, with ``owner_resource``), a page at a time."""
    query = body or AutomationFilter()
    return plane.automations.list(limit=query.limit, cursor=query.cursor, owner_resource=query.owner_resource)


@router.get("/{automation_id:uuid}", response_model=Automation, responses=NOT_FOUND)
def read_automation(automation_id: uuid.UUID, plane: Plane) -> Automation:
    """Read an automation."""
    return plane.automations.get(automation_id)


@router.patch("/{automation_id:uuid}", response_model=Automation, responses={**NOT_FOUND, **CONFLICT})
def update_automation(automation_id: uuid.UUID, body: AutomationUpdate, plane: Plane) -> Automation:
    """Change the fields given (a list given replaces the stored one; ``null`` leaves a field as it is)."""
    validate_action_templates(body)
    return plane.automations.update(automation_id, body)


@router.post("/{automation_id:uuid}/pause", response_model=Automation, responses={**NOT_FOUND, **CONFLICT})
def pause_automation(automation_id: uuid.UUID, plane: Plane) -> Automation:
    """Pause an automation: it ignores events until it is resumed."""
    return plane.automations.set_enabled(automation_id, False)


@router.post("/{automation_id:uuid}/resume", response_model=Automation, responses={**NOT_FOUND, **CONFLICT})
def resume_automation(automation_id: uuid.UUID, plane: Plane) -> Automation:
    """Resume a paused automation."""
    return plane.automations.set_enabled(automation_id, True)


@router.delete(
    "/{automation_id:uuid}", status_code=204, response_class=Response, responses={**NOT_FOUND, **CONFLICT}
)
def delete_automation(automation_id: uuid.UUID, plane: Plane) -> Response:
    """Delete an automation."""
    plane.automations.delete(automation_id)
    return Response(status_code=204)


@router.get("/{automation_id:uuid}/firings", response_model=list[FiringRecord], responses=NOT_FOUND)
def read_firings(
    automation_id: uuid.UUID,
    plane: Plane,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[FiringRecord]:
    """An automation's firings with what each action did, newest first."""
    return plane.automations.firings(automation_id, limit=limit)


@router.put(
    "/owned-by/{resource_id:path}", response_model=list[Automation], responses={**NO_ROUTE, **CONFLICT}
)
def replace_owned_automations(
    resource_id: ResourceId,
    body: Annotated[list[AutomationCreate], Body(max_length=MAX_OWNED)],
    plane: Plane,
) -> list[Automation]:
    """Make the automations ``resource_id`` owns these (a deployment's triggers, on each deploy).

    Each one given is owned by ``resource_id`` (whatever ``owner_resource`` it carries). One
    that is unchanged keeps its id and its triggers' state; one whose name an owned automation
    has changes that one (keeping its id); the others are created, and the owned automations
    no longer given are deleted.
    """
    for request in body:
        validate_action_templates(request)
    return plane.automations.replace_owned_by(resource_id, body)


@router.delete("/owned-by/{resource_id:path}", response_model=Deleted, responses=NO_ROUTE)
def delete_owned_automations(resource_id: ResourceId, plane: Plane) -> Deleted:
    """Delete every automation ``resource_id`` owns; answer how many there were."""
    return Deleted(deleted=plane.automations.delete_owned_by(resource_id))
