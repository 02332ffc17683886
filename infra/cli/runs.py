"""``overcast flow-run ls|inspect``, ``overcast task-run ls``, ``overcast logs``: what ran, and how.

They ask the control plane the engine uses (in process over the embedded store, or the API at
``OVERCAST_API_URL``), so they show the runs of the flows you ran, wherever they ran.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from overcast.client import Client

flow_run_app = typer.Typer(help="Inspect flow runs.", no_args_is_help=True)
task_run_app = typer.Typer(help="Inspect task runs.", no_args_is_help=True)

STATE_COLORS = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CRASHED": "red",
    "CANCELLED": "grey50",
    "CANCELLING": "yellow",
    "RUNNING": "blue",
    "PENDING": "cyan",
    "SCHEDULED": "cyan",
    "PAUSED": "yellow",
}


def register(app: typer.Typer) -> None:
    """Add ``flow-run``, ``task-run`` and ``logs`` to the root app."""
    app.add_typer(flow_run_app, name="flow-run")
    app.add_typer(task_run_app, name="task-run")
    app.command("logs")(logs)


def _client() -> Client:
    from overcast._runtime import get_runtime

    return get_runtime().client


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False, width=None if _is_terminal() else 200)


def _is_terminal() -> bool:
    import sys

    return sys.stdout.isatty()


def _state(state: Any) -> str:
    color = STATE_COLORS.get(state.type.value, "white")
    return f"[{color}]{state.name}[/{color}]"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


@flow_run_app.command("ls")
def flow_run_ls(
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many runs to show.")] = 20,
    state: Annotated[
        list[str] | None, typer.Option(help="Only runs in this state type (repeatable).")
    ] = None,
    flow_name: Annotated[
        list[str] | None, typer.Option("--flow", help="Only runs of this flow (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as a JSON array.")] = False,
) -> None:
    """List flow runs, newest first."""
    from rich.table import Table

    from overcast.core.errors import OvercastError
    from overcast.core.schemas import FlowRunFilter

    try:
        query = FlowRunFilter(
            limit=limit,
            state_type=[s.upper() for s in state] if state else None,  # type: ignore[misc]
            flow_name=flow_name or None,
        )
        page = _client().filter_flow_runs(query)
    except (OvercastError, ValueError) as exc:
        _fail(f"cannot list flow runs: {exc}")
        return
    if as_json:
        typer.echo(json.dumps([run.model_dump(mode="json") for run in page.items], indent=2))
        return
    table = Table("Flow", "Name", "State", "Started", "Duration", "Runs", title="Flow runs")
    table.add_column("ID", no_wrap=True, min_width=36)  # whole, so it can be copied
    for run in page.items:
        duration = (run.end_time - run.start_time) if run.end_time and run.start_time else None
        table.add_row(
            run.flow_name,
            run.name,
            _state(run.state),
            _when(run.start_time),
            f"{duration.total_seconds():.3f}s" if duration else "-",
            str(run.run_count),
            str(run.id),
        )
    _console().print(table)


@flow_run_app.command("retry")
def flow_run_retry(run_id: Annotated[uuid.UUID, typer.Argument(help="The flow run's id.")]) -> None:
    """Mark a flow run for another attempt (AwaitingRetry), whatever its state.

    Then run it again with OVERCAST_FLOW_RUN_ID set to its id: tasks whose results were
    persisted and committed are not redone.
    """
    from overcast.core.errors import NotFoundError
    from overcast.core.states import AwaitingRetry

    client = _client()
    try:
        answer = client.set_flow_run_state(run_id, AwaitingRetry(message="retry asked for"), force=True)
    except NotFoundError:
        _fail(f"no flow run {run_id}")
        return
    _console().print(
        f"flow run {run_id} is {_state(answer.state)}; run it with OVERCAST_FLOW_RUN_ID={run_id}"
    )


@flow_run_app.command("execute")
def flow_run_execute(run_id: Annotated[uuid.UUID, typer.Argument(help="The flow run's id.")]) -> None:
    """Execute a deployment's flow run here (what workers and runners do); exit 1 if it fails."""
    from overcast.handlers.runner import RunRequest, handle

    outcome = handle([RunRequest("cli", run_id)])["cli"]
    if outcome not in ("completed", "skipped"):
        raise typer.Exit(1)


