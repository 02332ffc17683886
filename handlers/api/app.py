"""The control plane's FastAPI app: stateless, every request reads and writes the store.

The same app runs under uvicorn on a laptop (``overcast server``), behind Mangum on AWS Lambda
(``overcast.handlers.aws.api``) and under functions-framework on Google Cloud Functions
(``overcast.handlers.gcp.api``).
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from overcast import __version__
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.handlers.api import errors
from overcast.handlers.api.auth import BearerAuth
from overcast.handlers.api.routes import (
    artifacts,
    automations,
    concurrency,
    deployments,
    events,
    flow_runs,
    flows,
    health,
    logs,
    storage,
    task_runs,
    transactions,
    variables,
    work_pools,
)

API_PREFIX = "/api"


def create_app(
    plane: ControlPlane, *, settings: Settings | None = None, buckets: storage.Buckets | None = None
) -> FastAPI:
    """Build the API over ``plane``.

    Args:
        plane: the control plane's services (built once per process by the caller).
        settings: where the API key comes from; with none, auth is off.
        buckets: opens the buckets uploads go to; by default, those ``settings.buckets_url`` names.

    Returns:
        The app; it has no lifespan hooks, so Mangum's per-invocation lifespan costs nothing.
    """
    settings = settings or Settings()
    app = FastAPI(
        title="Overcast control plane",
        version=__version__,
        description=(
            "Flows, flow runs, task runs, logs, artifacts and variables of Overcast, the serverless orchestrator."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.control_plane = plane
    app.state.buckets = buckets or storage.BucketOpener(settings.buckets_url)
    errors.install(app)
    protected = [Depends(BearerAuth(settings.api_key))]
    app.include_router(health.router, prefix=API_PREFIX)
    for module in (
        flows,
        flow_runs,
        task_runs,
        logs,
        transactions,
        artifacts,
        variables,
        concurrency,
        work_pools,
        events,
        automations,
        storage,
    ):
        app.include_router(
            module.router, prefix=API_PREFIX, dependencies=protected, responses=errors.ERROR_RESPONSES
        )
    for router in (deployments.router, deployments.schedules_router):
        app.include_router(
            router, prefix=API_PREFIX, dependencies=protected, responses=errors.ERROR_RESPONSES
        )
    return app
