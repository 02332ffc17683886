"""WriteBehind: batches reach the sink in order, on time and exactly once, through sink failures,
back-pressure, interpreter exit and fork."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from overcast._writebehind import WriteBehind


class Recorder:
    """A sink that keeps every batch it is given (only the drainer thread calls it)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.count = 0

    def __call__(self, batch: list[Any]) -> None:
        self.batches.append(list(batch))
        self.count += len(batch)

    @property
    def items(self) -> list[Any]:
        return [item for batch in self.batches for item in batch]


def file_sink(path: Path) -> Callable[[list[Any]], None]:
    """A sink that appends one line per item to ``path`` (visible across processes)."""

    def sink(batch: list[Any]) -> None:
        with path.open("a") as f:
            f.write("".join(f"{item}\n" for item in batch))

    return sink


def thread_named(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


@pytest.fixture
def make() -> Iterator[Callable[..., WriteBehind[Any]]]:
    """Build buffers that are closed after the test, so no drainer outlives it."""
    made: list[WriteBehind[Any]] = []

    def factory(sink: Callable[[list[Any]], None], **kwargs: Any) -> WriteBehind[Any]:
        buffer: WriteBehind[Any] = WriteBehind(sink, **kwargs)
        made.append(buffer)
        return buffer

    yield factory
    for buffer in made:
        buffer.close(timeout=5)


def test_items_reach_the_sink_in_put_order_across_many_batches(make: Callable[..., WriteBehind[Any]]) -> None:
    sink = Recorder()
    buffer = make(sink, batch_size=64)
    for i in range(10_000):
        buffer.put(i)
    assert buffer.flush(timeout=5)
    assert sink.items == list(range(10_000))
    assert len(sink.batches) >= 10_000 // 64
    assert (buffer.sunk, buffer.pending, buffer.failures) == (10_000, 0, 0)


def test_concurrent_producers_each_keep_their_order(make: Callable[..., WriteBehind[Any]]) -> None:
    sink = Recorder()
    buffer = make(sink, batch_size=50, capacity=200)
    producers = [
        threading.Thread(target=lambda p=p: [buffer.put((p, i)) for i in range(2_000)]) for p in range(4)
    ]
    for t in producers:
        t.start()
    for t in producers:
        t.join(10)
    assert buffer.flush(timeout=5)
    for p in range(4):
        assert [i for q, i in sink.items if q == p] == list(range(2_000))


def test_batches_hold_at_most_batch_size_items(make: Callable[..., WriteBehind[Any]]) -> None:
    sink = Recorder()
    buffer = make(sink, batch_size=7, max_age_s=60)
    for i in range(50):
        buffer.put(i)
    assert buffer.flush(timeout=5)
    # full batches as they fill, then the remainder the flush asked for
    assert [len(b) for b in sink.batches] == [7] * 7 + [1]


def test_a_partial_batch_goes_once_it_is_max_age_old_without_a_flush(
    make: Callable[..., WriteBehind[Any]],
) -> None:
    sink = Recorder()
    buffer = make(sink, batch_size=1_000, max_age_s=0.05)
    for i in range(3):
        buffer.put(i)
    wait_until(lambda: sink.items == [0, 1, 2])


def test_flush_on_an_empty_buffer_returns_at_once_and_starts_no_thread(
    make: Callable[..., WriteBehind[Any]],
) -> None:
    buffer = make(Recorder(), name="wb-empty")
    assert buffer.flush(timeout=0)
    assert not thread_named("wb-empty")


def test_flush_sends_a_partial_batch_and_waits_for_the_sink(make: Callable[..., WriteBehind[Any]]) -> None:
    entered, gate, sunk = threading.Event(), threading.Event(), []

    def sink(batch: list[int]) -> None:
        entered.set()
        assert gate.wait(10)
        sunk.extend(batch)

    buffer = make(sink, batch_size=1_000, max_age_s=60)
    for i in range(5):
        buffer.put(i)
    flushed: list[bool] = []
    flusher = threading.Thread(target=lambda: flushed.append(buffer.flush(timeout=10)))
    flusher.start()
    try:
        wait_until(entered.is_set)  # shipped on the flush, long before max_age_s
        assert flushed == []  # the sink holds the batch, so flush() is still waiting
    finally:
        gate.set()
    flusher.join(10)
    assert flushed == [True]
    assert sunk == [0, 1, 2, 3, 4]


def test_flush_waits_for_earlier_items_only_while_others_keep_putting(
    make: Callable[..., WriteBehind[Any]],
) -> None:
    sink = Recorder()
    buffer = make(sink, batch_size=50, max_age_s=60)
    stop, produced = threading.Event(), [0]

    def produce() -> None:
        while not stop.is_set():
            buffer.put(produced[0])
            produced[0] += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: produced[0] > 100)
        for _ in range(20):
            before = produced[0]  # items 0..before-1 were all put before this flush()
            assert buffer.flush(timeout=5)  # a producer that never stops does not keep it waiting
            assert sink.count >= before
    finally:
        stop.set()
        producer.join(10)
    assert buffer.flush(timeout=5)
    assert sink.items == list(range(produced[0]))


