"""A write-behind buffer: bookkeeping leaves the caller's thread in O(1) and reaches a sink in batches.

The engine ``put()``s task-run states, logs and events here and never waits on their I/O
(DESIGN §5). One daemon thread per buffer hands them to a ``sink`` in batches: a batch goes when
``batch_size`` items are pending, when the oldest has waited ``max_age_s``, or on ``flush()`` and
``close()``.

Contracts:

- Nothing is dropped or reordered: the sink sees every item once, in ``put()`` order. A sink that
  raises gets the same batch again after a backoff; meanwhile the buffer fills and ``put()``
  blocks once ``capacity`` items are pending.
- ``flush()`` returns once every item put before the call has been sunk.
- At interpreter exit every live buffer is flushed, waiting at most ``EXIT_FLUSH_TIMEOUT_S`` in
  all. A buffer nobody references any more drains what it holds and stops its thread.
- After ``os.fork()`` the child's buffers start empty, with their own lock and thread: items
  pending in the parent at fork time are the parent's to deliver.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

logger = logging.getLogger("overcast.writebehind")

#: How long interpreter exit waits, across all buffers, for pending items to reach their sinks.
EXIT_FLUSH_TIMEOUT_S = 5.0

# States, not WriteBehinds: a state kept alive only by its draining thread must still be flushed
# at exit. Weak, so that registering never keeps a buffer alive, and module-level because
# os.register_at_fork hooks can never be removed.
_LIVE: weakref.WeakSet[_State[Any]] = weakref.WeakSet()


class _State(Generic[T]):
    """What the drainer thread works on. It holds no reference to the ``WriteBehind`` it serves,
    so a buffer its owner dropped can be collected while the thread finishes delivering."""

    def __init__(
        self,
        sink: Callable[[list[T]], None],
        capacity: int,
        batch_size: int,
        max_age_s: float,
        name: str,
        retry_backoff_s: tuple[float, float],
    ) -> None:
        self.sink = sink
        self.capacity = capacity
        self.batch_size = min(batch_size, capacity)  # a larger batch could never fill
        self.max_age_s = max_age_s
        self.name = name
        self.retry_backoff_s = retry_backoff_s
        self.sunk = 0
        self.failures = 0
        self.closed = False
        self.reset()

    def reset(self) -> None:
        """(Re)create the synchronisation and forget what is pending: at init and in a forked child,
        where the parent's lock may have been held mid-operation and its thread does not exist."""
        # Re-entrant: a sink, a log handler or a GC finalizer that runs on the drainer thread while
        # it holds the lock must not deadlock on it.
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)  # the drainer waits here for work
        self.progress = threading.Condition(self.lock)  # producers (room) and flushers (sunk) wait here
        self.items: deque[T] = deque()
        self.accepted = self.sunk  # accepted - sunk is what is pending
        self.flush_target = self.sunk
        self.oldest = 0.0
        self.waiting = 0  # producers blocked on back-pressure
        self.thread: threading.Thread | None = None

    def admit(self) -> None:
        """put()'s slow path, lock held: refuse when closed, wait out back-pressure.

        Raises:
            RuntimeError: If the buffer is (or gets) closed.
        """
        if not self.closed and self.accepted - self.sunk >= self.capacity:
            if self.thread is threading.current_thread():
                return  # the sink putting into its own buffer: waiting for itself would deadlock
            self.waiting += 1
            self.wake.notify()  # ship what is pending now rather than when it comes of age
            try:
                while self.accepted - self.sunk >= self.capacity and not self.closed:
                    self.progress.wait()
            finally:
                self.waiting -= 1
        if self.closed:
            raise RuntimeError(f"{self.name}: put() on a closed write-behind buffer")

    def first_pending(self) -> None:
        """The buffer just became non-empty, lock held: start its age, wake (or start) the drainer."""
        # One clock read per batch rather than per item: later items share this start.
        self.oldest = time.monotonic()
        if self.thread is None:
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            try:
                thread.start()
            except BaseException:
                # No thread, no delivery: refuse the item so that the caller knows and the
                # next put() into the (again empty) buffer tries to start one.
                self.items.pop()
                self.accepted -= 1
                raise
            self.thread = thread
        self.wake.notify()

    def flush(self, timeout: float | None) -> bool:
        with self.lock:
            target = self.accepted
            if self.sunk >= target:
                return True
            if self.thread is threading.current_thread():
                return False  # called from the sink: the drainer cannot wait for itself
            if target > self.flush_target:
                self.flush_target = target
                self.wake.notify()
            return self.progress.wait_for(lambda: self.sunk >= target, timeout)

    def close(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            self.closed = True
            self.wake.notify()
            self.progress.notify_all()  # producers blocked on back-pressure give up
            thread = self.thread
        drained = self.flush(timeout)
        if thread is None or thread is threading.current_thread():
            return drained
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return drained and not thread.is_alive()

    def _run(self) -> None:
        while True:
            with self.lock:
                batch = self._take()
            if batch is None:
                return
            self._deliver(batch)  # outside the lock: put() goes on while the sink does I/O
            with self.lock:
                self.sunk += len(batch)
                self.progress.notify_all()

    def _take(self) -> list[T] | None:
        """Wait for a batch to be due and remove it; None once closed and empty. Lock held."""
        items = self.items
        while True:
            n = len(items)
            if not n:
                if self.closed:
                    return None
                self.wake.wait()
            elif n >= self.batch_size or self.closed or self.waiting or self.flush_target > self.sunk:
                break
            else:
                due = self.oldest + self.max_age_s - time.monotonic()
                if due <= 0:
                    break
                self.wake.wait(due)
        if n <= self.batch_size:
            batch = list(items)
            items.clear()
        else:
            # The rest keep the old timestamp: they are younger than it, so they may go early but
            # never late.
            batch = [items.popleft() for _ in range(self.batch_size)]
        return batch

    def _deliver(self, batch: list[T]) -> None:
        """Hand ``batch`` to the sink until it takes it: retrying in place keeps order and loses nothing."""
        attempt = 0
        while True:
            try:
                self.sink(batch)
            except Exception:
                attempt += 1
                self.failures += 1  # only this thread writes it
                if attempt == 1:
                    logger.warning(
                        "%s: sink failed on a batch of %d; retrying", self.name, len(batch), exc_info=True
                    )
                base, cap = self.retry_backoff_s
                delay = min(cap, base * 2 ** min(attempt - 1, 32))
                # Jitter keeps many processes from retrying a recovering backend in lockstep.
                time.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - not for security
                continue
            if attempt:
                logger.warning("%s: sink recovered after %d failed attempts", self.name, attempt)
            return


class WriteBehind(Generic[T]):
    """A bounded FIFO that a background thread drains into ``sink`` in batches.

    Args:
        sink: Called on the drainer thread with each batch (a list, oldest first). It must not
            keep or mutate the list across a raise: the same list is retried.
        capacity: Pending items (queued or being sunk) beyond which ``put()`` blocks.
        batch_size: Items per batch at most; a full batch is sent at once.
        max_age_s: Longest an item waits for its batch to fill (it may go earlier under load).
        name: The drainer thread's name, also used in log messages.
        retry_backoff_s: ``(first, cap)`` delay in seconds between retries of a failed batch,
            doubling from ``first`` up to ``cap``, each scaled by a random 0.5-1.0.

    Raises:
        ValueError: If ``capacity`` or ``batch_size`` is below 1 or ``max_age_s`` is negative.
    """

    __slots__ = ("__weakref__", "_state")

    def __init__(
        self,
        sink: Callable[[list[T]], None],
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        max_age_s: float = 0.25,
        name: str = "overcast-writebehind",
        retry_backoff_s: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        if capacity < 1 or batch_size < 1 or max_age_s < 0:
            raise ValueError("capacity and batch_size must be at least 1 and max_age_s not negative")
        self._state: _State[T] = _State(sink, capacity, batch_size, max_age_s, name, retry_backoff_s)
        _LIVE.add(self._state)
        # Dropped without close(): deliver what is pending in the background, then let the thread end.
        weakref.finalize(self, self._state.close, 0.0).atexit = False

    def put(self, item: T) -> None:
        """Queue ``item`` for the sink, waiting only while ``capacity`` items are pending.

        Args:
            item: Handed to the sink as is, in a later batch; starts the drainer thread on first use.

        Raises:
            RuntimeError: If the buffer is closed (or is closed while this call waits for room).
        """
        state = self._state
        lock = state.lock
        lock.acquire()  # cheaper than `with` on this hot path
        try:
            if state.closed or state.accepted - state.sunk >= state.capacity:
                state.admit()
            items = state.items
            items.append(item)
            state.accepted += 1
            # Wake the drainer only when it may be parked with nothing to do or a batch has just
            # filled: otherwise it is busy or already timed to wake for the age, and a notify per
            # put would cost more than the rest of put() together.
            n = len(items)
            if n == 1:
                state.first_pending()
            elif n == state.batch_size:
                state.wake.notify()
        finally:
            lock.release()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item put before this call has been sunk. Safe from any thread.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            True when they all have; False on timeout, or when called from the sink itself.
        """
        return self._state.flush(timeout)

    def close(self, timeout: float | None = 5.0) -> bool:
        """Refuse further puts, flush, and stop the drainer thread. Idempotent.

        A ``put()`` waiting for room when the buffer closes raises. If the sink keeps failing past
        ``timeout``, the thread keeps retrying in the background: items are never dropped.

        Args:
            timeout: Seconds to wait for the flush and the thread at most; None waits as long as it takes.

        Returns:
            True when everything was sunk and the thread has stopped within ``timeout``.
        """
        return self._state.close(timeout)

    @property
    def pending(self) -> int:
        """Items accepted but not yet sunk (including a batch the sink is working on)."""
        state = self._state
        sunk = state.sunk  # read before `accepted`, so that a concurrent delivery cannot make it negative
        return state.accepted - sunk

    @property
    def sunk(self) -> int:
        """Items delivered to the sink, in total."""
        return self._state.sunk

    @property
    def failures(self) -> int:
        """Sink calls that raised, in total."""
        return self._state.failures


def _flush_at_exit() -> None:
    deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT_S
    for state in list(_LIVE):
        if not state.flush(max(0.0, deadline - time.monotonic())):
            logger.warning("%s: %d items not delivered at exit", state.name, state.accepted - state.sunk)


def _reset_in_child() -> None:
    for state in list(_LIVE):
        state.reset()


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
