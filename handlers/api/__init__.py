"""The control plane's HTTP API (FastAPI)."""

from overcast.handlers.api.app import create_app

__all__ = ["create_app"]
