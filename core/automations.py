"""Automations: a trigger over events and the actions it takes (Prefect 3's shape).

A **trigger** says which events matter and when they amount to a firing:

- ``EventTrigger``: events whose resource matches ``match`` (and a related resource matches
  ``match_related``) and whose name is in ``expect`` are counted in a *bucket* per value of
  the ``for_each`` labels. Posture ``Reactive`` fires when a bucket reaches ``threshold``
  events ``within`` its window (at once when ``within`` is zero); ``Proactive`` fires when a
  bucket's window closes with fewer than ``threshold`` (an event that did not arrive). An
  ``after`` event opens a bucket; without ``after`` the first expected event does (reactive)
  or the automation's creation does (proactive).
- ``CompoundTrigger``: fires when ``require`` of its triggers (``any``, ``all`` or a number)
  have fired within ``within``.
- ``SequenceTrigger``: fires when its triggers fire in order within ``within``.

An **action** is what a firing does: run a deployment (its parameters templated from the
triggering event with a sandboxed Jinja environment), pause or resume a deployment, a work
pool, a work queue or an automation, cancel, suspend, resume or change the state of a flow run,
call a webhook or send a notification, or nothing. An action whose target is ``inferred``
finds it among the triggering event's resources (the flow run an event is about, the
deployment related to it).

Event names in ``expect`` and ``after`` may end with ``*`` (a prefix). Label values in
resource specifications may end with ``*`` (a prefix) or be glob patterns (``incoming/*.csv``,
``?`` and ``[...]`` too); a label value starting with ``!`` negates it.
"""

from __future__ import annotations

import fnmatch
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    StringConstraints,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from overcast.core.events import RESOURCE_ROLE, Event
from overcast.core.states import StateType
from overcast.core.types import Bool, Float, Int, UtcDateTime

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
EventPattern = Annotated[
    str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00-\x20\x7f]+$")
]
"""An event name, or a prefix of one ending in ``*`` (``overcast.flow-run.*``)."""
LabelPattern = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")]
ResourceSpecification = dict[
    Annotated[str, StringConstraints(min_length=1, max_length=200)], LabelPattern | list[LabelPattern]
]
"""Labels a resource must have: label name → a value or a list of values (any may match).

A value ending in ``*`` matches by prefix (``"*"`` alone: any value, but the label must be
there), one with ``*``, ``?`` or ``[...]`` elsewhere is a glob (``incoming/*.csv``; ``*``
also crosses ``/``); a value starting with ``!`` matches any resource whose label does not.
"""

MIN_PROACTIVE_WITHIN = timedelta(seconds=10)
MAX_WITHIN = timedelta(days=30)


