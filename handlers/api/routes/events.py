"""Events: batch ingest (idempotent by event id), filtered listings a page at a time, read by id."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from overcast.core.events import Emitted, Event, EventBatch, EventFilter
from overcast.core.schemas import Page
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/events", tags=["events"])


@router.post("", response_model=Emitted)
def emit_events(body: EventBatch, plane: Plane) -> Emitted:
    """Store events; an event whose id is already stored is ignored (counted as a duplicate)."""
    stored = plane.events.emit(body.events)
    return Emitted(stored=len(stored), duplicates=len(body.events) - len(stored))


@router.post("/filter", response_model=Page[Event])
def filter_events(body: EventFilter, plane: Plane) -> Page[Event]:
    """List events by name (exact, prefix or ``*`` pattern), resource, related resource and
    time, newest first (or oldest first with ``"order": "asc"``), a page at a time: pass the
    answer's ``next_cursor`` back with the same filter for the next page."""
    return plane.events.filter(body)


@router.get(
    "/{event_id:uuid}",
    response_model=Event,
    responses={404: {"model": ErrorResponse, "description": "No such event (or it expired)"}},
)
def read_event(event_id: uuid.UUID, plane: Plane) -> Event:
    """Read an event by id."""
    return plane.events.get(event_id)
