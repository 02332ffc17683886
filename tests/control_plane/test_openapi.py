"""Property-based: schemathesis generates requests from the OpenAPI schema, valid and invalid.

Every answer must be documented, match its schema, and never be a 5xx. Bounded by
``max_examples`` so that it runs in CI in well under a minute. The app runs over the memory
store (the same code paths as SQLite and DynamoDB above the port, which the API suite covers).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from overcast.adapters.factory import open_store
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.handlers.api import create_app

app = create_app(ControlPlane(open_store("memory://openapi-suite")), settings=Settings(api_key=""))
schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_honours_its_schema(case: Any) -> None:
    # A cursor is an opaque token the API issues; a made-up one is refused (422) by design,
    # which no schema can express, so positive-data acceptance is not asked of requests with one.
    has_cursor = "cursor" in (case.query or {}) or (isinstance(case.body, dict) and "cursor" in case.body)
    case.call_and_validate(excluded_checks=[positive_data_acceptance] if has_cursor else [])