def _seconds(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number of seconds")
    if not abs(value) <= 10 * MAX_WITHIN.total_seconds():  # NaN too; timedelta() would overflow
        raise ValueError(f"must be between 0 and {MAX_WITHIN.total_seconds():.0f} seconds")
    return timedelta(seconds=value)


@dataclass(frozen=True)
class _ArrayAsSet:
    """A set given as a JSON array of at most ``max_items`` items; a repeat is dropped, not refused."""

    max_items: int

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def check(value: Any) -> Any:
            if isinstance(value, list | tuple | set | frozenset) and len(value) > self.max_items:
                raise ValueError(f"at most {self.max_items} items")
            return value

        return core_schema.no_info_before_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.pop("uniqueItems", None)
        out["maxItems"] = self.max_items
        return out


Seconds = Annotated[
    timedelta,
    BeforeValidator(_seconds),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": MAX_WITHIN.total_seconds()}),
]
"""A duration, in JSON a number of seconds (as Prefect's API writes it); in Python a ``timedelta``."""
MAX_TRIGGERS = 20
"""The most child triggers a compound or sequence trigger may have."""
MAX_ACTIONS = 20


def name_matches(pattern: str, name: str) -> bool:
    """Whether an event name matches a pattern (exact, or a prefix ending in ``*``)."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def any_name_matches(patterns: Iterable[str], name: str) -> bool:
    """Whether any of the patterns matches the event name."""
    return any(name_matches(p, name) for p in patterns)


_GLOB = re.compile(r"[*?\[]")


def _value_matches(pattern: str, value: str | None) -> bool:
    if pattern.startswith("!"):
        return not _value_matches(pattern[1:], value)
    if value is None:
        return False
    if pattern.endswith("*") and not _GLOB.search(pattern[:-1]):
        return value.startswith(pattern[:-1])  # the common case, a prefix
    return fnmatch.fnmatchcase(value, pattern) if _GLOB.search(pattern) else value == pattern


def resource_matches(spec: Mapping[str, str | list[str]], labels: Mapping[str, str]) -> bool:
    """Whether a resource's labels satisfy a specification (every label given must match).

    A list of values matches when any positive value matches and no negated one fails.
    """
    for label, wanted in spec.items():
        patterns = [wanted] if isinstance(wanted, str) else wanted
        if not patterns:
            continue
        value = labels.get(label)
        positive = [p for p in patterns if not p.startswith("!")]
        negative = [p for p in patterns if p.startswith("!")]
        if positive and not any(_value_matches(p, value) for p in positive):
            return False
        if not all(_value_matches(p, value) for p in negative):
            return False
    return True


class Posture(StrEnum):
    """Whether a trigger waits for events (``Reactive``) or for their absence (``Proactive``)."""

    REACTIVE = "Reactive"
    PROACTIVE = "Proactive"


class _Strict(BaseModel):
    # durations are numbers of seconds in JSON, as in Prefect's API (and in YAML files people write)
    model_config = ConfigDict(extra="forbid", ser_json_timedelta="float")


class EventTrigger(_Strict):
    """Fires on the presence (reactive) or absence (proactive) of matching events.

    Attributes:
        match: labels the event's resource must have.
        match_related: labels a related resource must have (a list: each must be matched by
            some related resource).
        after: event names that open a bucket (arm the trigger); empty: buckets open on the
            first expected event (reactive) or when the automation is created (proactive).
        expect: event names that are counted; empty: any event that matches the resources.
        for_each: labels whose values split the events into separate buckets
            (``overcast.resource.id`` counts per resource; ``related:<role>:<label>`` reads a
            related resource's label).
        posture: ``Reactive`` or ``Proactive``.
        threshold: how many expected events make a reactive firing, or prevent a proactive one.
        within: a bucket's window; reactive with zero fires on each event that meets the
            threshold; proactive needs at least ``MIN_PROACTIVE_WITHIN``.
    """

    type: Literal["event"] = "event"
    match: ResourceSpecification = Field(default_factory=dict)
    match_related: ResourceSpecification | list[ResourceSpecification] = Field(default_factory=list)
    after: Annotated[set[EventPattern], _ArrayAsSet(50)] = Field(default_factory=set)
    expect: Annotated[set[EventPattern], _ArrayAsSet(50)] = Field(default_factory=set)
    for_each: Annotated[
        set[Annotated[str, StringConstraints(min_length=1, max_length=300)]], _ArrayAsSet(10)
    ] = Field(default_factory=set)
    posture: Posture = Posture.REACTIVE
    threshold: Int = Field(default=1, ge=1, le=10_000)
    within: Seconds = Field(default=0, validate_default=True, ge=timedelta(0), le=MAX_WITHIN)

    @model_validator(mode="after")
    def _proactive_window(self) -> Self:
        if self.posture is Posture.PROACTIVE and self.within < MIN_PROACTIVE_WITHIN:
            if self.within == timedelta(0):
                self.within = MIN_PROACTIVE_WITHIN
            else:
                raise ValueError(
                    f"a proactive trigger's window must be at least {MIN_PROACTIVE_WITHIN.seconds} s"
                )
        return self

    @property
    def related_specs(self) -> list[dict[str, str | list[str]]]:
        """``match_related`` as a list of specifications (each must be matched)."""
        if isinstance(self.match_related, dict):
            return [self.match_related] if self.match_related else []
        return [spec for spec in self.match_related if spec]

    def covers(self, event: Event) -> bool:
        """Whether the event concerns this trigger: its resources match and its name is one
        the trigger expects or is armed by."""
        if not resource_matches(self.match, event.resource):
            return False
        for spec in self.related_specs:
            if not any(resource_matches(spec, r) for r in event.related):
                return False
        return self.is_expected(event.event) or self.is_after(event.event)

    def is_expected(self, name: str) -> bool:
        """Whether an event of this name is counted."""
        return not self.expect or any_name_matches(self.expect, name)

    def is_after(self, name: str) -> bool:
        """Whether an event of this name opens a bucket."""
        return bool(self.after) and any_name_matches(self.after, name)

    def bucket_labels(self, event: Event) -> dict[str, str]:
        """The ``for_each`` labels of an event: what its bucket is keyed by."""
        out: dict[str, str] = {}
        for label in sorted(self.for_each):
            if label.startswith("related:"):
                _, role, name = [*label.split(":", 2), "", ""][:3]
                value = next((r.get(name) for r in event.related if r.get(RESOURCE_ROLE) == role), None)
            else:
                value = event.resource.get(label)
            out[label] = value if value is not None else ""
        return out


class CompoundTrigger(_Strict):
    """Fires when ``require`` of its triggers have fired within ``within`` of each other.

    Attributes:
        triggers: the child triggers.
        require: ``any``, ``all`` or how many must fire.
        within: the window in which the children's firings count together (None: no limit).
    """

    type: Literal["compound"] = "compound"
    triggers: list[Trigger] = Field(min_length=1, max_length=MAX_TRIGGERS)
    require: Int | Literal["any", "all"] = "all"
    within: Seconds | None = Field(default=None, ge=timedelta(0), le=MAX_WITHIN)

    @model_validator(mode="after")
    def _require_in_range(self) -> Self:
        if isinstance(self.require, int) and not 1 <= self.require <= len(self.triggers):
            raise ValueError(f"require must be between 1 and {len(self.triggers)} (the number of triggers)")
        return self

    @property
    def required(self) -> int:
        """How many children must fire."""
        if self.require == "any":
            return 1
        if self.require == "all":
            return len(self.triggers)
        return self.require


class SequenceTrigger(_Strict):
    """Fires when its triggers fire in the order given, within ``within`` of the first."""

    type: Literal["sequence"] = "sequence"
    triggers: list[Trigger] = Field(min_length=1, max_length=MAX_TRIGGERS)
    within: Seconds | None = Field(default=None, ge=timedelta(0), le=MAX_WITHIN)


def _trigger_kind(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type")
        if kind is None:  # Prefect's inference: triggers + require → compound; triggers → sequence
            if "triggers" in value:
                return "compound" if "require" in value else "sequence"
            return "event"
        return str(kind)
    return str(getattr(value, "type", "event"))


class _AnyOf:
    """Writes a union's JSON schema as ``anyOf``, where pydantic writes ``oneOf``.

    A trigger without ``type`` is told apart by its fields (``_trigger_kind``): one with
    ``triggers`` alone fits both the compound and the sequence schema, and is a sequence.
    ``oneOf`` would call it invalid (it fits two); ``anyOf`` says what validation accepts.
    """

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        if "oneOf" in out:
            out["anyOf"] = out.pop("oneOf")
        return out


Trigger = Annotated[
    Annotated[EventTrigger, Tag("event")]
    | Annotated[CompoundTrigger, Tag("compound")]
    | Annotated[SequenceTrigger, Tag("sequence")],
    Discriminator(_trigger_kind),
    _AnyOf(),
]
"""Any trigger; ``type`` tells which (``event`` when omitted)."""

CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()


def event_triggers(
    trigger: EventTrigger | CompoundTrigger | SequenceTrigger,
) -> list[tuple[str, EventTrigger]]:
    """Every event trigger under ``trigger`` with its path (``""`` the root, ``"0.1"`` a child)."""
    out: list[tuple[str, EventTrigger]] = []

    def walk(node: EventTrigger | CompoundTrigger | SequenceTrigger, path: str) -> None:
        if isinstance(node, EventTrigger):
            out.append((path, node))
            return
        for index, child in enumerate(node.triggers):
            walk(child, f"{path}.{index}" if path else str(index))

    walk(trigger, "")
    return out


# -- actions ----------------------------------------------------------------------------------


class Source(StrEnum):
    """Where an action's target comes from: given in the action, or found in the event."""

    SELECTED = "selected"
    INFERRED = "inferred"


class _Targeted(_Strict):
    source: Source = Source.SELECTED

    def _need(self, value: object, field: str) -> None:
        if self.source is Source.SELECTED and value is None:
            raise ValueError(f"a {self.source.value} target needs {field}")


class DoNothing(_Strict):
    """Does nothing (the automation's firing is still recorded and announced)."""

    type: Literal["do-nothing"] = "do-nothing"


class RunDeployment(_Targeted):
    """Creates a run of a deployment.

    Attributes:
        deployment_id: the deployment (``source: selected``); inferred: the deployment related
            to the triggering event.
        parameters: the run's parameters over the deployment's defaults. Any string in them
            is a Jinja template over the firing (``{{ event.resource['aws.s3.key'] }}``); a
            string that is one ``{{ expression }}`` becomes the expression's value (a number
            stays a number).
        job_variables: overrides of the pool's job variables (templated likewise).
        schedule_after: start the run this long after the firing.
    """

    type: Literal["run-deployment"] = "run-deployment"
    deployment_id: uuid.UUID | None = None
    parameters: dict[str, JsonValue] | None = None
    job_variables: dict[str, JsonValue] | None = None
    schedule_after: Seconds = Field(default=0, validate_default=True, ge=timedelta(0), le=MAX_WITHIN)

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._need(self.deployment_id, "deployment_id")
        return self


class PauseDeployment(_Targeted):
    """Pauses a deployment's schedules (and its runs' creation by schedule)."""

    type: Literal["pause-deployment"] = "pause-deployment"
    deployment_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._need(self.deployment_id, "deployment_id")
        return self


class ResumeDeployment(PauseDeployment):
    """Resumes a paused deployment."""

    type: Literal["resume-deployment"] = "resume-deployment"  # type: ignore[assignment]


class _FlowRunAction(_Strict):
    """Acts on the flow run the triggering event is about (or relates to, in role ``flow-run``)."""

    flow_run_id: uuid.UUID | None = None
    """A given flow run; by default the one inferred from the event."""


class CancelFlowRun(_FlowRunAction):
    """Cancels the flow run (Cancelling when it is running, else Cancelled)."""

    type: Literal["cancel-flow-run"] = "cancel-flow-run"


class SuspendFlowRun(_FlowRunAction):
    """Suspends the flow run (Paused; it is resumed by ``resume-flow-run``)."""

    type: Literal["suspend-flow-run"] = "suspend-flow-run"


class ResumeFlowRun(_FlowRunAction):
    """Resumes a paused or suspended flow run."""

    type: Literal["resume-flow-run"] = "resume-flow-run"


class ChangeFlowRunState(_FlowRunAction):
    """Sets the flow run's state.

    Attributes:
        state: the state type.
        name: the state's name (default: the type's).
        message: the state's message (templated).
        force: apply it even when orchestration rules would refuse it.
    """

    type: Literal["change-flow-run-state"] = "change-flow-run-state"
    state: StateType
    name: Name | None = None
    message: Annotated[str, StringConstraints(max_length=2000)] | None = None
    force: Bool = False


class PauseAutomation(_Targeted):
    """Pauses an automation (inferred: the automation that fired)."""

    type: Literal["pause-automation"] = "pause-automation"
    automation_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._need(self.automation_id, "automation_id")
        return self


class ResumeAutomation(PauseAutomation):
    """Resumes a paused automation."""

    type: Literal["resume-automation"] = "resume-automation"  # type: ignore[assignment]


class PauseWorkPool(_Targeted):
    """Pauses a work pool (inferred: the pool related to the event)."""

    type: Literal["pause-work-pool"] = "pause-work-pool"
    work_pool_name: Name | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._need(self.work_pool_name, "work_pool_name")
        return self


class ResumeWorkPool(PauseWorkPool):
    """Resumes a paused work pool."""

    type: Literal["resume-work-pool"] = "resume-work-pool"  # type: ignore[assignment]


class PauseWorkQueue(_Targeted):
    """Pauses a work pool's queue (inferred: the queue related to the event)."""

    type: Literal["pause-work-queue"] = "pause-work-queue"
    work_pool_name: Name | None = None
    work_queue_name: Name | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._need(self.work_pool_name, "work_pool_name")
        self._need(self.work_queue_name, "work_queue_name")
        return self


class ResumeWorkQueue(PauseWorkQueue):
    """Resumes a paused work queue."""

    type: Literal["resume-work-queue"] = "resume-work-queue"  # type: ignore[assignment]


HttpUrl = Annotated[
    str, StringConstraints(min_length=5, max_length=2000, pattern=r"^(https?://\S|\{\{)[^\x00-\x1f\x7f]*$")
]
"""An ``http://`` or ``https://`` URL, or a template that renders one (``{{ variables.hook }}``:
a secret URL kept in a variable); spaces are allowed for the templates' sake."""


class CallWebhook(_Strict):
    """Calls a URL over HTTP with a templated body, retrying failures with backoff.

    Attributes:
        url: the URL (``http://`` or ``https://``; templated).
        method: the HTTP method.
        headers: request headers (values templated).
        payload: the body, a Jinja template (JSON by default: ``{{ event | tojson }}``).
        retries: further attempts after a failure (a 5xx, 429, or no answer); a 4xx is final.
        timeout_s: each attempt's timeout.
    """

    type: Literal["call-webhook"] = "call-webhook"
    url: HttpUrl
    method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = "POST"
    headers: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], str] = Field(
        default_factory=dict
    )
    payload: Annotated[str, StringConstraints(max_length=100_000)] = "{{ event | tojson }}"
    retries: Int = Field(default=3, ge=0, le=10)
    timeout_s: Float = Field(default=10.0, gt=0, le=60)


