"""Automations from Python, as in Prefect 3's ``prefect.automations``; deployment triggers.

An automation is a trigger over events and the actions it takes when it fires::

    from overcast.automations import Automation, EventTrigger, RunDeployment

    Automation(
        name="new uploads",
        trigger=EventTrigger(expect={"aws.s3.object.created"}, match={"aws.s3.bucket": "uploads"}),
        actions=[RunDeployment(deployment_id=ingest_id, parameters={"key": "{{ event.resource['aws.s3.key'] }}"})],
    ).create()

A deployment's triggers are automations it owns: ``flow.deploy(..., triggers=[...])`` saves one
per trigger, each running the deployment (with the trigger's ``parameters``) when it fires.
Redeploying replaces them (those unchanged keep their ids); deleting the deployment deletes
them::

    etl.deploy(
        "on-upload",
        work_pool_name="lambda",
        triggers=[
            DeploymentEventTrigger(
                expect={"aws.s3.object.created"},
                match={"aws.s3.bucket": "uploads"},
                parameters={"key": "{{ event.resource['aws.s3.key'] }}"},
            )
        ],
    )
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, TypeAdapter, ValidationError

from overcast.core.automations import (
    MAX_WITHIN,
    Action,
    AutomationCore,
    AutomationCreate,
    AutomationUpdate,
    CallWebhook,
    CancelFlowRun,
    ChangeFlowRunState,
    CompoundTrigger,
    DoNothing,
    EventTrigger,
    FiringRecord,
    PauseAutomation,
    PauseDeployment,
    PauseWorkPool,
    PauseWorkQueue,
    Posture,
    ResumeAutomation,
    ResumeDeployment,
    ResumeFlowRun,
    ResumeWorkPool,
    ResumeWorkQueue,
    RunDeployment,
    Seconds,
    SendNotification,
    SequenceTrigger,
    Source,
    SuspendFlowRun,
    Trigger,
)
from overcast.core.automations import Automation as StoredAutomation
from overcast.core.errors import InvalidValueError, NotFoundError

if TYPE_CHECKING:
    from overcast.client import Client

__all__ = [
    "Action",
    "Automation",
    "CallWebhook",
    "CancelFlowRun",
    "ChangeFlowRunState",
    "CompoundTrigger",
    "DeploymentCompoundTrigger",
    "DeploymentEventTrigger",
    "DeploymentSequenceTrigger",
    "DeploymentTrigger",
    "DoNothing",
    "EventTrigger",
    "FiringRecord",
    "PauseAutomation",
    "PauseDeployment",
    "PauseWorkPool",
    "PauseWorkQueue",
    "Posture",
    "ResumeAutomation",
    "ResumeDeployment",
    "ResumeFlowRun",
    "ResumeWorkPool",
    "ResumeWorkQueue",
    "RunDeployment",
    "SendNotification",
    "SequenceTrigger",
    "Source",
    "SuspendFlowRun",
    "deployment_automations",
]

_PAGE = 200


class Automation(AutomationCore):
    """An automation: ``trigger`` says when it fires, ``actions`` what it then does.

    Build one and ``create()`` it, or ``read()`` a stored one; ``id`` is set once it is stored.
    See ``overcast.core.automations.AutomationCore`` for the fields.
    """

    id: uuid.UUID | None = None
    created: datetime | None = None
    updated: datetime | None = None
    version: int | None = None

    def create(self) -> Self:
        """Store this automation; return it with its ``id`` set.

        Raises:
            InvalidValueError: an action's template does not compile.
        """
        stored = _client().create_automation(AutomationCreate.model_validate(self._core()))
        return self._refresh(stored)

    def update(self) -> Self:
        """Save this automation's fields over the stored one's (``owner_resource`` stays).

        Raises:
            ValueError: it was never created (no ``id``).
            NotFoundError: it was deleted.
        """
        fields = self._core()
        fields.pop("owner_resource", None)
        stored = _client().update_automation(self._id(), AutomationUpdate.model_validate(fields))
        return self._refresh(stored)

    def delete(self) -> bool:
        """Delete this automation; return whether it was there."""
        return _client().delete_automation(self._id())

    def pause(self) -> Self:
        """Pause it: it ignores events until resumed. Raises ``NotFoundError``."""
        return self._refresh(_client().set_automation_enabled(self._id(), False))

    def resume(self) -> Self:
        """Resume it. Raises ``NotFoundError``."""
        return self._refresh(_client().set_automation_enabled(self._id(), True))

    def disable(self) -> bool:
        """Pause it (Prefect's name); return whether it was there to pause."""
        try:
            self.pause()
        except NotFoundError:
            return False
        return True

    def enable(self) -> bool:
        """Resume it (Prefect's name); return whether it was there to resume."""
        try:
            self.resume()
        except NotFoundError:
            return False
        return True

    def firings(self, limit: int = 50) -> list[FiringRecord]:
        """Its firings with what each action did, newest first. Raises ``NotFoundError``."""
        return _client().read_automation_firings(self._id(), limit=limit)

    @classmethod
    def read(cls, id: uuid.UUID | str | None = None, name: str | None = None) -> Automation:
        """Read a stored automation by id, or the first (oldest) of that name.

        Raises:
            ValueError: neither or both of ``id`` and ``name`` given.
            NotFoundError: no such automation.
        """
        if (id is None) == (name is None):
            raise ValueError("give an automation's id or its name (one of them)")
        client = _client()
        if id is not None:
            stored = client.read_automation(id if isinstance(id, uuid.UUID) else uuid.UUID(str(id)))
            return cls.model_validate(stored.model_dump())
        for stored in _all(client):
            if stored.name == name:
                return cls.model_validate(stored.model_dump())
        raise NotFoundError("automation", str(name), f"no automation is named {name!r}")

    async def acreate(self) -> Self:
        """``create`` for async code (the call runs on a worker thread)."""
        return await asyncio.to_thread(self.create)

    async def aupdate(self) -> Self:
        """``update`` for async code."""
        return await asyncio.to_thread(self.update)

    async def adelete(self) -> bool:
        """``delete`` for async code."""
        return await asyncio.to_thread(self.delete)

    async def adisable(self) -> bool:
        """``disable`` for async code."""
        return await asyncio.to_thread(self.disable)

    async def aenable(self) -> bool:
        """``enable`` for async code."""
        return await asyncio.to_thread(self.enable)

    @classmethod
    async def aread(cls, id: uuid.UUID | str | None = None, name: str | None = None) -> Automation:
        """``read`` for async code."""
        return await asyncio.to_thread(cls.read, id, name)

    def _core(self) -> dict[str, Any]:
        return self.model_dump(include=set(AutomationCore.model_fields))

    def _id(self) -> uuid.UUID:
        if self.id is None:
            raise ValueError(f"automation {self.name!r} is not stored yet: create() it first")
        return self.id

    def _refresh(self, stored: StoredAutomation) -> Self:
        for field, value in stored:
            setattr(self, field, value)
        return self


def _all(client: Client) -> Iterable[StoredAutomation]:
    cursor: str | None = None
    while True:
        page = client.filter_automations(limit=_PAGE, cursor=cursor)
        yield from page.items
        cursor = page.next_cursor
        if cursor is None:
            return


# -- deployment triggers ------------------------------------------------------------------------


class DeploymentTrigger(BaseModel):
    """What a deployment trigger adds to its trigger: the automation and the run it makes.

    Attributes:
        name: the automation's name (default: ``<deployment name>__automation_<n>``).
        description: the automation's description.
        enabled: whether the automation starts enabled.
        parameters: the run's parameters over the deployment's defaults; strings are Jinja
            templates over the firing (``{{ event.resource['aws.s3.key'] }}``).
        job_variables: overrides of the work pool's job variables (templated likewise).
        schedule_after: start the run this long after the firing.
    """

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=5000)] = ""
    enabled: bool = True
    parameters: dict[str, JsonValue] | None = None
    job_variables: dict[str, JsonValue] | None = None
    schedule_after: Seconds = Field(default=0, validate_default=True, ge=timedelta(0), le=MAX_WITHIN)


