"""Automation actions against the real services (SQLite, then DynamoDB on moto's server).

Each test builds a firing by hand, with the triggering event a user's automation would see
(an S3 upload, a flow run's state change, a work pool's status), runs the automation's actions
and checks what changed: the run made and its parameters, the deployment paused, the request
a webhook received on a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from overcast.adapters.webhooks import HttpxWebhookSender
from overcast.core.automations import (
    Automation,
    CallWebhook,
    CancelFlowRun,
    ChangeFlowRunState,
    DoNothing,
    EventTrigger,
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
    RunDeployment,
    SendNotification,
    SuspendFlowRun,
    firing_id,
)
from overcast.core.deployments import Deployment, DeploymentCreate
from overcast.core.events import Event, related, resource
from overcast.core.models import FlowRun
from overcast.core.schemas import FlowRunCreate, InitialState, VariableCreate
from overcast.core.services import ControlPlane
from overcast.core.services.actions import (
    EXECUTED,
    MAX_DEPTH,
    Actions,
    automation_tag,
    validate_action_templates,
)
from overcast.core.states import Completed, StateType, utcnow
from overcast.core.templating import TemplateError
from overcast.core.work_pools import ProcessPoolCreate, WorkQueueCreate

# -- building blocks ---------------------------------------------------------------------------


def deploy(plane: ControlPlane, **fields: Any) -> Deployment:
    request = {"name": "ingest", "flow_name": "etl", "parameters": {"mode": "full"}, **fields}
    return plane.deployments.create(DeploymentCreate.model_validate(request))[0]


def automation_with(*actions: Any, on_resolve: tuple[Any, ...] = (), name: str = "on upload") -> Automation:
    now = utcnow()
    return Automation(
        id=uuid.uuid4(),
        name=name,
        trigger=EventTrigger(expect={"aws.s3.object.created"}),
        actions=list(actions),
        actions_on_resolve=list(on_resolve),
        created=now,
        updated=now,
    )


def fire(automation: Automation, event: Event | None, kind: FiringKind = FiringKind.TRIGGERED) -> Firing:
    return Firing(
        id=firing_id(automation.id, kind.value, event.id if event else "window"),
        automation_id=automation.id,
        kind=kind,
        occurred=utcnow(),
        triggering_event=event,
        triggering_labels={"aws.s3.bucket": "landing"},
        events=[event] if event else [],
    )


def s3_upload(bucket: str = "landing", key: str = "2026/06/orders.csv", size: int = 2048) -> Event:
    labels = {"aws.s3.bucket": bucket, "aws.s3.key": key, "aws.s3.size": str(size)}
    return Event(
        event="aws.s3.object.created",
        resource=resource(f"s3://{bucket}/{key}", key, **labels),
        payload={"s3": {"object": {"key": key, "size": size}}},
    )


def run_event(run: FlowRun, name: str = "Running", deployment_id: uuid.UUID | None = None) -> Event:
    links = [related(f"overcast.flow.{run.flow_id}", "flow", run.flow_name)]
    if deployment_id is not None:
        links.append(related(f"overcast.deployment.{deployment_id}", "deployment"))
    return Event(
        event=f"overcast.flow-run.{name}",
        resource=resource(f"overcast.flow-run.{run.id}", run.name),
        related=links,
    )


def new_run(plane: ControlPlane, state: StateType = StateType.RUNNING, **fields: Any) -> FlowRun:
    request = FlowRunCreate(flow_name="etl", state=InitialState(type=state), **fields)
    return plane.flow_runs.create(request)[0]


def action_events(plane: ControlPlane, automation: Automation) -> list[Event]:
    return plane.events.query(resource_id=f"overcast.automation.{automation.id}").items


# -- run a deployment --------------------------------------------------------------------------


def test_an_upload_runs_the_deployment_with_parameters_templated_from_the_event(plane: ControlPlane) -> None:
    deployment = deploy(plane)
    action = RunDeployment(
        deployment_id=deployment.id,
        parameters={
            "bucket": "{{ event.resource['aws.s3.bucket'] }}",
            "key": "{{ event.resource['aws.s3.key'] }}",
            "size": "{{ event.payload.s3.object.size }}",
            "note": "{{ event.resource['aws.s3.key'] }} landed in {{ labels['aws.s3.bucket'] }}",
            "object": "{{ event.payload.s3.object }}",
        },
    )
    automation = automation_with(action)
    event = s3_upload()

    [outcome] = plane.actions.run(automation, fire(automation, event))

    assert outcome.ok, outcome.detail
    [run] = plane.flow_runs.scheduled_of_deployment(deployment.id)
    assert run.parameters == {
        "mode": "full",  # the deployment's default stays
        "bucket": "landing",
        "key": "2026/06/orders.csv",
        "size": 2048,  # a lone expression keeps its JSON type
        "note": "2026/06/orders.csv landed in landing",
        "object": {"key": "2026/06/orders.csv", "size": 2048},
    }
    assert automation_tag(automation.id) in run.tags
    assert str(run.id) in outcome.detail
    [announced] = action_events(plane, automation)
    assert announced.event == "overcast.automation.action.executed"
    roles = {r["overcast.resource.role"]: r["overcast.resource.id"] for r in announced.related}
    assert roles == {
        "triggering-event": f"overcast.event.{event.id}",
        "target": f"overcast.deployment.{deployment.id}",
        "flow-run": f"overcast.flow-run.{run.id}",
    }


def test_acting_on_a_firing_twice_makes_one_run(plane: ControlPlane) -> None:
    deployment = deploy(plane)
    automation = automation_with(RunDeployment(deployment_id=deployment.id, parameters={"n": 1}))
    firing = fire(automation, s3_upload())

    first = plane.actions.run(automation, firing)
    again = plane.actions.run(automation, firing)

    assert first[0].ok and again[0].ok
    assert "already made" in again[0].detail
    assert len(plane.flow_runs.scheduled_of_deployment(deployment.id)) == 1
    assert len(action_events(plane, automation)) == 1  # the outcome is announced once too
    other = fire(automation, s3_upload(key="other.csv"))
    plane.actions.run(automation, other)
    assert len(plane.flow_runs.scheduled_of_deployment(deployment.id)) == 2


def test_schedule_after_delays_the_run_past_the_firing(plane: ControlPlane) -> None:
    deployment = deploy(plane)
    automation = automation_with(
        RunDeployment(deployment_id=deployment.id, schedule_after=timedelta(minutes=10))
    )
    firing = fire(automation, s3_upload())

    [outcome] = plane.actions.run(automation, firing)

    assert outcome.ok, outcome.detail
    [run] = plane.flow_runs.scheduled_of_deployment(deployment.id)
    assert run.state.type is StateType.SCHEDULED
    assert run.expected_start_time == firing.occurred + timedelta(minutes=10)


def test_an_inferred_deployment_is_the_one_the_event_relates_to(plane: ControlPlane) -> None:
    deployment = deploy(plane)
    finished = new_run(plane, deployment_id=deployment.id)
    automation = automation_with(
        RunDeployment(source="inferred", parameters={"after": "{{ flow_run.name }}"}),
    )

    by_relation = plane.actions.run(
        automation, fire(automation, run_event(finished, deployment_id=deployment.id))
    )
    # an event about the run alone: the run's record names its deployment
    by_record = plane.actions.run(automation, fire(automation, run_event(finished, "Completed")))

    assert by_relation[0].ok and by_record[0].ok, (by_relation, by_record)
    runs = plane.flow_runs.scheduled_of_deployment(deployment.id)
    assert [r.parameters["after"] for r in runs] == [finished.name, finished.name]


def test_an_inferred_target_without_a_triggering_event_fails_and_says_why(plane: ControlPlane) -> None:
    automation = automation_with(RunDeployment(source="inferred"), DoNothing())

    failed, done = plane.actions.run(automation, fire(automation, None))

    assert not failed.ok and "no triggering event" in failed.detail
    assert done.ok  # one failure does not stop the next action
    events = {e.event: e for e in action_events(plane, automation)}
    assert events["overcast.automation.action.failed"].payload["reason"] == failed.detail
    assert "overcast.automation.action.executed" in events


def test_parameters_that_the_schema_refuses_fail_the_action(plane: ControlPlane) -> None:
    schema = {"type": "object", "properties": {"size": {"type": "integer"}}, "required": ["size"]}
    deployment = deploy(plane, parameters={}, parameter_openapi_schema=schema)
    automation = automation_with(
        RunDeployment(deployment_id=deployment.id, parameters={"size": "{{ event.resource['aws.s3.key'] }}"})
    )

    [outcome] = plane.actions.run(automation, fire(automation, s3_upload()))

    assert not outcome.ok and "size" in outcome.detail
    assert plane.flow_runs.scheduled_of_deployment(deployment.id) == []


# -- templates that do not render ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ ''.__class__.__mro__ }}", "not allowed"),
        ("{{ event.__class__ }}", "not allowed"),
        ("{{ event.resource['aws.s3.missing'] }}", "undefined"),
        ("{{ nobody }}", "'nobody' is undefined"),
        ("{{ event.resource[ }}", "line 1"),
    ],
)
def test_a_template_that_does_not_render_fails_the_action_with_its_reason(
    plane: ControlPlane, template: str, message: str
) -> None:
    deployment = deploy(plane)
    automation = automation_with(
        RunDeployment(deployment_id=deployment.id, parameters={"x": template}), DoNothing()
    )

    failed, done = plane.actions.run(automation, fire(automation, s3_upload()))

    assert not failed.ok and message in failed.detail
    assert failed.detail.startswith("parameters.x: template ")  # says which parameter
    assert done.ok
    assert plane.flow_runs.scheduled_of_deployment(deployment.id) == []


# -- deployments, automations, work pools --------------------------------------------------------


def test_pause_and_resume_a_selected_or_inferred_deployment(plane: ControlPlane) -> None:
    deployment = deploy(plane)
    about_it = Event(
        event="overcast.deployment.updated", resource=resource(f"overcast.deployment.{deployment.id}")
    )
    pausing = automation_with(PauseDeployment(deployment_id=deployment.id))
    resuming = automation_with(ResumeDeployment(source="inferred"))

    [paused] = plane.actions.run(pausing, fire(pausing, s3_upload()))
    assert paused.ok and plane.deployments.get(deployment.id).paused
    [resumed] = plane.actions.run(resuming, fire(resuming, about_it))
    assert resumed.ok and not plane.deployments.get(deployment.id).paused
    assert "etl/ingest" in resumed.detail


def test_pause_and_resume_work_pools_and_queues_inferred_from_their_events(plane: ControlPlane) -> None:
    pool = plane.work_pools.create_pool(ProcessPoolCreate(name="local"))
    plane.work_pools.create_queue("local", WorkQueueCreate(name="gpu"))
    # the pool's own events name it by id; a deployment's name it by name
    pool_event = Event(
        event="overcast.work-pool.not-ready", resource=resource(f"overcast.work-pool.{pool.id}", "local")
    )
    deployment_event = Event(
        event="overcast.deployment.updated",
        resource=resource(f"overcast.deployment.{uuid.uuid4()}"),
        related=[related("overcast.work-pool.local", "work-pool", "local")],
    )
    queue = plane.work_pools.get_queue("local", "gpu")
    queue_event = Event(
        event="overcast.work-queue.not-ready",
        resource=resource(f"overcast.work-queue.{queue.id}", "gpu"),
        related=[related(f"overcast.work-pool.{pool.id}", "work-pool", "local")],
    )
    pausing = automation_with(PauseWorkPool(source="inferred"), PauseWorkQueue(source="inferred"))
    resuming = automation_with(ResumeWorkPool(source="inferred"))

    outcomes = plane.actions.run(pausing, fire(pausing, queue_event))
    assert [o.ok for o in outcomes] == [True, True], outcomes
    assert plane.work_pools.get_pool("local").paused
    assert plane.work_pools.get_queue("local", "gpu").paused
    assert not plane.work_pools.get_queue("local", "default").paused

    [resumed] = plane.actions.run(resuming, fire(resuming, deployment_event))
    assert resumed.ok and not plane.work_pools.get_pool("local").paused
    [again] = plane.actions.run(pausing, fire(pausing, pool_event))[:1]
    assert again.ok and plane.work_pools.get_pool("local").paused


def test_pause_and_resume_an_automation(plane: ControlPlane) -> None:
    pytest.importorskip(
        "overcast.core.services.automations", reason="the Automations service is not wired yet"
    )
    from overcast.core.automations import AutomationCreate

    stored = plane.automations.create(
        AutomationCreate(name="watched", trigger=EventTrigger(expect={"x.y"}), actions=[DoNothing()])
    )
    pause_itself = stored.model_copy(update={"actions": [PauseAutomation(source="inferred")]})
    resume_it = automation_with(ResumeAutomation(automation_id=stored.id))

    [paused] = plane.actions.run(pause_itself, fire(pause_itself, s3_upload()))
    assert paused.ok and not plane.automations.get(stored.id).enabled
    [resumed] = plane.actions.run(resume_it, fire(resume_it, s3_upload()))
    assert resumed.ok and plane.automations.get(stored.id).enabled


# -- flow runs ------------------------------------------------------------------------------------


def test_cancel_the_flow_run_the_event_is_about(plane: ControlPlane) -> None:
    running = new_run(plane)
    automation = automation_with(CancelFlowRun())

    [outcome] = plane.actions.run(automation, fire(automation, run_event(running)))

    assert outcome.ok, outcome.detail
    assert plane.flow_runs.get(running.id).state.type is StateType.CANCELLING


def test_suspend_then_resume_a_flow_run(plane: ControlPlane) -> None:
    running = new_run(plane)
    event = run_event(running)
    suspending = automation_with(SuspendFlowRun(), name="hold on")
    resuming = automation_with(ResumeFlowRun(flow_run_id=running.id))

    [suspended] = plane.actions.run(suspending, fire(suspending, event))
    state = plane.flow_runs.get(running.id).state
    assert suspended.ok and state.type is StateType.PAUSED and "hold on" in (state.message or "")

    [resumed] = plane.actions.run(resuming, fire(resuming, s3_upload()))
    assert resumed.ok and plane.flow_runs.get(running.id).state.type is StateType.SCHEDULED

    [again] = plane.actions.run(resuming, fire(resuming, s3_upload(key="again")))
    assert not again.ok and "only a paused run can be resumed" in again.detail


def test_change_a_flow_run_state_with_a_templated_message_and_force(plane: ControlPlane) -> None:
    running = new_run(plane)
    plane.flow_runs.set_state(running.id, Completed())
    event = run_event(running, "Completed")
    polite = automation_with(ChangeFlowRunState(state=StateType.FAILED, message="bad: {{ event.event }}"))
    forced = automation_with(
        ChangeFlowRunState(
            state=StateType.FAILED, name="Rejected", message="bad: {{ event.event }}", force=True
        )
    )

    [refused] = plane.actions.run(polite, fire(polite, event))
    assert not refused.ok and "refused" in refused.detail
    assert plane.flow_runs.get(running.id).state.type is StateType.COMPLETED

    [outcome] = plane.actions.run(forced, fire(forced, event))
    state = plane.flow_runs.get(running.id).state
    assert outcome.ok, outcome.detail
    assert (state.type, state.name, state.message) == (
        StateType.FAILED,
        "Rejected",
        "bad: overcast.flow-run.Completed",
    )


def test_a_flow_run_action_on_an_event_about_no_run_fails(plane: ControlPlane) -> None:
    automation = automation_with(CancelFlowRun())

    [outcome] = plane.actions.run(automation, fire(automation, s3_upload()))

    assert not outcome.ok
    assert "cannot infer the flow-run" in outcome.detail and "aws.s3.object.created" in outcome.detail


# -- webhooks -------------------------------------------------------------------------------------


@dataclass
class Hook:
    """A webhook endpoint on 127.0.0.1 that answers with the statuses it is given, in turn."""

    url: str
    statuses: list[int]
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def hook() -> Iterator[Hook]:
    endpoint = Hook(url="", statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            endpoint.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status = endpoint.statuses.pop(0) if endpoint.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield endpoint
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def sender() -> Iterator[HttpxWebhookSender]:
    webhooks = HttpxWebhookSender()
    yield webhooks
    webhooks.close()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_a_webhook_gets_the_rendered_body_and_a_5xx_is_retried(
    plane: ControlPlane, hook: Hook, sender: HttpxWebhookSender
) -> None:
    plane.variables.create(VariableCreate(name="team", value="data"))
    plane.variables.create(VariableCreate(name="hook", value=hook.url + "/hooks"))
    sleeps = Sleeps()
    actions = Actions(plane, webhooks=sender, sleep=sleeps)
    hook.statuses = [500, 503, 200]
    action = CallWebhook(
        url="{{ variables.hook }}/{{ labels['aws.s3.bucket'] }}",  # a secret URL kept in a variable
        headers={"X-Team": "{{ variables.team }}"},
        payload='{"key": {{ event.resource["aws.s3.key"] | tojson }}, "when": {{ event.occurred | tojson }}}',
    )
    automation = automation_with(action)
    event = s3_upload()

    [outcome] = actions.run(automation, fire(automation, event))

    assert outcome.ok, outcome.detail
    assert "after 3 attempts" in outcome.detail
    assert sleeps == [0.2, 0.4]
    assert len(hook.received) == 3
    request = hook.received[-1]
    assert request["path"] == "/hooks/landing"
    assert request["headers"]["X-Team"] == "data"
    assert request["headers"]["Content-Type"] == "application/json"
    body = json.loads(request["body"])
    assert body["key"] == "2026/06/orders.csv"
    assert body["when"].startswith(event.occurred.date().isoformat())


def test_a_4xx_is_final_and_retries_run_out(
    plane: ControlPlane, hook: Hook, sender: HttpxWebhookSender
) -> None:
    sleeps = Sleeps()
    actions = Actions(plane, webhooks=sender, sleep=sleeps)
    hook.statuses = [404, 500, 500, 500]
    automation = automation_with(
        CallWebhook(url=hook.url + "/gone"), CallWebhook(url=hook.url + "/down", retries=2)
    )

    not_found, down = actions.run(automation, fire(automation, s3_upload()))

    assert not not_found.ok and "404" in not_found.detail and "not retried" in not_found.detail
    assert not down.ok and "500" in down.detail and "3 attempts" in down.detail
    assert [r["path"] for r in hook.received] == ["/gone", "/down", "/down", "/down"]
    assert sleeps == [0.2, 0.4]
    assert "/gone" not in not_found.detail  # a webhook's path may hold a secret: not recorded


def test_a_webhook_with_no_answer_is_retried(plane: ControlPlane, sender: HttpxWebhookSender) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]  # bound, then closed: nobody answers there
    sleeps = Sleeps()
    actions = Actions(plane, webhooks=sender, sleep=sleeps)
    automation = automation_with(CallWebhook(url=f"http://127.0.0.1:{port}/x", retries=1, timeout_s=2))

    [outcome] = actions.run(automation, fire(automation, s3_upload()))

    assert not outcome.ok and "no answer" in outcome.detail and "2 attempts" in outcome.detail
    assert sleeps == [0.2]


def test_a_notification_posts_slack_text(plane: ControlPlane, hook: Hook, sender: HttpxWebhookSender) -> None:
    actions = Actions(plane, webhooks=sender)
    automation = automation_with(
        SendNotification(
            url=hook.url + "/slack", format="slack", body="{{ event.resource['aws.s3.key'] }} arrived"
        ),
        SendNotification(url=hook.url + "/json", subject="{{ labels['aws.s3.bucket'] }}"),
    )

    outcomes = actions.run(automation, fire(automation, s3_upload()))

    assert all(o.ok for o in outcomes), outcomes
    slack, plain = (json.loads(r["body"]) for r in hook.received)
    assert slack == {"text": "Overcast: on upload fired\n2026/06/orders.csv arrived"}
    assert plain == {"subject": "landing", "body": "aws.s3.object.created on s3://landing/2026/06/orders.csv"}


def test_without_a_webhook_sender_the_action_fails(plane: ControlPlane) -> None:
    automation = automation_with(CallWebhook(url="http://127.0.0.1:9/x"))

    [outcome] = plane.actions.run(automation, fire(automation, s3_upload()))

    assert not outcome.ok and "no webhook sender" in outcome.detail


# -- firings --------------------------------------------------------------------------------------


def test_a_resolved_firing_runs_the_actions_on_resolve_only(plane: ControlPlane) -> None:
    deployment = deploy(plane)
    automation = automation_with(
        PauseDeployment(deployment_id=deployment.id),
        on_resolve=(ResumeDeployment(deployment_id=deployment.id),),
    )
    plane.deployments.pause(deployment.id)

    [outcome] = plane.actions.run(automation, fire(automation, s3_upload(), FiringKind.RESOLVED))

    assert outcome.ok and outcome.type == "resume-deployment"
    assert not plane.deployments.get(deployment.id).paused


def test_automations_that_set_each_other_off_stop_at_a_bounded_depth(plane: ControlPlane) -> None:
    automation = automation_with(DoNothing(), name="echo")

    def echo(events: list[Event]) -> None:  # acts again on its own announcement, as a loop would
        for event in events:
            if event.event == EXECUTED and event.resource_id == f"overcast.automation.{automation.id}":
                plane.actions.run(automation, fire(automation, event))

    plane.events.subscribe(echo)

    [outcome] = plane.actions.run(automation, fire(automation, s3_upload()))

    assert outcome.ok
    assert len(action_events(plane, automation)) == MAX_DEPTH


def test_templates_are_checked_when_an_automation_is_saved() -> None:
    validate_action_templates(
        [RunDeployment(source="inferred", parameters={"k": "{{ event.id }}"}), DoNothing()]
    )
    bad = [DoNothing(), CallWebhook(url="http://hooks.example/{{ labels[ }}")]
    with pytest.raises(TemplateError, match=r"^actions_on_trigger\[1\]\.url: template"):
        validate_action_templates(bad, where="actions_on_trigger")
