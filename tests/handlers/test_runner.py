"""The runner end to end: run_deployment → queue message → runner → COMPLETED.

On the embedded stack (SQLite, the local queue) and on moto's server (DynamoDB, SQS with a
dead-letter queue): the same handler, the same event shapes.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from overcast._runtime import Runtime, _build, use_runtime
from overcast.adapters.factory import open_queue
from overcast.adapters.invokers.inline import InlineInvoker
from overcast.adapters.queues import create_queue
from overcast.core.settings import Settings
from overcast.core.states import StateType
from overcast.core.work_pools import QueuePoolCreate
from overcast.deployments import run_deployment
from overcast.flows import load_flow_from_entrypoint
from overcast.infra.event_source import EventSourceMapping

FLOW = textwrap.dedent(
    """
    from pathlib import Path
    from overcast import flow, task

    @task
    def note(ledger: str, word: str) -> str:
        with Path(ledger).open("a") as out:
            out.write(word + "\\n")
        return word.upper()

    @flow
    def greet(ledger: str, word: str = "hello") -> str:
        return note(ledger, word)
    """
)


class Stack:
    """A control plane and its runs queue, and the runner function behind an event source."""

    def __init__(self, home: Path, *, store: str = "", queue_url: str = "") -> None:
        self.home = home
        self.settings = Settings(home=home, store=store)
        self.runtime: Runtime = _build(self.settings)
        self.queue_url = queue_url or f"local://{home / 'queue.db'}?name=runs&max_receives=2"
        self.queue = open_queue(self.queue_url)
        self.invoker = InlineInvoker({"runner": "overcast.handlers.aws.runner:handler"})
        self.mapping = EventSourceMapping(self.queue, self.invoker, "runner", visibility_s=1)
        self.ledger = home / "ledger"
        (home / "flows.py").write_text(FLOW)
        self.flow = load_flow_from_entrypoint(f"{home / 'flows.py'}:greet")

    @property
    def client(self) -> Any:
        return self.runtime.client

    def drain(self, *, until: Any, timeout: float = 30) -> None:
        """Feed the runner batches until ``until()`` holds."""

        def step() -> bool:
            self.mapping.poll(wait_s=0.2)
            return bool(until())

        wait_until(step, timeout=timeout)


@pytest.fixture(params=["embedded", pytest.param("moto", marks=pytest.mark.aws)])
def stack(request: pytest.FixtureRequest, tmp_path: Path, unique: Any) -> Iterator[Stack]:
    if request.param == "embedded":
        built = Stack(tmp_path)
    else:
        aws = request.getfixturevalue("aws")
        name = unique("overcast-runs")
        create_queue(aws.client("sqs"), name, max_receives=2, visibility_s=1)
        built = Stack(
            tmp_path,
            store=f"dynamodb://{unique('overcast-runner')}?{aws.query()}&create=true",
            queue_url=f"sqs://{name}?{aws.query()}",
        )
    built.client.create_work_pool(
        QueuePoolCreate.model_validate({"name": "runs", "config": {"url": built.queue_url}})
    )
    with use_runtime(built.runtime):
        built.flow.deploy(
            "nightly",
            work_pool_name="runs",
            entrypoint=f"{tmp_path / 'flows.py'}:greet",
            parameters={"ledger": str(built.ledger)},
        )
        yield built
    built.runtime.close()


def test_a_deployment_run_goes_through_the_queue_and_the_runner_to_completed(stack: Stack) -> None:
    run = run_deployment("greet/nightly", parameters={"word": "bonjour"}, timeout=0)
    assert run.state.type is StateType.PENDING  # claimed and sent at once: the queue pool pushes
    stack.drain(until=lambda: stack.client.read_flow_run(run.id).state.is_terminal)
    done = stack.client.read_flow_run(run.id)
    assert done.state.type is StateType.COMPLETED
    assert stack.ledger.read_text().split() == ["bonjour"]
    assert done.state.result() == "BONJOUR"


def test_the_same_message_delivered_five_times_runs_the_flow_once(stack: Stack) -> None:
    run = run_deployment("greet/nightly", timeout=0)
    for _ in range(5):  # at-least-once delivery, taken to the extreme
        stack.queue.send(json.dumps({"flow_run_id": str(run.id)}))
    stack.drain(until=lambda: stack.client.read_flow_run(run.id).state.is_terminal)
    wait_until(lambda: stack.mapping.poll(wait_s=0.2).received == 0, timeout=30)  # every duplicate consumed
    assert stack.client.read_flow_run(run.id).state.type is StateType.COMPLETED
    assert stack.ledger.read_text().split() == ["hello"]


def test_a_poison_message_goes_to_the_dead_letter_queue_and_its_batch_mates_complete(stack: Stack) -> None:
    stack.queue.send("this is not a flow-run message")
    first = run_deployment("greet/nightly", parameters={"word": "one"}, timeout=0)
    second = run_deployment("greet/nightly", parameters={"word": "two"}, timeout=0)
    dead = _dead_letter(stack)

    def settled() -> bool:
        runs_done = all(stack.client.read_flow_run(r.id).state.is_terminal for r in (first, second))
        return runs_done and len(dead.receive(10, visibility_s=0)) == 1

    stack.drain(until=settled)
    assert sorted(stack.ledger.read_text().split()) == ["one", "two"]
    (parked,) = dead.receive(10, visibility_s=0)
    assert parked.body == "this is not a flow-run message"


def _dead_letter(stack: Stack) -> Any:
    """The runs queue's dead-letter queue: the local queue's own, or SQS's ``NAME-dlq``."""
    local = getattr(stack.queue, "dead_letter", None)
    if local is not None:
        return local
    name, query = stack.queue_url.split("?", 1)
    return open_queue(f"{name}-dlq?{query}")
