"""What the two local invokers (inline and the process pool) share.

``LocalFunctions`` holds the function registry and per-function timeouts; ``BackgroundInvocations``
stands in for Lambda's asynchronous event queue, running ``wait=False`` invocations on threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

logger = logging.getLogger(__name__)


class BackgroundInvocations:
    """Runs ``wait=False`` invocations on a few threads, like Lambda's queue for Event calls.

    Nobody waits for these calls, so a failure is logged and appended to ``failures``.
    """

    def __init__(self, threads: int, name: str) -> None:
        self.failures: list[Exception] = []
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._pending: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def submit(self, function: str, request_id: str, call: Callable[[], Any]) -> None:
        """Queue ``call``, the invocation of ``function`` with request id ``request_id``."""

        def run() -> None:
            started = time.monotonic()
            try:
                call()
            except Exception as exc:
                self.failures.append(exc)
                outcome, level = f"failed: {exc}", logging.WARNING
            else:
                outcome, level = "done", logging.DEBUG
            elapsed_ms = (time.monotonic() - started) * 1000
            logger.log(level, "event %s request=%s %s (%.0f ms)", function, request_id, outcome, elapsed_ms)

        future = self._executor.submit(run)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued invocation has finished; return whether they all did in time."""
        with self._lock:
            pending = set(self._pending)
        _, not_done = wait_futures(pending, timeout=timeout)
        return not not_done

    def shutdown(self) -> None:
        """Drop the invocations that have not started; the running ones finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class LocalFunctions:
    """The registry of a local invoker: function name to handler path, timeouts, Event calls.

    Args:
        functions: function name to handler path (``module:attr`` or ``module.attr``); an
            unregistered name that contains ``:`` is taken as a handler path itself.
        timeout_s: the default per-invocation timeout.
        threads: threads running ``wait=False`` invocations.
        thread_name: their name prefix.
    """

    def __init__(
        self, functions: Mapping[str, str] | None, *, timeout_s: float, threads: int, thread_name: str
    ) -> None:
        self.functions: dict[str, str] = dict(functions or {})
        self.timeout_s = timeout_s
        self._timeouts: dict[str, float] = {}
        self._background = BackgroundInvocations(threads, thread_name)

    @property
    def failures(self) -> list[Exception]:
        """The errors of ``wait=False`` invocations, oldest first."""
        return self._background.failures

    def register(self, name: str, handler: str, *, timeout_s: float | None = None) -> None:
        """Register function ``name`` with its handler path and, optionally, its own timeout."""
        self.functions[name] = handler
        if timeout_s is not None:
            self._timeouts[name] = timeout_s

    def timeout_for(self, function: str) -> float:
        """The timeout of ``function``: its own, or the default."""
        return self._timeouts.get(function, self.timeout_s)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for pending ``wait=False`` invocations; return whether all finished within ``timeout``."""
        return self._background.drain(timeout)