class SendNotification(_Strict):
    """Posts a notification (``{"subject": …, "body": …}`` as JSON, or Slack's ``{"text": …}``)
    to a webhook URL, with the retries of ``call-webhook``.

    Attributes:
        url: the notification endpoint (a Slack or Teams incoming webhook, any JSON endpoint).
        subject: a Jinja template.
        body: a Jinja template.
        format: ``json`` (subject and body) or ``slack`` (``text``: subject, then body).
    """

    type: Literal["send-notification"] = "send-notification"
    url: HttpUrl
    subject: Annotated[str, StringConstraints(max_length=1000)] = "Overcast: {{ automation.name }} fired"
    body: Annotated[str, StringConstraints(max_length=100_000)] = (
        "{{ event.event }} on {{ event.resource['overcast.resource.id'] }}"
    )
    format: Literal["json", "slack"] = "json"
    retries: Int = Field(default=3, ge=0, le=10)
    timeout_s: Float = Field(default=10.0, gt=0, le=60)


Action = Annotated[
    DoNothing
    | RunDeployment
    | PauseDeployment
    | ResumeDeployment
    | CancelFlowRun
    | SuspendFlowRun
    | ResumeFlowRun
    | ChangeFlowRunState
    | PauseAutomation
    | ResumeAutomation
    | PauseWorkPool
    | ResumeWorkPool
    | PauseWorkQueue
    | ResumeWorkQueue
    | CallWebhook
    | SendNotification,
    Field(discriminator="type"),
]
"""Any action; ``type`` tells which."""


