"""Health: is the API up, and can it reach its store. Never behind auth."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from overcast import __version__
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The API's health."""

    status: str
    version: str


@router.get("/health", response_model=Health)
def health() -> Health:
    """Answer as long as the API runs (a liveness probe)."""
    return Health(status="ok", version=__version__)


@router.get("/ready", response_model=Health, responses={503: {"description": "The store is unreachable"}})
def ready(plane: Plane) -> Health:
    """Answer once the store answers (a readiness probe)."""
    plane.store.get("HEALTH", "PING")
    return Health(status="ready", version=__version__)
