"""Variables: create, read, update and delete by name, list by name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from overcast.core.errors import NotFoundError
from overcast.core.models import Variable, VariableName
from overcast.core.schemas import Page, VariableCreate, VariableFilter, VariableUpdate
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(prefix="/variables", tags=["variables"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such variable"}}
Name = Annotated[VariableName, Path()]


@router.post(
    "",
    response_model=Variable,
    status_code=201,
    responses={409: {"model": ErrorResponse, "description": "A variable of that name exists"}},
)
def create_variable(body: VariableCreate, plane: Plane) -> Variable:
    """Create a variable (any JSON value, at most 5,000 characters as compact JSON)."""
    return plane.variables.create(body)


@router.post("/filter", response_model=Page[Variable])
def filter_variables(body: VariableFilter, plane: Plane) -> Page[Variable]:
    """List variables by name, a page at a time."""
    return plane.variables.filter(body)


@router.get("/name/{name}", response_model=Variable, responses=NOT_FOUND)
def read_variable(name: Name, plane: Plane) -> Variable:
    """Read a variable by name."""
    return plane.variables.get(name)


@router.patch(
    "/name/{name}",
    response_model=Variable,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "It kept changing; try again"}},
)
def update_variable(name: Name, body: VariableUpdate, plane: Plane) -> Variable:
    """Change a variable's value and/or tags."""
    return plane.variables.update(name, body)


@router.delete("/name/{name}", status_code=204, response_class=Response, responses=NOT_FOUND)
def delete_variable(name: Name, plane: Plane) -> Response:
    """Delete a variable."""
    if not plane.variables.delete(name):
        raise NotFoundError("variable", name)
    return Response(status_code=204)
