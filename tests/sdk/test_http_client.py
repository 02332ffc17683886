"""The HTTP client maps the API's answers to the errors the in-process client raises."""

from __future__ import annotations

import socket
import uuid

import pytest
from fastapi.testclient import TestClient

from overcast.adapters.factory import open_store
from overcast.core.errors import BackendError, ConfigurationError, InvalidValueError, NotFoundError
from overcast.core.schemas import FlowRunCreate
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.core.states import Running
from overcast.handlers.api import create_app
from overcast.http_client import HttpClient


def _client(api_key: str = "k", server_key: str = "k") -> HttpClient:
    app = create_app(ControlPlane(open_store("memory://")), settings=Settings(api_key=server_key))
    # Starlette's TestClient is an httpx2 client that calls the app in process.
    http = TestClient(app, headers={"Authorization": f"Bearer {api_key}"})
    return HttpClient("http://testserver", http=http)


def test_a_round_trip_through_the_api() -> None:
    client = _client()
    run = client.create_flow_run(FlowRunCreate(flow_name="etl"))
    assert client.set_flow_run_state(run.id, Running()).status.value == "ACCEPT"
    assert client.read_flow_run(run.id).state.type.value == "RUNNING"
    assert [s.type.value for s in client.read_flow_run_states(run.id)] == ["PENDING", "RUNNING"]


def test_errors_are_the_same_as_in_process() -> None:
    client = _client()
    with pytest.raises(NotFoundError):
        client.read_flow_run(uuid.uuid4())
    with pytest.raises(InvalidValueError, match="level"):
        client.write_logs([{"message": "x", "level": 500}])
    with pytest.raises(ConfigurationError, match="OVERCAST_API_KEY"):
        _client(api_key="wrong").create_flow_run(FlowRunCreate(flow_name="etl"))


def test_an_unreachable_api_is_a_backend_error_after_retries() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = HttpClient(f"http://127.0.0.1:{port}", attempts=2)
    with pytest.raises(BackendError, match="unreachable"):
        client.read_flow_run(uuid.uuid4())
