"""The API's Lambda entry, ``overcast.handlers.aws.api.handler``, driven with the events AWS sends.

The three event shapes under ``events/`` are the documented ones (API Gateway's Lambda proxy
integration for REST APIs, payload format 2.0 for HTTP APIs, and Lambda Function URLs); each
test fills a template in as the service would for one request: method, path, query string,
headers, body.
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import pytest

from overcast.handlers import bootstrap

EVENTS = Path(__file__).parent / "events"
MODULE = "overcast.handlers.aws.api"
SHAPES = ["rest_api_v1", "http_api_v2", "function_url"]
V1_RESPONSE_KEYS = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
V2_RESPONSE_KEYS = {"statusCode", "headers", "body", "isBase64Encoded"}


@cache
def _template(shape: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{shape}.json").read_text())


def make_event(
    shape: str,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    json_body: Any = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """Fill the ``shape`` template in as API Gateway or a Function URL would for one request.

    Args:
        shape: ``rest_api_v1``, ``http_api_v2`` or ``function_url``.
        method: the HTTP method.
        path: the request path (no stage: the API's routes start at ``/api``).
        query: query parameters in order, a name may repeat.
        json_body: a JSON body (sets ``Content-Type: application/json``).
        body: raw body bytes (mutually exclusive with ``json_body``).
        headers: request headers as the client sent them.
        base64_body: deliver the body base64-encoded (``isBase64Encoded: true``), as API Gateway
            does for binary media types.
    """
    event = copy.deepcopy(_template(shape))
    sent = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent.setdefault("Content-Type", "application/json")
    if body is not None:
        sent["Content-Length"] = str(len(body))
    text_body = None if body is None else (base64.b64encode(body).decode() if base64_body else body.decode())
    pairs = query or []
    if shape == "rest_api_v1":
        return _fill_v1(event, method, path, pairs, sent, text_body, base64_body)
    return _fill_v2(event, method, path, pairs, sent, text_body, base64_body)


def _fill_v1(
    event: dict[str, Any],
    method: str,
    path: str,
    pairs: list[tuple[str, str]],
    sent: dict[str, str],
    body: str | None,
    base64_body: bool,
) -> dict[str, Any]:
    context = event["requestContext"]
    event["httpMethod"] = context["httpMethod"] = method
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    # requestContext.path carries the stage; the top-level path does not
    context["path"] = f"/{context['stage']}{path}"
    context["requestId"] = str(uuid.uuid4())
    for name, value in sent.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    if pairs:
        multi: dict[str, list[str]] = {}
        for name, value in pairs:
            multi.setdefault(name, []).append(value)
        # the single-value map holds the last value of a repeated name
        event["queryStringParameters"] = {name: values[-1] for name, values in multi.items()}
        event["multiValueQueryStringParameters"] = multi
    event["body"] = body
    event["isBase64Encoded"] = base64_body
    return event


def _fill_v2(
    event: dict[str, Any],
    method: str,
    path: str,
    pairs: list[tuple[str, str]],
    sent: dict[str, str],
    body: str | None,
    base64_body: bool,
) -> dict[str, Any]:
    http = event["requestContext"]["http"]
    http["method"] = method
    event["rawPath"] = http["path"] = path
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    if "pathParameters" in event:
        event["pathParameters"] = {"proxy": path.lstrip("/")}
    headers = event["headers"]
    headers["content-length"] = "0"
    for name, value in sent.items():
        headers[name.lower()] = value  # payload 2.0 lowercases header names
    if pairs:
        event["rawQueryString"] = urlencode(pairs)
        joined: dict[str, str] = {}
        for name, value in pairs:
            joined[name] = f"{joined[name]},{value}" if name in joined else value
        event["queryStringParameters"] = joined
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = base64_body
    return event


@dataclass
class LambdaContext:
    """The attributes of the context object the Python runtime passes to a handler."""

    function_name: str = "overcast-api"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:overcast-api"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/overcast-api"
    log_stream_name: str = "2024/05/24/[$LATEST]4f1c2b9e8d7a6b5c4d3e2f1a0b9c8d7e"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


@pytest.fixture
def cold_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], ModuleType]]:
    """Start the function afresh: the handler module is (re)imported over a store in ``tmp_path``.

    The module builds its app at import, from the environment, as a Lambda sandbox does on a
    cold start; set variables with ``monkeypatch`` before calling.
    """
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    monkeypatch.setenv("OVERCAST_STORE", f"sqlite://{tmp_path / 'api.db'}")
    monkeypatch.delenv("OVERCAST_API_KEY", raising=False)

    def start() -> ModuleType:
        bootstrap.reset()
        if MODULE in sys.modules:
            return importlib.reload(sys.modules[MODULE])
        return importlib.import_module(MODULE)

    yield start
    bootstrap.reset()


@pytest.fixture
def function(cold_start: Callable[[], ModuleType]) -> ModuleType:
    """The handler module after one cold start with auth off."""
    return cold_start()


def invoke(module: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    """Call the handler; check the response has API Gateway's shape; return status, headers, JSON body."""
    response = module.handler(event, LambdaContext())
    expected = V1_RESPONSE_KEYS if "httpMethod" in event else V2_RESPONSE_KEYS
    assert set(response) == expected, f"not an API Gateway response for this event: {sorted(response)}"
    assert isinstance(response["statusCode"], int)
    assert response["isBase64Encoded"] is False
    assert response["headers"]["content-type"] == "application/json"
    assert isinstance(response["body"], str)
    return response["statusCode"], response["headers"], json.loads(response["body"])


def create_run(module: ModuleType, shape: str, **body: Any) -> dict[str, Any]:
    status, _, run = invoke(
        module, make_event(shape, "POST", "/api/flow_runs", json_body={"flow_name": "etl", **body})
    )
    assert status == 201, run
    return run


@pytest.mark.parametrize("shape", SHAPES)
def test_a_run_goes_from_pending_to_completed(function: ModuleType, shape: str) -> None:
    run = create_run(function, shape, parameters={"day": "2024-05-24"}, tags=["nightly"])
    assert run["state"]["type"] == "PENDING"
    assert run["run_count"] == 0

    for state_type in ("RUNNING", "COMPLETED"):
        event = make_event(
            shape, "POST", f"/api/flow_runs/{run['id']}/set_state", json_body={"state": {"type": state_type}}
        )
        status, _, result = invoke(function, event)
        assert status == 200, result
        assert result["status"] == "ACCEPT"
        assert result["state"]["type"] == state_type

    status, _, read = invoke(function, make_event(shape, "GET", f"/api/flow_runs/{run['id']}"))
    assert status == 200
    assert read["state"]["type"] == "COMPLETED"
    assert read["run_count"] == 1
    assert read["parameters"] == {"day": "2024-05-24"}
    assert read["tags"] == ["nightly"]
    assert read["end_time"] is not None


@pytest.mark.parametrize("shape", SHAPES)
def test_a_base64_encoded_body_is_decoded(function: ModuleType, shape: str) -> None:
    body = {"flow_name": "etl", "name": "zürich-nightly", "parameters": {"city": "Zürich", "emoji": "⛅"}}
    event = make_event(shape, "POST", "/api/flow_runs", json_body=body, base64_body=True)
    assert event["isBase64Encoded"] is True

    status, _, run = invoke(function, event)

    assert status == 201, run
    assert run["name"] == "zürich-nightly"
    assert run["parameters"] == {"city": "Zürich", "emoji": "⛅"}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_query_string_reaches_the_route(function: ModuleType, shape: str) -> None:
    run = create_run(function, shape)
    lines = [{"flow_run_id": run["id"], "message": f"line {i}"} for i in range(7)]
    status, _, written = invoke(function, make_event(shape, "POST", "/api/logs", json_body={"lines": lines}))
    assert (status, written) == (201, {"written": 7})

    status, _, first = invoke(
        function, make_event(shape, "GET", f"/api/logs/{run['id']}", query=[("limit", "5")])
    )
    assert status == 200
    assert [line["message"] for line in first["items"]] == [f"line {i}" for i in range(5)]
    assert first["next_cursor"]

    query = [("limit", "5"), ("cursor", first["next_cursor"])]
    status, _, rest = invoke(function, make_event(shape, "GET", f"/api/logs/{run['id']}", query=query))
    assert status == 200
    assert [line["message"] for line in rest["items"]] == ["line 5", "line 6"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("shape", SHAPES)
def test_bad_input_is_a_422_response(function: ModuleType, shape: str) -> None:
    status, _, answer = invoke(
        function, make_event(shape, "POST", "/api/flow_runs", json_body={"flow_name": "etl", "colour": "red"})
    )
    assert status == 422
    assert answer["detail"][0]["loc"] == ["body", "colour"]

    status, _, answer = invoke(
        function, make_event(shape, "GET", f"/api/logs/{uuid.uuid4()}", query=[("limit", "0")])
    )
    assert status == 422
    assert answer["detail"][0]["loc"] == ["query", "limit"]

    event = make_event(
        shape, "POST", "/api/flow_runs", body=b"{not json", headers={"Content-Type": "application/json"}
    )
    status, _, answer = invoke(function, event)
    assert status == 422


@pytest.mark.parametrize("shape", SHAPES)
def test_an_unknown_run_is_a_404_response(function: ModuleType, shape: str) -> None:
    missing = uuid.uuid4()

    status, _, answer = invoke(function, make_event(shape, "GET", f"/api/flow_runs/{missing}"))

    assert status == 404
    assert str(missing) in answer["detail"]

    event = make_event(
        shape, "POST", f"/api/flow_runs/{missing}/set_state", json_body={"state": {"type": "RUNNING"}}
    )
    status, _, answer = invoke(function, event)
    assert status == 404


@pytest.mark.parametrize("shape", SHAPES)
def test_with_an_api_key_only_the_right_bearer_gets_in(
    cold_start: Callable[[], ModuleType], monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    monkeypatch.setenv("OVERCAST_API_KEY", "s3cret-key")
    function = cold_start()
    bearer = {"Authorization": "Bearer s3cret-key"}
    status, _, run = invoke(
        function, make_event(shape, "POST", "/api/flow_runs", json_body={"flow_name": "etl"}, headers=bearer)
    )
    assert status == 201, run
    path = f"/api/flow_runs/{run['id']}"

    status, headers, answer = invoke(function, make_event(shape, "GET", path))
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert "bearer token" in answer["detail"]

    status, _, answer = invoke(
        function, make_event(shape, "GET", path, headers={"Authorization": "Bearer wrong"})
    )
    assert status == 403

    status, _, read = invoke(function, make_event(shape, "GET", path, headers=bearer))
    assert status == 200
    assert read["id"] == run["id"]

    # health stays open for load balancers and probes
    status, _, health = invoke(function, make_event(shape, "GET", "/api/health"))
    assert (status, health["status"]) == (200, "ok")


def test_the_app_and_adapters_are_built_once_per_cold_start(
    cold_start: Callable[[], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    import overcast.handlers.api

    adapters_built: list[object] = []
    apps_built: list[object] = []

    class CountedAdapters(bootstrap.Adapters):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            adapters_built.append(self)

    real_create_app = overcast.handlers.api.create_app

    def counted_create_app(*args: Any, **kwargs: Any) -> Any:
        app = real_create_app(*args, **kwargs)
        apps_built.append(app)
        return app

    monkeypatch.setattr(bootstrap, "Adapters", CountedAdapters)
    monkeypatch.setattr(overcast.handlers.api, "create_app", counted_create_app)

    function = cold_start()
    assert (len(adapters_built), len(apps_built)) == (1, 1)
    app, store = bootstrap.api_app(), bootstrap.adapters().store

    # warm invocations, whatever their event source, reuse what the cold start built
    run = create_run(function, "rest_api_v1")
    for shape in SHAPES:
        status, _, read = invoke(function, make_event(shape, "GET", f"/api/flow_runs/{run['id']}"))
        assert (status, read["id"]) == (200, run["id"])
    assert (len(adapters_built), len(apps_built)) == (1, 1)
    assert bootstrap.api_app() is app is apps_built[0]
    assert bootstrap.adapters().store is store

    # a new sandbox builds its own
    cold_start()
    assert (len(adapters_built), len(apps_built)) == (2, 2)
    assert bootstrap.api_app() is not app
