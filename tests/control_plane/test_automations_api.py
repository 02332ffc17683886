"""Automations through the API (FastAPI's TestClient), over SQLite and DynamoDB on moto's server:
create, read, list a page at a time, change, pause, resume, delete; a resource's own automations
replaced or deleted together; bad input refused with a 422 that says why."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from overcast.core.services import ControlPlane

UPLOADS = {"expect": ["aws.s3.object.created"], "match": {"aws.s3.bucket": "uploads"}}


def body(name: str = "on upload", **fields: Any) -> dict[str, Any]:
    return {"name": name, "trigger": UPLOADS, "actions": [{"type": "do-nothing"}], **fields}


def create(api: TestClient, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/automations", json=body(**fields))
    assert response.status_code == 201, response.text
    return response.json()


def messages(response: Any) -> str:
    detail = response.json()["detail"]
    return " | ".join(e["msg"] for e in detail) if isinstance(detail, list) else str(detail)


def test_create_read_change_pause_resume_delete(api: TestClient) -> None:
    created = create(api, description="ingest new files", tags=["s3", "s3"])
    assert created["enabled"] is True and created["tags"] == ["s3"]
    assert created["trigger"]["type"] == "event" and created["trigger"]["posture"] == "Reactive"
    read = api.get(f"/api/automations/{created['id']}").json()
    assert read == created

    changed = api.patch(f"/api/automations/{created['id']}", json={"description": "new files only"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["description"] == "new files only" and changed.json()["name"] == "on upload"

    paused = api.post(f"/api/automations/{created['id']}/pause").json()
    assert paused["enabled"] is False
    assert api.get(f"/api/automations/{created['id']}").json()["enabled"] is False
    assert api.post(f"/api/automations/{created['id']}/resume").json()["enabled"] is True

    assert api.get(f"/api/automations/{created['id']}/firings").json() == []
    assert api.delete(f"/api/automations/{created['id']}").status_code == 204
    assert api.get(f"/api/automations/{created['id']}").status_code == 404
    assert api.delete(f"/api/automations/{created['id']}").status_code == 404
    assert api.get(f"/api/automations/{created['id']}/firings").status_code == 404
    assert api.post(f"/api/automations/{uuid.uuid4()}/pause").status_code == 404
    assert api.patch(f"/api/automations/{uuid.uuid4()}", json={"enabled": False}).status_code == 404


def test_compound_and_sequence_triggers_are_inferred_as_in_prefect(api: TestClient) -> None:
    compound = create(api, trigger={"triggers": [UPLOADS, {"expect": ["x.done"]}], "require": "any"})
    sequence = create(api, trigger={"triggers": [UPLOADS, {"expect": ["x.done"]}], "within": 60})
    assert compound["trigger"]["type"] == "compound" and compound["trigger"]["require"] == "any"
    assert sequence["trigger"]["type"] == "sequence"
    assert [t["type"] for t in sequence["trigger"]["triggers"]] == ["event", "event"]
    # The schema allows what is inferred: a trigger with ``triggers`` alone fits the compound and
    # the sequence schema both, so the union is ``anyOf`` (``oneOf`` would call it invalid).
    trigger_schema = api.get("/api/openapi.json").json()["components"]["schemas"]["AutomationCreate"]
    assert "anyOf" in trigger_schema["properties"]["trigger"]
    assert "oneOf" not in trigger_schema["properties"]["trigger"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"trigger": {"type": "metric", "metric": {"name": "lateness"}}}, "tag"),
        ({"trigger": {**UPLOADS, "posture": "Proactive", "within": 5}}, "at least 10 s"),
        ({"trigger": {"triggers": [UPLOADS], "require": 2}}, "require must be between 1 and 1"),
        ({"trigger": {**UPLOADS, "threshold": 0}}, "greater than or equal to 1"),
        ({"trigger": {**UPLOADS, "colour": "red"}}, "Extra inputs are not permitted"),
        ({"actions": [{"type": "launch-rocket"}]}, "does not match any of the expected tags"),
        ({"actions": [{"type": "run-deployment"}]}, "needs deployment_id"),
        ({"actions": [{"type": "call-webhook", "url": "ftp://example.com/hook"}]}, "String should match"),
        ({"name": ""}, "at least 1 character"),
    ],
)
def test_a_bad_automation_is_a_422_that_says_why(api: TestClient, fields: dict[str, Any], says: str) -> None:
    response = api.post("/api/automations", json=body(**fields))
    assert response.status_code == 422, response.text
    assert says in messages(response)


def test_a_broken_template_is_refused_when_saved(api: TestClient) -> None:
    broken = {
        "type": "run-deployment",
        "deployment_id": str(uuid.uuid4()),
        "parameters": {"key": "{{ event.resource['aws.s3.key' }}"},
    }
    response = api.post("/api/automations", json=body(actions=[broken]))
    assert response.status_code == 422, response.text
    assert "actions[0].parameters.key" in messages(response)
    webhook = {"type": "call-webhook", "url": "https://example.com/hook", "payload": "{% if %}"}
    response = api.post("/api/automations", json=body(actions_on_resolve=[webhook]))
    assert response.status_code == 422 and "actions_on_resolve[0].payload" in messages(response)

    created = create(api)
    changed = api.patch(f"/api/automations/{created['id']}", json={"actions": [broken]})
    assert changed.status_code == 422 and "actions[0].parameters.key" in messages(changed)
    assert api.get(f"/api/automations/{created['id']}").json()["actions"] == [{"type": "do-nothing"}]


def test_a_deployment_that_does_not_exist_yet_is_accepted(api: TestClient) -> None:
    # Deployments and automations come and go independently (a deployment's triggers are saved
    # after it): the target is looked up when the automation fires, and a missing one is
    # recorded as that action's failure.
    action = {"type": "run-deployment", "deployment_id": str(uuid.uuid4()), "parameters": {"n": 1}}
    created = create(api, actions=[action])
    assert created["actions"][0]["deployment_id"] == action["deployment_id"]


def test_bad_requests_are_422_never_500(api: TestClient) -> None:
    assert api.post("/api/automations", content=b"{not json").status_code == 422
    assert api.post("/api/automations", json=[body()]).status_code == 422
    assert api.post("/api/automations/filter", json={"limit": 0}).status_code == 422
    assert api.post("/api/automations/filter", json={"cursor": "made-up"}).status_code == 422
    assert api.post("/api/automations/filter", json={"owner": "x"}).status_code == 422
    created = create(api)
    assert api.patch(f"/api/automations/{created['id']}", json={"owner_resource": "x"}).status_code == 422
    unchanged = api.patch(f"/api/automations/{created['id']}", json={"name": None, "trigger": None})
    assert unchanged.status_code == 200 and unchanged.json()["name"] == created["name"]  # null: as it is
    assert api.get(f"/api/automations/{created['id']}/firings?limit=0").status_code == 422
    assert api.get("/api/automations/not-an-id").status_code == 404
    too_many = [body(name=f"t{i}") for i in range(101)]
    assert api.put("/api/automations/owned-by/overcast.deployment.x", json=too_many).status_code == 422


def test_listing_pages_through_every_automation_once(api: TestClient) -> None:
    made = {create(api, name=f"automation {i}")["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.post("/api/automations/filter", json=query)
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        assert len(items) <= 3
        seen += [a["id"] for a in items]
        pages += 1
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and pages >= 3
    everything = api.post("/api/automations/filter").json()
    assert {a["id"] for a in everything["items"]} == made and everything["next_cursor"] is None


def test_a_resources_automations_are_replaced_and_deleted_together(api: TestClient) -> None:
    owner = f"overcast.deployment.{uuid.uuid4()}"
    other = create(api, name="not owned")
    first = api.put(
        f"/api/automations/owned-by/{owner}",
        json=[body(name="uploads"), body(name="deletes", trigger={"expect": ["aws.s3.object.deleted"]})],
    )
    assert first.status_code == 200, first.text
    assert [a["owner_resource"] for a in first.json()] == [owner, owner]
    by_name = {a["name"]: a["id"] for a in first.json()}

    # redeploying: one unchanged (keeps its id), one changed, one gone
    second = api.put(
        f"/api/automations/owned-by/{owner}",
        json=[
            body(name="uploads"),
            body(name="big uploads", trigger={**UPLOADS, "threshold": 5, "within": 60}),
        ],
    ).json()
    assert {a["name"] for a in second} == {"uploads", "big uploads"}
    kept = next(a for a in second if a["name"] == "uploads")
    assert kept["id"] == by_name["uploads"]
    owned = api.post("/api/automations/filter", json={"owner_resource": owner}).json()["items"]
    assert {a["name"] for a in owned} == {"uploads", "big uploads"}

    # an owner_resource in the body is the path's: the path says who owns them
    stray = api.put(
        f"/api/automations/owned-by/{owner}", json=[body(name="uploads", owner_resource="someone")]
    )
    assert stray.status_code == 200 and stray.json()[0]["owner_resource"] == owner

    gone = api.delete(f"/api/automations/owned-by/{owner}")
    assert gone.status_code == 200 and gone.json() == {"deleted": 1}
    assert api.post("/api/automations/filter", json={"owner_resource": owner}).json()["items"] == []
    assert api.delete(f"/api/automations/owned-by/{owner}").json() == {"deleted": 0}
    assert api.get(f"/api/automations/{other['id']}").status_code == 200


def test_deleting_a_deployment_deletes_its_automations(api: TestClient) -> None:
    deployment = api.post("/api/deployments", json={"name": "on-upload", "flow_name": "ingest"}).json()
    owner = f"overcast.deployment.{deployment['id']}"
    run = {"type": "run-deployment", "deployment_id": deployment["id"]}
    api.put(f"/api/automations/owned-by/{owner}", json=[body(actions=[run])])
    assert len(api.post("/api/automations/filter", json={"owner_resource": owner}).json()["items"]) == 1
    assert api.delete(f"/api/deployments/{deployment['id']}").status_code == 204
    assert api.post("/api/automations/filter", json={"owner_resource": owner}).json()["items"] == []


def test_a_matching_event_runs_the_deployment_with_templated_parameters(
    api: TestClient, plane: ControlPlane
) -> None:
    deployment = api.post(
        "/api/deployments", json={"name": "on-upload", "flow_name": "ingest", "parameters": {"size": 0}}
    ).json()
    action = {
        "type": "run-deployment",
        "deployment_id": deployment["id"],
        "parameters": {"key": "{{ event.resource['aws.s3.key'] }}", "size": "{{ event.payload.size }}"},
    }
    automation = create(api, actions=[action])
    event = {
        "event": "aws.s3.object.created",
        "resource": {
            "overcast.resource.id": "s3://uploads/in/a.csv",
            "aws.s3.bucket": "uploads",
            "aws.s3.key": "in/a.csv",
        },
        "payload": {"size": 1024},
    }
    other_bucket = {**event, "resource": {**event["resource"], "aws.s3.bucket": "scratch"}}
    assert api.post("/api/events", json={"events": [event, other_bucket]}).status_code == 200
    runs = api.post("/api/flow_runs/filter", json={"deployment_id": [deployment["id"]]}).json()["items"]
    assert len(runs) == 1
    assert runs[0]["parameters"] == {"key": "in/a.csv", "size": 1024}
    firings = api.get(f"/api/automations/{automation['id']}/firings").json()
    assert len(firings) == 1 and firings[0]["outcomes"][0]["ok"] is True
    assert firings[0]["firing"]["triggering_event"]["resource"]["aws.s3.key"] == "in/a.csv"
