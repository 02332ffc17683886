"""Run a block with a time limit, in the main thread or any other.

On the main thread a POSIX interval timer's signal interrupts even a blocking call; on other
threads a watchdog raises the timeout in the running thread at its next bytecode (a blocking
C call finishes first, then the exception lands). Costs nothing when no limit is set.
"""

from __future__ import annotations

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


@contextmanager
def _watchdog(seconds: float, message: str) -> Iterator[None]:
    target = threading.get_ident()
    done = threading.Event()
    lock = threading.Lock()
    # The exception is raised by class (CPython instantiates it in the target thread), so the
    # message rides on a subclass made for this limit.
    error = type("RunTimeoutError", (_AsyncTimeoutError,), {"message": message})

    def expire() -> None:
        if done.wait(seconds):
            return
        with lock:
            if not done.is_set():
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(error))

    watchdog = threading.Thread(target=expire, name="overcast-timeout", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            done.set()
