"""The events runs emit as they change state: ``overcast.flow-run.<State>``, ``overcast.task-run.<State>``.

A run's event is about the run (``overcast.flow-run.<id>`` with its name and its state's type
and name as labels) and relates it to its flow, deployment, work pool and tags, the way
automations match them (``match_related``). Its payload says which transition it was::

    {"intended": {"from": "RUNNING", "to": "COMPLETED"},
     "initial_state": {"type": "RUNNING", "name": "Running"},
     "validated_state": {"type": "COMPLETED", "name": "Completed"}}

Both are built as the JSON documents ``Events.transact_documents`` and ``emit_documents`` store
without validating (everything in them comes from models or documents already validated, and
free text is sanitized here): a flow run's transition and a task run's report are hot paths.

Ids make both idempotent. A task-run event takes its state's id (a replayed report stores it
once). A flow-run event's id is derived from its state's id and timestamp: a proposal replayed
after it was accepted is accepted again only as a new transition, at a new time, and announced
again; ``follows`` names the event of the state before.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from overcast.core import keys
from overcast.core.events import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE
from overcast.core.models import FlowRun
from overcast.core.states import DEFAULT_NAMES, State

STATE_TYPE = "overcast.state-type"
STATE_NAME = "overcast.state-name"
MAX_MESSAGE = 1_000
"""The most characters of a state's message an event carries."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LOW_BITS = (1 << 62) - 1  # below the variant bits: the id stays an RFC 9562 UUID of its version
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def flow_run_event(run: FlowRun, previous: State | None, pool: dict[str, Any] | None) -> dict[str, Any]:
    """The event (as a JSON document) of ``run`` entering its current state from ``previous``
    (``None``: created).

    Args:
        run: the run as just written.
        previous: the state it left.
        pool: the run's work pool as stored (``WorkPool`` as JSON), when it has one.
    """
    state = run.state
    type_ = state.type.value
    resource = {
        RESOURCE_ID: f"overcast.flow-run.{run.id}",
        RESOURCE_NAME: run.name,
        STATE_TYPE: type_,
        STATE_NAME: _label(state.name),
    }
    links = [
        {RESOURCE_ID: f"overcast.flow.{run.flow_id}", RESOURCE_ROLE: "flow", RESOURCE_NAME: run.flow_name}
    ]
    if run.deployment_id is not None:
        links.append({RESOURCE_ID: f"overcast.deployment.{run.deployment_id}", RESOURCE_ROLE: "deployment"})
    if pool is not None:
        links.append(
            {
                RESOURCE_ID: f"overcast.work-pool.{pool['id']}",
                RESOURCE_ROLE: "work-pool",
                RESOURCE_NAME: pool["name"],
                "overcast.work-pool.type": pool["type"],
            }
        )
    if run.parent_task_run_id is not None:
        links.append({RESOURCE_ID: f"overcast.task-run.{run.parent_task_run_id}", RESOURCE_ROLE: "task-run"})
    if run.tags:
        links += tag_resources(run.tags)
    # No nulls (a created run has no "from"): the store encodes null-free items fastest.
    intended = {"from": previous.type.value, "to": type_} if previous is not None else {"to": type_}
    payload: dict[str, Any] = {"intended": intended}
    if previous is not None:
        payload["initial_state"] = _state_payload(previous.type.value, previous.name, previous.message)
    payload["validated_state"] = _state_payload(type_, state.name, state.message)
    event = {
        "id": str(flow_run_event_id(state)),
        "occurred": keys.ts(state.timestamp),
        "event": f"overcast.flow-run.{event_suffix(state.name, type_)}",
        "resource": resource,
        "related": links,
        "payload": payload,
    }
    if previous is not None:
        event["follows"] = str(flow_run_event_id(previous))
    return event


def flow_run_event_id(state: State) -> uuid.UUID:
    """The id of the event announcing a flow run's entry into ``state``: the state's id mixed
    with the microsecond it was entered (cheap, deterministic, and new for every entry)."""
    stamp = state.timestamp
    micros = (stamp - _EPOCH) // _MICROSECOND
    return uuid.UUID(int=state.id.int ^ (micros & _LOW_BITS))