def test_put_blocks_while_capacity_items_are_pending(make: Callable[..., WriteBehind[Any]]) -> None:
    gate, sunk = threading.Event(), []

    def sink(batch: list[int]) -> None:
        assert gate.wait(10)
        sunk.extend(batch)

    buffer = make(sink, capacity=10, max_age_s=60)
    done: list[int] = []

    def produce() -> None:
        for i in range(11):
            buffer.put(i)
            done.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: len(done) == 10)
        # the 11th put() has parked on back-pressure (not merely slow): only the sink can free it
        wait_until(lambda: buffer._state.waiting == 1)
        assert len(done) == 10
        assert buffer.pending == 10
    finally:
        gate.set()
    producer.join(10)
    assert done == list(range(11))
    assert buffer.flush(timeout=5)
    assert sunk == list(range(11))


def test_a_put_waiting_for_room_raises_when_the_buffer_is_closed(
    make: Callable[..., WriteBehind[Any]],
) -> None:
    gate = threading.Event()
    buffer = make(lambda batch: gate.wait(10), capacity=1)
    buffer.put(0)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            buffer.put(1)
        except RuntimeError as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: buffer._state.waiting == 1)
        assert not buffer.close(timeout=0)  # item 0 is still with the sink
        producer.join(10)
        assert len(errors) == 1
    finally:
        gate.set()
    wait_until(lambda: buffer.sunk == 1)


def test_a_failing_sink_is_retried_without_loss_duplication_or_reordering(
    make: Callable[..., WriteBehind[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[list[int]] = []
    sunk: list[int] = []

    def sink(batch: list[int]) -> None:
        calls.append(list(batch))
        if len(calls) in {1, 2, 4}:  # two outages: two failed attempts, then one
            raise OSError("backend unavailable")
        sunk.extend(batch)

    buffer = make(sink, batch_size=10, max_age_s=60, retry_backoff_s=(0.001, 0.004))
    with caplog.at_level(logging.WARNING, logger="overcast.writebehind"):
        for i in range(100):
            buffer.put(i)
        assert buffer.flush(timeout=5)
    assert sunk == list(range(100))
    assert buffer.failures == 3
    assert calls[0] == calls[1] == calls[2]  # the same batch, retried in place
    messages = [r.getMessage() for r in caplog.records if r.name == "overcast.writebehind"]
    assert sum("retrying" in m for m in messages) == 2  # once per outage, not per attempt
    assert sum("recovered" in m for m in messages) == 2


def test_close_flushes_stops_the_thread_and_refuses_puts(make: Callable[..., WriteBehind[Any]]) -> None:
    sink = Recorder()
    buffer = make(sink, max_age_s=60, name="wb-close")
    for i in range(5):
        buffer.put(i)
    assert buffer.close(timeout=5)
    assert sink.items == [0, 1, 2, 3, 4]
    assert not thread_named("wb-close")
    with pytest.raises(RuntimeError):
        buffer.put(5)
    assert buffer.close(timeout=5)  # idempotent


def test_a_dropped_buffer_is_collected_and_still_delivers() -> None:
    sink = Recorder()
    buffer: WriteBehind[int] = WriteBehind(sink, max_age_s=60, name="wb-dropped")
    for i in range(10):
        buffer.put(i)
    ref = weakref.ref(buffer)
    del buffer
    gc.collect()
    assert ref() is None  # neither the drainer nor the exit/fork hooks keep it alive
    wait_until(lambda: sink.items == list(range(10)))
    wait_until(lambda: not thread_named("wb-dropped"))


@pytest.mark.parametrize("ending", ["", "del buffer"], ids=["referenced", "dropped"])
def test_pending_items_are_flushed_at_interpreter_exit(tmp_path: Path, ending: str) -> None:
    out = tmp_path / "sunk.txt"
    code = textwrap.dedent(
        f"""
        import sys
        from overcast._writebehind import WriteBehind

        def sink(batch):
            with open(sys.argv[1], "a") as f:
                f.write("".join(f"{{item}}\\n" for item in batch))

        buffer = WriteBehind(sink, batch_size=7, max_age_s=60)
        for i in range(1000):
            buffer.put(i)
        {ending}
        """
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=30)
    assert out.read_text().splitlines() == [str(i) for i in range(1000)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is posix-only")
def test_a_forked_child_gets_its_own_buffer_and_not_the_parents_items(
    make: Callable[..., WriteBehind[Any]], tmp_path: Path
) -> None:
    out = tmp_path / "sunk.txt"
    parent, entered, gate = os.getpid(), threading.Event(), threading.Event()
    write = file_sink(out)

    def sink(batch: list[str]) -> None:
        if os.getpid() == parent:  # only the parent's deliveries are held back
            entered.set()
            assert gate.wait(10)
        write(batch)

    buffer = make(sink, batch_size=2, max_age_s=60)
    try:
        buffer.put("parent-0")
        buffer.put("parent-1")
        wait_until(entered.is_set)  # parent-0 and parent-1 are with the parent's sink
        buffer.put("parent-2")  # and parent-2 is queued
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads
            pid = os.fork()
        if pid == 0:
            status = 1
            try:
                if buffer.pending == 0:
                    buffer.put("child-0")
                    status = 0 if buffer.flush(timeout=5) and buffer.pending == 0 else 2
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        assert out.read_text().splitlines() == ["child-0"]
    finally:
        gate.set()
    assert buffer.flush(timeout=5)
    assert out.read_text().splitlines() == ["child-0", "parent-0", "parent-1", "parent-2"]
