"""Automations from Python (``overcast.automations``) and deployment triggers, over the in-process
client and over HTTP to a real API server."""

from __future__ import annotations

import uuid

import pytest

from overcast.automations import (
    Automation,
    CompoundTrigger,
    DeploymentEventTrigger,
    DoNothing,
    EventTrigger,
    Posture,
    RunDeployment,
)
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.events import Event
from overcast.core.schemas import FlowRunFilter
from overcast.events import emit_event
from overcast.flows import flow
from overcast.testing import Harness

UPLOADS = EventTrigger(expect={"aws.s3.object.created"}, match={"aws.s3.bucket": "uploads"})


@flow
def ingest(key: str, size: int = 0) -> str:
    return f"{key}:{size}"


def upload(key: str, bucket: str = "uploads", size: int = 10) -> Event:
    return Event(
        event="aws.s3.object.created",
        resource={
            "overcast.resource.id": f"s3://{bucket}/{key}",
            "aws.s3.bucket": bucket,
            "aws.s3.key": key,
        },
        payload={"size": size},
    )


def owned(harness: Harness, deployment_id: uuid.UUID) -> list[Automation]:
    client = harness.runtime.client
    page = client.filter_automations(owner_resource=f"overcast.deployment.{deployment_id}")
    return [Automation.model_validate(a.model_dump()) for a in page.items]


def test_create_read_pause_resume_update_delete(harness: Harness) -> None:
    automation = Automation(name="watch uploads", trigger=UPLOADS, actions=[DoNothing()])
    assert automation.id is None
    created = automation.create()
    assert created is automation and automation.id is not None and automation.enabled

    by_id = Automation.read(id=automation.id)
    assert by_id.name == "watch uploads" and by_id.trigger == UPLOADS
    assert by_id.actions == [DoNothing()] and by_id.id == automation.id
    assert Automation.read(name="watch uploads").id == automation.id
    assert Automation.read(id=str(automation.id)).id == automation.id

    assert automation.pause().enabled is False
    assert Automation.read(id=automation.id).enabled is False
    assert automation.resume().enabled is True
    assert automation.disable() is True and Automation.read(id=automation.id).enabled is False
    assert automation.enable() is True and Automation.read(id=automation.id).enabled is True

    automation.description = "new files in the uploads bucket"
    automation.trigger = EventTrigger(
        expect={"aws.s3.object.*"}, posture=Posture.REACTIVE, threshold=2, within=60
    )
    automation.update()
    read = Automation.read(id=automation.id)
    assert read.description == "new files in the uploads bucket" and read.trigger.threshold == 2  # type: ignore[union-attr]
    assert automation.firings() == []

    assert automation.delete() is True
    with pytest.raises(NotFoundError):
        Automation.read(id=automation.id)
    assert automation.delete() is False and automation.disable() is False
    with pytest.raises(NotFoundError):
        Automation.read(name="watch uploads")
    with pytest.raises(ValueError, match="one of them"):
        Automation.read()


def test_a_broken_template_is_refused_at_create(harness: Harness) -> None:
    action = RunDeployment(deployment_id=uuid.uuid4(), parameters={"key": "{{ event.resource[ }}"})
    with pytest.raises(InvalidValueError, match=r"parameters\.key"):
        Automation(name="broken", trigger=UPLOADS, actions=[action]).create()
    with pytest.raises(ValueError, match="create"):
        Automation(name="never stored", trigger=UPLOADS).pause()


def test_a_flow_deployed_with_triggers_owns_an_automation_per_trigger(harness: Harness) -> None:
    trigger = DeploymentEventTrigger(
        expect={"aws.s3.object.created"},
        match={"aws.s3.bucket": "uploads"},
        parameters={"key": "{{ event.resource['aws.s3.key'] }}"},
    )
    deployment_id = ingest.deploy("on-upload", triggers=[trigger])
    [automation] = owned(harness, deployment_id)
    assert automation.name == "on-upload__automation_1" and automation.enabled
    assert automation.trigger == UPLOADS
    assert automation.actions == [
        RunDeployment(deployment_id=deployment_id, parameters={"key": "{{ event.resource['aws.s3.key'] }}"})
    ]

    # deploying again with the same trigger keeps the automation, id and all
    assert ingest.deploy("on-upload", triggers=[trigger]) == deployment_id
    assert [a.id for a in owned(harness, deployment_id)] == [automation.id]

    # a plain trigger, a named one and a dict (as read from YAML) are all triggers
    both = [
        UPLOADS,
        {"name": "any two", "triggers": [UPLOADS.model_dump(), {"expect": ["x.done"]}], "require": 2},
    ]
    ingest.deploy("on-upload", triggers=both)
    names = {a.name: a for a in owned(harness, deployment_id)}
    assert set(names) == {"on-upload__automation_1", "any two"}
    assert isinstance(names["any two"].trigger, CompoundTrigger)
    assert names["on-upload__automation_1"].actions[0].parameters is None  # type: ignore[union-attr]

    with pytest.raises(InvalidValueError, match="trigger 1"):
        ingest.deploy("on-upload", triggers=[{"expect": ["x"], "posture": "Sideways"}])
    assert len(owned(harness, deployment_id)) == 2  # a bad trigger changes nothing

    ingest.deploy("on-upload")  # a deploy is the whole truth: no triggers, no automations
    assert owned(harness, deployment_id) == []


def test_an_upload_event_runs_the_deployment_with_the_events_values(harness: Harness) -> None:
    trigger = DeploymentEventTrigger(
        expect={"aws.s3.object.created"},
        match={"aws.s3.bucket": "uploads"},
        parameters={"key": "{{ event.resource['aws.s3.key'] }}", "size": "{{ event.payload.size }}"},
    )
    deployment_id = ingest.deploy("on-upload", triggers=[trigger])
    client = harness.runtime.client
    client.emit_events([upload("in/b.csv", bucket="scratch")])
    sent = upload("in/a.csv", size=1024)
    emit_event(sent.event, sent.resource, payload=sent.payload)
    harness.flush()

    runs = harness.plane.flow_runs.filter(FlowRunFilter(deployment_id=[deployment_id])).items
    assert [run.parameters for run in runs] == [{"key": "in/a.csv", "size": 1024}]
    [automation] = owned(harness, deployment_id)
    [record] = automation.firings()
    assert record.outcomes[0].ok and record.firing.triggering_event is not None
    assert record.firing.triggering_event.resource["aws.s3.key"] == "in/a.csv"

    automation.pause()
    client.emit_events([upload("in/c.csv")])
    assert len(harness.plane.flow_runs.filter(FlowRunFilter(deployment_id=[deployment_id])).items) == 1


def test_deleting_the_deployment_deletes_its_automations(harness: Harness) -> None:
    deployment_id = ingest.deploy("on-upload", triggers=[UPLOADS, DeploymentEventTrigger(expect={"x.done"})])
    assert len(owned(harness, deployment_id)) == 2
    assert harness.runtime.client.delete_deployment(deployment_id)
    assert owned(harness, deployment_id) == []
