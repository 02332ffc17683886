"""What a function builds once per cold start: settings, adapters, the control plane, the app.

Every entry point (Lambda, Cloud Functions, uvicorn) takes them from here, so a warm function
reuses its clients and connections across invocations instead of rebuilding them per request.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from overcast.adapters.factory import Adapters
from overcast.core.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from overcast.core.services import ControlPlane

_lock = threading.Lock()
_adapters: Adapters | None = None
_app: FastAPI | None = None


def adapters() -> Adapters:
    """The process's adapters, built from the environment on first use."""
    global _adapters  # noqa: PLW0603 - one per process is the point
    with _lock:
        if _adapters is None:
            _adapters = Adapters(Settings())
        return _adapters


def api_app() -> FastAPI:
    """The process's API app over its adapters' store."""
    global _app  # noqa: PLW0603
    built, plane = adapters(), control_plane()
    with _lock:
        if _app is None:
            from overcast.handlers.api import create_app

            _app = create_app(plane, settings=built.settings)
        return _app


_plane: ControlPlane | None = None


def control_plane() -> ControlPlane:
    """The process's control plane over its adapters (the runner, tick and events handlers')."""
    global _plane  # noqa: PLW0603
    built = adapters()
    with _lock:
        if _plane is None:
            _plane = built.control_plane()
        return _plane


def reset() -> None:
    """Forget what was built (tests that change the environment between apps)."""
    global _adapters, _app, _plane
    with _lock:
        if _adapters is not None:
            _adapters.close()
        _adapters, _app, _plane = None, None, None
