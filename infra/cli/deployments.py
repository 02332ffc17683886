"""``overcast deployment ls|inspect|run|pause|resume``: deployments, their schedules and their runs.

A deployment is named ``<flow name>/<deployment name>`` (``etl/nightly``) or by its id. Like the
other commands, these ask the control plane the engine uses (in process over the embedded store,
or the API at ``OVERCAST_API_URL``).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from overcast.infra.cli.runs import _client, _console, _fail, _state, _when

if TYPE_CHECKING:
    from overcast.client import Client
    from overcast.core.deployments import Deployment

deployment_app = typer.Typer(
    help="Deployments: list, inspect, run, pause and resume them.", no_args_is_help=True
)

NAME_HELP = "The deployment: <flow name>/<deployment name> (etl/nightly), or its id."


def register(app: typer.Typer) -> None:
    """Add ``deployment`` to the root app."""
    app.add_typer(deployment_app, name="deployment")


def _resolve(client: Client, name: str) -> Deployment:
    from overcast.core.errors import NotFoundError, OvercastError

    try:
        try:
            deployment_id = uuid.UUID(name)
        except ValueError:
            return client.read_deployment_by_name(name)
        return client.read_deployment(deployment_id)
    except NotFoundError:
        _fail(f"no deployment {name!r} (see overcast deployment ls)")
    except OvercastError as exc:
        _fail(str(exc))
    raise typer.Exit(1)  # _fail has exited


def _schedules(deployment: Deployment) -> str:
    from overcast.core.schedules import describe

    if not deployment.schedules:
        return "-"
    return "\n".join(describe(s.schedule) + ("" if s.active else " (inactive)") for s in deployment.schedules)


def _status(deployment: Deployment) -> str:
    return "[yellow]paused[/yellow]" if deployment.paused else "[green]active[/green]"


def _limit(deployment: Deployment) -> str:
    if deployment.concurrency_limit is None:
        return "-"
    return f"{deployment.concurrency_limit} ({deployment.concurrency_options.collision_strategy.value})"


@deployment_app.command("ls")
def deployment_ls(
    flow_name: Annotated[
        list[str] | None, typer.Option("--flow", help="Only deployments of this flow (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many deployments to show.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the deployments as a JSON array.")] = False,
) -> None:
    """List deployments by name."""
    from rich.markup import escape
    from rich.table import Table

    from overcast.core.deployments import DeploymentFilter
    from overcast.core.errors import OvercastError

    try:
        page = _client().filter_deployments(DeploymentFilter(flow_name=flow_name or None, limit=limit))
    except (OvercastError, ValueError) as exc:
        _fail(f"cannot list deployments: {exc}")
        return
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in page.items], indent=2))
        return
    table = Table("Name", "Status", "Schedules", "Work pool", "Concurrency", title="Deployments")
    table.add_column("ID", no_wrap=True, min_width=36)
    for deployment in page.items:
        pool = deployment.work_pool_name or "-"
        if deployment.work_pool_name and deployment.work_queue_name:
            pool += f" / {deployment.work_queue_name}"
        table.add_row(
            escape(deployment.full_name),
            _status(deployment),
            escape(_schedules(deployment)),
            escape(pool),
            _limit(deployment),
            str(deployment.id),
        )
    _console().print(table)


@deployment_app.command("inspect")
def deployment_inspect(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    upcoming: Annotated[int, typer.Option(min=0, max=50, help="How many next scheduled times to show.")] = 5,
) -> None:
    """Show a deployment: its settings, its schedules with their next times, and its scheduled runs."""
    from rich.markup import escape
    from rich.table import Table

    from overcast.core.schedules import describe, next_occurrences
    from overcast.core.schemas import FlowRunFilter
    from overcast.core.states import StateType

    client = _client()
    deployment = _resolve(client, name)
    console = _console()
    details = Table.grid(padding=(0, 2))
    for label, value in [
        ("name", deployment.full_name),
        ("id", str(deployment.id)),
        ("status", _status(deployment)),
        ("entrypoint", deployment.entrypoint or "-"),
        ("description", deployment.description or "-"),
        ("version", deployment.version or "-"),
        ("parameters", json.dumps(deployment.parameters)),
        ("enforce schema", "yes" if deployment.enforce_parameter_schema else "no"),
        ("tags", ", ".join(deployment.tags) or "-"),
        ("work pool", deployment.work_pool_name or "-"),
        ("work queue", deployment.work_queue_name or "-"),
        ("job variables", json.dumps(deployment.job_variables) if deployment.job_variables else "-"),
        ("concurrency", _limit(deployment)),
        ("updated", _when(deployment.updated)),
    ]:
        details.add_row(f"[bold]{label}[/bold]", value if label == "status" else escape(value))
    console.print(details, markup=True)
    now = datetime.now(UTC)
    schedules = Table("Schedule", "Active", "Next times (UTC)", title="Schedules")
    for schedule in deployment.schedules:
        times = (
            next_occurrences(schedule.schedule, now, upcoming)
            if schedule.active and not deployment.paused
            else []
        )
        schedules.add_row(
            escape(describe(schedule.schedule)),
            "yes" if schedule.active else "no",
            "\n".join(_when(t) for t in times) or "-",
        )
    if deployment.schedules:
        console.print(schedules)
    else:
        console.print("no schedules: runs are made on demand (overcast deployment run)")
    runs = client.filter_flow_runs(
        FlowRunFilter(
            deployment_id=[deployment.id],
            state_type=[StateType.SCHEDULED],
            sort="EXPECTED_START_TIME_ASC",
            limit=10,
        )
    ).items
    scheduled = Table("Expected start (UTC)", "Name", "State", title="Scheduled runs")
    scheduled.add_column("ID", no_wrap=True, min_width=36)
    for run in runs:
        scheduled.add_row(_when(run.expected_start_time), run.name, _state(run.state), str(run.id))
    console.print(scheduled if runs else "no scheduled runs")


def _parameters(params: list[str], params_json: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            _fail(f"--params is not JSON: {exc}")
        if not isinstance(loaded, dict):
            _fail("--params must be a JSON object")
        out.update(loaded)
    for item in params:
        key, eq, text = item.partition("=")
        if not eq or not key:
            _fail(f"--param {item!r} must be KEY=VALUE")
        try:
            out[key] = json.loads(text)  # numbers, booleans, lists, objects, quoted strings
        except ValueError:
            out[key] = text  # anything else is a string
    return out


@deployment_app.command("run")
def deployment_run(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A parameter KEY=VALUE (VALUE read as JSON when it is)."),
    ] = None,
    params: Annotated[str | None, typer.Option("--params", help="Parameters as a JSON object.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag for the run (repeatable).")] = None,
    start_in: Annotated[
        float | None, typer.Option("--start-in", min=0, help="Schedule the run this many seconds from now.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the run until it finishes.")] = False,
    interval: Annotated[
        float, typer.Option("--watch-interval", min=0.1, help="Seconds between polls.")
    ] = 2.0,
    timeout: Annotated[
        float | None, typer.Option("--watch-timeout", min=0, help="Stop watching after this many seconds.")
    ] = None,
) -> None:
    """Ask a deployment for a run (with its default parameters, or those given)."""
    from datetime import timedelta

    from overcast.core.deployments import DeploymentFlowRunCreate
    from overcast.core.errors import OvercastError

    client = _client()
    deployment = _resolve(client, name)
    when = datetime.now(UTC) + timedelta(seconds=start_in) if start_in else None
    try:
        request = DeploymentFlowRunCreate(
            parameters=_parameters(param or [], params), tags=tag or [], scheduled_start_time=when
        )
        run = client.create_flow_run_from_deployment(deployment.id, request)
    except (OvercastError, ValueError) as exc:
        _fail(f"cannot run {deployment.full_name}: {exc}")
        return
    console = _console()
    console.print(
        f"created flow run [bold]{run.name}[/bold] ({run.id}) of {deployment.full_name}, "
        f"{_state(run.state)} for {_when(run.expected_start_time)} UTC"
    )
    if watch:
        _watch(client, run.id, interval, timeout)


def _watch(client: Client, run_id: uuid.UUID, interval: float, timeout: float | None) -> None:
    console = _console()
    deadline = time.monotonic() + timeout if timeout is not None else None
    last = None
    while True:
        run = client.read_flow_run(run_id)
        if run.state.id != last:
            last = run.state.id
            message = f"  {run.state.message}" if run.state.message else ""
            console.print(f"{_when(run.state.timestamp)} {_state(run.state)}{message}")
        if run.state.is_terminal:
            raise typer.Exit(0 if run.state.type.value == "COMPLETED" else 1)
        if deadline is not None and time.monotonic() >= deadline:
            console.print(f"stopped watching; the run is {_state(run.state)}")
            raise typer.Exit(2)
        time.sleep(interval)


def _set_paused(name: str, paused: bool) -> None:
    from overcast.core.errors import OvercastError

    client = _client()
    deployment = _resolve(client, name)
    try:
        changed = (
            client.pause_deployment(deployment.id) if paused else client.resume_deployment(deployment.id)
        )
    except OvercastError as exc:
        _fail(f"cannot {'pause' if paused else 'resume'} {deployment.full_name}: {exc}")
        return
    what = "paused: its scheduled runs that had not started were deleted" if paused else "resumed"
    _console().print(f"deployment {changed.full_name} {what}")


@deployment_app.command("pause")
def deployment_pause(name: Annotated[str, typer.Argument(help=NAME_HELP)]) -> None:
    """Pause a deployment: its schedules make no runs until it is resumed."""
    _set_paused(name, True)


@deployment_app.command("resume")
def deployment_resume(name: Annotated[str, typer.Argument(help=NAME_HELP)]) -> None:
    """Resume a paused deployment: the next tick schedules its runs again."""
    _set_paused(name, False)
