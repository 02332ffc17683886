"""Deployments from the SDK: ``flow.deploy(...)`` and ``run_deployment(...)``, as in Prefect 3.

A deployment tells the control plane how to run a flow without you: its entrypoint (the file
and the flow in it), default parameters, schedules and the work pool whose runners execute its
runs. ``run_deployment`` asks for a run and, unless told not to wait, waits for it to finish::

    @flow
    def nightly(day: str = "today") -> int: ...


    nightly.deploy("every-night", work_pool_name="lambda", cron="0 2 * * *", timezone="Europe/Paris")
    run = run_deployment("nightly/every-night", parameters={"day": "2026-11-24"}, timeout=600)
"""

from __future__ import annotations

import contextlib
import inspect
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overcast.core.errors import OvercastError

if TYPE_CHECKING:
    from overcast.core.models import FlowRun
    from overcast.flows import Flow
    from overcast.schedules import ScheduleLike

DEFAULT_POLL_S = 0.5


class DeploymentTimeoutError(OvercastError):
    """``run_deployment`` waited ``timeout`` seconds and the run had not finished."""


def deploy(
    flow: Flow[..., Any],
    name: str,
    *,
    work_pool_name: str | None = None,
    work_queue_name: str | None = None,
    parameters: dict[str, Any] | None = None,
    cron: str | None = None,
    interval: float | timedelta | None = None,
    rrule: str | None = None,
    timezone: str | None = None,
    schedules: Sequence[ScheduleLike] | None = None,
    paused: bool = False,
    tags: list[str] | None = None,
    description: str | None = None,
    version: str | None = None,
    concurrency_limit: int | None = None,
    collision_strategy: str = "ENQUEUE",
    job_variables: dict[str, Any] | None = None,
    entrypoint: str | None = None,
    enforce_parameter_schema: bool = True,
    triggers: list[Any] | None = None,
) -> uuid.UUID:
    """Create (or update) the deployment ``<flow name>/<name>`` and return its id.

    Args:
        flow: the flow.
        name: the deployment's name.
        work_pool_name: the pool whose runners execute its runs.
        work_queue_name: the pool's queue (default: ``default``).
        parameters: default parameters, checked against the flow's signature.
        cron, interval, rrule: a schedule each (``timezone`` applies to them), added to
            ``schedules``.
        schedules: ``Cron``/``Interval``/``RRule`` from ``overcast.schedules`` (with their own
            ``parameters``, ``active`` …), or bare ``CronSchedule``/``IntervalSchedule``/
            ``RRuleSchedule``s, or dicts of either (see ``overcast.schedules.ScheduleLike``).
        paused: create it paused (no scheduled runs).
        tags, description, version: shown with it and its runs.
        concurrency_limit: the most runs at once; ``collision_strategy`` ENQUEUE (wait) or
            CANCEL_NEW for the runs beyond it.
        job_variables: values for the pool's job template.
        entrypoint: ``path/to/file.py:flow`` or ``module:flow``; default: the file the flow is
            defined in (relative to the working directory) and its function's name. A relative
            path is found from the working directory of this call (the deployment's ``path``).
        enforce_parameter_schema: check run parameters against the flow's signature.
        triggers: events that run the deployment: ``EventTrigger``s (and compound or sequence
            triggers), or ``DeploymentEventTrigger``s that also name the run's ``parameters``
            (templated from the event); dicts of either are read too. Each is saved as an
            automation the deployment owns; deploying again replaces them (those unchanged
            keep their ids), so a deploy without triggers removes them.

    Raises:
        InvalidValueError: a bad schedule, parameter, name, trigger or trigger template.
    """
    from overcast._runtime import get_runtime
    from overcast.automations import deployment_automations
    from overcast.core.deployments import (
        ConcurrencyOptions,
        DeploymentCreate,
        deployment_id_for,
    )
    from overcast.core.models import RetryPolicy
    from overcast.schedules import deployment_schedule

    full_name = f"{flow.name}/{name}"
    wanted = [
        deployment_schedule(s, f"schedule {number} of deployment {full_name!r}")
        for number, s in enumerate(schedules or [], start=1)
    ]
    for kind, value in (("cron", cron), ("interval", interval), ("rrule", rrule)):
        if value is not None:
            shortcut = {kind: value, **({"timezone": timezone} if timezone else {})}
            wanted.append(deployment_schedule(shortcut, f"the {kind}= schedule of deployment {full_name!r}"))
    defaults = flow.validated_parameters((), parameters or {}) if parameters else {}
    # the triggers are checked (and their templates parsed) before anything is saved
    deployment_automations(deployment_id_for(flow.name, name), name, triggers or [])
    from pydantic_core import to_jsonable_python

    request = DeploymentCreate(
        name=name,
        flow_name=flow.name,
        entrypoint=entrypoint or flow_entrypoint(flow),
        path=str(Path.cwd()),  # where a relative entrypoint is found from
        description=description if description is not None else flow.description,
        version=version or flow.version,
        parameters=to_jsonable_python(defaults or (parameters or {})),
        parameter_openapi_schema=flow.parameter_schema(),
        enforce_parameter_schema=enforce_parameter_schema,
        tags=list(tags or []),
        work_pool_name=work_pool_name,
        work_queue_name=work_queue_name,
        job_variables=job_variables or {},
        schedules=wanted,
        paused=paused,
        concurrency_limit=concurrency_limit,
        concurrency_options=ConcurrencyOptions.model_validate({"collision_strategy": collision_strategy}),
        retry_policy=RetryPolicy(retries=flow.retries, retry_delay_seconds=flow.retry_delay_seconds),
    )
    client = get_runtime().client
    deployment = client.create_deployment(request)
    automations = deployment_automations(deployment.id, name, triggers or [])
    client.replace_automations_owned_by(f"overcast.deployment.{deployment.id}", automations)
    return deployment.id


