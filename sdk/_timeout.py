"""Stop a block from another thread: when it runs past a time limit, or on demand.

On the main thread a POSIX interval timer's signal interrupts even a blocking call; on other
threads a watchdog raises the timeout in the running thread at its next bytecode (a blocking
C call finishes first, then the exception lands). Costs nothing when no limit is set.

An ``Interrupter`` stops a block on demand (a cancelled flow run): the thread running it gets
an exception at its next bytecode, as from the watchdog; an ``AsyncInterrupter`` cancels the
asyncio task running it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RunTimeoutError(TimeoutError):
    """Raised inside a flow or task that ran past its ``timeout_seconds``."""


@contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise ``RunTimeoutError`` in the block if it runs longer than ``seconds``."""
    if seconds is None:
        yield
        return
    message = f"{what} exceeded its timeout of {seconds:g} seconds"
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _itimer(seconds, message):
            yield
        return
    with _watchdog(seconds, message):
        yield


@contextmanager
def _itimer(seconds: float, message: str) -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise RunTimeoutError(message)

    previous = signal.signal(signal.SIGALRM, expire)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay:  # an outer limit was running: give it back what is left of it
            signal.setitimer(signal.ITIMER_REAL, old_delay, old_interval)


class _AsyncTimeoutError(RunTimeoutError):
    message = ""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or (self.message,)))


def _raise_in_thread(thread_id: int, error: type[BaseException] | None) -> None:
    # CPython instantiates the class (without arguments) in the target thread, at its next
    # bytecode; ``None`` takes back an exception sent that has not landed yet.
    exception = ctypes.py_object(error) if error is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exception)


@contextmanager
def _watchdog(seconds: float, message: str) -> Iterator[None]:
    target = threading.get_ident()
    done = threading.Event()
    lock = threading.Lock()
    # The exception is raised by class, so the message rides on a subclass made for this limit.
    error = type("RunTimeoutError", (_AsyncTimeoutError,), {"message": message})

    def expire() -> None:
        if done.wait(seconds):
            return
        with lock:
            if not done.is_set():
                _raise_in_thread(target, error)

    watchdog = threading.Thread(target=expire, name="overcast-timeout", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            done.set()


class FlowRunInterrupt(BaseException):
    """Raised inside a sync flow's code, in its thread, when its run is cancelled.

    A ``BaseException`` (as ``KeyboardInterrupt``), so ``except Exception`` in the flow does not
    swallow it; the flow call itself raises ``FlowRunCancelledError``.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("the flow run was cancelled",)))


class Interrupter:
    """Raise ``error`` in the thread running a ``with`` block, when another thread asks, once.

    ``interrupt`` may come before the block (it then raises on entry), during it (the exception
    lands at the thread's next bytecode: a blocking C call finishes first; if the block ends
    before it landed, it is raised on leaving), or after it (nothing happens; ``interrupted``
    still tells). The exception never lands outside the block.

    Args:
        error: the exception class, instantiated without arguments in the interrupted thread.
    """

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error
        self.interrupted = False
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._sent = False

    def __enter__(self) -> None:
        with self._lock:
            if self.interrupted:
                raise self.error()
            self._thread = threading.get_ident()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if self._sent and thread is not None:
            # Take back an exception sent but not landed yet, so it cannot land past the block;
            # a block that ended normally raises it here instead.
            _raise_in_thread(thread, None)
            if exc_type is None:
                raise self.error()

    def interrupt(self) -> None:
        """Stop the block (from any thread); a second call does nothing."""
        with self._lock:
            if self.interrupted:
                return
            self.interrupted = True
            if self._thread is not None:
                self._sent = True
                _raise_in_thread(self._thread, self.error)


class AsyncInterrupter:
    """Cancel the asyncio task running a ``with`` block (in a coroutine) when another thread asks, once.

    The block sees ``asyncio.CancelledError`` at the await it is suspended in; leaving the
    block takes the cancellation back from the task (``Task.uncancel``), so the code around it
    goes on as usual. Before the block, ``interrupt`` makes it raise on entry; after, nothing.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._lock = threading.Lock()
        self._task: asyncio.Task[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sent = False

    def __enter__(self) -> None:
        with self._lock:
            if self.interrupted:
                raise asyncio.CancelledError("the run was cancelled")
            self._task = asyncio.current_task()
            self._loop = asyncio.get_running_loop()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            task, self._task = self._task, None
        if self._sent and task is not None:
            task.uncancel()

    def interrupt(self) -> None:
        """Cancel the block's task (from any thread); a second call does nothing."""
        with self._lock:
            if self.interrupted:
                return
            self.interrupted = True
            loop = self._loop if self._task is not None else None
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the block is over
                loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        # On the loop's thread: the block is either suspended in an await, or over.
        with self._lock:
            task = self._task
        if task is not None:
            self._sent = True
            task.cancel("the run was cancelled")
