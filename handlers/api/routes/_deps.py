"""What every route depends on: the control plane built for the app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from overcast.core.services import ControlPlane


async def _plane(request: Request) -> ControlPlane:
    """The control plane built for the app."""
    # async: no I/O here, and a sync dependency would cost a trip to the thread pool per request.
    plane: ControlPlane = request.app.state.control_plane
    return plane


Plane = Annotated[ControlPlane, Depends(_plane)]