def task_run_events(
    document: dict[str, Any], flow_run: dict[str, Any] | None, states: list[dict[str, Any]], *, chain: bool
) -> list[dict[str, Any]]:
    """The events (as JSON documents) of a task run entering ``states``.

    Args:
        document: the task-run document (``{"task_run": …, "states": […]}``).
        flow_run: the task run's flow run as stored (``FlowRun`` as JSON), if it has one.
        states: the states to announce (``State`` as JSON), each found in the document.
        chain: set ``follows`` to the event of the state before (when that one is announced too).
    """
    task_run = document["task_run"]
    history = document.get("states") or [task_run["state"]]
    links = _task_run_related(task_run, flow_run)
    resource_id = f"overcast.task-run.{task_run['id']}"
    name = task_run["name"]
    out = []
    for state in states:
        previous = _before(history, state)
        type_, state_name = state["type"], state.get("name") or DEFAULT_NAMES_BY_TYPE[state["type"]]
        if previous is None:
            payload: dict[str, Any] = {"intended": {"to": type_}}
        else:
            payload = {
                "intended": {"from": previous["type"], "to": type_},
                "initial_state": _state_payload(
                    previous["type"], previous.get("name") or "", previous.get("message")
                ),
            }
        payload["validated_state"] = _state_payload(type_, state_name, state.get("message"))
        event: dict[str, Any] = {
            "id": state["id"],
            "occurred": state["timestamp"],
            "event": f"overcast.task-run.{event_suffix(state_name, type_)}",
            "resource": {
                RESOURCE_ID: resource_id,
                RESOURCE_NAME: name,
                STATE_TYPE: type_,
                STATE_NAME: _label(state_name),
            },
            "related": links,
            "payload": payload,
        }
        if chain and previous is not None:
            event["follows"] = previous["id"]
        out.append(event)
    return out


DEFAULT_NAMES_BY_TYPE = {t.value: name for t, name in DEFAULT_NAMES.items()}


def tag_resources(tags: list[str]) -> list[dict[str, str]]:
    """Tags as related resources: ``overcast.tag.<tag>`` in role ``tag``, sorted."""
    return [{RESOURCE_ID: f"overcast.tag.{tag}", RESOURCE_ROLE: "tag"} for tag in sorted(set(tags))]


def event_suffix(state_name: str, state_type: str) -> str:
    """A state's name as the last part of an event name (no spaces: ``Awaiting Retry`` -> ``AwaitingRetry``)."""
    if state_name.isalnum():
        return state_name  # nearly always: the well-known names
    return _UNPRINTABLE.sub("", state_name) or DEFAULT_NAMES_BY_TYPE[state_type]


def _task_run_related(task_run: dict[str, Any], flow_run: dict[str, Any] | None) -> list[dict[str, str]]:
    links: list[dict[str, str]] = []
    tags = list(task_run.get("tags") or ())
    if flow_run is not None:
        links.append(
            {
                RESOURCE_ID: f"overcast.flow-run.{flow_run['id']}",
                RESOURCE_ROLE: "flow-run",
                RESOURCE_NAME: flow_run["name"],
            }
        )
        links.append(
            {
                RESOURCE_ID: f"overcast.flow.{flow_run['flow_id']}",
                RESOURCE_ROLE: "flow",
                RESOURCE_NAME: flow_run["flow_name"],
            }
        )
        if flow_run.get("deployment_id"):
            links.append(
                {RESOURCE_ID: f"overcast.deployment.{flow_run['deployment_id']}", RESOURCE_ROLE: "deployment"}
            )
        tags += flow_run.get("tags") or ()
    if tags:
        links += tag_resources(tags)
    return links


def _before(history: list[dict[str, Any]], state: dict[str, Any]) -> dict[str, Any] | None:
    """The state before ``state`` in a document's history (the last one, nearly always)."""
    if len(history) > 1 and history[-1] is state:
        return history[-2]
    for position, entry in enumerate(history):
        if entry["id"] == state["id"]:
            return history[position - 1] if position else None
    return None


def _state_payload(type_: str, name: str, message: str | None) -> dict[str, str]:
    payload = {"type": type_, "name": name}
    if message:
        payload["message"] = message[:MAX_MESSAGE]
    return payload


def _label(text: str) -> str:
    """``text`` as a label value: control characters become spaces."""
    return text if text.isprintable() else _CONTROL.sub(" ", text)
