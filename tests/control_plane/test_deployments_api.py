"""Deployments and the schedule tick through the API (FastAPI's TestClient), over SQLite and DynamoDB
on moto's server; and the HTTP client over the same app."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from overcast.core.deployments import (
    DeploymentCreate,
    DeploymentFilter,
    DeploymentFlowRunCreate,
    DeploymentUpdate,
)
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.handlers.api import create_app
from overcast.http_client import HttpClient

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "when": {"type": "string", "format": "date"}},
    "required": ["n"],
}


def deploy(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post("/api/deployments", json={"name": "nightly", "flow_name": "etl", **body})
    assert response.status_code in (200, 201), response.text
    return response.json()


def messages(response: Any) -> str:
    return " | ".join(e["msg"] for e in response.json()["detail"])


def test_upsert_read_by_id_and_name_and_list(api: TestClient) -> None:
    created = api.post(
        "/api/deployments",
        json={
            "name": "nightly",
            "flow_name": "etl",
            "entrypoint": "flows/etl.py:etl",
            "schedules": [{"schedule": {"cron": "0 2 * * *", "timezone": "Europe/Paris"}}],
            "concurrency_limit": 1,
            "concurrency_options": {"collision_strategy": "CANCEL_NEW"},
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["schedules"][0]["schedule"] == {
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "day_or": True,
    }
    updated = api.post("/api/deployments", json={"name": "nightly", "flow_name": "etl", "description": "d"})
    assert updated.status_code == 200 and updated.json()["id"] == body["id"]
    assert updated.json()["schedules"] == body["schedules"] and updated.json()["description"] == "d"
    assert api.get(f"/api/deployments/{body['id']}").json()["description"] == "d"
    assert api.get("/api/deployments/name/etl/nightly").json()["id"] == body["id"]
    assert api.get("/api/deployments/name/etl/weekly").status_code == 404
    assert api.get(f"/api/deployments/{uuid.uuid4()}").status_code == 404
    listed = api.post("/api/deployments/filter", json={"flow_name": ["etl"]}).json()
    assert [d["name"] for d in listed["items"]] == ["nightly"] and listed["next_cursor"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"schedules": [{"schedule": {"cron": "0 25 * * *"}}]}, "cron '0 25 * * *' is invalid"),
        (
            {"schedules": [{"schedule": {"cron": "0 9 * * *", "timezone": "Europe/Pariss"}}]},
            "unknown time zone",
        ),
        ({"schedules": [{"schedule": {"every": "day"}}]}, "a schedule needs one of cron, interval or rrule"),
        ({"schedules": [{"schedule": {"rrule": "FREQ=SOMETIMES"}}]}, "rrule 'FREQ=SOMETIMES' is invalid"),
        ({"entrypoint": "etl"}, "should match pattern"),
        ({"parameter_openapi_schema": {"type": "banana"}}, "not a valid JSON schema"),
        ({"parameter_openapi_schema": {"$ref": "http://127.0.0.1:9/s.json"}}, "Retrieval is disabled"),
        ({"parameter_openapi_schema": SCHEMA, "parameters": {"n": 1.5}}, 'n: 1.5 is not of type "integer"'),
    ],
)
def test_bad_deployments_are_422_with_a_clear_message(
    api: TestClient, body: dict[str, Any], message: str
) -> None:
    response = api.post("/api/deployments", json={"name": "d", "flow_name": "etl", **body})
    assert response.status_code == 422, response.text
    assert message in messages(response)


def test_run_parameters_are_validated_and_a_bad_set_is_422(api: TestClient) -> None:
    deployment = deploy(api, parameter_openapi_schema=SCHEMA, parameters={"n": 1}, tags=["etl"])
    path = f"/api/deployments/{deployment['id']}/create_flow_run"
    refused = api.post(path, json={"parameters": {"n": "ten", "when": 3}})
    assert refused.status_code == 422
    assert messages(refused) == (
        "the parameters do not match the flow's signature: "
        'n: "ten" is not of type "integer"; when: 3 is not of type "string"'
    )
    made = api.post(path, json={"parameters": {"n": 2}, "idempotency_key": "k"})
    assert made.status_code == 201 and made.json()["parameters"] == {"n": 2}
    assert made.json()["deployment_id"] == deployment["id"] and made.json()["state"]["type"] == "SCHEDULED"
    again = api.post(path, json={"idempotency_key": "k"})
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
    assert api.post(path).status_code == 201  # no body: the defaults
    too_many = api.post(path, json={"parameters": {"n": 1}, "tags": [f"t{i}" for i in range(50)]})
    assert too_many.status_code == 422 and "the deployment's run would be invalid: tags" in messages(too_many)
    assert api.post(f"/api/deployments/{uuid.uuid4()}/create_flow_run", json={}).status_code == 404


def test_pause_resume_patch_delete_and_the_tick(api: TestClient) -> None:
    deployment = deploy(api, schedules=[{"schedule": {"interval": 600}}])
    tick = api.post("/api/schedules/tick", json={"horizon_seconds": 3600, "max_runs": 3})
    assert tick.status_code == 200 and len(tick.json()["created"]) == 3
    assert api.post("/api/schedules/tick").json()["created"] == []  # idempotent
    paused = api.post(f"/api/deployments/{deployment['id']}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    waiting = api.post("/api/flow_runs/filter", json={"deployment_id": [deployment["id"]]}).json()["items"]
    assert waiting == []  # pausing deleted them
    assert api.post(f"/api/deployments/{deployment['id']}/resume").json()["paused"] is False
    patched = api.patch(f"/api/deployments/{deployment['id']}", json={"tags": ["x"], "work_queue_name": None})
    assert patched.status_code == 200 and patched.json()["tags"] == ["x"]
    assert api.patch(f"/api/deployments/{deployment['id']}", json={"tags": "x"}).status_code == 422
    assert api.delete(f"/api/deployments/{deployment['id']}").status_code == 204
    assert api.delete(f"/api/deployments/{deployment['id']}").status_code == 404
    assert api.post(f"/api/deployments/{deployment['id']}/pause").status_code == 404


def test_the_http_client_speaks_the_deployment_api(plane: ControlPlane) -> None:
    client = HttpClient(
        "http://testserver", http=TestClient(create_app(plane, settings=Settings(api_key="")))
    )
    made = client.create_deployment(
        DeploymentCreate.model_validate(
            {
                "name": "nightly",
                "flow_name": "etl",
                "parameters": {"n": 1},
                "parameter_openapi_schema": SCHEMA,
            }
        )
    )
    assert client.read_deployment_by_name("etl/nightly") == client.read_deployment(made.id) == made
    # an upsert sends only what is set: the parameters survive a second deploy without them
    again = client.create_deployment(DeploymentCreate(name="nightly", flow_name="etl", version="2"))
    assert again.parameters == {"n": 1} and again.version == "2"
    assert client.update_deployment(made.id, DeploymentUpdate(description="d")).description == "d"
    assert [d.id for d in client.filter_deployments(DeploymentFilter()).items] == [made.id]
    run = client.create_flow_run_from_deployment(made.id, DeploymentFlowRunCreate(parameters={"n": 3}))
    assert run.parameters == {"n": 3} and run.deployment_id == made.id
    with pytest.raises(InvalidValueError, match='is not of type "integer"'):
        client.create_flow_run_from_deployment(made.id, DeploymentFlowRunCreate(parameters={"n": "x"}))
    assert client.pause_deployment(made.id).paused and not client.resume_deployment(made.id).paused
    assert client.delete_deployment(made.id) and not client.delete_deployment(made.id)
    with pytest.raises(NotFoundError):
        client.read_deployment_by_name("etl/nightly")
