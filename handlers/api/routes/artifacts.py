"""Artifacts: create (versioned by key), read by id or latest by key, list, update progress, fetch images."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response

from overcast.core.models import Artifact, ArtifactKey
from overcast.core.schemas import ArtifactCreate, ArtifactFilter, ArtifactUpdate, Page
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/artifacts", tags=["artifacts"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such artifact"}}
CONFLICT = {409: {"model": ErrorResponse, "description": "Other writers kept winning; try again"}}
NOT_PROGRESS = {
    409: {
        "model": ErrorResponse,
        "description": "Progress was given for an artifact that is not a progress artifact, or other writers kept winning",
    }
}


@router.post(
    "",
    response_model=Artifact,
    status_code=201,
    responses={
        200: {"model": Artifact, "description": "An artifact with this id already exists"},
        404: {"model": ErrorResponse, "description": "The flow run it names does not exist"},
        **CONFLICT,
    },
)
def create_artifact(body: ArtifactCreate, plane: Plane, response: Response) -> Artifact:
    """Create an artifact; with a key, it becomes the key's next version. A repeated id returns the first (200)."""
    artifact, created = plane.artifacts.create(body)
    if not created:
        response.status_code = 200
    return artifact


@router.post("/filter", response_model=Page[Artifact])
def filter_artifacts(body: ArtifactFilter, plane: Plane) -> Page[Artifact]:
    """List artifacts by key (its versions), flow run, task run and type, a page at a time."""
    return plane.artifacts.filter(body)


@router.get("/{artifact_id:uuid}", response_model=Artifact, responses=NOT_FOUND)
def read_artifact(artifact_id: uuid.UUID, plane: Plane) -> Artifact:
    """Read an artifact by id."""
    return plane.artifacts.get(artifact_id)


@router.get(
    "/{key}/latest",
    response_model=Artifact,
    responses={404: {"model": ErrorResponse, "description": "No artifact has this key"}},
)
def read_latest_artifact(key: Annotated[ArtifactKey, Path()], plane: Plane) -> Artifact:
    """Read the newest version of an artifact key."""
    return plane.artifacts.latest(key)


@router.get(
    "/{artifact_id:uuid}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}, "description": "The image's bytes, with its media type"},
        404: {"model": ErrorResponse, "description": "No such artifact, or it stores no image"},
    },
)
def read_artifact_image(artifact_id: uuid.UUID, plane: Plane) -> Response:
    """Download the bytes of an image artifact kept in the blob store."""
    content, media_type = plane.artifacts.image(artifact_id)
    return Response(content, media_type=media_type)


@router.patch("/{artifact_id:uuid}", response_model=Artifact, responses={**NOT_FOUND, **NOT_PROGRESS})
def update_artifact(artifact_id: uuid.UUID, body: ArtifactUpdate, plane: Plane) -> Artifact:
    """Move a progress artifact forward (a lower value is ignored) or change a description."""
    return plane.artifacts.update(artifact_id, body)
