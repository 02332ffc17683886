"""Logs: batch write, read by run."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from overcast.core.models import LogLine
from overcast.core.schemas import LogBatch, Page
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/logs", tags=["logs"])


class Written(BaseModel):
    """How many lines were written."""

    written: int


@router.post("", response_model=Written, status_code=201)
def write_logs(body: LogBatch, plane: Plane) -> Written:
    """Write log lines; a replayed line (same id) is stored once."""
    return Written(written=plane.logs.write(body.lines))


@router.get(
    "/{run_id:uuid}",
    response_model=Page[LogLine],
    responses={404: {"model": ErrorResponse, "description": "The run id is not a UUID"}},
)
def read_logs(
    run_id: uuid.UUID,
    plane: Plane,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: Annotated[str | None, Query(min_length=1, max_length=2000)] = None,
) -> Page[LogLine]:
    """Read a run's log lines, oldest first, a page at a time."""
    return plane.logs.read(run_id, limit=limit, cursor=cursor)
