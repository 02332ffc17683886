"""``overcast variable ls|get|set|unset``: named JSON values that flows, deployments and automations read."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from overcast.infra.cli.runs import _client, _console, _fail, _when

variable_app = typer.Typer(help="Manage variables: named JSON values your flows read.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``variable`` to the root app."""
    app.add_typer(variable_app, name="variable")


@variable_app.command("ls")
def variable_ls(
    prefix: Annotated[str | None, typer.Option(help="Only variables whose name starts with this.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only variables with this tag (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many variables to show.")] = 100,
) -> None:
    """List variables by name."""
    from pydantic import ValidationError
    from rich.table import Table

    from overcast.core.errors import OvercastError
    from overcast.core.schemas import VariableFilter

    try:
        query = VariableFilter.model_validate(
            {"name_prefix": prefix, "tags_all": tag or None, "limit": limit}
        )
        page = _client().filter_variables(query)
    except ValidationError as exc:
        _fail(f"cannot list variables: {_problems(exc)}")
        return
    except OvercastError as exc:
        _fail(f"cannot list variables: {exc}")
        return
    table = Table("Name", "Value", "Tags", "Updated", title="Variables")
    for variable in page.items:
        text = json.dumps(variable.value, ensure_ascii=False)
        table.add_row(
            variable.name,
            text if len(text) <= 60 else text[:59] + "…",
            ", ".join(variable.tags) or "-",
            _when(variable.updated),
        )
    _console().print(table)


@variable_app.command("get")
def variable_get(name: Annotated[str, typer.Argument(help="The variable's name.")]) -> None:
    """Print a variable's value (a string as is, anything else as JSON)."""
    from overcast.core.errors import NotFoundError, OvercastError

    try:
        value = _client().read_variable(name).value
    except NotFoundError:
        _fail(f"variable {name!r} not found")
        return
    except OvercastError as exc:
        _fail(f"cannot read variable {name!r}: {exc}")
        return
    typer.echo(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2))


@variable_app.command("set")
def variable_set(
    name: Annotated[str, typer.Argument(help="The variable's name: lowercase letters, digits, _ and -.")],
    value: Annotated[
        str, typer.Argument(help='The value: JSON (42, true, [1, 2], {"a": 1}), else a string.')
    ],
    overwrite: Annotated[bool, typer.Option(help="Replace the value of an existing variable.")] = False,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable).")] = None,
) -> None:
    """Create a variable, or replace one's value with --overwrite."""
    from pydantic import ValidationError

    from overcast.core.errors import OvercastError
    from overcast.core.schemas import VariableCreate
    from overcast.core.services.variables import VariableExistsError

    fields: dict[str, Any] = {"name": name, "value": parse_value(value)}
    if tag:
        fields["tags"] = tag
    try:
        variable = _client().set_variable(VariableCreate.model_validate(fields), overwrite=overwrite)
    except VariableExistsError:
        _fail(f"variable {name!r} already exists; pass --overwrite to replace its value")
        return
    except ValidationError as exc:
        _fail(f"cannot set variable {name!r}: {_problems(exc)}")
        return
    except OvercastError as exc:
        _fail(f"cannot set variable {name!r}: {exc}")
        return
    typer.echo(f"set {variable.name} = {json.dumps(variable.value, ensure_ascii=False)}")


@variable_app.command("unset")
def variable_unset(name: Annotated[str, typer.Argument(help="The variable's name.")]) -> None:
    """Delete a variable."""
    from overcast.core.errors import OvercastError

    try:
        deleted = _client().delete_variable(name)
    except OvercastError as exc:
        _fail(f"cannot unset variable {name!r}: {exc}")
        return
    if not deleted:
        _fail(f"variable {name!r} not found")
        return
    typer.echo(f"unset {name}")


def parse_value(text: str) -> Any:
    """``text`` read as JSON; text that is not JSON is a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _problems(exc: Any) -> str:
    return "; ".join(str(error["msg"]) for error in exc.errors())
