"""Running one task run on the caller's thread: the engine's hot path.

Every step here costs microseconds: no network, no pydantic, no locks beyond the buffer's. The
task run's states are appended to its record and the record is handed to the reporter, whose
background thread sends it. Sync, async and generator tasks share the steps (``_Attempt``) and
differ only in how the function is called.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from overcast._records import TaskRunRecord
from overcast._runtime import Runtime, get_runtime
from overcast._timeout import FlowRunInterrupt, RunTimeoutError, time_limit
from overcast.context import (
    FlowRunContext,
    TaskRunContext,
    flow_run_context,
    merge_tags,
    tags_context,
    task_run_context,
)
from overcast.core.errors import OvercastError
from overcast.futures import OvercastFuture, contains_future, resolve, upstream_futures
from overcast.transactions import current_transaction, transaction

if TYPE_CHECKING:
    from overcast._caching import Plan
    from overcast.core.states import State
    from overcast.tasks import Task
    from overcast.transactions import Transaction


class UpstreamTaskError(OvercastError):
    """Raised (as the task run's outcome) when an upstream run did not complete.

    The upstream is a ``wait_for`` future or a future among the inputs (not under
    ``allow_failure``); the task run is left Pending (``NotReady``) and its function never runs.

    Attributes:
        upstream_task_run_id: the upstream task run that did not complete.
        state: the waiting run's NotReady state (what ``return_state=True`` returns).
    """

    def __init__(self, message: str, *, upstream_task_run_id: Any = None, state: State | None = None) -> None:
        super().__init__(message)
        self.upstream_task_run_id = upstream_task_run_id
        self.state = state


def prepare(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any
) -> tuple[TaskRunRecord, Runtime, FlowRunContext | None, tuple[Any, ...], dict[str, Any]]:
    """Create the task run's record and resolve its inputs (futures become their results)."""
    flow_ctx = flow_run_context.get()
    runtime = flow_ctx.runtime if flow_ctx is not None else get_runtime()
    record = _new_record(task, flow_ctx)
    args, kwargs = _resolve_inputs(record, runtime, args, kwargs, wait_for)
    return record, runtime, flow_ctx, args, kwargs


def _new_record(task: Task[..., Any], flow_ctx: FlowRunContext | None) -> TaskRunRecord:
    """A Pending record for a new run of ``task`` (in the flow run of ``flow_ctx``, if any)."""
    if flow_ctx is not None:
        flow_run_id, dynamic_key = flow_ctx.flow_run.id, flow_ctx.next_dynamic_key(task.task_key)
    else:
        flow_run_id, dynamic_key = None, "0"
    extra_tags = tags_context.get()  # a ``tags(...)`` block around the call
    tags = merge_tags(task.tags, extra_tags) if extra_tags else task.tags
    record = TaskRunRecord(task.task_key, task.name, flow_run_id, dynamic_key, tags)
    record.add("PENDING", "Pending")
    return record


def _resolve_inputs(
    record: TaskRunRecord, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Wait for upstream runs and replace futures in the arguments by their results."""
    if wait_for:
        _wait_upstream(record, runtime, wait_for)
    if (args and any(contains_future(a) for a in args)) or (
        kwargs and any(contains_future(v) for v in kwargs.values())
    ):
        # Every upstream the run needs completes before any result is read (as for wait_for).
        _wait_upstream(record, runtime, [*upstream_futures(args), *upstream_futures(kwargs)])
        args = tuple(resolve(a) for a in args)
        kwargs = {k: resolve(v) for k, v in kwargs.items()}
    return args, kwargs


def _wait_upstream(record: TaskRunRecord, runtime: Runtime, upstream: Any) -> None:
    """Wait for each upstream future; one that did not complete leaves the run NotReady (raised)."""
    for future in upstream:
        if isinstance(future, OvercastFuture):
            future.wait()
            if not future.state.is_completed():
                record.add(
                    "PENDING", "NotReady", message=f"upstream task run {future.task_run_id} did not complete"
                )
                runtime.reporter.task_run(record)
                raise UpstreamTaskError(
                    f"upstream task run {future.task_run_id} is {future.state.name}",
                    upstream_task_run_id=future.task_run_id,
                    state=record.state(),
                )


class _Attempt:
    """The steps around one task run's attempts, shared by sync, async and generator tasks."""

    __slots__ = ("flow_ctx", "plan", "record", "reporter", "task", "token", "txn")

    def __init__(
        self,
        task: Task[..., Any],
        record: TaskRunRecord,
        runtime: Runtime,
        flow_ctx: FlowRunContext | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ):
        self.task, self.record, self.reporter, self.flow_ctx = task, record, runtime.reporter, flow_ctx
        self.txn: Transaction | None = None  # the run's own transaction, when it has one
        self.plan: Plan | None = None  # and where its result goes
        log_prints = (
            task.log_prints if task.log_prints is not None else bool(flow_ctx and flow_ctx.log_prints)
        )
        if log_prints:
            from overcast.logging import enable_log_prints

            enable_log_prints()
        # the call's arguments ride along unbound: ``overcast.runtime.task_run.parameters`` binds them
        self.token = task_run_context.set(TaskRunContext(task, record, log_prints, args, kwargs))

    def start(self) -> None:
        record = self.record
        record.run_count += 1
        record.add("RUNNING", "Running" if record.run_count == 1 else "Retrying")
        self.reporter.task_run(record)
        if self.task.on_running_hooks:
            self.task.run_hooks(self.task.on_running_hooks, record)

    def completed(self, result: Any) -> None:
        reference = None
        if self.txn is not None and self.plan is not None:
            try:
                reference = self.txn.stage(
                    result,
                    reference=self.plan.persist(result),
                    on_commit=self.task.on_commit_hooks,
                    on_rollback=self.task.on_rollback_hooks,
                )
            except Exception as exc:
                self.record.add("FAILED", "Failed", message=f"the result could not be persisted: {exc}")
                self.reporter.task_run(self.record)
                raise
        self.record.add("COMPLETED", "Completed", data=reference)
        self.reporter.task_run(self.record)
        if self.task.on_completion_hooks:
            self.task.run_hooks(self.task.on_completion_hooks, self.record, value=result)

    def failed(self, exc: BaseException) -> float | None:
        """Record a failed attempt; return the pause before the next one, or ``None``: no retry."""
        record = self.record
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, FlowRunInterrupt | asyncio.CancelledError):  # its flow run was cancelled
            record.add("CANCELLED", "Cancelled", message="its flow run was cancelled")
            self.reporter.task_run(record)
            return None
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: the run crashed
            record.add("CRASHED", "Crashed", message=message)
            self.reporter.task_run(record)
            return None
        delay = self.task.retry_delay(record, exc)
        if delay is not None:
            record.add("SCHEDULED", "AwaitingRetry", message=f"retrying after {message}")
            return delay
        record.add("FAILED", "TimedOut" if isinstance(exc, RunTimeoutError) else "Failed", message=message)
        self.reporter.task_run(record)
        if self.task.on_failure_hooks:
            self.task.run_hooks(self.task.on_failure_hooks, record, exception=exc)
        return None

    def finish(self) -> None:
        task_run_context.reset(self.token)

    def state(self, value: Any = None, exception: BaseException | None = None) -> State:
        state = self.record.state()
        state.attach(value, exception)
        return state


def _begin(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any
) -> tuple[_Attempt, tuple[Any, ...], dict[str, Any]]:
    """Prepare a task run called on this thread and enter its context."""
    record, runtime, flow_ctx, args, kwargs = prepare(task, args, kwargs, wait_for)
    if task.task_run_name is not None:
        record.name = task.run_name(args, kwargs)
    return _Attempt(task, record, runtime, flow_ctx, args, kwargs), args, kwargs


def _not_ready(exc: UpstreamTaskError, return_state: bool) -> State:
    """A run whose upstream did not complete: its NotReady state, or (without ``return_state``) the error."""
    if return_state and exc.state is not None:
        return exc.state
    raise exc


def run_sync(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool, wait_for: Any
) -> Any:
    """Run a sync task on this thread and return its result (or its final state)."""
    try:
        record, runtime, flow_ctx, args, kwargs = prepare(task, args, kwargs, wait_for)
    except UpstreamTaskError as exc:
        return _not_ready(exc, return_state)
    return run_prepared(task, record, runtime, flow_ctx, args, kwargs, return_state)


async def run_async(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool, wait_for: Any
) -> Any:
    """Run an async task in the caller's event loop and return its result (or its final state)."""
    try:
        record, runtime, flow_ctx, args, kwargs = prepare(task, args, kwargs, wait_for)
    except UpstreamTaskError as exc:
        return _not_ready(exc, return_state)
    if task.task_run_name is not None:
        record.name = task.run_name(args, kwargs)
    if _wants_transaction(task, flow_ctx):
        txn, plan, hit = _task_transaction(task, record, runtime, flow_ctx, args, kwargs)
        if txn is None:
            return _cached(hit, record, runtime, return_state)
        with txn:
            if txn.record is not None:
                return _cached(txn.record, record, runtime, return_state)
            return await _run_async_attempts(
                task, record, runtime, flow_ctx, args, kwargs, return_state, txn, plan
            )
    return await _run_async_attempts(task, record, runtime, flow_ctx, args, kwargs, return_state, None, None)


async def _run_async_attempts(
    task: Task[..., Any],
    record: TaskRunRecord,
    runtime: Runtime,
    flow_ctx: FlowRunContext | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    return_state: bool,
    txn: Transaction | None,
    plan: Plan | None,
) -> Any:
    attempt = _Attempt(task, record, runtime, flow_ctx, args, kwargs)
    attempt.txn, attempt.plan = txn, plan
    try:
        while True:
            attempt.start()
            try:
                async with asyncio.timeout(task.timeout_seconds):
                    result = await task.fn(*args, **kwargs)
            except BaseException as exc:
                if isinstance(exc, TimeoutError) and task.timeout_seconds is not None:
                    exc = RunTimeoutError(
                        f"task run {record.name!r} exceeded its timeout of {task.timeout_seconds:g} seconds"
                    )
                delay = attempt.failed(exc)
                if delay is None:
                    if return_state and isinstance(exc, Exception):
                        return attempt.state(exception=exc)
                    raise exc from None if isinstance(exc, RunTimeoutError) else exc
                if delay > 0:
                    await asyncio.sleep(delay)
                continue
            attempt.completed(result)
            return attempt.state(result) if return_state else result
    finally:
        attempt.finish()


def run_generator(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any
) -> Iterator[Any]:
    """Run a generator task: yield what it yields while the run is Running; no retries."""
    attempt, args, kwargs = _begin(task, args, kwargs, wait_for)
    try:
        attempt.start()
        try:
            yield from task.fn(*args, **kwargs)
        except BaseException as exc:
            attempt.failed(exc)
            raise
        attempt.completed(None)
    finally:
        attempt.finish()


async def run_async_generator(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any
) -> AsyncIterator[Any]:
    """Run an async generator task: yield what it yields while the run is Running; no retries."""
    attempt, args, kwargs = _begin(task, args, kwargs, wait_for)
    try:
        attempt.start()
        try:
            async for item in task.fn(*args, **kwargs):
                yield item
        except BaseException as exc:
            attempt.failed(exc)
            raise
        attempt.completed(None)
    finally:
        attempt.finish()


class SubmittedRun:
    """A task run handed to a task runner: what to run, and how to get its inputs ready."""

    __slots__ = ("args", "flow_ctx", "kwargs", "record", "runtime", "task", "wait_for")

    def __init__(
        self,
        task: Task[..., Any],
        record: TaskRunRecord,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Any,
        flow_ctx: FlowRunContext,
    ) -> None:
        self.task, self.record, self.args, self.kwargs = task, record, args, kwargs
        self.wait_for, self.flow_ctx, self.runtime = wait_for, flow_ctx, flow_ctx.runtime

    def resolve_inputs(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Wait for upstream runs and replace futures by results (on the runner's thread)."""
        return _resolve_inputs(self.record, self.runtime, self.args, self.kwargs, self.wait_for)

    def run_here(self) -> Any:
        """Resolve the inputs and run the task on this thread."""
        args, kwargs = self.resolve_inputs()
        return run_prepared(self.task, self.record, self.runtime, self.flow_ctx, args, kwargs, False)


def submit(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any
) -> OvercastFuture[Any]:
    """Hand a task run to the flow run's task runner and return its future at once."""
    flow_ctx = flow_run_context.get()
    if flow_ctx is None:
        raise RuntimeError(
            f"{task.name}.submit() needs a flow run: call it inside a @flow, or call the task directly"
        )
    # The record exists before the future is returned (its id is the future's id).
    record = _new_record(task, flow_ctx)
    run = SubmittedRun(task, record, args, kwargs, wait_for, flow_ctx)
    return OvercastFuture(record, flow_ctx.task_runner.submit(run))


def final_state(future: OvercastFuture[Any]) -> State:
    """Wait for a submitted run; return its final state, with its result or exception attached."""
    future.wait()  # (an interrupt while waiting is not the run's outcome: it propagates)
    try:
        outcome = future.result(raise_on_failure=False)
    except BaseException as exc:  # a crashed task run (KeyboardInterrupt, SystemExit)
        outcome = exc
    state = future.state
    if state.is_completed():
        state.attach(outcome)
    elif isinstance(outcome, BaseException):  # failed, or never ran (NotReady)
        state.attach(None, outcome)
    return state


def run_prepared(
    task: Task[..., Any],
    record: TaskRunRecord,
    runtime: Runtime,
    flow_ctx: FlowRunContext | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    return_state: bool,
) -> Any:
    if task.task_run_name is not None:
        record.name = task.run_name(args, kwargs)
    if _wants_transaction(task, flow_ctx):
        txn, plan, hit = _task_transaction(task, record, runtime, flow_ctx, args, kwargs)
        if txn is None:
            return _cached(hit, record, runtime, return_state)
        with txn:
            if txn.record is not None:
                return _cached(txn.record, record, runtime, return_state)
            return _run_attempts(task, record, runtime, flow_ctx, args, kwargs, return_state, txn, plan)
    return _run_attempts(task, record, runtime, flow_ctx, args, kwargs, return_state, None, None)


def _wants_transaction(task: Task[..., Any], flow_ctx: FlowRunContext | None) -> bool:
    """Whether a run of ``task`` needs a transaction: it persists, caches, hooks one, or is inside one."""
    if task.transactional or current_transaction.get() is not None:
        return True
    # (a process-pool worker's context has no flow object)
    return flow_ctx is not None and bool(getattr(flow_ctx.flow, "persist_result", False))


def _task_transaction(
    task: Task[..., Any],
    record: TaskRunRecord,
    runtime: Runtime,
    flow_ctx: FlowRunContext | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Transaction | None, Plan, Any]:
    """A task run's own transaction (to enter), its persistence plan, and a known record.

    Entered, the transaction reads the run's record; it commits (or stages for its parent) when
    the block ends, and rolls back if the block raises. A committed record is the run's outcome
    (``_cached``): the run is Cached, not run. A record this process has already seen answers
    without a transaction at all (``None``, with the record), unless a transaction is open
    around the call (its isolation and hooks then decide).
    """
    plan = _lazy.caching.plan(task, record, runtime, flow_ctx, args, kwargs)
    if plan.key is not None and not plan.refresh and current_transaction.get() is None:
        known = runtime.records.get(plan.key)
        if known is not None:
            return None, plan, known
    txn = transaction(key=plan.key, overwrite=plan.refresh, expires_at=plan.expires_at, store=plan.store)
    return txn, plan, None


class _Lazy:
    """Modules the engine needs only for persisting tasks, imported on their first run."""

    @functools.cached_property
    def caching(self) -> ModuleType:
        from overcast import _caching

        return _caching

    @functools.cached_property
    def results(self) -> ModuleType:
        from overcast import results

        return results


_lazy = _Lazy()


def _cached(committed: Any, record: TaskRunRecord, runtime: Runtime, return_state: bool) -> Any:
    """End a run whose record was committed before: Cached, with the recorded result."""
    value = _lazy.results.load_result(committed.data)
    record.add("COMPLETED", "Cached", data=committed.data)
    runtime.reporter.task_run(record)
    if return_state:
        state = record.state()
        state.attach(value)
        return state
    return value


def _run_attempts(
    task: Task[..., Any],
    record: TaskRunRecord,
    runtime: Runtime,
    flow_ctx: FlowRunContext | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    return_state: bool,
    txn: Transaction | None,
    plan: Plan | None,
) -> Any:
    attempt = _Attempt(task, record, runtime, flow_ctx, args, kwargs)
    attempt.txn, attempt.plan = txn, plan
    try:
        while True:
            attempt.start()
            try:
                if task.timeout_seconds is None and not task.is_async:
                    result = task.fn(*args, **kwargs)  # the common case, without a context manager
                else:
                    with time_limit(task.timeout_seconds, f"task run {record.name!r}"):
                        if task.is_async:  # an async task submitted to a thread runs in its own loop there
                            result = asyncio.run(task.fn(*args, **kwargs))
                        else:
                            result = task.fn(*args, **kwargs)
            except BaseException as exc:
                delay = attempt.failed(exc)
                if delay is None:
                    if return_state and isinstance(exc, Exception):
                        return attempt.state(exception=exc)
                    raise
                if delay > 0:
                    time.sleep(delay)
                continue
            attempt.completed(result)
            return attempt.state(result) if return_state else result
    finally:
        attempt.finish()
