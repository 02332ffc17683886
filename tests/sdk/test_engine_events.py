"""Events from the engine's side: the runs' own state events and ``emit_event``, over both clients."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from overcast import emit_event, flow, task
from overcast.core.events import Event
from overcast.testing import Harness


def events_of(harness: Harness, **query: object) -> list[Event]:
    """Every stored event ``query`` matches, oldest first (after sending what is buffered)."""
    harness.flush()
    found: list[Event] = []
    cursor = None
    while True:
        page = harness.plane.events.query(order="asc", limit=500, cursor=cursor, **query)  # type: ignore[arg-type]
        found += page.items
        if (cursor := page.next_cursor) is None:
            return found


def listen_for_task_runs(harness: Harness) -> None:
    """An automation that listens for task-run events: task runs announce their states only
    while one does (``task_run_events="auto"``, the default)."""
    from overcast.core.automations import AutomationCreate

    harness.plane.automations.create(
        AutomationCreate.model_validate({"name": "task runs", "trigger": {"expect": ["overcast.task-run.*"]}})
    )


def roles(event: Event) -> dict[str, str]:
    return {r["overcast.resource.role"]: r["overcast.resource.id"] for r in event.related}


# -- the runs' own events -------------------------------------------------------------------------


def test_a_flow_run_and_its_task_runs_announce_their_states(harness: Harness) -> None:
    listen_for_task_runs(harness)

    @task(tags=["math"])
    def double(x: int) -> int:
        return 2 * x

    @flow
    def doubling(n: int) -> int:
        return sum(double(i) for i in range(n))

    assert doubling(3) == 6
    [run] = harness.flow_runs()
    flow_events = events_of(harness, resource_id=f"overcast.flow-run.{run.id}")
    assert [e.event for e in flow_events] == [
        "overcast.flow-run.Pending",
        "overcast.flow-run.Running",
        "overcast.flow-run.Completed",
    ]
    assert roles(flow_events[-1]) == {"flow": f"overcast.flow.{run.flow_id}"}
    assert flow_events[-1].resource["overcast.resource.name"] == run.name

    task_events = events_of(harness, names=["overcast.task-run.*"])
    task_runs = harness.task_runs(run.id)
    assert sorted(e.resource_id for e in task_events) == sorted(
        f"overcast.task-run.{t.id}" for t in task_runs
    )
    assert {e.event for e in task_events} == {"overcast.task-run.Completed"}  # the final state of each
    assert all(
        roles(e)
        == {
            "flow-run": f"overcast.flow-run.{run.id}",
            "flow": f"overcast.flow.{run.flow_id}",
            "tag": "overcast.tag.math",
        }
        for e in task_events
    )
    of_run = events_of(harness, related_resource_id=f"overcast.flow-run.{run.id}")
    assert {e.id for e in of_run} == {e.id for e in task_events}


def test_a_failing_flow_announces_its_failure_and_its_task_runs(harness: Harness) -> None:
    listen_for_task_runs(harness)

    @task
    def explode() -> None:
        raise ValueError("no fuel")

    @flow
    def launch() -> None:
        explode()

    with pytest.raises(ValueError, match="no fuel"):
        launch()
    [run] = harness.flow_runs()
    failures = events_of(harness, names=["*.Failed"])
    assert [e.event for e in failures] == ["overcast.task-run.Failed", "overcast.flow-run.Failed"]
    task_failed, flow_failed = failures
    assert flow_failed.resource_id == f"overcast.flow-run.{run.id}"
    assert flow_failed.payload["intended"] == {"from": "RUNNING", "to": "FAILED"}
    assert "no fuel" in flow_failed.payload["validated_state"]["message"]
    assert roles(task_failed)["flow-run"] == f"overcast.flow-run.{run.id}"


# -- emit_event ----------------------------------------------------------------------------------


def test_emit_event_inside_a_run_relates_the_event_to_the_run(harness: Harness) -> None:
    @task(tags=["shop"])
    def place(order: int) -> Event | None:
        return emit_event(
            "shop.order.placed",
            {"overcast.resource.id": f"shop.order.{order}", "overcast.resource.name": f"order {order}"},
            payload={"total": 42},
            related=[{"overcast.resource.id": "shop.customer.7", "overcast.resource.role": "customer"}],
        )

    @flow
    def shop() -> tuple[Event | None, Event | None]:
        opened = emit_event("shop.opened", {"overcast.resource.id": "shop.main"})
        return opened, place(1)

    opened, placed = shop()
    assert opened is not None and placed is not None
    [run] = harness.flow_runs()
    [task_run] = harness.task_runs(run.id)
    assert roles(opened) == {
        "flow-run": f"overcast.flow-run.{run.id}",
        "flow": f"overcast.flow.{run.flow_id}",
    }
    assert roles(placed) == {
        "customer": "shop.customer.7",  # the caller's own come first
        "flow-run": f"overcast.flow-run.{run.id}",
        "flow": f"overcast.flow.{run.flow_id}",
        "task-run": f"overcast.task-run.{task_run.id}",
        "tag": "overcast.tag.shop",
    }

    stored = events_of(harness, names=["shop.*"])
    assert [e.event for e in stored] == ["shop.opened", "shop.order.placed"]
    assert stored[1].id == placed.id and stored[1].payload == {"total": 42}
    assert stored[1].related == placed.related and stored[1].received is not None
    by_run = events_of(harness, names=["shop.*"], related_resource_id=f"overcast.flow-run.{run.id}")
    assert [e.id for e in by_run] == [opened.id, placed.id]


def test_emit_event_outside_a_run_takes_what_it_is_given(harness: Harness) -> None:
    first = emit_event("deploy.started", {"overcast.resource.id": "ci.build.9"})
    event_id = uuid.uuid4()
    later = emit_event(
        "deploy.finished",
        {"overcast.resource.id": "ci.build.9"},
        id=event_id,
        follows=first,
        occurred=datetime.now(UTC),
    )
    assert later is not None and first is not None
    assert later.related == [] and later.id == event_id and later.follows == first.id
    emit_event("deploy.finished", {"overcast.resource.id": "ci.build.9"}, id=event_id)  # sent twice
    stored = events_of(harness, resource_id="ci.build.9")
    assert [e.id for e in stored] == [first.id, event_id]  # stored once


@pytest.mark.parametrize(
    ("name", "resource", "message"),
    [
        ("has space", {"overcast.resource.id": "x"}, "pattern"),
        ("ok.name", {"name": "no id"}, "overcast.resource.id"),
    ],
)
def test_a_malformed_event_is_refused_at_once(
    harness: Harness, name: str, resource: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        emit_event(name, resource)
    with pytest.raises(ValidationError, match=r"overcast\.resource\.role"):
        emit_event("ok.name", {"overcast.resource.id": "x"}, related=[{"overcast.resource.id": "y"}])


def test_events_emitted_just_before_exit_are_sent(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
    env["OVERCAST_HOME"] = str(tmp_path)
    script = (
        "from overcast import emit_event\n"
        "for n in range(3):\n"
        "    emit_event('batch.done', {'overcast.resource.id': f'batch.{n}'})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr

    from overcast.adapters.factory import open_store
    from overcast.core.services.events import Events

    store = open_store(f"sqlite://{tmp_path / 'overcast.db'}")
    try:
        found = Events(store).query(names=["batch.done"]).items
    finally:
        store.close()  # type: ignore[attr-defined]
    assert sorted(e.resource_id for e in found) == ["batch.0", "batch.1", "batch.2"]
