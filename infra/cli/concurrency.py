"""``overcast concurrency-limit create|ls|inspect|update|delete``: global concurrency and rate limits.

Code takes a limit's slots with ``overcast.concurrency.concurrency`` (held while a block runs)
or ``rate_limit`` (slots that decay); these commands manage the limits themselves.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from overcast.infra.cli.runs import _client, _console, _fail, _when

if TYPE_CHECKING:
    from overcast.core.concurrency import ConcurrencyLimit

limit_app = typer.Typer(
    help="Manage global concurrency limits and rate limits (used by concurrency() and rate_limit()).",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="The limit's name.", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    """Add ``concurrency-limit`` to the root app."""
    app.add_typer(limit_app, name="concurrency-limit")


@limit_app.command("create")
def limit_create(
    name: Annotated[
        str,
        typer.Argument(
            help="The limit's name: letters, digits, _, -, : and . (not first).", show_default=False
        ),
    ],
    limit: Annotated[int, typer.Argument(help="How many slots it has (0 lets nothing through).")],
    slot_decay_per_second: Annotated[
        float,
        typer.Option(help="Make it a rate limit: occupied slots free themselves at this rate."),
    ] = 0.0,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it switched off.")] = False,
) -> None:
    """Create a concurrency limit, or a rate limit with --slot-decay-per-second."""
    from pydantic import ValidationError

    from overcast.core.concurrency import ConcurrencyLimitCreate, ConcurrencyLimitExistsError
    from overcast.core.errors import OvercastError

    try:
        request = ConcurrencyLimitCreate.model_validate(
            {
                "name": name,
                "limit": limit,
                "slot_decay_per_second": slot_decay_per_second,
                "active": not inactive,
            }
        )
        created = _client().create_concurrency_limit(request)
    except ValidationError as exc:
        _fail(f"cannot create concurrency limit {name!r}: {_problems(exc)}")
        return
    except ConcurrencyLimitExistsError:
        _fail(
            f"concurrency limit {name!r} already exists; change it with `overcast concurrency-limit update`"
        )
        return
    except OvercastError as exc:
        _fail(f"cannot create concurrency limit {name!r}: {exc}")
        return
    typer.echo(f"created {_kind(created)} {created.name} with {created.limit} slots")


@limit_app.command("ls")
def limit_ls(
    prefix: Annotated[str | None, typer.Option(help="Only limits whose name starts with this.")] = None,
    as_json: AsJson = False,
) -> None:
    """List limits with their occupancy."""
    from pydantic import ValidationError
    from rich.table import Table

    from overcast.core.concurrency import ConcurrencyLimitFilter
    from overcast.core.errors import OvercastError

    client = _client()
    limits: list[ConcurrencyLimit] = []
    cursor = None
    try:
        while True:
            query = ConcurrencyLimitFilter.model_validate(
                {"name_prefix": prefix, "limit": 500, "cursor": cursor}
            )
            page = client.filter_concurrency_limits(query)
            limits += page.items
            if (cursor := page.next_cursor) is None:
                break
    except ValidationError as exc:
        _fail(f"cannot list concurrency limits: {_problems(exc)}")
        return
    except OvercastError as exc:
        _fail(f"cannot list concurrency limits: {exc}")
        return
    if as_json:
        typer.echo(json.dumps([limit.model_dump(mode="json") for limit in limits], indent=2))
        return
    table = Table("Name", "Slots", "Active slots", "Denied", "Decay /s", "Active", title="Concurrency limits")
    for limit in limits:
        table.add_row(
            limit.name,
            str(limit.limit),
            str(limit.active_slots),
            str(limit.denied_slots),
            f"{limit.slot_decay_per_second:g}" if limit.is_rate_limit else "-",
            "yes" if limit.active else "[grey50]no[/grey50]",
        )
    _console().print(table)


@limit_app.command("inspect")
def limit_inspect(name: Name, as_json: AsJson = False) -> None:
    """Show a limit: its settings and how many of its slots are taken now."""
    from rich.table import Table

    limit = _read(name)
    if as_json:
        typer.echo(json.dumps(limit.model_dump(mode="json"), indent=2))
        return
    details = Table.grid(padding=(0, 2))
    decay = f"{limit.slot_decay_per_second:g} slots/s" if limit.is_rate_limit else "- (slots are given back)"
    for label, value in [
        ("name", limit.name),
        ("id", str(limit.id)),
        ("kind", _kind(limit)),
        ("active", "yes" if limit.active else "no (lets everything through)"),
        ("slots", str(limit.limit)),
        ("active slots", f"{limit.active_slots} of {limit.limit}"),
        ("denied slots", f"{limit.denied_slots} (since it last granted any)"),
        ("slot decay", decay),
        ("created", _when(limit.created)),
        ("updated", _when(limit.updated)),
    ]:
        details.add_row(f"[bold]{label}[/bold]", value)
    _console().print(details)


@limit_app.command("update")
def limit_update(
    name: Name,
    limit: Annotated[int | None, typer.Option(help="Its new number of slots.")] = None,
    active: Annotated[
        bool | None, typer.Option("--active/--inactive", help="Switch it on or off.", show_default=False)
    ] = None,
    slot_decay_per_second: Annotated[
        float | None, typer.Option(help="Its new decay (0 makes it a concurrency limit).")
    ] = None,
) -> None:
    """Change a limit's slots, switch it on or off, or change its slot decay."""
    from pydantic import ValidationError

    from overcast.core.concurrency import ConcurrencyLimitUpdate
    from overcast.core.errors import NotFoundError, OvercastError

    fields: dict[str, Any] = {
        "limit": limit,
        "active": active,
        "slot_decay_per_second": slot_decay_per_second,
    }
    if all(value is None for value in fields.values()):
        _fail("nothing to change: pass --limit, --active/--inactive or --slot-decay-per-second")
        return
    try:
        updated = _client().update_concurrency_limit(name, ConcurrencyLimitUpdate.model_validate(fields))
    except ValidationError as exc:
        _fail(f"cannot update concurrency limit {name!r}: {_problems(exc)}")
        return
    except NotFoundError:
        _fail(f"concurrency limit {name!r} not found")
        return
    except OvercastError as exc:
        _fail(f"cannot update concurrency limit {name!r}: {exc}")
        return
    state = "active" if updated.active else "inactive"
    typer.echo(f"updated {_kind(updated)} {updated.name}: {updated.limit} slots, {state}")


@limit_app.command("delete")
def limit_delete(name: Name) -> None:
    """Delete a limit (code that asks for it then runs unlimited, unless strict)."""
    from overcast.core.errors import OvercastError

    try:
        deleted = _client().delete_concurrency_limit(name)
    except OvercastError as exc:
        _fail(f"cannot delete concurrency limit {name!r}: {exc}")
        return
    if not deleted:
        _fail(f"concurrency limit {name!r} not found")
        return
    typer.echo(f"deleted concurrency limit {name}")


def _read(name: str) -> ConcurrencyLimit:
    from overcast.core.errors import NotFoundError, OvercastError

    try:
        return _client().read_concurrency_limit(name)
    except NotFoundError:
        _fail(f"concurrency limit {name!r} not found")
    except OvercastError as exc:
        _fail(f"cannot read concurrency limit {name!r}: {exc}")
    raise AssertionError("unreachable")  # _fail exits


def _kind(limit: ConcurrencyLimit) -> str:
    return (
        f"rate limit ({limit.slot_decay_per_second:g} slots/s)"
        if limit.is_rate_limit
        else "concurrency limit"
    )


def _problems(exc: Any) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" if error["loc"] else str(error["msg"])
        for error in exc.errors()
    )
