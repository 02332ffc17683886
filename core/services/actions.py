"""Actions: what an automation's firing does (run a deployment, pause a pool, call a webhook …).

``Actions.run(automation, firing)`` performs the firing's actions in order (for a triggered
firing ``actions`` then ``actions_on_trigger``; for a resolved one ``actions_on_resolve``),
each on its own: one that fails is reported and the next still runs. Each ends in an
``ActionOutcome`` and an event, ``overcast.automation.action.executed`` or ``.failed``, about
the automation (``overcast.automation.<id>``), related to the triggering event (role
``triggering-event``) and to what the action touched (role ``target``).

Templates (a run's parameters, a webhook's body) render in the sandbox of
``overcast.core.templating`` with ``automation``, ``event`` (the triggering event),
``labels`` (the firing's ``for_each`` labels), ``firing``, ``events``, ``variables`` and,
loaded only when a template names them, ``deployment``, ``flow_run`` and ``work_pool`` (those
the triggering event is about or related to).

A target that is ``inferred`` is found in the triggering event: the resource it is about when
that is of the kind wanted (``overcast.flow-run.<id>``), else a related resource in the
kind's role (``deployment``, ``flow-run``, ``work-pool``, ``work-queue``).

A run-deployment action is idempotent per firing: its run's idempotency key names the
automation, the action and the firing, so acting on one firing twice makes one run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from overcast.core.automations import (
    Action,
    ActionOutcome,
    Automation,
    CallWebhook,
    CancelFlowRun,
    ChangeFlowRunState,
    DoNothing,
    Firing,
    FiringKind,
    PauseAutomation,
    PauseDeployment,
    PauseWorkPool,
    PauseWorkQueue,
    ResumeAutomation,
    ResumeDeployment,
    ResumeFlowRun,
    ResumeWorkPool,
    ResumeWorkQueue,
    RunDeployment,
    SendNotification,
    Source,
    SuspendFlowRun,
)
from overcast.core.deployments import DeploymentFlowRunCreate
from overcast.core.errors import OvercastError
from overcast.core.events import Event, related, resource
from overcast.core.orchestration import Decision
from overcast.core.ports import WebhookSender
from overcast.core.schemas import OrchestrationResult
from overcast.core.services._action_targets import (
    ActionError,
    as_target,
    find,
    id_of,
    inferred_pool,
    inferred_queue,
    not_inferred,
    pool_name,
)
from overcast.core.services._webhook_calls import Sleep, WebhookCall, content_type, deliver
from overcast.core.states import State, StateDetails, StateType, Suspended, utcnow
from overcast.core.templating import (
    TemplateContext,
    TemplateError,
    render_document,
    render_text,
    template_context,
    validate_templates,
)

if TYPE_CHECKING:
    from overcast.core.services import ControlPlane

logger = logging.getLogger("overcast.automations")

EXECUTED = "overcast.automation.action.executed"
FAILED = "overcast.automation.action.failed"
MAX_DEPTH = 8
"""How deep automations may set each other off in one thread (an action's event firing an
automation whose action's event fires another …) before the next firing's actions are refused."""


class Actions:
    """Performs automations' actions against the control plane.

    Args:
        plane: the control plane whose services the actions use.
        webhooks: sends webhook and notification requests; without one those actions fail.
        clock: the current time (injected for tests).
        sleep: waits between a webhook's attempts (injected for tests).
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        webhooks: WebhookSender | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._plane = plane
        self._webhooks = webhooks
        self._clock = clock
        self._sleep = sleep
        self._local = threading.local()

    def run(self, automation: Automation, firing: Firing) -> list[ActionOutcome]:
        """Perform the firing's actions, each on its own, and say how each went.

        Never raises for an action's failure (a template that does not render, a target that
        cannot be found, a webhook that keeps failing): each becomes a failed outcome, and an
        ``overcast.automation.action.failed`` event.

        Returns:
            One outcome per action, in order.
        """
        if firing.kind is FiringKind.TRIGGERED:
            actions = [*automation.actions, *automation.actions_on_trigger]
        else:
            actions = list(automation.actions_on_resolve)
        depth: int = getattr(self._local, "depth", 0)
        if depth >= MAX_DEPTH:
            # no event either: announcing this refusal could set the loop off once more
            reason = f"automations set each other off {MAX_DEPTH} deep; the chain stops here"
            logger.warning("automation %s (%s): %s", automation.name, automation.id, reason)
            return [
                ActionOutcome(index=i, type=a.type, ok=False, detail=reason) for i, a in enumerate(actions)
            ]
        self._local.depth = depth + 1
        try:
            context = self._context(automation, firing)
            return [self._run_one(automation, firing, i, action, context) for i, action in enumerate(actions)]
        finally:
            self._local.depth = depth

    # -- one action --------------------------------------------------------------------------------

    def _run_one(
        self, automation: Automation, firing: Firing, index: int, action: Action, context: TemplateContext
    ) -> ActionOutcome:
        try:
            done = self._act(automation, firing, index, action, context)
        except Exception as exc:  # whatever one action meets, the next ones still run
            failure = exc if isinstance(exc, ActionError) else ActionError(_reason(exc))
            if not isinstance(exc, OvercastError | ValidationError):
                logger.exception("automation %s: action %d (%s) raised", automation.id, index, action.type)
            outcome = ActionOutcome(index=index, type=action.type, ok=False, detail=failure.reason)
            self._announce(automation, firing, outcome, failure.related)
            return outcome
        outcome = ActionOutcome(index=index, type=action.type, ok=True, detail=done.detail)
        self._announce(automation, firing, outcome, done.related)
        return outcome

    def _act(
        self, automation: Automation, firing: Firing, index: int, action: Action, context: TemplateContext
    ) -> _Done:
        event = firing.triggering_event
        match action:
            case DoNothing():
                return _Done("did nothing")
            case RunDeployment():
                return self._run_deployment(automation, firing, index, action, context)
            case PauseDeployment():  # ResumeDeployment too (a subclass)
                return self._switch_deployment(action, event)
            case PauseAutomation():
                return self._switch_automation(action, automation)
            case PauseWorkPool():
                return self._switch_pool(action, event)
            case PauseWorkQueue():
                return self._switch_queue(action, event)
            case CancelFlowRun() | SuspendFlowRun() | ResumeFlowRun() | ChangeFlowRunState():
                return self._change_flow_run(action, automation, event, context)
            case CallWebhook():
                url = render_text(action.url, context, where="url")
                headers = {
                    name: render_text(value, context, where=f"headers.{name}")
                    for name, value in action.headers.items()
                }
                body = render_text(action.payload, context, where="payload")
                if not any(name.lower() == "content-type" for name in headers):
                    headers["Content-Type"] = content_type(body)
                return self._call(action.method, url, body, headers, action.retries, action.timeout_s)
            case SendNotification():
                subject = render_text(action.subject, context, where="subject")
                text = render_text(action.body, context, where="body")
                document = (
                    {"text": f"{subject}\n{text}"}
                    if action.format == "slack"
                    else {"subject": subject, "body": text}
                )
                body = json.dumps(document, ensure_ascii=False)
                headers = {"Content-Type": "application/json"}
                url = render_text(action.url, context, where="url")
                return self._call("POST", url, body, headers, action.retries, action.timeout_s)
        raise ActionError(f"unknown action type {action.type!r}")  # pragma: no cover - the union is closed

    def _switch_deployment(self, action: PauseDeployment, event: Event | None) -> _Done:
        deployment_id = self._deployment_of(action.source, action.deployment_id, event)
        if isinstance(action, ResumeDeployment):
            deployment, verb = self._plane.deployments.resume(deployment_id), "resumed"
        else:
            deployment, verb = self._plane.deployments.pause(deployment_id), "paused"
        target = as_target(f"overcast.deployment.{deployment.id}", deployment.full_name)
        return _Done(f"{verb} deployment {deployment.full_name}", [target])

    def _switch_automation(self, action: PauseAutomation, automation: Automation) -> _Done:
        automation_id = action.automation_id if action.source is Source.SELECTED else None
        enable = isinstance(action, ResumeAutomation)
        changed = self._plane.automations.set_enabled(automation_id or automation.id, enable)
        target = as_target(f"overcast.automation.{changed.id}", changed.name)
        return _Done(f"{'resumed' if enable else 'paused'} automation {changed.name!r}", [target])

    def _switch_pool(self, action: PauseWorkPool, event: Event | None) -> _Done:
        selected = action.work_pool_name if action.source is Source.SELECTED else None
        name = selected or inferred_pool(event)
        if isinstance(action, ResumeWorkPool):
            pool, verb = self._plane.work_pools.resume_pool(name), "resumed"
        else:
            pool, verb = self._plane.work_pools.pause_pool(name), "paused"
        return _Done(
            f"{verb} work pool {pool.name!r}", [as_target(f"overcast.work-pool.{pool.id}", pool.name)]
        )

    def _switch_queue(self, action: PauseWorkQueue, event: Event | None) -> _Done:
        if action.source is Source.SELECTED and action.work_pool_name and action.work_queue_name:
            pool, name = action.work_pool_name, action.work_queue_name
        else:
            pool, name = inferred_queue(event)
        if isinstance(action, ResumeWorkQueue):
            queue, verb = self._plane.work_pools.resume_queue(pool, name), "resumed"
        else:
            queue, verb = self._plane.work_pools.pause_queue(pool, name), "paused"
        target = as_target(f"overcast.work-queue.{queue.id}", queue.name)
        return _Done(f"{verb} work queue {queue.name!r} of pool {pool!r}", [target])

    def _change_flow_run(
        self,
        action: CancelFlowRun | SuspendFlowRun | ResumeFlowRun | ChangeFlowRunState,
        automation: Automation,
        event: Event | None,
        context: TemplateContext,
    ) -> _Done:
        run_id = action.flow_run_id or self._inferred_flow_run(event)
        runs = self._plane.flow_runs
        if isinstance(action, CancelFlowRun):
            return _state_set(run_id, "cancel", runs.cancel(run_id))
        if isinstance(action, SuspendFlowRun):
            suspended = Suspended(message=f"suspended by automation {automation.name!r}")
            return _state_set(run_id, "suspend", runs.set_state(run_id, suspended))
        if isinstance(action, ResumeFlowRun):
            return _state_set(run_id, "resume", runs.resume(run_id))
        now = self._clock()
        state = State(
            type=action.state,
            name=action.name or "",
            message=render_text(action.message, context, where="message")
            if action.message is not None
            else None,
            timestamp=now,
            details=StateDetails(scheduled_time=now if action.state is StateType.SCHEDULED else None),
        )
        return _state_set(run_id, f"set {state.name}", runs.set_state(run_id, state, force=action.force))

    def _run_deployment(
        self,
        automation: Automation,
        firing: Firing,
        index: int,
        action: RunDeployment,
        context: TemplateContext,
    ) -> _Done:
        deployment_id = self._deployment_of(action.source, action.deployment_id, firing.triggering_event)
        parameters = render_document(action.parameters or {}, context, where="parameters")
        job_variables = (
            render_document(action.job_variables, context, where="job_variables")
            if action.job_variables is not None
            else None
        )
        start = firing.occurred + action.schedule_after if action.schedule_after else None
        request = DeploymentFlowRunCreate.model_validate(
            {
                "parameters": parameters,
                "job_variables": job_variables,
                "tags": [automation_tag(automation.id)],
                "idempotency_key": f"automation {automation.id}, action {index}, firing {firing.id}",
                "scheduled_start_time": start,
            }
        )
        run, created = self._plane.run_deployment(deployment_id, request)
        targets = [
            as_target(f"overcast.deployment.{deployment_id}"),
            related(f"overcast.flow-run.{run.id}", "flow-run", run.name),
        ]
        if not created:
            return _Done(f"flow run {run.name!r} ({run.id}) was already made for this firing", targets)
        when = f", due {start.isoformat()}" if start is not None else ""
        return _Done(f"created flow run {run.name!r} ({run.id}) of deployment {deployment_id}{when}", targets)

    def _call(
        self, method: str, url: str, body: str, headers: dict[str, str], retries: int, timeout_s: float
    ) -> _Done:
        if self._webhooks is None:
            raise ActionError("this control plane has no webhook sender configured")
        call = WebhookCall(method, url, body.encode(), headers, timeout_s)
        return _Done(deliver(self._webhooks, call, retries=retries, sleep=self._sleep))

    # -- inference ---------------------------------------------------------------------------------

    def _deployment_of(self, source: Source, selected: uuid.UUID | None, event: Event | None) -> uuid.UUID:
        if source is Source.SELECTED and selected is not None:
            return selected
        return self._inferred_deployment(event)

    def _inferred_deployment(self, event: Event | None) -> uuid.UUID:
        labels = find(event, "deployment", "deployment")
        if labels is not None:
            return id_of(labels, "deployment")
        run_labels = find(event, "flow-run", "flow-run")
        if run_labels is not None:  # the run's own record knows its deployment
            run = self._plane.flow_runs.get(id_of(run_labels, "flow-run"))
            if run.deployment_id is not None:
                return run.deployment_id
        raise ActionError(not_inferred(event, "deployment"))

    def _inferred_flow_run(self, event: Event | None) -> uuid.UUID:
        labels = find(event, "flow-run", "flow-run")
        if labels is None:
            raise ActionError(not_inferred(event, "flow-run"))
        return id_of(labels, "flow-run")

    # -- templates and events ----------------------------------------------------------------------

    def _context(self, automation: Automation, firing: Firing) -> TemplateContext:
        event = firing.triggering_event
        values: dict[str, Any] = {
            "automation": automation.model_dump(),
            "event": event.model_dump() if event is not None else None,
            "labels": dict(firing.triggering_labels),
            "firing": firing.model_dump(),
            "events": [e.model_dump() for e in firing.events],
            **template_context(self._plane.variables),
        }
        plane = self._plane

        def deployment() -> Any:
            labels = find(event, "deployment", "deployment")
            return plane.deployments.get(id_of(labels, "deployment")).model_dump() if labels else None

        def flow_run() -> Any:
            labels = find(event, "flow-run", "flow-run")
            return plane.flow_runs.get(id_of(labels, "flow-run")).model_dump() if labels else None

        def work_pool() -> Any:
            labels = find(event, "work-pool", "work-pool")
            return plane.work_pools.get_pool(pool_name(labels)).model_dump() if labels else None

        return TemplateContext(
            values, lazy={"deployment": deployment, "flow_run": flow_run, "work_pool": work_pool}
        )

    def _announce(
        self, automation: Automation, firing: Firing, outcome: ActionOutcome, targets: list[dict[str, str]]
    ) -> None:
        """Emit the outcome's event; its id comes from the firing and the action, so acting on
        a firing twice records it once."""
        name = EXECUTED if outcome.ok else FAILED
        links = list(targets)
        if firing.triggering_event is not None:
            links.insert(0, related(f"overcast.event.{firing.triggering_event.id}", "triggering-event"))
        payload: dict[str, Any] = {
            "firing_id": str(firing.id),
            "firing_kind": firing.kind.value,
            "action_index": outcome.index,
            "action_type": outcome.type,
            ("detail" if outcome.ok else "reason"): outcome.detail,
        }
        try:
            self._plane.events.emit(
                [
                    Event(
                        id=uuid.uuid5(firing.id, f"action {outcome.index} {name}"),
                        occurred=self._clock(),
                        event=name,
                        resource=resource(f"overcast.automation.{automation.id}", automation.name),
                        related=links,
                        payload=payload,
                    )
                ]
            )
        except OvercastError:  # the action happened; its announcement is best effort
            logger.warning("could not record %s for automation %s", name, automation.id, exc_info=True)


def automation_tag(automation_id: uuid.UUID) -> str:
    """The tag of the runs an automation makes (``automation:<id>``), to find them by."""
    return f"automation:{automation_id}"


def validate_action_templates(actions: Iterable[Action], *, where: str = "actions") -> None:
    """Check that every template in the actions parses (when an automation is saved).

    Args:
        actions: the actions (of ``actions``, ``actions_on_trigger`` or ``actions_on_resolve``).
        where: the list's name, for the message.

    Raises:
        TemplateError: a template does not parse; the message names the action and field
            (``actions[0].parameters.key``).
    """
    for index, action in enumerate(actions):
        for name in (
            "parameters",
            "job_variables",
            "message",
            "url",
            "headers",
            "payload",
            "subject",
            "body",
        ):
            value = getattr(action, name, None)
            if value is not None:
                validate_templates(value, where=f"{where}[{index}].{name}")


# -- helpers ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Done:
    detail: str
    related: list[dict[str, str]] = field(default_factory=list)


def _state_set(run_id: uuid.UUID, what: str, result: OrchestrationResult) -> _Done:
    target = [as_target(f"overcast.flow-run.{run_id}")]
    if result.status is not Decision.ACCEPT:
        why = f": {result.reason}" if result.reason else ""
        raise ActionError(
            f"flow run {run_id}: {what} was refused ({result.status.value}{why}); it stays {result.state.name}",
            target,
        )
    return _Done(f"flow run {run_id} is now {result.state.name}", target)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid request: {problems}"
    if isinstance(exc, TemplateError | OvercastError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
