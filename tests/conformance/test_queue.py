"""The Queue contract, one suite over every backend: an SQLite file, shared memory, and SQS
(standard and FIFO) on moto's server. A few adapter-specific checks follow the suite."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from overcast.adapters.queues import LocalQueue, SqsQueue, create_queue
from overcast.core.errors import BackendError, ConfigurationError
from overcast.core.ports import Message, Queue
from overcast.core.settings import BackendURL


@dataclass
class Backend:
    """A backend under test: ``make(max_receives=N)`` builds a fresh, empty queue."""

    kind: str
    make: Callable[..., Any]
    fifo: bool  # group ordering and deduplication are guaranteed
    moto: bool = False
    poll_s: float = 0  # how long a receive waits before "empty" can be believed

    def __post_init__(self) -> None:
        self.queue: Any = self.make()


@pytest.fixture(
    params=[
        "local",
        "memory",
        pytest.param("sqs", marks=pytest.mark.aws),
        pytest.param("sqs-fifo", marks=pytest.mark.aws),
    ]
)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> Iterator[Backend]:
    made: list[Any] = []
    kind = request.param
    if kind.startswith("sqs"):
        aws = request.getfixturevalue("aws")
        client = aws.client("sqs")
        fifo = kind == "sqs-fifo"

        def make(max_receives: int = 5) -> SqsQueue:
            name = unique(f"q{len(made)}") + (".fifo" if fifo else "")
            queue = SqsQueue(create_queue(client, name, fifo=fifo, max_receives=max_receives), client=client)
            made.append(queue)
            return queue

        yield Backend(kind, make, fifo=fifo, moto=aws.is_moto, poll_s=0 if aws.is_moto else 1)
        if not aws.is_moto:  # leave a real endpoint as it was found
            for queue in made:
                client.delete_queue(QueueUrl=queue.dead_letter.url)
                client.delete_queue(QueueUrl=queue.url)
        return

    def make_local(max_receives: int = 5) -> LocalQueue:
        name = unique(f"q{len(made)}")
        if kind == "memory":
            queue = LocalQueue.in_memory(name, max_receives=max_receives)
        else:
            queue = LocalQueue(tmp_path / "queue.db", name, max_receives=max_receives)
        made.append(queue)
        return queue

    yield Backend(kind, make_local, fifo=True)
    for queue in made:
        queue.close()


def receive_one(queue: Queue, visibility_s: int = 30) -> Message:
    """Wait for one message to become receivable and return it."""
    return wait_until(lambda: queue.receive(visibility_s=visibility_s))[0]


def drain(queue: Queue, poll_s: float, start: Any = None) -> list[str]:
    """Receive one at a time, without acking, until the queue looks empty; return the ids.

    ``start`` (a barrier) lines the receivers up so that they really compete.
    """
    if start is not None:
        start.wait()
    ids: list[str] = []
    while batch := queue.receive(visibility_s=300, wait_s=poll_s):
        ids.extend(message.id for message in batch)
    return ids


@pytest.mark.parametrize(
    "body", ["héllo, wörld ✓ 日本語 🌩 \t\n", "é" * 10_000 + "x" * 180_000], ids=["unicode", "200KB"]
)
def test_send_receive_ack_round_trip(backend: Backend, body: str) -> None:
    queue = backend.queue
    assert isinstance(queue, Queue)
    message_id = queue.send(body)
    message = receive_one(queue)
    assert (message.id, message.body, message.receive_count) == (message_id, body, 1)
    queue.ack(message.receipt)
    assert queue.receive(wait_s=backend.poll_s) == []


def test_unacked_message_is_redelivered_after_its_visibility_timeout(backend: Backend) -> None:
    queue = backend.queue
    queue.send("again")
    first = receive_one(queue, visibility_s=1)
    second = receive_one(queue, visibility_s=60)
    assert (second.id, second.body, second.receive_count) == (first.id, "again", 2)
    assert second.receipt != first.receipt


def test_received_message_is_hidden_until_extended_to_zero(backend: Backend) -> None:
    queue = backend.queue
    queue.send("hidden")
    first = receive_one(queue, visibility_s=60)
    assert queue.receive(wait_s=backend.poll_s) == []
    queue.extend(first.receipt, 0)
    again = receive_one(queue)
    assert (again.id, again.receive_count) == (first.id, 2)


def test_extend_keeps_a_message_hidden_past_its_first_timeout(backend: Backend) -> None:
    queue = backend.queue
    kept_id = queue.send("kept", group="a")
    kept = receive_one(queue, visibility_s=1)
    queue.extend(kept.receipt, 60)
    # A witness received after the extension with the same 1 s timeout: once it is back,
    # the kept message's original timeout has certainly passed too.
    witness_id = queue.send("witness", group="b")
    seen = [m.id for m in wait_until(lambda: queue.receive(visibility_s=1))]
    assert seen == [witness_id]
    seen += [m.id for m in wait_until(lambda: queue.receive(10, visibility_s=60))]
    assert seen == [witness_id, witness_id]
    assert kept_id not in [m.id for m in queue.receive(10, wait_s=backend.poll_s)]


def test_ack_is_idempotent_and_unknown_receipts_do_nothing(backend: Backend) -> None:
    queue = backend.queue
    queue.send("once")
    message = receive_one(queue)
    queue.ack(message.receipt)
    queue.ack(message.receipt)
    queue.ack("not-a-receipt")
    queue.extend("not-a-receipt", 10)
    assert queue.receive(wait_s=backend.poll_s) == []


def test_a_stale_receipt_does_not_touch_the_current_delivery(backend: Backend) -> None:
    if backend.kind.startswith("sqs"):
        pytest.skip("SQS may act on an earlier delivery's receipt (moto deletes with it)")
    queue = backend.queue
    queue.send("twice")
    stale = receive_one(queue, visibility_s=0)
    current = receive_one(queue, visibility_s=60)
    queue.ack(stale.receipt)
    queue.extend(stale.receipt, 0)
    assert queue.receive() == []
    queue.extend(current.receipt, 0)
    assert receive_one(queue).receive_count == 3


def test_delay_hides_a_message_until_it_has_passed(backend: Backend) -> None:
    queue = backend.queue
    if backend.kind == "sqs-fifo":
        with pytest.raises(ValueError, match="FIFO SQS queues have no per-message delay"):
            queue.send("later", delay_s=1)
        return
    message_id = queue.send("later", delay_s=1)
    assert queue.receive() == []
    assert receive_one(queue).id == message_id


def test_receive_returns_at_most_max_messages(backend: Backend) -> None:
    queue = backend.queue
    sent = {queue.send(f"m{i}", group=f"g{i}") for i in range(13)}
    first = wait_until(lambda: queue.receive(3))
    assert 1 <= len(first) <= 3
    received = [m.id for m in first]
    while len(received) < len(sent):
        batch = wait_until(lambda: queue.receive(10))
        assert len(batch) <= 10
        received += [m.id for m in batch]
    assert sorted(received) == sorted(sent)


def test_message_moves_to_the_dead_letter_queue_after_max_receives(backend: Backend) -> None:
    queue = backend.make(max_receives=2)
    message_id = queue.send("poison")
    counts: list[int] = []

    def redeliver_until_dead() -> list[Message]:
        counts.extend(m.receive_count for m in queue.receive(visibility_s=0))
        return queue.dead_letter.receive()

    dead = wait_until(redeliver_until_dead)
    assert counts == [1, 2]
    assert (dead[0].id, dead[0].body) == (message_id, "poison")
    assert queue.receive(wait_s=backend.poll_s) == []


def test_messages_of_a_group_are_delivered_in_order_one_in_flight(backend: Backend) -> None:
    if not backend.fifo:
        pytest.skip("a standard SQS queue does not order messages")
    queue = backend.queue
    for body in ("a1", "a2", "a3"):
        queue.send(body, group="a")
    queue.send("b1", group="b")
    batch = wait_until(lambda: queue.receive(10, visibility_s=60))
    order = {"a": [m.body for m in batch if m.group == "a"], "b": [m.body for m in batch if m.group == "b"]}
    assert order["a"] and order["a"] == ["a1", "a2", "a3"][: len(order["a"])]
    # While part of group a is in flight, nothing later in the group is delivered.
    assert [m for m in queue.receive(10, wait_s=backend.poll_s) if m.group == "a"] == []
    while len(order["a"]) < 3:
        for message in batch:
            queue.ack(message.receipt)
        batch = wait_until(lambda: queue.receive(10, visibility_s=60))
        order["a"] += [m.body for m in batch if m.group == "a"]
    assert order == {"a": ["a1", "a2", "a3"], "b": ["b1"]}


def test_a_repeated_dedup_id_is_dropped(backend: Backend) -> None:
    if not backend.fifo:
        pytest.skip("a standard SQS queue does not deduplicate")
    queue = backend.queue
    first = queue.send("first", dedup_id="order-17")
    second = queue.send("second", dedup_id="order-17")
    if not backend.moto:  # moto answers a duplicate with a fresh id
        assert second == first
    message = receive_one(queue)
    assert (message.id, message.body) == (first, "first")
    queue.ack(message.receipt)
    if not backend.moto:  # moto forgets the dedup id once the message is deleted
        queue.send("third", dedup_id="order-17")
    assert queue.receive(wait_s=backend.poll_s) == []


def test_invalid_arguments_raise_value_errors_before_reaching_the_backend(backend: Backend) -> None:
    queue = backend.queue
    calls: list[tuple[Callable[[], Any], str]] = [
        (lambda: queue.send("x", delay_s=-1), "delay_s must be an integer from 0 to 900"),
        (lambda: queue.send("x", delay_s=901), "delay_s must be an integer from 0 to 900"),
        (lambda: queue.receive(0), "max_messages must be an integer from 1 to 10"),
        (lambda: queue.receive(11), "max_messages must be an integer from 1 to 10"),
        (lambda: queue.receive(visibility_s=-1), "visibility_s must be an integer"),
        (lambda: queue.receive(wait_s=21), "wait_s must be a number from 0 to 20"),
        (lambda: queue.extend("r", 43_201), "visibility_s must be an integer from 0 to 43200"),
        (lambda: queue.send("x", group=""), "group must be 1-128 printable ASCII"),
        (lambda: queue.send("nul \x00"), "message body contains"),
    ]
    for call, message in calls:
        with pytest.raises(ValueError, match=message):
            call()


def test_concurrent_receivers_get_each_message_once(backend: Backend) -> None:
    queue = backend.queue
    sent = {queue.send(f"m{i}", group=f"g{i}") for i in range(40)}
    start = threading.Barrier(4)
    results: list[list[str]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda r=r: r.extend(drain(queue, backend.poll_s, start))) for r in results
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    received = [message_id for ids in results for message_id in ids]
    assert sorted(received) == sorted(sent)


def _drain_file_queue(path: str, name: str, start: Any, results: Any) -> None:
    with LocalQueue(path, name) as queue:
        results.put(drain(queue, 0, start))


def test_local_queue_processes_on_one_file_get_each_message_once(tmp_path: Path) -> None:
    path = str(tmp_path / "queue.db")
    with LocalQueue(path, "shared") as queue:
        sent = {queue.send(f"m{i}") for i in range(40)}
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(3), spawn.Queue()
    workers = [
        spawn.Process(target=_drain_file_queue, args=(path, "shared", start, results)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    received = [message_id for _ in workers for message_id in results.get(timeout=60)]
    for worker in workers:
        worker.join()
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert sorted(received) == sorted(sent)


# Adapter-specific behaviour beyond the port.


def test_local_queues_share_a_file_and_count_purge_and_close(tmp_path: Path) -> None:
    url = BackendURL(f"local://{tmp_path}/q.db?name=jobs&max_receives=3")
    jobs, other = LocalQueue.from_url(url), LocalQueue(tmp_path / "q.db", "other")
    jobs.send("j1")
    jobs.send("j2")
    other.send("o1")
    assert (jobs.approximate_count(), other.approximate_count(), jobs.max_receives) == (2, 1, 3)
    jobs.purge()
    assert (jobs.approximate_count(), other.approximate_count()) == (0, 1)
    assert jobs.dead_letter is not None and jobs.dead_letter.dead_letter is None
    jobs.close()
    with pytest.raises(BackendError, match="closed"):
        jobs.send("late")
    other.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_uses_its_own_connection(tmp_path: Path) -> None:
    with LocalQueue(tmp_path / "q.db", "forked") as queue:
        sent = {queue.send(f"m{i}") for i in range(3)}
        received = [m.id for m in queue.receive()]  # the parent's connection is open at the fork
        fork = multiprocessing.get_context("fork")
        results = fork.Queue()
        child = fork.Process(target=lambda: results.put(drain(queue, 0)))
        child.start()
        received += results.get(timeout=60)
        child.join()
        assert child.exitcode == 0
        assert queue.receive() == []  # the parent's connection still works
    assert sorted(received) == sorted(sent)


def test_memory_queues_of_one_name_share_messages(unique: Callable[[str], str]) -> None:
    name = unique("mem")
    with LocalQueue.from_url(BackendURL(f"memory://{name}")) as writer, LocalQueue.in_memory(name) as reader:
        message_id = writer.send("shared")
        assert receive_one(reader).id == message_id


@pytest.mark.aws
def test_sqs_queue_from_url_resolves_or_says_it_is_missing(aws: Any, unique: Callable[[str], str]) -> None:
    client, name = aws.client("sqs"), unique("jobs")
    with pytest.raises(ConfigurationError, match="does not exist"):
        SqsQueue.from_url(BackendURL(f"sqs://{name}?{aws.query()}"))
    url = create_queue(client, name, max_receives=3)
    assert create_queue(client, name, max_receives=3) == url
    queue = SqsQueue.from_url(BackendURL(f"sqs://{name}?{aws.query()}"))
    assert queue.url == url and queue.dead_letter is not None
    assert queue.dead_letter.dead_letter is None
    queue.close()
    if not aws.is_moto:
        for queue_url in (url, queue.dead_letter.url):
            client.delete_queue(QueueUrl=queue_url)
