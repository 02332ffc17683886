"""AWS Lambda entry for the API: ``overcast.handlers.aws.api.handler``.

API Gateway (REST v1, HTTP API v2) and Lambda Function URL events go through Mangum to the
FastAPI app. The app and its adapters are built at import, once per cold start; lifespan is off
because Mangum would run it around every invocation.
"""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from overcast.handlers import bootstrap

_mangum = Mangum(bootstrap.api_app(), lifespan="off", api_gateway_base_path="/")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answer one HTTP event from API Gateway or a Function URL."""
    response: dict[str, Any] = _mangum(event, context)
    return response
