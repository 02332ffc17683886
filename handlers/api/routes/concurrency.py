"""Global concurrency limits and rate limits: settings by name, and the slots they hand out.

Routes::

    POST   /concurrency_limits                          create              201 | 409 (exists)
    POST   /concurrency_limits/filter                   list by name        200 Page
    GET    /concurrency_limits/{name}                   read                200 | 404
    PATCH  /concurrency_limits/{name}                   update              200 | 404
    DELETE /concurrency_limits/{name}                   delete              204 | 404
    POST   /concurrency_limits/increment                take slots          200 ACQUIRED | WAIT
                                                                            | 404 (strict, missing)
                                                                            | 409 (rate_limit, no decay)
    POST   /concurrency_limits/decrement                give back a lease   200 {released}
    GET    /concurrency_limits/leases/{lease_id}        read a lease        200 | 404
    POST   /concurrency_limits/leases/{lease_id}/renew  extend a lease      200 | 404 (lost)

``increment`` answers at once: when a limit is full it takes nothing and says WAIT, with how
long to wait before asking again (``retry_after_seconds``, also in a ``Retry-After`` header,
rounded up). Clients poll: a function that held the request open would bill for the wait, and
API Gateway cuts requests at 29 s. A full limit is a normal answer (200), not an error.
"""

from __future__ import annotations

import math
import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict

from overcast.core.concurrency import (
    ConcurrencyLease,
    ConcurrencyLimit,
    ConcurrencyLimitCreate,
    ConcurrencyLimitFilter,
    ConcurrencyLimitName,
    ConcurrencyLimitUpdate,
    SlotAcquisition,
    SlotRequest,
)
from overcast.core.errors import NotFoundError
from overcast.core.schemas import Page
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/concurrency_limits", tags=["concurrency limits"])
Name = Annotated[ConcurrencyLimitName, Path()]
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such concurrency limit"}}
CONTENDED = {409: {"model": ErrorResponse, "description": "It kept changing; try again"}}
NO_LEASE = {404: {"model": ErrorResponse, "description": "No such lease, or it lapsed and its slots went"}}


class LeaseRelease(BaseModel):
    """The lease whose slots to give back."""

    model_config = ConfigDict(extra="forbid")

    lease_id: uuid.UUID


class Released(BaseModel):
    """Whether there was such a lease (``false``: released already, or forgotten)."""

    released: bool


@router.post(
    "",
    response_model=ConcurrencyLimit,
    status_code=201,
    responses={409: {"model": ErrorResponse, "description": "A limit of that name exists"}},
)
def create_concurrency_limit(body: ConcurrencyLimitCreate, plane: Plane) -> ConcurrencyLimit:
    """Create a concurrency limit (``slot_decay_per_second`` above 0: a rate limit)."""
    return plane.concurrency_limits.create(body)


@router.post("/filter", response_model=Page[ConcurrencyLimit])
def filter_concurrency_limits(body: ConcurrencyLimitFilter, plane: Plane) -> Page[ConcurrencyLimit]:
    """List limits by name with their occupancy, a page at a time."""
    return plane.concurrency_limits.filter(body)


@router.post(
    "/increment",
    response_model=SlotAcquisition,
    responses={
        404: {"model": ErrorResponse, "description": "strict, and a limit named does not exist"},
        409: {"model": ErrorResponse, "description": "rate_limit mode on a limit without slot decay"},
    },
)
def increment_concurrency_slots(body: SlotRequest, plane: Plane, response: Response) -> SlotAcquisition:
    """Take slots in every active limit named, all or none; WAIT (nothing taken) when one is full."""
    answer = plane.concurrency_limits.acquire(body)
    if answer.retry_after_seconds is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(answer.retry_after_seconds)))
    return answer


@router.post("/decrement", response_model=Released, responses=CONTENDED)
def decrement_concurrency_slots(body: LeaseRelease, plane: Plane) -> Released:
    """Give back the slots a lease holds; giving them back twice is harmless."""
    return Released(released=plane.concurrency_limits.release(body.lease_id))


@router.get("/leases/{lease_id}", response_model=ConcurrencyLease, responses=NO_LEASE)
def read_concurrency_lease(lease_id: uuid.UUID, plane: Plane) -> ConcurrencyLease:
    """Read a lease: the limits it holds slots in, and when it lapses unless renewed."""
    return plane.concurrency_limits.read_lease(lease_id)


@router.post("/leases/{lease_id}/renew", response_model=ConcurrencyLease, responses={**NO_LEASE, **CONTENDED})
def renew_concurrency_lease(lease_id: uuid.UUID, plane: Plane) -> ConcurrencyLease:
    """Extend a lease by its own length from now (404 once its slots were given to others)."""
    return plane.concurrency_limits.renew(lease_id)


@router.get("/{name}", response_model=ConcurrencyLimit, responses=NOT_FOUND)
def read_concurrency_limit(name: Name, plane: Plane) -> ConcurrencyLimit:
    """Read a limit by name, with its occupancy as of now."""
    return plane.concurrency_limits.get(name)


@router.patch("/{name}", response_model=ConcurrencyLimit, responses={**NOT_FOUND, **CONTENDED})
def update_concurrency_limit(name: Name, body: ConcurrencyLimitUpdate, plane: Plane) -> ConcurrencyLimit:
    """Change a limit's slots, whether it is enforced, or its slot decay."""
    return plane.concurrency_limits.update(name, body)


@router.delete("/{name}", status_code=204, response_class=Response, responses=NOT_FOUND)
def delete_concurrency_limit(name: Name, plane: Plane) -> Response:
    """Delete a limit (leases holding its slots then hold nothing there)."""
    if not plane.concurrency_limits.delete(name):
        raise NotFoundError("concurrency limit", name)
    return Response(status_code=204)
