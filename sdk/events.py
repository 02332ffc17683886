"""``emit_event``: tell the control plane something happened, for automations to react to.

As in Prefect::

    from overcast import emit_event

    emit_event("shop.order.placed", {"overcast.resource.id": f"shop.order.{order.id}"},
               payload={"total": order.total})

Inside a flow or task run the event is related to the run: its flow run, task run, flow,
deployment and tags are added to ``related`` (roles ``flow-run``, ``task-run``, ``flow``,
``deployment``, ``tag``), so an automation can match "events of this deployment's runs".

The event leaves through the same write-behind buffer as task-run states and log lines: the
call validates and queues it and returns (a few microseconds of queueing after validation);
it is sent in the next batch, before the run's final state, and at the latest when the
process exits (or on ``overcast.flush()``, which a function handler calls before it returns).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from overcast.context import flow_run_context, task_run_context
from overcast.core.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event

__all__ = ["emit_event"]


def emit_event(
    event: str,
    resource: dict[str, str],
    *,
    occurred: datetime | None = None,
    related: list[dict[str, str]] | None = None,
    payload: dict[str, Any] | None = None,
    id: uuid.UUID | None = None,
    follows: Event | uuid.UUID | None = None,
) -> Event | None:
    """Send an event to the control plane (in the background) and return it.

    Args:
        event: the event's name (``shop.order.placed``; no spaces).
        resource: the labels of the resource it is about; ``overcast.resource.id`` is required
            (``{"overcast.resource.id": "shop.order.42", "overcast.resource.name": "order 42"}``).
        occurred: when it happened (default: now).
        related: other resources involved, each with an ``overcast.resource.role``. Inside a
            run, the run's own resources are added (unless already given).
        payload: details, as JSON.
        id: the event's id (default: a new, time-ordered one). Sending an id twice stores
            one event: use a stable id to make a retried step announce itself once.
        follows: the event (or its id) this one comes after.

    Returns:
        The event as it will be stored (its ``received`` is set by the control plane).

    Raises:
        pydantic.ValidationError: the event is malformed (no ``overcast.resource.id``, a name
            with spaces, a related resource without a role, over 256 KiB as JSON …).
    """
    from overcast._runtime import get_runtime

    fields: dict[str, Any] = {
        "event": event,
        "resource": resource,
        "related": _with_run_resources(list(related or ()), resource),
        "payload": payload or {},
    }
    if occurred is not None:
        fields["occurred"] = occurred
    if id is not None:
        fields["id"] = id
    if follows is not None:
        fields["follows"] = follows.id if isinstance(follows, Event) else follows
    made = Event.model_validate(fields)
    flow_ctx = flow_run_context.get()
    runtime = flow_ctx.runtime if flow_ctx is not None else get_runtime()
    runtime.reporter.event(made)
    return made


def _with_run_resources(given: list[dict[str, str]], resource: dict[str, str]) -> list[dict[str, str]]:
    """``given`` plus the resources of the run this code runs in (those not given already)."""
    flow_ctx = flow_run_context.get()
    task_ctx = task_run_context.get()
    if flow_ctx is None and task_ctx is None:
        return given
    known = {r.get(RESOURCE_ID) for r in given} | {resource.get(RESOURCE_ID)}
    tags: set[str] = set()
    found: list[dict[str, str]] = []
    if flow_ctx is not None:
        run = flow_ctx.flow_run
        found.append(_link(f"overcast.flow-run.{run.id}", "flow-run", run.name))
        found.append(_link(f"overcast.flow.{run.flow_id}", "flow", run.flow_name))
        if run.deployment_id is not None:
            found.append(_link(f"overcast.deployment.{run.deployment_id}", "deployment"))
        tags.update(run.tags)
    if task_ctx is not None:
        record = task_ctx.task_run
        found.append(_link(f"overcast.task-run.{record.text}", "task-run", record.name))
        if flow_ctx is None and record.flow_run_id is not None:
            found.append(_link(f"overcast.flow-run.{record.flow_run_id}", "flow-run"))
        tags.update(record.tags)
    found += [_link(f"overcast.tag.{tag}", "tag") for tag in sorted(tags)]
    return given + [r for r in found if r[RESOURCE_ID] not in known]


def _link(resource_id: str, role: str, name: str | None = None) -> dict[str, str]:
    labels = {RESOURCE_ID: resource_id, RESOURCE_ROLE: role}
    if name is not None:
        labels[RESOURCE_NAME] = name
    return labels
