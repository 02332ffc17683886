"""Running one flow run on the caller's thread.

A flow run's transitions are proposed to the control plane and gate execution (a run that
another runner claimed is aborted here); its task runs' bookkeeping goes through the reporter
and is flushed before the run's final state is proposed. Retries are the control plane's
decision: a failure with retries left comes back as AwaitingRetry, and the engine runs the
flow again in this process after the delay.

While a top-level flow run runs, a thread of this process heartbeats it and, every
``CANCEL_CHECK_S``, reads its state: once it is CANCELLING the flow's code is interrupted (an
exception in its thread, or its asyncio task cancelled), the task runs not started are
dropped, the run ends Cancelled (its on_cancellation hooks run) and the call raises
``FlowRunCancelledError``. Subflows run in their parent's thread and stop with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from overcast._heartbeats import _heartbeats
from overcast._records import TaskRunRecord
from overcast._returns import DECIDING, decided, small_json, upstream_failure
from overcast._runtime import Runtime, get_runtime
from overcast._task_engine import UpstreamTaskError
from overcast._timeout import AsyncInterrupter, FlowRunInterrupt, Interrupter, RunTimeoutError, time_limit
from overcast.context import FlowRunContext, flow_run_context, merge_tags, tags_context, task_run_context
from overcast.core.errors import OvercastError
from overcast.core.models import FlowRun, RetryPolicy
from overcast.core.orchestration import Decision
from overcast.core.schemas import FlowRunCreate, InitialState, OrchestrationResult
from overcast.core.states import Cancelled, Completed, Crashed, Failed, Running, State, StateType

if TYPE_CHECKING:
    from overcast.flows import Flow

logger = logging.getLogger("overcast.engine")

MAX_WAITS = 100
"""Seconds between reads of a running top-level flow run's state, to notice its cancellation."""


class RunAbortedError(OvercastError):
    """Raised when the control plane tells this engine to stop working on a flow run (Prefect's ``Abort``)."""


class FlowRunCancelledError(RunAbortedError):
    """Raised by a flow call whose run was cancelled (CANCELLING) before or while it ran.

    The engine stopped the flow's code and ended the run Cancelled (its on_cancellation hooks
    ran); with ``return_state=True`` the call returns that Cancelled state instead, and its
    ``result()`` raises this error.

    Attributes:
        flow_run_id: the cancelled run.
    """

    def __init__(self, flow_run_id: uuid.UUID, message: str | None = None) -> None:
        self.flow_run_id = flow_run_id
        super().__init__(message or f"flow run {flow_run_id} was cancelled")


# The interrupter of the top-level run in progress: its subflows stop when it does.
_stopping: contextvars.ContextVar[Interrupter | AsyncInterrupter | None] = contextvars.ContextVar(
    "overcast_stopping", default=None
)


