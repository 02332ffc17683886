"""The one table that maps domain errors to HTTP answers. Bad input is a 4xx, never a 500."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from overcast.core.errors import (
    BackendError,
    ConditionFailedError,
    ConfigurationError,
    InvalidKeyError,
    InvalidValueError,
    LockLostError,
    LockTimeoutError,
    NotFoundError,
    OvercastError,
    ThrottledError,
)

logger = logging.getLogger("overcast.api")


class ErrorResponse(BaseModel):
    """The body of every error that is not a validation error."""

    detail: str


# (error type, status, retry-after seconds); the first matching row wins, so leaves go first.
TABLE: list[tuple[type[BaseException], int, int | None]] = [
    (NotFoundError, 404, None),
    (LockLostError, 409, None),  # a lease was released or taken over: its token is stale
    (ConditionFailedError, 409, None),
    (LockTimeoutError, 409, 1),  # another holder has the lock: poll again after Retry-After
    (InvalidKeyError, 422, None),
    (InvalidValueError, 422, None),
    (ThrottledError, 503, 1),
    (BackendError, 503, 1),
    (ConfigurationError, 503, None),
    (RecursionError, 422, None),
]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No or malformed bearer token"},
    403: {"model": ErrorResponse, "description": "Wrong API key"},
    503: {"model": ErrorResponse, "description": "The store is throttled or unreachable; retry"},
}


def _answer(request: Request, exc: Exception) -> JSONResponse:
    for error_type, status, retry_after in TABLE:
        if isinstance(exc, error_type):
            message = str(exc) if not isinstance(exc, RecursionError) else "the request is nested too deeply"
            headers = {"Retry-After": str(retry_after)} if retry_after else None
            if status == 422:
                # The same shape as FastAPI's own validation errors, so clients parse one format.
                body: dict[str, Any] = {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}
            else:
                body = {"detail": message}
            if status >= 500:
                logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, message)
            return JSONResponse(body, status_code=status, headers=headers)
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # A body that is not even JSON is invalid input like any other: one status, one shape.
        body: dict[str, Any] = {"detail": [{"loc": ["body"], "msg": str(exc.detail), "type": "json_invalid"}]}
        return JSONResponse(body, status_code=422)
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names only the first route's method; a path served by several routes (GET,
        # PUT and DELETE of /records) must list them all.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # FastAPI's own answer, except that an input holding NaN or an infinity (which Python's JSON
    # parser accepts) or a lone surrogate is echoed as text: FastAPI's renderer would fail on it
    # with a 500.
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        # a lone surrogate (JSON's "\ud800") cannot be encoded as UTF-8: echo it escaped
        return value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    return value


def install(app: FastAPI) -> None:
    """Register the table's handlers on ``app``."""
    for error_type in {row[0] for row in TABLE} | {OvercastError}:
        app.add_exception_handler(error_type, _answer)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
