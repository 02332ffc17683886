"""The worker-process side of ``ProcessPoolTaskRunner``, and how its outcome comes home.

In the worker, the task runs through the normal engine with a runtime whose reporter only
collects: the task run's record, the records of tasks it called, and its log lines. They
travel back with the result, and ``settle`` hands them to the parent's reporter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from overcast._records import TaskRunRecord
from overcast._runtime import Runtime, client_for
from overcast.context import FlowRunContext, flow_run_context

if TYPE_CHECKING:
    from overcast._task_engine import SubmittedRun


class _Collector:
    """A reporter that keeps what it is given (no thread, no client)."""

    def __init__(self) -> None:
        self.records: dict[Any, TaskRunRecord] = {}
        self.lines: list[dict[str, Any]] = []

    def task_run(self, record: TaskRunRecord) -> None:
        self.records[record.id] = record

    def log(self, line: dict[str, Any]) -> None:
        self.lines.append(line)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True


class _NoRunner:
    """The task runner inside a worker: submitting from there is not supported."""

    def submit(self, run: Any) -> Any:
        raise RuntimeError(
            "a task running in a process-pool worker cannot submit tasks; call them directly instead"
        )


class _NoClient:
    """The client inside a worker whose parent's control plane lives in the parent's memory."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"a task in a process-pool worker asked the control plane for {name}, but the flow's "
            "control plane lives in its process's memory (the test harness's); use a file or "
            "cloud store, or run such tasks on the thread pool"
        )


def run(payload: bytes) -> bytes:
    """Run one task run in this worker process; return its outcome, pickled."""
    import cloudpickle

    from overcast._task_engine import run_prepared

    task, record, args, kwargs, flow_run, parameters, log_prints, settings = cloudpickle.loads(payload)
    collector = _Collector()
    # Task runs go back to the parent with the outcome; caches, transactions, artifacts and
    # variables use the parent's control plane directly, when the settings say how to reach it.
    client = client_for(settings) if settings is not None else _NoClient()
    runtime = Runtime(client, settings, reporter=collector)  # type: ignore[arg-type]
    ctx = FlowRunContext(
        flow=None,  # type: ignore[arg-type]
        flow_run=flow_run,
        parameters=parameters,
        runtime=runtime,
        task_runner=_NoRunner(),  # type: ignore[arg-type]
        log_prints=log_prints,
    )
    token = flow_run_context.set(ctx)
    try:
        value, error = run_prepared(task, record, runtime, ctx, args, kwargs, False), None
    except BaseException as exc:
        value, error = None, exc
    finally:
        flow_run_context.reset(token)
    others = [r.document() for r in collector.records.values() if r.id != record.id]
    try:
        return bytes(cloudpickle.dumps((value, error, record, others, collector.lines)))
    except Exception as exc:  # a result or an exception that cannot travel back
        problem = RuntimeError(f"the outcome of task run {record.name!r} cannot be sent back: {exc}")
        return bytes(cloudpickle.dumps((None, problem, record, others, collector.lines)))


def settle(run: SubmittedRun, outcome: bytes) -> Any:
    """Report what the worker recorded, through this process's reporter; return or raise the result."""
    import cloudpickle

    value, error, worker_record, others, lines = cloudpickle.loads(outcome)
    record = run.record
    record.states = worker_record.states
    record.run_count = worker_record.run_count
    record.name = worker_record.name
    record.start_time, record.end_time = worker_record.start_time, worker_record.end_time
    reporter = run.runtime.reporter
    reporter.task_run(record)
    for document in others:
        reporter.document(document)
    for line in lines:
        reporter.log(line)
    if error is not None:
        raise error
    return value