class _Run:
    """One flow run's life: create, start, attempt, finish."""

    def __init__(
        self, flow: Flow[..., Any], parameters: dict[str, Any], existing: FlowRun | None = None
    ) -> None:
        self.flow = flow
        self.parameters = parameters
        self.existing = existing
        self.parent = flow_run_context.get()
        self.runtime: Runtime = self.parent.runtime if self.parent else get_runtime()
        self.client = self.runtime.client
        self.tracker: TaskRunRecord | None = None
        self.run: FlowRun
        # Only a top-level run watches for its cancellation; a subflow stops with its parent.
        self.stop: Interrupter | AsyncInterrupter | None = None
        if self.parent is None:
            self.stop = AsyncInterrupter() if flow.is_async else Interrupter(FlowRunInterrupt)

    def create(self, wait_for: Iterable[Any] | None = None) -> None:
        """Create the run (or take the existing one), after waiting for the runs in ``wait_for``.

        Raises:
            UpstreamTaskError: a run in ``wait_for`` did not complete; the new run is left
                Pending (NotReady), as a task run is, and never starts.
        """
        blocked = upstream_failure(wait_for) if wait_for else None
        if self.existing is not None:
            self.run = self.existing
        elif self.parent is None and (existing := _claim_existing_run(self.runtime)) is not None:
            self.run = self.client.read_flow_run(existing)
        else:
            self._create_new(blocked)
        if blocked is not None:
            raise UpstreamTaskError(blocked)

    def _create_new(self, blocked: str | None) -> None:
        parent_task_run_id = None
        if self.parent is not None:
            # A subflow stands in its parent as a task run, so the parent's graph shows it.
            key = f"subflow:{self.flow.name}"
            self.tracker = TaskRunRecord(
                key, self.flow.name, self.parent.flow_run.id, self.parent.next_dynamic_key(key), []
            )
            self.tracker.add("PENDING", "Pending")
            parent_task_run_id = self.tracker.id
            if blocked is not None:
                self.tracker.add("PENDING", "NotReady", blocked)
                self.runtime.reporter.task_run(self.tracker)
        task_ctx = task_run_context.get()
        if parent_task_run_id is None and task_ctx is not None:
            parent_task_run_id = task_ctx.task_run.id
        self.run = self.client.create_flow_run(
            FlowRunCreate(
                flow_name=self.flow.name,
                name=self.flow.run_name(self.parameters),
                parameters=to_jsonable_python(self.parameters, fallback=repr),
                tags=merge_tags(self.flow.tags, tags_context.get()),
                state=None
                if blocked is None
                else InitialState(type=StateType.PENDING, name="NotReady", message=blocked),
                parent_task_run_id=parent_task_run_id,
                retry_policy=RetryPolicy(
                    retries=self.flow.retries, retry_delay_seconds=self.flow.retry_delay_seconds
                ),
            )
        )

    def propose(self, state: State) -> OrchestrationResult:
        for _ in range(MAX_WAITS):
            answer = self.client.set_flow_run_state(self.run.id, state)
            if answer.status is Decision.WAIT:
                time.sleep(min(answer.wait_seconds or 1.0, 60.0))
                continue
            if answer.status is Decision.ABORT:
                if answer.state.type is StateType.CANCELLING:
                    self._cancelled()
                    raise FlowRunCancelledError(
                        self.run.id, f"flow run {self.run.id} aborted: {answer.reason}"
                    )
                raise RunAbortedError(f"flow run {self.run.id} aborted: {answer.reason}")
            return answer
        raise RunAbortedError(f"flow run {self.run.id} kept being told to wait")

    def start(self) -> None:
        answer = self.propose(Running())
        # the run as it now stands, for the run context (``overcast.runtime.flow_run.run_count``)
        self.run = self.run.model_copy(update={"state": answer.state, "run_count": self.run.run_count + 1})
        if self.stop is not None:  # a subflow's process is its parent's, vouched for by it
            _heartbeats.add(self.run.id, self.client, self.stop.interrupt)
        self.flow.run_hooks(self.flow.on_running_hooks, self.run, self.client)
        if self.tracker is not None:
            self.tracker.run_count += 1
            self.tracker.add("RUNNING", "Running")
            self.runtime.reporter.task_run(self.tracker)

    def context(self, task_runner: Any) -> FlowRunContext:
        if self.flow.log_prints:
            from overcast.logging import enable_log_prints

            enable_log_prints()
        return FlowRunContext(
            flow=self.flow,
            flow_run=self.run,
            parameters=self.parameters,
            runtime=self.runtime,
            task_runner=task_runner,
            log_prints=self.flow.log_prints,
        )

    def failed(self, exc: BaseException) -> float | None:
        """Propose the failure; return the pause before a retry, or ``None`` when the run is over."""
        self.runtime.reporter.flush()
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Exception):
            self.propose(Crashed(message))
            self._finish_tracker("CRASHED", "Crashed", message)
            self.flow.run_hooks(self.flow.on_crashed_hooks, self.run, self.client, exception=exc)
            return None
        state = Failed(message, name="TimedOut" if isinstance(exc, RunTimeoutError) else None)
        answer = self.propose(state)
        if answer.state.type is StateType.SCHEDULED:  # AwaitingRetry
            return _retry_pause(answer.state)
        self._finish_tracker("FAILED", "Failed", message)
        self.flow.run_hooks(self.flow.on_failure_hooks, self.run, self.client, exception=exc)
        return None

    def completed(self, result: Any) -> State:
        """Propose the final state the flow's return value decides; return the state stored.

        A plain value completes the run. A returned state, future, or collection of them
        decides the final state (``_returns.decided``); a failed one may come back AwaitingRetry
        (SCHEDULED), and the caller then runs the flow again after ``_retry_pause``.
        """
        self.runtime.reporter.flush()
        if isinstance(result, DECIDING):
            try:
                proposed, value, exception = decided(result)
            except Exception as exc:  # e.g. a returned state whose stored result cannot be read
                proposed, value, exception = Failed(f"{type(exc).__name__}: {exc}"), None, exc
        else:  # the common case: nothing to inspect
            proposed, value, exception = Completed(small_json(result)), result, None
        if proposed.type is StateType.COMPLETED and self.flow.persists_result:
            try:
                proposed = proposed.model_copy(update={"data": self._persist(value)})
            except Exception as exc:  # a value the serializer cannot write, storage that failed
                message = f"the result could not be persisted: {type(exc).__name__}: {exc}"
                proposed, value, exception = Failed(message), None, exc
        state = self.propose(proposed).state
        if state.type is StateType.SCHEDULED:
            return state
        self._finish_tracker(state.type.value, state.name, state.message)
        flow = self.flow
        if state.type is StateType.COMPLETED:
            flow.run_hooks(flow.on_completion_hooks, self.run, self.client, value=value)
        elif state.type is StateType.FAILED:
            flow.run_hooks(flow.on_failure_hooks, self.run, self.client, exception=exception)
        elif state.type is StateType.CRASHED:
            flow.run_hooks(flow.on_crashed_hooks, self.run, self.client, exception=exception)
        elif state.type is StateType.CANCELLED:
            flow.run_hooks(flow.on_cancellation_hooks, self.run, self.client)
        state.attach(value, exception)
        return state

    def _persist(self, value: Any) -> dict[str, Any]:
        """Persist the flow's result (its storage and serializer); return the reference."""
        from overcast._caching import store_for

        flow = self.flow
        store = store_for(flow.result_storage, flow.result_serializer, self.runtime.settings.blobs_url)
        return dict(store.persist(f"flow-runs/{self.run.id}", value))

    def interrupted(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this run's code being stopped because it (or its parent) was cancelled."""
        if self.stop is not None:
            return self.stop.interrupted
        root = _stopping.get()
        return (
            root is not None
            and root.interrupted
            and isinstance(exc, FlowRunInterrupt | asyncio.CancelledError)
        )

    def cancelled(self, runner: Any, exc: BaseException, return_state: bool) -> State:
        """End a run whose code was stopped (``exc``): drop its task runs not started, end it Cancelled.

        Returns:
            The Cancelled state, when ``return_state`` (and this run is the one cancelled).

        Raises:
            FlowRunCancelledError: this run was cancelled, and ``return_state`` is false.
            BaseException: ``exc`` again, for a subflow: its parent was cancelled, and stops too.
        """
        cancel_all = getattr(runner, "cancel_all", None)  # a task runner of the user's may lack it
        if cancel_all is not None:
            cancel_all()
        self._cancelled()
        if self.stop is None:
            raise exc
        error = FlowRunCancelledError(self.run.id)
        if return_state:
            return _cancelled_state(self, error)
        raise error from exc

    def _cancelled(self) -> None:
        # Cancellation was asked for while this engine ran the flow: it stopped, so it ends it.
        self.runtime.reporter.flush()
        self.client.set_flow_run_state(self.run.id, Cancelled("the engine stopped the run"))
        self._finish_tracker("CANCELLED", "Cancelled", None)
        self.flow.run_hooks(self.flow.on_cancellation_hooks, self.run, self.client)

    def _finish_tracker(self, type_: str, name: str, message: str | None) -> None:
        if self.tracker is not None:
            self.tracker.add(type_, name, message)
            self.runtime.reporter.task_run(self.tracker)


_UNWATCHED = contextlib.nullcontext()
_existing_lock = threading.Lock()
_existing_claimed = False


def _claim_existing_run(runtime: Runtime) -> uuid.UUID | None:
    """The flow run ``OVERCAST_FLOW_RUN_ID`` names, for the process's first top-level flow call only."""
    global _existing_claimed  # noqa: PLW0603 - once per process
    run_id = runtime.settings.flow_run_id
    if run_id is None or _existing_claimed:
        return None
    with _existing_lock:
        if _existing_claimed:
            return None
        _existing_claimed = True
    return run_id


def execute_flow_run(flow: Flow[..., Any], flow_run: FlowRun, *, return_state: bool = False) -> Any:
    """Run an existing flow run (a deployment's, dispatched to a runner) with its own parameters.

    Raises:
        RunAbortedError: the control plane refused to start it (another runner claimed it, it
            is already over, or it was cancelled).
    """
    kwargs = dict(flow_run.parameters)
    if flow.is_async:
        return asyncio.run(run_flow_async(flow, (), kwargs, return_state, existing=flow_run))
    return run_flow(flow, (), kwargs, return_state, existing=flow_run)


def run_flow(
    flow: Flow[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    return_state: bool,
    *,
    existing: FlowRun | None = None,
    wait_for: Iterable[Any] | None = None,
) -> Any:
    """Run a sync flow on this thread; return its result (or its final state).

    Raises:
        UpstreamTaskError: a run in ``wait_for`` did not complete (the flow does not run).
    """
    parameters = flow.validated_parameters(args, kwargs)
    life = _Run(flow, parameters, existing)
    life.create(wait_for)
    call = _caller(flow, parameters, args, kwargs)
    stopping = _stopping.set(life.stop) if life.stop is not None else None
    try:
        while True:
            life.start()
            with flow.task_runner.duplicate() as runner:
                token = flow_run_context.set(life.context(runner))
                try:
                    with (
                        time_limit(flow.timeout_seconds, f"flow run {life.run.name!r}"),
                        life.stop or _UNWATCHED,
                    ):
                        result = call()
                except BaseException as exc:
                    flow_run_context.reset(token)
                    if life.interrupted(exc):
                        return life.cancelled(runner, exc, return_state)
                    delay = life.failed(exc)
                    if delay is None:
                        if return_state and isinstance(exc, Exception):
                            return _failed_state(life, exc)
                        raise
                    time.sleep(delay)
                    continue
                flow_run_context.reset(token)
            state = life.completed(result)
            if state.type is StateType.SCHEDULED:  # it returned a failure, and has retries left
                time.sleep(_retry_pause(state))
                continue
            return state if return_state else state.result()
    except FlowRunCancelledError as exc:  # found CANCELLING at a proposal: it ended Cancelled
        if return_state and exc.flow_run_id == life.run.id:
            return _cancelled_state(life, exc)
        raise
    finally:
        _heartbeats.discard(life.run.id)
        if stopping is not None:
            _stopping.reset(stopping)


async def run_flow_async(
    flow: Flow[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    return_state: bool,
    *,
    existing: FlowRun | None = None,
    wait_for: Iterable[Any] | None = None,
) -> Any:
    """Run an async flow in the caller's event loop; return its result (or its final state).

    Raises:
        UpstreamTaskError: a run in ``wait_for`` did not complete (the flow does not run).
    """
    parameters = flow.validated_parameters(args, kwargs)
    life = _Run(flow, parameters, existing)
    life.create(wait_for)
    call: Callable[[], Awaitable[Any]] = _caller(flow, parameters, args, kwargs)
    stopping = _stopping.set(life.stop) if life.stop is not None else None
    try:
        while True:
            life.start()
            with flow.task_runner.duplicate() as runner:
                token = flow_run_context.set(life.context(runner))
                try:
                    async with asyncio.timeout(flow.timeout_seconds):
                        with life.stop or _UNWATCHED:
                            result = await call()
                except BaseException as exc:
                    flow_run_context.reset(token)
                    if life.interrupted(exc):
                        return life.cancelled(runner, exc, return_state)
                    if isinstance(exc, TimeoutError) and flow.timeout_seconds is not None:
                        exc = RunTimeoutError(
                            f"flow run {life.run.name!r} exceeded its timeout of {flow.timeout_seconds:g} seconds"
                        )
                    delay = life.failed(exc)
                    if delay is None:
                        if return_state and isinstance(exc, Exception):
                            return _failed_state(life, exc)
                        raise exc from None if isinstance(exc, RunTimeoutError) else exc
                    await asyncio.sleep(delay)
                    continue
                flow_run_context.reset(token)
            state = life.completed(result)
            if state.type is StateType.SCHEDULED:  # it returned a failure, and has retries left
                await asyncio.sleep(_retry_pause(state))
                continue
            return state if return_state else state.result()
    except FlowRunCancelledError as exc:  # found CANCELLING at a proposal: it ended Cancelled
        if return_state and exc.flow_run_id == life.run.id:
            return _cancelled_state(life, exc)
        raise
    finally:
        _heartbeats.discard(life.run.id)
        if stopping is not None:
            _stopping.reset(stopping)


def _caller(
    flow: Flow[..., Any], parameters: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if flow.validate_parameters:
        return lambda: flow.fn(**parameters) if not flow.has_var_args else flow.fn(*args, **kwargs)
    return lambda: flow.fn(*args, **kwargs)


def _retry_pause(state: State) -> float:
    """The seconds until an AwaitingRetry state's scheduled time."""
    start = state.details.scheduled_time or datetime.now(UTC)
    return max(0.0, (start - datetime.now(UTC)).total_seconds())


def _cancelled_state(life: _Run, exc: FlowRunCancelledError) -> State:
    state = life.client.read_flow_run(life.run.id).state
    state.attach(exception=exc)
    return state


def _failed_state(life: _Run, exc: Exception) -> State:
    state = life.client.read_flow_run(life.run.id).state
    state.attach(exception=exc)
    return state
