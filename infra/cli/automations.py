"""``overcast automation ls|inspect|create|pause|resume|delete|firings``: triggers and their actions.

An automation is named by its id or by its name (names need not be unique: a name several
automations share is refused, use the id). ``create -f FILE`` reads one automation, a list of
them, or ``{"automations": [...]}``, as YAML or JSON (the fields of ``POST /automations``)::

    name: new uploads
    trigger:
      expect: [aws.s3.object.created]
      match: {aws.s3.bucket: uploads}
    actions:
      - type: run-deployment
        deployment_id: 7c1e…
        parameters: {key: "{{ event.resource['aws.s3.key'] }}"}

Like the other commands, these ask the control plane the engine uses (in process over the
embedded store, or the API at ``OVERCAST_API_URL``).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from overcast.infra.cli.runs import _client, _console, _fail, _when

if TYPE_CHECKING:
    from overcast.client import Client
    from overcast.core.automations import Automation, AutomationCreate, FiringRecord

automation_app = typer.Typer(
    help="Automations: list, inspect, create, pause, resume and delete them; see their firings.",
    no_args_is_help=True,
)

NAME_HELP = "The automation: its id, or its name."
PAGE = 200


def register(app: typer.Typer) -> None:
    """Add ``automation`` to the root app."""
    app.add_typer(automation_app, name="automation")


# -- summaries --------------------------------------------------------------------------------------


def _seconds(td: Any) -> str:
    total = int(td.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def trigger_summary(trigger: Any) -> str:
    """One line for people: what a trigger waits for (``on aws.s3.object.created where …``)."""
    from overcast.core.automations import EventTrigger, Posture

    if isinstance(trigger, EventTrigger):
        names = ", ".join(sorted(trigger.expect)) or "any event"
        window = _seconds(trigger.within)
        if trigger.posture is Posture.PROACTIVE:
            few = "no" if trigger.threshold == 1 else f"fewer than {trigger.threshold}"
            text = f"{few} {names} for {window}"
        else:
            text = f"on {names}"
        if trigger.match:
            text += " where " + ", ".join(f"{k}={v}" for k, v in sorted(trigger.match.items()))
        if trigger.after:
            text += f" after {', '.join(sorted(trigger.after))}"
        if trigger.posture is Posture.REACTIVE and (trigger.threshold > 1 or trigger.within.total_seconds()):
            text += f" ({trigger.threshold}x within {window})"
        if trigger.for_each:
            text += f" for each {', '.join(sorted(trigger.for_each))}"
        return text
    children = len(trigger.triggers)
    window = f" within {_seconds(trigger.within)}" if trigger.within is not None else ""
    if trigger.type == "sequence":
        return f"a sequence of {children} triggers{window}"
    return f"{trigger.require} of {children} triggers{window}"


def action_summary(action: Any) -> str:
    """One line for people: what an action does (``run-deployment 7c1e…``)."""
    target = next(
        (
            str(getattr(action, field))
            for field in ("deployment_id", "automation_id", "work_pool_name", "flow_run_id", "url")
            if getattr(action, field, None) is not None
        ),
        None,
    )
    if target is None and getattr(action, "source", None) is not None and action.source.value == "inferred":
        target = "(inferred)"
    if action.type == "change-flow-run-state":
        target = f"{target or '(inferred)'} to {action.state.value}"
    return f"{action.type} {target}" if target else action.type


def _actions(automation: Automation) -> str:
    every = [*automation.actions, *automation.actions_on_trigger]
    text = "\n".join(action_summary(a) for a in every) or "-"
    if automation.actions_on_resolve:
        text += "\non resolve: " + ", ".join(action_summary(a) for a in automation.actions_on_resolve)
    return text


def _enabled(automation: Automation) -> str:
    return "[green]enabled[/green]" if automation.enabled else "[yellow]paused[/yellow]"


# -- lookups ----------------------------------------------------------------------------------------


def _every(client: Client, owner: str | None = None) -> Iterator[Automation]:
    cursor: str | None = None
    while True:
        page = client.filter_automations(owner_resource=owner, limit=PAGE, cursor=cursor)
        yield from page.items
        cursor = page.next_cursor
        if cursor is None:
            return


def _resolve(client: Client, name: str) -> Automation:
    from overcast.core.errors import NotFoundError, OvercastError

    try:
        try:
            automation_id = uuid.UUID(name)
        except ValueError:
            named = [a for a in _every(client) if a.name == name]
            if len(named) > 1:
                ids = ", ".join(str(a.id) for a in named)
                _fail(f"{len(named)} automations are named {name!r} ({ids}): give the id")
            if named:
                return named[0]
            raise NotFoundError("automation", name) from None
        return client.read_automation(automation_id)
    except NotFoundError:
        _fail(f"no automation {name!r} (see overcast automation ls)")
    except OvercastError as exc:
        _fail(str(exc))
    raise typer.Exit(1)  # _fail has exited


# -- commands ---------------------------------------------------------------------------------------


@automation_app.command("ls")
def automation_ls(
    owner: Annotated[
        str | None,
        typer.Option(help="Only the automations this resource owns (overcast.deployment.<id>)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the automations as a JSON array.")] = False,
) -> None:
    """List automations with what triggers them and what they do."""
    from rich.markup import escape
    from rich.table import Table

    from overcast.core.errors import OvercastError

    try:
        automations = list(_every(_client(), owner))
    except (OvercastError, ValueError) as exc:
        _fail(f"cannot list automations: {exc}")
        return
    if as_json:
        typer.echo(json.dumps([a.model_dump(mode="json") for a in automations], indent=2))
        return
    table = Table("Name", "Enabled", "Trigger", "Actions", title="Automations")
    table.add_column("ID", no_wrap=True, min_width=36)
    for automation in automations:
        table.add_row(
            escape(automation.name),
            _enabled(automation),
            escape(trigger_summary(automation.trigger)),
            escape(_actions(automation)),
            str(automation.id),
        )
    _console().print(table)


@automation_app.command("inspect")
def automation_inspect(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the automation as JSON.")] = False,
) -> None:
    """Show an automation: its settings, its trigger and its actions in full."""
    from rich.markup import escape
    from rich.table import Table

    automation = _resolve(_client(), name)
    if as_json:
        typer.echo(json.dumps(automation.model_dump(mode="json"), indent=2))
        return
    details = Table.grid(padding=(0, 2))
    for label, value in [
        ("name", automation.name),
        ("id", str(automation.id)),
        ("status", _enabled(automation)),
        ("description", automation.description or "-"),
        ("tags", ", ".join(automation.tags) or "-"),
        ("owner", automation.owner_resource or "-"),
        ("trigger", trigger_summary(automation.trigger)),
        ("actions", _actions(automation)),
        ("created", _when(automation.created)),
        ("updated", _when(automation.updated)),
    ]:
        details.add_row(f"[bold]{label}[/bold]", value if label == "status" else escape(value))
    console = _console()
    console.print(details)
    full = automation.model_dump(
        mode="json", include={"trigger", "actions", "actions_on_trigger", "actions_on_resolve"}
    )
    console.print(escape(json.dumps(full, indent=2)))


def _read_file(path: str) -> Any:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")
    try:
        if path.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)  # YAML is a superset of JSON: any other file may be either
    except (ValueError, yaml.YAMLError) as exc:
        _fail(f"{path} is neither YAML nor JSON: {exc}")
    return None  # _fail has exited


def _requests(document: Any, path: str) -> list[AutomationCreate]:
    from pydantic import ValidationError

    from overcast.core.automations import AutomationCreate, validate_action_templates
    from overcast.core.errors import InvalidValueError

    if isinstance(document, dict) and set(document) == {"automations"}:
        document = document["automations"]
    items = document if isinstance(document, list) else [document]
    if not items or not all(isinstance(item, dict) for item in items):
        _fail(f"{path} must hold an automation (a mapping), a list of them, or automations: [...]")
    out = []
    for number, item in enumerate(items, start=1):
        try:
            request = AutomationCreate.model_validate(item)
            validate_action_templates(request)
            out.append(request)
        except InvalidValueError as exc:
            _fail(f"automation {number} ({item.get('name', 'unnamed')}) in {path}: {exc}")
        except ValidationError as exc:
            where = (
                f"automation {number} ({item.get('name', 'unnamed')})" if len(items) > 1 else "the automation"
            )
            problems = "\n".join(
                f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
            )
            _fail(f"{where} in {path} is invalid:\n{problems}")
    return out


@automation_app.command("create")
def automation_create(
    from_file: Annotated[
        str,
        typer.Option(
            "--from-file", "-f", help="A YAML or JSON file: an automation, or a list of them ('-': stdin)."
        ),
    ],
) -> None:
    """Create automations from a file (all of them are checked before any is created)."""
    from overcast.core.errors import OvercastError

    requests = _requests(_read_file(from_file), from_file)
    client = _client()
    console = _console()
    for request in requests:
        try:
            automation = client.create_automation(request)
        except OvercastError as exc:
            _fail(f"cannot create automation {request.name!r}: {exc}")
            return
        console.print(f"created automation [bold]{automation.name}[/bold] ({automation.id})")


def _set_enabled(name: str, enabled: bool) -> None:
    from overcast.core.errors import OvercastError

    client = _client()
    automation = _resolve(client, name)
    try:
        changed = client.set_automation_enabled(automation.id, enabled)
    except OvercastError as exc:
        _fail(f"cannot {'resume' if enabled else 'pause'} automation {automation.name!r}: {exc}")
        return
    what = "resumed" if enabled else "paused: it ignores events until resumed"
    _console().print(f"automation {changed.name} ({changed.id}) {what}")


@automation_app.command("pause")
def automation_pause(name: Annotated[str, typer.Argument(help=NAME_HELP)]) -> None:
    """Pause an automation: it ignores events until it is resumed."""
    _set_enabled(name, False)


@automation_app.command("resume")
def automation_resume(name: Annotated[str, typer.Argument(help=NAME_HELP)]) -> None:
    """Resume a paused automation."""
    _set_enabled(name, True)


@automation_app.command("delete")
def automation_delete(name: Annotated[str, typer.Argument(help=NAME_HELP)]) -> None:
    """Delete an automation."""
    from overcast.core.errors import OvercastError

    client = _client()
    automation = _resolve(client, name)
    try:
        gone = client.delete_automation(automation.id)
    except OvercastError as exc:
        _fail(f"cannot delete automation {automation.name!r}: {exc}")
        return
    if not gone:
        _fail(f"no automation {name!r} (it was deleted meanwhile)")
    _console().print(f"deleted automation {automation.name} ({automation.id})")


def _outcomes(record: FiringRecord) -> str:
    if not record.outcomes:
        return "-" if record.finished else "(acting)"
    return "\n".join(
        f"{'ok' if o.ok else 'FAILED'} {o.type}" + (f": {o.detail}" if o.detail else "")
        for o in record.outcomes
    )


@automation_app.command("firings")
def automation_firings(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many firings to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the firings as a JSON array.")] = False,
) -> None:
    """Show an automation's firings, newest first, with what each action did."""
    from rich.markup import escape
    from rich.table import Table

    from overcast.core.errors import OvercastError

    client = _client()
    automation = _resolve(client, name)
    try:
        records = client.read_automation_firings(automation.id, limit=limit)
    except OvercastError as exc:
        _fail(f"cannot read the firings of {automation.name!r}: {exc}")
        return
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    if not records:
        _console().print(f"automation {automation.name} has not fired")
        return
    table = Table("Fired (UTC)", "Kind", "Event", "Outcomes", title=f"Firings of {automation.name}")
    table.add_column("ID", no_wrap=True, min_width=36)
    for record in records:
        firing = record.firing
        event = firing.triggering_event
        about = f"{event.event}\n{event.resource.get('overcast.resource.id', '')}" if event else "(absence)"
        table.add_row(
            _when(firing.occurred),
            firing.kind.value,
            escape(about),
            escape(_outcomes(record)),
            str(firing.id),
        )
    _console().print(table)