@flow_run_app.command("inspect")
def flow_run_inspect(run_id: Annotated[uuid.UUID, typer.Argument(help="The flow run's id.")]) -> None:
    """Show a flow run: its details and its state history."""
    from rich.table import Table

    from overcast.core.errors import OvercastError

    client = _client()
    try:
        run = client.read_flow_run(run_id)
        states = client.read_flow_run_states(run_id)
    except OvercastError as exc:
        _fail(f"cannot read flow run {run_id}: {exc}")
        return
    console = _console()
    details = Table.grid(padding=(0, 2))
    for label, value in [
        ("id", str(run.id)),
        ("flow", run.flow_name),
        ("name", run.name),
        ("state", _state(run.state) + (f"  {run.state.message}" if run.state.message else "")),
        ("parameters", str(run.parameters)),
        ("tags", ", ".join(run.tags) or "-"),
        ("runs", f"{run.run_count} (retries allowed: {run.retry_policy.retries})"),
        ("expected start", _when(run.expected_start_time)),
        ("started", _when(run.start_time)),
        ("ended", _when(run.end_time)),
        ("run time", f"{run.total_run_time.total_seconds():.3f}s"),
    ]:
        details.add_row(f"[bold]{label}[/bold]", value)
    console.print(details)
    history = Table("Time", "State", "Message", title="State history")
    for state in states:
        history.add_row(_when(state.timestamp), _state(state), state.message or "")
    console.print(history)


@task_run_app.command("ls")
def task_run_ls(
    flow_run: Annotated[uuid.UUID | None, typer.Option(help="The flow run whose task runs to list.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many task runs to show.")] = 100,
) -> None:
    """List the task runs of a flow run (or those run outside any flow), oldest first."""
    from rich.table import Table

    from overcast.core.errors import OvercastError
    from overcast.core.schemas import TaskRunFilter

    try:
        page = _client().filter_task_runs(TaskRunFilter(flow_run_id=flow_run, limit=limit))
    except OvercastError as exc:
        _fail(f"cannot list task runs: {exc}")
        return
    table = Table("Name", "Task", "State", "Started", "Duration", "Runs", title="Task runs")
    table.add_column("ID", no_wrap=True, min_width=36)
    for run in page.items:
        duration = (run.end_time - run.start_time) if run.end_time and run.start_time else None
        table.add_row(
            run.name,
            run.task_key.rsplit("-", 1)[0],
            _state(run.state),
            _when(run.start_time),
            f"{duration.total_seconds() * 1000:.2f}ms" if duration else "-",
            str(run.run_count),
            str(run.id),
        )
    _console().print(table)


def logs(
    run_id: Annotated[uuid.UUID, typer.Argument(help="A flow run's id (or a task run's, outside flows).")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="The most lines to show.")] = 1000,
) -> None:
    """Print a run's log lines, oldest first."""
    import logging

    from overcast.core.errors import OvercastError

    client = _client()
    lines = []
    try:
        cursor = None
        while len(lines) < limit:
            page = client.read_logs(run_id, limit=min(1000, limit - len(lines)), cursor=cursor)
            lines += page.items
            if (cursor := page.next_cursor) is None:
                break
    except OvercastError as exc:
        _fail(f"cannot read logs of {run_id}: {exc}")
        return
    console = _console()
    if not lines:
        console.print(f"no log lines for run {run_id}")
    for line in lines:
        level = logging.getLevelName(line.level)
        console.print(f"{_when(line.timestamp)} | {level:<7} | {line.name} - {line.message}", markup=False)
