"""The local process pool invoker: handlers run in warm worker processes, like Lambda sandboxes.

Each worker runs one invocation at a time and stays warm for the next (handler modules are
imported once per worker, as on a warm Lambda). The parent supervises each call itself, with a
``Pipe`` and the process's sentinel, instead of ``concurrent.futures.ProcessPoolExecutor``,
which marks the whole pool broken when one worker dies: here a worker that runs past its
timeout is killed, one that dies is reaped, the caller gets a typed error, and a fresh worker
takes the free slot on the next call.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import uuid
from collections.abc import Mapping
from itertools import count
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from typing import Any

from overcast.adapters.invokers._handlers import (
    MAX_SYNC_PAYLOAD,
    Outcome,
    encode_payload,
    exit_reason,
    lookup_handler,
    run_handler,
    unwrap,
)
from overcast.adapters.invokers._local import LocalFunctions
from overcast.core.errors import (
    BackendError,
    ConfigurationError,
    FunctionCrashedError,
    InvocationTimeoutError,
)

BOOT_TIMEOUT_S = 60.0
"""How long a new worker may take to start its interpreter (not counted in any invocation's timeout)."""


def _worker_main(conn: Connection, sys_path: list[str]) -> None:
    """A worker's loop: run one request at a time until told to stop or the parent is gone."""
    # Whatever the start method, find handler modules where the parent finds them (paths it
    # added at run time included: tests, plugins, a project directory).
    sys.path[:] = sys_path
    # Ctrl-C reaches the whole process group; the parent decides what to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        function, handler, event_json, timeout_s, request_id, limit = request
        outcome = run_handler(
            function, handler, event_json, timeout_s=timeout_s, request_id=request_id, max_result_bytes=limit
        )
        conn.send(outcome)


class _Worker:
    """One worker process and the parent's end of its pipe; used by one thread at a time."""

    def __init__(self, context: BaseContext, name: str) -> None:
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(  # type: ignore[attr-defined]
            target=_worker_main, args=(child_conn, list(sys.path)), name=name, daemon=True
        )
        try:
            self.process.start()
        except OSError as exc:
            raise BackendError(f"cannot start a worker process: {exc}") from exc
        finally:
            # Only the child may hold its end, so that our reads see EOF once it is dead.
            child_conn.close()

    @property
    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def wait_ready(self, function: str) -> None:
        """Wait for the worker's greeting; raise ``FunctionCrashedError`` if it never comes."""
        if not wait([self.conn, self.process.sentinel], BOOT_TIMEOUT_S):
            self.kill()
            raise FunctionCrashedError(function, None, f"worker did not start within {BOOT_TIMEOUT_S:.0f} s")
        try:
            self.conn.recv()
        except (EOFError, OSError):
            raise self._crashed(function, "worker died while starting") from None

    def call(self, function: str, request: tuple[Any, ...], timeout_s: float) -> Outcome:
        """Send one request and wait for its outcome, its timeout, or the worker's death."""
        try:
            self.conn.send(request)
        except OSError:
            raise self._crashed(function) from None
        ready = wait([self.conn, self.process.sentinel], timeout_s)
        if not ready:
            self.kill()
            raise InvocationTimeoutError(function, timeout_s)
        if self.conn in ready:
            try:
                return self.conn.recv()  # type: ignore[no-any-return,unused-ignore]
            except (EOFError, OSError):
                pass  # the pipe closed because the worker died
        raise self._crashed(function)

    def _crashed(self, function: str, detail: str = "") -> FunctionCrashedError:
        self.process.join(timeout=5)  # reap it, so that its exit code is known
        code = self.process.exitcode
        return FunctionCrashedError(function, code, detail or exit_reason(code))

    def stop(self) -> None:
        """Ask an idle worker to exit, killing it if it does not."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=1)
        self.kill()

    def kill(self) -> None:
        """Kill the process if it still runs, reap it and close the pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class LocalProcessInvoker(LocalFunctions):
    """Runs handlers in a pool of warm worker processes, with timeouts and crash containment.

    At most ``max_workers`` invocations run at once; further callers wait for a free worker.
    Safe to use from many threads. Workers are daemon processes, so a handler cannot start
    processes of its own.

    Args:
        functions: function name to handler path (``module:attr`` or ``module.attr``); an
            unregistered name that contains ``:`` is taken as a handler path itself.
        max_workers: the most worker processes (and concurrent invocations).
        timeout_s: the default per-invocation timeout; ``register`` can set one per function.
        start_method: the multiprocessing start method; ``spawn`` starts clean interpreters,
            as Lambda does, and is safe with threads.
    """

    def __init__(
        self,
        functions: Mapping[str, str] | None = None,
        *,
        max_workers: int = 4,
        timeout_s: float = 900,
        start_method: str = "spawn",
    ) -> None:
        if max_workers < 1:
            raise ConfigurationError(f"max_workers must be at least 1, not {max_workers}")
        super().__init__(functions, timeout_s=timeout_s, threads=max_workers, thread_name="overcast-events")
        self.max_workers = max_workers
        self._context = multiprocessing.get_context(start_method)
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []  # a stack: the most recently used worker is the warmest
        self._workers: set[_Worker] = set()
        self._starting = 0
        self._closed = False
        self._names = count(1)

    def invoke(self, function: str, payload: Any, *, wait: bool = True, request_id: str | None = None) -> Any:
        """Invoke ``function`` with ``payload`` in a worker process (see ``overcast.core.ports.Invoker``).

        Args:
            function: a registered name, or a ``module:attr`` handler path.
            payload: a JSON value, the handler's event.
            wait: return the result; ``False`` queues the call on a background thread and returns ``None``.
            request_id: the context's ``aws_request_id`` (a fresh UUID when omitted).

        Returns:
            The handler's result after a JSON round trip, or ``None`` when ``wait`` is false.

        Raises:
            FunctionNotFoundError: no such function, or its handler cannot be imported.
            FunctionError: the handler raised (also when its result is not JSON).
            InvocationTimeoutError: the handler ran past its timeout; its worker was killed.
            FunctionCrashedError: the worker died (exit, signal, segfault); it is replaced.
            InvalidValueError: the payload is not JSON or is over Lambda's size limit.
            BackendError: the invoker is closed, or no worker process could be started.
        """
        handler = lookup_handler(self.functions, function)
        event_json = encode_payload(function, payload, wait=wait)
        request_id = request_id or str(uuid.uuid4())
        request = (function, handler, event_json, self.timeout_for(function), request_id)
        if not wait:
            self._background.submit(function, request_id, lambda: self._call(function, (*request, None)))
            return None
        return self._call(function, (*request, MAX_SYNC_PAYLOAD))

    def _call(self, function: str, request: tuple[Any, ...]) -> Any:
        worker = self._acquire(function)
        healthy = False
        try:
            outcome = worker.call(function, request, timeout_s=request[3])
            healthy = True
        except FunctionCrashedError as exc:
            if self._closed:
                raise BackendError("the invoker was closed during the invocation") from exc
            raise
        finally:
            self._release(worker, healthy)
        return unwrap(function, outcome)

    def _acquire(self, function: str) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise BackendError("the LocalProcessInvoker is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive:
                        return worker
                    self._workers.discard(worker)  # died while idle (OOM killer, a stray kill)
                    worker.kill()
                if len(self._workers) + self._starting < self.max_workers:
                    self._starting += 1
                    name = f"overcast-worker-{next(self._names)}"
                    break
                self._cond.wait()
        # Start the interpreter outside the lock: it takes a while, and other callers may
        # meanwhile take workers that come free.
        fresh: _Worker | None = None
        try:
            fresh = _Worker(self._context, name)
            fresh.wait_ready(function)
        except BaseException:
            if fresh is not None:
                fresh.kill()
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            closed = self._closed
            if not closed:
                self._workers.add(fresh)
        if closed:
            fresh.kill()
            raise BackendError("the LocalProcessInvoker is closed")
        return fresh

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            keep = healthy and not self._closed
            if keep:
                self._idle.append(worker)
            else:
                self._workers.discard(worker)
            self._cond.notify()
        if not keep:
            worker.kill()

    def close(self) -> None:
        """Stop every worker and drop queued ``wait=False`` invocations (``drain`` first to keep them).

        Invocations still running end with ``BackendError``. Idempotent.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, busy = list(self._idle), self._workers - set(self._idle)
            self._idle.clear()
            self._workers.clear()
            self._cond.notify_all()
        self._background.shutdown()
        for worker in idle:
            worker.stop()
        for worker in busy:
            # Only the signal: the thread that owns the worker reaps it and closes its pipe.
            worker.process.kill()

    def __enter__(self) -> LocalProcessInvoker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
