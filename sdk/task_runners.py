"""Where ``submit`` and ``map`` run task runs: threads of this process, or worker processes.

A task runner is used by one flow run at a time (each run gets a ``duplicate()``), started
when the flow starts and shut down, after waiting for its task runs, when it ends. When the
flow run is cancelled, ``cancel_all`` drops its task runs not started yet, and the shutdown
does not wait for those still running (they are abandoned).
"""

from __future__ import annotations

import contextvars
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overcast._task_engine import SubmittedRun


class TaskRunner:
    """Runs submitted task runs; the base of every task runner."""

    def duplicate(self) -> TaskRunner:
        """A fresh, unstarted runner with the same settings (one per flow run)."""
        raise NotImplementedError

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, run: SubmittedRun) -> Future[Any]:
        """Run ``run`` and return its future."""
        raise NotImplementedError

    def cancel_all(self) -> None:
        """Cancel the task runs not started yet; the runner's exit then does not wait for the others.

        The engine calls it when the flow run is cancelled. The base runner has nothing to cancel.
        """


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

    def cancel_all(self) -> None:
        """Cancel the task runs waiting for a thread; leave those running to finish on their own."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def submit(self, run: SubmittedRun) -> Future[Any]:
        """Run the task on a pool thread, in a copy of the submitter's context."""
        if self._executor is None:
            raise RuntimeError("the task runner is not started: submit inside a flow run")
        context = contextvars.copy_context()
        return self._executor.submit(context.run, run.run_here)

    def __repr__(self) -> str:
        return f"ThreadPoolTaskRunner(max_workers={self.max_workers})"


class ProcessPoolTaskRunner(TaskRunner):
    """Runs task runs in worker processes: CPU-bound tasks use every core.

    The task and its inputs travel by cloudpickle (so closures and lambdas work), the result
    comes back by pickle. Futures among the inputs are resolved in this process first. The
    worker records the task run's states, and those of any task it calls, with its logs; this
    process reports them through its own client, so process workers need no configuration
    and work with any client, the in-memory test harness included.

    Inside a task run in a worker, tasks can be called directly but not submitted, and flows
    cannot be called.

    Args:
        max_workers: worker processes; default the number of CPUs.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or (os.cpu_count() or 1)
        self._processes: ProcessPoolExecutor | None = None
        self._dispatch: ThreadPoolExecutor | None = None

    def duplicate(self) -> ProcessPoolTaskRunner:
        """A fresh runner with the same ``max_workers``."""
        return ProcessPoolTaskRunner(self.max_workers)

    def __enter__(self) -> ProcessPoolTaskRunner:
        # spawn: a forked child would inherit the reporter's thread and open connections mid-use
        self._processes = ProcessPoolExecutor(
            self.max_workers, mp_context=multiprocessing.get_context("spawn")
        )
        # one dispatcher thread per task run waits for its inputs, then for its worker
        self._dispatch = ThreadPoolExecutor(64, thread_name_prefix="overcast-dispatch")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dispatch is not None:
            self._dispatch.shutdown(wait=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True)
        self._dispatch = self._processes = None

    def cancel_all(self) -> None:
        """Cancel the task runs not sent to a worker yet; leave those running to finish on their own."""
        if self._dispatch is not None:
            self._dispatch.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
        self._dispatch = self._processes = None

    def submit(self, run: SubmittedRun) -> Future[Any]:
        """Send the task run to a worker process; return its future at once."""
        if self._dispatch is None or self._processes is None:
            raise RuntimeError("the task runner is not started: submit inside a flow run")
        processes = self._processes
        return self._dispatch.submit(_dispatch, run, processes)

    def __repr__(self) -> str:
        return f"ProcessPoolTaskRunner(max_workers={self.max_workers})"


def _dispatch(run: SubmittedRun, processes: ProcessPoolExecutor) -> Any:
    from overcast import _process_worker

    outcome = processes.submit(_process_worker.run, _payload(run)).result()
    return _process_worker.settle(run, outcome)


class DaskTaskRunner(TaskRunner):
    """Runs task runs on a Dask cluster (``pip install overcast[dask]``): for flows that outgrow one machine.

    Each task run travels to a Dask worker as it would to a process-pool worker (cloudpickled
    task and inputs, futures resolved here first), and its task runs and logs come back to be
    reported through this process's client. With no address, a temporary local cluster is
    started for the flow run and stopped after it.

    Args:
        address: the scheduler of an existing cluster (``tcp://host:8786``).
        cluster_kwargs: for the temporary ``LocalCluster`` (e.g. ``n_workers``,
            ``processes=False`` for threads in this process).
        client_kwargs: for ``distributed.Client``.
    """

    def __init__(
        self,
        address: str | None = None,
        cluster_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.client_kwargs = dict(client_kwargs or {})
        self._cluster: Any = None
        self._client: Any = None
        self._dispatch: ThreadPoolExecutor | None = None

    def duplicate(self) -> DaskTaskRunner:
        """A fresh runner with the same settings."""
        return DaskTaskRunner(self.address, self.cluster_kwargs, self.client_kwargs)

    def __enter__(self) -> DaskTaskRunner:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise RuntimeError(
                "DaskTaskRunner needs dask's distributed: pip install 'overcast[dask]'"
            ) from exc
        if self.address is None:
            self._cluster = LocalCluster(**{"dashboard_address": None, **self.cluster_kwargs})
            self._client = Client(self._cluster, **self.client_kwargs)
        else:
            self._client = Client(self.address, **self.client_kwargs)
        self._dispatch = ThreadPoolExecutor(64, thread_name_prefix="overcast-dask-dispatch")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dispatch is not None:
            self._dispatch.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._dispatch = self._client = self._cluster = None

    def cancel_all(self) -> None:
        """Cancel the task runs not sent to the cluster yet; the exit closes the client (and a temporary cluster)."""
        if self._dispatch is not None:
            self._dispatch.shutdown(wait=False, cancel_futures=True)
            self._dispatch = None

    def submit(self, run: SubmittedRun) -> Future[Any]:
        """Send the task run to the cluster; return its future at once."""
        if self._dispatch is None or self._client is None:
            raise RuntimeError("the task runner is not started: submit inside a flow run")
        client = self._client
        return self._dispatch.submit(_dispatch_to_dask, run, client)

    def __repr__(self) -> str:
        return f"DaskTaskRunner(address={self.address!r})"


def _payload(run: SubmittedRun) -> bytes:
    import cloudpickle

    args, kwargs = run.resolve_inputs()
    ctx = run.flow_ctx
    # The settings let the worker reach the same control plane (for caches, transactions,
    # artifacts, variables); an in-process one (the test harness's) it cannot reach.
    settings = run.runtime.settings if run.runtime.portable else None
    return bytes(
        cloudpickle.dumps(
            (run.task, run.record, args, kwargs, ctx.flow_run, ctx.parameters, ctx.log_prints, settings)
        )
    )


def _dispatch_to_dask(run: SubmittedRun, client: Any) -> Any:
    from overcast import _process_worker

    # pure=False: two runs of one task with equal inputs are two task runs, not one cached result
    outcome = client.submit(_process_worker.run, _payload(run), pure=False).result()
    return _process_worker.settle(run, outcome)
