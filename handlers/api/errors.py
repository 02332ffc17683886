"""The one table that maps domain errors to HTTP answers. Bad input is a 4xx, never a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from overcast.core.errors import (
    BackendError,
    ConditionFailedError,
    ConfigurationError,
    InvalidKeyError,
    InvalidValueError,
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
    (ConditionFailedError, 409, None),
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
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register the table's handlers on ``app``."""
    for error_type in {row[0] for row in TABLE} | {OvercastError}:
        app.add_exception_handler(error_type, _answer)
    app.add_exception_handler(StarletteHTTPException, _http_error)