# -- automations ------------------------------------------------------------------------------


class AutomationCore(_Strict):
    """What an automation is, as created.

    Attributes:
        name: a name for people (not unique).
        description: what it is for.
        enabled: whether it evaluates events (a paused automation ignores them).
        tags: labels for people.
        trigger: when it fires.
        actions: what it does when it fires (in order; one failing does not stop the rest).
        actions_on_trigger: further actions when it fires.
        actions_on_resolve: actions when a firing resolves (a proactive bucket's expected
            event arrives after all; a compound trigger's children stop holding).
        owner_resource: the resource that owns it (``overcast.deployment.<id>`` for a
            deployment's triggers: it goes when the deployment goes).
    """

    name: Name
    description: Annotated[str, StringConstraints(max_length=5000)] = ""
    enabled: Bool = True
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    trigger: Trigger
    actions: list[Action] = Field(default_factory=list, max_length=MAX_ACTIONS)
    actions_on_trigger: list[Action] = Field(default_factory=list, max_length=MAX_ACTIONS)
    actions_on_resolve: list[Action] = Field(default_factory=list, max_length=MAX_ACTIONS)
    owner_resource: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))


class AutomationCreate(AutomationCore):
    """A new automation (``POST /automations``)."""


class AutomationUpdate(_Strict):
    """A partial update (``PATCH /automations/{id}``): the fields given replace the stored ones."""

    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    enabled: Bool | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = None
    trigger: Trigger | None = None
    actions: list[Action] | None = Field(default=None, max_length=MAX_ACTIONS)
    actions_on_trigger: list[Action] | None = Field(default=None, max_length=MAX_ACTIONS)
    actions_on_resolve: list[Action] | None = Field(default=None, max_length=MAX_ACTIONS)