def flow_entrypoint(flow: Flow[..., Any]) -> str:
    """``path/to/file.py:function`` for the file that defines ``flow`` (relative to the working directory)."""
    source = inspect.getsourcefile(flow.fn)
    if source is None:
        raise ValueError(f"cannot tell which file defines flow {flow.name!r}; pass entrypoint=")
    path = Path(source).resolve()
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    return f"{shown}:{flow.fn.__name__}"


def run_deployment(
    name: str | uuid.UUID,
    *,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = None,
    poll_interval: float = DEFAULT_POLL_S,
    tags: list[str] | None = None,
    idempotency_key: str | None = None,
    scheduled_time: datetime | None = None,
    flow_run_name: str | None = None,
    job_variables: dict[str, Any] | None = None,
    work_queue_name: str | None = None,
    as_subflow: bool = True,
) -> FlowRun:
    """Ask for a run of a deployment; wait for it to finish unless ``timeout`` is 0.

    Args:
        name: ``<flow name>/<deployment name>``, or the deployment's id.
        parameters: over the deployment's defaults (checked against its schema).
        timeout: seconds to wait for the run to end; ``None`` waits as long as it takes; 0
            returns at once.
        poll_interval: seconds between looks at the run while waiting.
        tags, idempotency_key, scheduled_time, flow_run_name, job_variables,
        work_queue_name: for the run.
        as_subflow: called inside a flow or task, link the run to it (its parent task run).

    Returns:
        The run as last read: terminal, or as it was when ``timeout`` ran out (0).

    Raises:
        NotFoundError: no such deployment.
        InvalidValueError: parameters that do not fit the deployment.
        DeploymentTimeoutError: the run had not ended within ``timeout`` (> 0) seconds.
    """
    from pydantic_core import to_jsonable_python

    from overcast._runtime import get_runtime
    from overcast.context import flow_run_context, task_run_context
    from overcast.core.deployments import DeploymentFlowRunCreate

    flow_ctx = flow_run_context.get()
    client = flow_ctx.runtime.client if flow_ctx is not None else get_runtime().client
    deployment = (
        client.read_deployment(name) if isinstance(name, uuid.UUID) else client.read_deployment_by_name(name)
    )
    parent = None
    if as_subflow:
        task_ctx = task_run_context.get()
        parent = task_ctx.task_run.id if task_ctx is not None else None
    request = DeploymentFlowRunCreate(
        parameters=to_jsonable_python(parameters or {}),
        name=flow_run_name,
        tags=list(tags or []),
        idempotency_key=idempotency_key,
        scheduled_start_time=scheduled_time,
        job_variables=job_variables,
        work_queue_name=work_queue_name,
        parent_task_run_id=parent,
    )
    run = client.create_flow_run_from_deployment(deployment.id, request)
    if timeout == 0:
        return run
    deadline = None if timeout is None else time.monotonic() + timeout
    while not run.state.is_terminal:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeploymentTimeoutError(
                f"flow run {run.id} of {deployment.flow_name}/{deployment.name} is still "
                f"{run.state.name} after {timeout:g} s"
            )
        time.sleep(poll_interval)
        run = client.read_flow_run(run.id)
    return run


SERVE_POOL = "serve"


def serve(
    flow: Flow[..., Any],
    name: str,
    *,
    limit: int = 4,
    poll_s: float = 2.0,
    stop: Any = None,
    **options: Any,
) -> None:
    """Deploy ``flow`` and execute its runs here until stopped (Ctrl-C), as Prefect's ``serve`` does.

    The deployment goes to the ``process`` work pool ``serve`` (made if missing); this process
    heartbeats for it, makes its scheduled runs (with the in-process control plane; over HTTP
    the server's tick does), and executes due runs in subprocesses, ``limit`` at once.

    Args:
        flow: the flow.
        name: the deployment's name.
        limit: the most runs at once.
        poll_s: seconds between looks for due runs.
        stop: a ``threading.Event`` that ends serving when set (default: run until Ctrl-C).
        options: ``deploy``'s options (``cron``, ``interval``, ``parameters``, ``tags``,
            ``triggers`` …).
    """
    import threading

    from overcast._runtime import get_runtime
    from overcast.core.services.work_pools import WorkPoolExistsError
    from overcast.core.work_pools import ProcessPoolCreate
    from overcast.workers import Worker

    client = get_runtime().client
    with contextlib.suppress(WorkPoolExistsError):
        client.create_work_pool(ProcessPoolCreate.model_validate({"name": SERVE_POOL}))
    deployment_id = deploy(flow, name, work_pool_name=SERVE_POOL, **options)
    plane = getattr(client, "plane", None)  # in process: make the scheduled runs ourselves

    def schedule() -> None:
        if plane is not None:
            plane.scheduler.schedule(deployment_ids=[deployment_id])

    done = stop or threading.Event()
    print(f"serving {flow.name}/{name}: its runs execute here (Ctrl-C stops)")  # noqa: T201
    try:
        Worker(client, SERVE_POOL, limit=limit, poll_s=poll_s).run(done, before_poll=schedule)
    except KeyboardInterrupt:
        done.set()
