"""``overcast events ls|stream|emit`` against an in-memory control plane (the CLI's client is the harness's)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from overcast import flow, task
from overcast.core.events import Event, related, resource
from overcast.infra.cli import build
from overcast.testing import Harness, overcast_test_harness


@pytest.fixture
def harness() -> Iterator[Harness]:
    with overcast_test_harness() as h:
        yield h


def cli(*args: str) -> Any:
    return CliRunner().invoke(build(), ["events", *args])


def order(n: int, name: str = "shop.order.placed", minutes_ago: float = 0, **extra: Any) -> Event:
    return Event(
        event=name,
        occurred=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        resource=resource(f"shop.order.{n}", f"order {n}"),
        **extra,
    )


@task
def double(x: int) -> int:
    return 2 * x


@flow
def doubling(n: int) -> int:
    return sum(double(i) for i in range(n))


def test_ls_lists_events_newest_first_and_filters_them(harness: Harness) -> None:
    from overcast.core.automations import AutomationCreate

    harness.plane.automations.create(  # task runs announce their states while one listens
        AutomationCreate.model_validate({"name": "task runs", "trigger": {"expect": ["overcast.task-run.*"]}})
    )
    doubling(2)
    [run] = harness.flow_runs()
    harness.plane.events.emit([order(1, minutes_ago=90), order(2, "shop.order.paid", minutes_ago=5)])

    everything = cli("ls", "--limit", "50")
    assert everything.exit_code == 0, everything.output
    lines = everything.output.splitlines()
    assert (
        "overcast.flow-run.Completed" in everything.output
        and "overcast.task-run.Completed" in everything.output
    )
    placed = next(i for i, line in enumerate(lines) if "shop.order.placed" in line)
    paid = next(i for i, line in enumerate(lines) if "shop.order.paid" in line)
    assert paid < placed  # newest first
    assert "flow-run" in everything.output  # the related summary of the task-run events

    def listed(*args: str) -> list[str]:
        answer = cli("ls", "--json", *args)
        assert answer.exit_code == 0, answer.output
        return [e["event"] for e in json.loads(answer.output)]

    assert listed("--name", "shop.*") == ["shop.order.paid", "shop.order.placed"]
    assert listed("--name", "*.paid", "--name", "*.placed", "--oldest-first") == [
        "shop.order.placed",
        "shop.order.paid",
    ]
    assert listed("--resource", "shop.order.1") == ["shop.order.placed"]
    assert listed("--resource", "overcast.flow-run.*") == [
        "overcast.flow-run.Completed",
        "overcast.flow-run.Running",
        "overcast.flow-run.Pending",
    ]
    assert listed("--related", f"overcast.flow-run.{run.id}") == ["overcast.task-run.Completed"] * 2
    assert listed("--since", "1h", "--name", "shop.*") == ["shop.order.paid"]
    until = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert listed("--until", until) == ["shop.order.placed"]
    assert listed("--name", "shop.*", "--limit", "1") == ["shop.order.paid"]
    assert listed("--exclude", "overcast.*") == ["shop.order.paid", "shop.order.placed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is neither ISO 8601"),
        (["--name", "has space"], "cannot list events"),
    ],
)
def test_ls_refuses_bad_input_in_words(harness: Harness, args: list[str], message: str) -> None:
    answer = cli("ls", *args)
    assert answer.exit_code == 1 and message in answer.output


def test_emit_sends_an_event_ls_then_shows(harness: Harness) -> None:
    sent = cli(
        "emit",
        "shop.order.refunded",
        "--resource",
        "shop.order.3",
        "--label",
        "shop.region=eu",
        "--related",
        "shop.customer.9:customer",
        "--payload",
        '{"amount": 12.5}',
    )
    assert sent.exit_code == 0, sent.output
    stored = harness.plane.events.get(uuid.UUID(sent.output.strip()))
    assert stored.resource == {"overcast.resource.id": "shop.order.3", "shop.region": "eu"}
    assert stored.related == [related("shop.customer.9", "customer")]
    assert stored.payload == {"amount": 12.5}
    bad = cli("emit", "x.y", "--resource", "r", "--payload", "{not json")
    assert bad.exit_code == 1 and "--payload is not JSON" in bad.output
    worse = cli("emit", "x.y", "--resource", "r", "--related", "no-role")
    assert worse.exit_code == 1 and "must look like A:B" in worse.output


def test_stream_prints_each_matching_event_once_as_it_arrives(harness: Harness) -> None:
    harness.plane.events.emit([order(1, minutes_ago=3), order(2, "shop.order.paid", minutes_ago=2)])
    harness.plane.events.emit([order(9, "other.thing", minutes_ago=2)])
    polled = threading.Event()
    real_filter = harness.plane.events.filter

    def filter_and_tell(query: Any) -> Any:
        page = real_filter(query)
        polled.set()
        return page

    harness.plane.events.filter = filter_and_tell  # type: ignore[method-assign]

    def later() -> None:  # once the stream has polled at least once
        assert polled.wait(30)
        harness.plane.events.emit([order(3, "shop.order.shipped")])

    sender = threading.Thread(target=later)
    sender.start()
    answer = cli(
        "stream",
        "--name",
        "shop.*",
        "--since",
        "10m",
        "--interval",
        "0.05",
        "--max",
        "3",
        "--timeout",
        "60",
        "--json",
    )
    sender.join(30)
    assert answer.exit_code == 0, answer.output
    printed = [json.loads(line) for line in answer.output.splitlines()]
    assert [e["event"] for e in printed] == ["shop.order.placed", "shop.order.paid", "shop.order.shipped"]


def test_stream_without_since_follows_only_new_events_and_stops_at_its_timeout(harness: Harness) -> None:
    harness.plane.events.emit([order(1)])  # there before the stream: not new
    quiet = cli("stream", "--interval", "0.05", "--timeout", "0.2")
    assert quiet.exit_code == 0 and quiet.output == ""

    polls = threading.Semaphore(0)
    real_filter = harness.plane.events.filter

    def filter_and_count(query: Any) -> Any:
        page = real_filter(query)
        polls.release()
        return page

    harness.plane.events.filter = filter_and_count  # type: ignore[method-assign]

    def later() -> None:
        assert polls.acquire(timeout=30) and polls.acquire(timeout=30)  # primed, then polled
        harness.plane.events.emit([order(2, "shop.order.paid")])

    sender = threading.Thread(target=later)
    sender.start()
    answer = cli(
        "stream", "--resource", "shop.order.*", "--interval", "0.05", "--max", "1", "--timeout", "60"
    )
    sender.join(30)
    assert answer.exit_code == 0, answer.output
    [line] = answer.output.splitlines()
    assert "shop.order.paid" in line and "shop.order.2 (order 2)" in line
