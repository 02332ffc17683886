"""``overcast events ls|stream|emit``: what happened, as it happens.

They ask the control plane the engine uses (in process over the embedded store, or the API at
``OVERCAST_API_URL``), like ``overcast flow-run``. ``stream`` follows new events by polling:
each poll lists the last minute of events, oldest first, and prints those it has not printed
yet, so an event that reaches the store up to a minute after it occurred is still shown, once.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from overcast.infra.cli.runs import _client, _console, _fail

if TYPE_CHECKING:
    from overcast.client import Client
    from overcast.core.events import Event, EventFilter

events_app = typer.Typer(help="List, follow and send events.", no_args_is_help=True)

LOOKBACK = timedelta(minutes=1)
"""How late an event may reach the store and still be streamed."""
PAGE = 500  # the API's most events per page
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Names = Annotated[
    list[str] | None,
    typer.Option("--name", "-n", help="Only events of this name; '*' matches anything (repeatable)."),
]
Resource = Annotated[
    str | None,
    typer.Option("--resource", "-r", help="Only events about this resource id ('prefix*' for a prefix)."),
]
Related = Annotated[str | None, typer.Option(help="Only events with this related resource id.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    """Add ``events`` to the root app."""
    app.add_typer(events_app, name="events")


@events_app.command("ls")
def events_ls(
    name: Names = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave out events of this name (repeatable).")
    ] = None,
    resource: Resource = None,
    related: Related = None,
    role: Annotated[
        str | None, typer.Option(help="Only events with a related resource in this role.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time: ISO 8601, or ago (30s, 15m, 1h, 2d).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time: ISO 8601, or ago.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many events to show.")] = 20,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="Oldest first (default: newest).")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """List events, newest first."""
    from pydantic import ValidationError
    from rich.table import Table

    from overcast.core.errors import OvercastError

    try:
        query = _filter(
            name,
            resource,
            related,
            exclude=exclude,
            role=role,
            since=_moment(since, "--since"),
            until=_moment(until, "--until"),
            order="asc" if oldest_first else "desc",
        )
        found = list(_listing(_client(), query, limit))
    except (ValidationError, OvercastError, ValueError) as exc:
        _fail(f"cannot list events: {_problems(exc)}")
        return
    if as_json:
        typer.echo(json.dumps([event.model_dump(mode="json") for event in found], indent=2))
        return
    table = Table(title="Events")
    table.add_column("Occurred (UTC)", no_wrap=True)
    table.add_column("Event", min_width=12)
    table.add_column("Resource", min_width=12)
    table.add_column("Related", max_width=40)
    table.add_column("ID", no_wrap=True, min_width=36)  # whole, so it can be copied
    for event in found:
        table.add_row(
            _when(event.occurred),
            event.event,
            _resource(event.resource),
            related_summary(event),
            str(event.id),
        )
    _console().print(table)


@events_app.command("stream")
def events_stream(
    name: Names = None,
    resource: Resource = None,
    related: Related = None,
    since: Annotated[
        str | None, typer.Option(help="Also print events from this time on (ISO 8601, or ago: 10m).")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.05, max=60, help="Seconds between polls.")] = 1.0,
    max_events: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after printing this many events.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="Stop after this many seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as a line of JSON.")] = False,
) -> None:
    """Print new events as they arrive, until Ctrl-C (or --max, --timeout)."""
    from pydantic import ValidationError

    from overcast.core.errors import OvercastError

    deadline = None if timeout is None else time.monotonic() + timeout
    printed = 0
    try:
        start = _moment(since, "--since")
        query = _filter(name, resource, related)
        follower = Follower(_client(), query, start)
        while True:
            for event in follower.poll():
                typer.echo(json.dumps(event.model_dump(mode="json")) if as_json else stream_line(event))
                printed += 1
                if max_events is not None and printed >= max_events:
                    return
            if deadline is not None and time.monotonic() >= deadline:
                return
            wait = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            time.sleep(wait)
    except KeyboardInterrupt:
        return  # Ctrl-C: a normal way to stop following
    except (ValidationError, OvercastError, ValueError) as exc:
        _fail(f"cannot stream events: {_problems(exc)}")


@events_app.command("emit")
def events_emit(
    event: Annotated[str, typer.Argument(help="The event's name (shop.order.placed).")],
    resource: Annotated[str, typer.Option("--resource", "-r", help="The id of the resource it is about.")],
    label: Annotated[
        list[str] | None, typer.Option(help="A label of the resource, NAME=VALUE (repeatable).")
    ] = None,
    related: Annotated[
        list[str] | None, typer.Option(help="A related resource, ID:ROLE (repeatable).")
    ] = None,
    payload: Annotated[str | None, typer.Option(help="The payload, a JSON object.")] = None,
) -> None:
    """Send an event (as ``emit_event`` does), and print its id."""
    from pydantic import ValidationError

    from overcast.core.errors import OvercastError
    from overcast.core.events import Event

    try:
        labels = dict(_pair(text, "=", "--label") for text in label or ())
        links = [
            {"overcast.resource.id": rid, "overcast.resource.role": role}
            for rid, role in (_pair(text, ":", "--related", last=True) for text in related or ())
        ]
        body = json.loads(payload) if payload else {}
        made = Event.model_validate(
            {
                "event": event,
                "resource": {**labels, "overcast.resource.id": resource},
                "related": links,
                "payload": body,
            }
        )
        _client().emit_events([made])
    except json.JSONDecodeError as exc:
        _fail(f"cannot send the event: --payload is not JSON: {exc}")
        return
    except (ValidationError, OvercastError, ValueError) as exc:
        _fail(f"cannot send the event: {_problems(exc)}")
        return
    typer.echo(str(made.id))


class Follower:
    """Polls for events matching a filter and hands each out once, oldest first.

    Each poll reads the events of the last ``LOOKBACK`` (by this machine's clock), from
    ``since`` on the first, and hands out those it has not handed out before.

    Args:
        client: the control plane.
        query: the filter (its span, order and cursor are the follower's).
        since: hand out events from this time on; ``None``: only those that arrive from now on.
    """

    def __init__(self, client: Client, query: EventFilter, since: datetime | None = None) -> None:
        self._client = client
        self._query = query
        self._seen: dict[Any, datetime] = {}
        self._first = since
        self._floor = since or datetime.now(UTC) - LOOKBACK
        if since is None:  # what is there already is not new: remember it, print nothing
            self._read(self._floor)

    def poll(self) -> list[Event]:
        """The matching events not handed out before, oldest first."""
        if self._first is not None:
            since, self._first = self._first, None
        else:
            since = max(self._floor, datetime.now(UTC) - LOOKBACK)
        fresh = self._read(since)
        # older than the lookback, an event is not read again: forget it, so memory stays flat
        oldest = datetime.now(UTC) - LOOKBACK
        self._seen = {key: when for key, when in self._seen.items() if when >= oldest}
        return fresh

    def _read(self, since: datetime) -> list[Event]:
        fresh = []
        for event in _pages(self._client, self._query.model_copy(update={"since": since, "order": "asc"})):
            if event.id not in self._seen:
                self._seen[event.id] = event.occurred
                fresh.append(event)
        return fresh


# -- helpers ---------------------------------------------------------------------------------


def _filter(
    names: list[str] | None,
    resource: str | None,
    related: str | None,
    *,
    exclude: list[str] | None = None,
    role: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    order: str = "desc",
) -> EventFilter:
    from overcast.core.events import EventFilter

    fields: dict[str, Any] = {
        "names": names or None,
        "exclude_names": exclude or None,
        "related_resource_id": related,
        "related_role": role,
        "since": since,
        "until": until,
        "order": order,
        "limit": PAGE,
    }
    if resource is not None and resource.endswith("*"):
        fields["resource_id_prefix"] = resource[:-1]
    else:
        fields["resource_id"] = resource
    return EventFilter.model_validate(fields)


def _listing(client: Client, query: EventFilter, limit: int) -> Iterator[Event]:
    return itertools.islice(_pages(client, query.model_copy(update={"limit": min(limit, PAGE)})), limit)


def _pages(client: Client, query: EventFilter) -> Iterator[Event]:
    """Every event ``query`` matches, a page at a time."""
    cursor = None
    while True:
        page = client.filter_events(query.model_copy(update={"cursor": cursor}))
        yield from page.items
        cursor = page.next_cursor
        if cursor is None:
            return


def _moment(text: str | None, option: str) -> datetime | None:
    """A time given as ISO 8601 (UTC unless it says otherwise) or as an age (``15m``: 15 minutes ago)."""
    if text is None:
        return None
    relative = _RELATIVE.match(text.strip().lower())
    if relative:
        amount, unit = relative.groups()
        return datetime.now(UTC) - timedelta(**{_UNITS[unit]: float(amount)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{option} {text!r} is neither ISO 8601 (2026-05-01T12:00) nor an age (30s, 15m, 1h, 2d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _pair(text: str, separator: str, option: str, *, last: bool = False) -> tuple[str, str]:
    left, found, right = text.rpartition(separator) if last else text.partition(separator)
    if not found or not left or not right:
        raise ValueError(f"{option} {text!r} must look like A{separator}B")
    return left, right


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _resource(labels: dict[str, str]) -> str:
    resource_id = labels["overcast.resource.id"]
    name = labels.get("overcast.resource.name")
    return f"{resource_id} ({name})" if name and name not in resource_id else resource_id


def related_summary(event: Event) -> str:
    """The related resources in a few words: ``3: flow-run amber-lynx, flow etl, tag``."""
    if not event.related:
        return "-"
    roles: dict[str, list[str]] = {}
    for resource in event.related:
        role = resource.get("overcast.resource.role", "?")
        roles.setdefault(role, []).append(resource.get("overcast.resource.name") or "")
    parts = []
    for role, names in roles.items():
        named = [n for n in names if n]
        if len(names) > 1:
            parts.append(f"{role} x{len(names)}")
        else:
            parts.append(f"{role} {named[0]}" if named else role)
    return f"{len(event.related)}: {', '.join(parts)}"


def stream_line(event: Event) -> str:
    """One event on one line: when, name, resource, related."""
    return f"{_when(event.occurred)}  {event.event}  {_resource(event.resource)}  [{related_summary(event)}]"


def _problems(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e['msg']}".lstrip(": ") for e in errors()
            )
        except (TypeError, KeyError):
            pass
    return str(exc)