class Automation(AutomationCore):
    """A stored automation."""

    id: uuid.UUID
    created: UtcDateTime
    updated: UtcDateTime
    version: int = 1


class FiringKind(StrEnum):
    """Whether a firing starts (``triggered``) or ends (``resolved``) a trigger's condition."""

    TRIGGERED = "triggered"
    RESOLVED = "resolved"


class Firing(_Strict):
    """One firing of an automation: the moment its trigger's condition held.

    Its ``id`` is derived from what fired (the automation, the bucket, the window or the
    triggering event), so evaluating the same events twice makes the same firing, which is
    stored once and acts once.

    Attributes:
        id: the firing's id (deterministic; see above).
        automation_id: the automation.
        kind: triggered or resolved.
        occurred: when it fired.
        trigger_path: which trigger fired (``""`` the root).
        triggering_event: the event that completed the condition; for a proactive firing,
            which no event completes, the last event of its window (the ``after`` event that
            opened it: the flow run that did not finish in time), or None.
        triggering_labels: the ``for_each`` labels of its bucket.
        events: the events counted toward it (the most recent, at most 50).
    """

    id: uuid.UUID
    automation_id: uuid.UUID
    kind: FiringKind = FiringKind.TRIGGERED
    occurred: UtcDateTime
    trigger_path: str = ""
    triggering_event: Event | None = None
    triggering_labels: dict[str, str] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list, max_length=50)


