"""The API's Cloud Functions entry, ``api`` in ``handlers/gcp/api.py``, through functions-framework's own app.

functions-framework loads the source file as a fresh module (named after the file) every time
it builds an app, so each ``create_app`` is a new instance: it builds the API from the
environment set before it, as a Cloud Functions instance does when it starts.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

from overcast.handlers import bootstrap

_spec = importlib.util.find_spec("overcast.handlers.gcp.api")
assert _spec is not None and _spec.origin is not None
SOURCE = Path(_spec.origin)
MODULE_NAME = SOURCE.stem  # functions-framework registers the source as sys.modules["api"]


@pytest.fixture
def start_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], FlaskClient]]:
    """Start a Cloud Functions instance over a store in ``tmp_path``; returns a test client.

    Set extra variables with ``monkeypatch`` before calling.
    """
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    monkeypatch.setenv("OVERCAST_STORE", f"sqlite://{tmp_path / 'api.db'}")
    monkeypatch.delenv("OVERCAST_API_KEY", raising=False)
    # functions-framework appends the source's folder to sys.path; keep that to this test
    monkeypatch.setattr(sys, "path", list(sys.path))
    previous = sys.modules.get(MODULE_NAME)

    def start() -> FlaskClient:
        bootstrap.reset()
        app = functions_framework.create_app(target="api", source=str(SOURCE), signature_type="http")
        return app.test_client()

    yield start
    bootstrap.reset()
    if previous is None:
        sys.modules.pop(MODULE_NAME, None)
    else:
        sys.modules[MODULE_NAME] = previous


@pytest.fixture
def client(start_instance: Callable[[], FlaskClient]) -> FlaskClient:
    """A client of one instance with auth off."""
    return start_instance()


def _json(response: Any) -> Any:
    assert response.content_type == "application/json"
    return response.get_json()


def test_the_instance_uses_the_store_its_environment_names(client: FlaskClient, tmp_path: Path) -> None:
    response = client.get("/api/ready")

    assert response.status_code == 200
    assert _json(response)["status"] == "ready"
    assert (tmp_path / "api.db").exists()


def test_a_run_goes_to_completed_and_keeps_its_state_history(client: FlaskClient) -> None:
    response = client.post("/api/flow_runs", json={"flow_name": "etl", "parameters": {"n": 3}})
    assert response.status_code == 201, response.get_data(as_text=True)
    run = _json(response)
    assert run["state"]["type"] == "PENDING"

    for state_type in ("RUNNING", "COMPLETED"):
        response = client.post(f"/api/flow_runs/{run['id']}/set_state", json={"state": {"type": state_type}})
        assert response.status_code == 200
        assert _json(response)["status"] == "ACCEPT"

    read = _json(client.get(f"/api/flow_runs/{run['id']}"))
    assert read["state"]["type"] == "COMPLETED"
    assert read["run_count"] == 1

    response = client.get(f"/api/flow_runs/{run['id']}/states")
    assert response.status_code == 200
    history = _json(response)
    assert [state["type"] for state in history] == ["PENDING", "RUNNING", "COMPLETED"]
    assert history[-1]["id"] == read["state"]["id"]


def test_query_strings_pass_through(client: FlaskClient) -> None:
    run = _json(client.post("/api/flow_runs", json={"flow_name": "etl"}))
    lines = [{"flow_run_id": run["id"], "message": f"line {i}"} for i in range(4)]
    assert client.post("/api/logs", json={"lines": lines}).status_code == 201

    page = _json(client.get(f"/api/logs/{run['id']}?limit=3"))

    assert [line["message"] for line in page["items"]] == ["line 0", "line 1", "line 2"]
    assert page["next_cursor"]


def test_bad_input_is_a_422(client: FlaskClient) -> None:
    response = client.post("/api/flow_runs", json={"flow_name": "etl", "colour": "red"})
    assert response.status_code == 422
    assert _json(response)["detail"][0]["loc"] == ["body", "colour"]

    run = _json(client.post("/api/flow_runs", json={"flow_name": "etl"}))
    response = client.post(f"/api/flow_runs/{run['id']}/set_state", json={"state": {"type": "SLEEPING"}})
    assert response.status_code == 422

    response = client.post("/api/flow_runs", data=b"{not json", content_type="application/json")
    assert response.status_code == 422


def test_an_unknown_run_is_a_404(client: FlaskClient) -> None:
    missing = uuid.uuid4()

    response = client.get(f"/api/flow_runs/{missing}/states")

    assert response.status_code == 404
    assert str(missing) in _json(response)["detail"]


def test_with_an_api_key_only_the_right_bearer_gets_in(
    start_instance: Callable[[], FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERCAST_API_KEY", "s3cret-key")
    client = start_instance()
    bearer = {"Authorization": "Bearer s3cret-key"}

    response = client.post("/api/flow_runs", json={"flow_name": "etl"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"

    response = client.post("/api/flow_runs", json={"flow_name": "etl"}, headers=bearer)
    assert response.status_code == 201
    run = _json(response)

    response = client.get(f"/api/flow_runs/{run['id']}", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 403

    response = client.get(f"/api/flow_runs/{run['id']}", headers=bearer)
    assert response.status_code == 200
    assert _json(response)["id"] == run["id"]