class DeploymentEventTrigger(DeploymentTrigger, EventTrigger):
    """An ``EventTrigger`` that runs the deployment it is given to (Prefect's name)."""


class DeploymentCompoundTrigger(DeploymentTrigger, CompoundTrigger):
    """A ``CompoundTrigger`` that runs the deployment it is given to."""


class DeploymentSequenceTrigger(DeploymentTrigger, SequenceTrigger):
    """A ``SequenceTrigger`` that runs the deployment it is given to."""


_TRIGGER: TypeAdapter[EventTrigger | CompoundTrigger | SequenceTrigger] = TypeAdapter(Trigger)
_DEPLOYMENT_FIELDS = frozenset(DeploymentTrigger.model_fields)
TriggerLike = EventTrigger | CompoundTrigger | SequenceTrigger | Mapping[str, Any]
"""What ``triggers=`` takes: a trigger, a deployment trigger, or either as a dict (from YAML)."""


def deployment_automations(
    deployment_id: uuid.UUID, deployment_name: str, triggers: Iterable[TriggerLike]
) -> list[AutomationCreate]:
    """The automations a deployment's triggers stand for, owned by ``overcast.deployment.<id>``.

    Each runs the deployment (``RunDeployment``, ``source: selected``) with its trigger's
    parameters. A plain trigger takes the defaults of ``DeploymentTrigger``.

    Args:
        deployment_id: the deployment.
        deployment_name: its name (for the automations' default names).
        triggers: its triggers.

    Raises:
        InvalidValueError: a trigger is not one (a dict of unknown fields, a bad window …), or
            a template in its parameters does not parse.
    """
    from overcast.core.templating import validate_templates

    owner = f"overcast.deployment.{deployment_id}"
    out: list[AutomationCreate] = []
    for number, given in enumerate(triggers, start=1):
        fields = dict(given) if isinstance(given, Mapping) else given.model_dump()
        try:
            options = DeploymentTrigger.model_validate(
                {k: v for k, v in fields.items() if k in _DEPLOYMENT_FIELDS}
            )
            trigger = _TRIGGER.validate_python(
                {k: v for k, v in fields.items() if k not in _DEPLOYMENT_FIELDS}
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or '(trigger)'}: {error['msg']}"
                for error in exc.errors()
            )
            raise InvalidValueError(
                f"trigger {number} of deployment {deployment_name!r}: {problems}"
            ) from exc
        for field in ("parameters", "job_variables"):
            validate_templates(getattr(options, field), where=f"trigger {number}: {field}")
        action = RunDeployment(
            source=Source.SELECTED,
            deployment_id=deployment_id,
            parameters=options.parameters,
            job_variables=options.job_variables,
            schedule_after=options.schedule_after,
        )
        out.append(
            AutomationCreate(
                name=options.name or f"{deployment_name}__automation_{number}",
                description=options.description,
                enabled=options.enabled,
                trigger=trigger,
                actions=[action],
                owner_resource=owner,
            )
        )
    return out


def _client() -> Client:
    from overcast._runtime import get_runtime
    from overcast.context import flow_run_context

    flow_ctx = flow_run_context.get()
    return flow_ctx.runtime.client if flow_ctx is not None else get_runtime().client