class ActionOutcome(_Strict):
    """What one action of a firing did."""

    index: int
    type: str
    ok: bool
    detail: str = ""
    """What it touched (``flow run <id>``) or why it failed."""


class FiringRecord(_Strict):
    """A stored firing with its actions' outcomes (``GET /automations/{id}/firings``)."""

    firing: Firing
    outcomes: list[ActionOutcome] = Field(default_factory=list)
    finished: datetime | None = None


def firing_id(automation_id: uuid.UUID, *parts: object) -> uuid.UUID:
    """A firing's deterministic id from what fired (see ``Firing``)."""
    return uuid.uuid5(automation_id, "/".join(str(p) for p in parts))


def validate_action_templates(request: AutomationCore | AutomationUpdate) -> None:
    """Parse every template of an automation's actions, as it is saved (the API answers 422).

    Names are not checked: they depend on the event a firing renders with.

    Raises:
        TemplateError: a template does not parse (an ``InvalidValueError``; its message names
            the field, ``actions[0].parameters.key``).
    """
    from overcast.core.templating import validate_templates  # it imports the services: not at load

    for field in ("actions", "actions_on_trigger", "actions_on_resolve"):
        for index, action in enumerate(getattr(request, field) or []):
            validate_templates(action.model_dump(mode="json"), where=f"{field}[{index}]")
