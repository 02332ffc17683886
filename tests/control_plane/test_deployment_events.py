"""Every status change of a deployment is announced as an event (for automations on system health)."""

from __future__ import annotations

from overcast.core.deployments import DeploymentCreate, DeploymentUpdate
from overcast.core.services import ControlPlane


def _names(plane: ControlPlane, deployment_id: object) -> list[str]:
    page = plane.events.query(resource_id=f"overcast.deployment.{deployment_id}", limit=50)
    return [event.event for event in reversed(page.items)]  # oldest first


def test_a_deployments_life_is_announced_in_order(plane: ControlPlane) -> None:
    request = DeploymentCreate.model_validate(
        {"name": "nightly", "flow_name": "etl", "work_pool_name": "lambda"}
    )
    deployment, _ = plane.deployments.create(request)
    plane.deployments.update(
        deployment.id, DeploymentUpdate.model_validate({"description": "the nightly load"})
    )
    plane.deployments.pause(deployment.id)
    plane.deployments.resume(deployment.id)
    plane.deployments.delete(deployment.id)
    assert _names(plane, deployment.id) == [
        "overcast.deployment.created",
        "overcast.deployment.updated",
        "overcast.deployment.paused",
        "overcast.deployment.resumed",
        "overcast.deployment.deleted",
    ]
    paused = plane.events.query(
        resource_id=f"overcast.deployment.{deployment.id}", name_prefix="overcast.deployment.paused", limit=5
    ).items[0]
    assert paused.payload["status"] == "paused"
    assert {r["overcast.resource.role"] for r in paused.related} == {"flow", "work-pool"}
