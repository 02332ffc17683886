"""Where ``submit`` and ``map`` run task runs: a thread pool by default.

A task runner is used by one flow run at a time (each run gets a ``duplicate()``), started
when the flow starts and shut down, after waiting for its task runs, when it ends.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

R = TypeVar("R")


class TaskRunner:
    """Runs submitted calls; the base of every task runner."""

    def duplicate(self) -> TaskRunner:
        """A fresh, unstarted runner with the same settings (one per flow run)."""
        raise NotImplementedError

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, call: Callable[[], R]) -> Future[R]:
        """Run ``call`` and return its future."""
        raise NotImplementedError


class ThreadPoolTaskRunner(TaskRunner):
    """Runs task runs on threads of this process (the default).

    Each task run keeps the submitter's context (flow run, tags, logger), as a direct call does.

    Args:
        max_workers: the most task runs at once; default ``min(64, 4 * cpus)``. A task that
            submits tasks and waits for them holds a thread meanwhile, so deep nesting needs room.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or min(64, 4 * (os.cpu_count() or 1))
        self._executor: ThreadPoolExecutor | None = None

    def duplicate(self) -> ThreadPoolTaskRunner:
        """A fresh runner with the same ``max_workers``."""
        return ThreadPoolTaskRunner(self.max_workers)

    def __enter__(self) -> ThreadPoolTaskRunner:
        self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="overcast-task")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def submit(self, call: Callable[[], R]) -> Future[R]:
        """Run ``call`` on a pool thread, in a copy of the caller's context."""
        if self._executor is None:
            raise RuntimeError("the task runner is not started: submit inside a flow run")
        context = contextvars.copy_context()
        return self._executor.submit(context.run, call)

    def __repr__(self) -> str:
        return f"ThreadPoolTaskRunner(max_workers={self.max_workers})"
