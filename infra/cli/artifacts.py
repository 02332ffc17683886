"""``overcast artifact ls|inspect``: the reports, tables, links, progress bars and images runs published.

They ask the control plane the engine uses (in process over the embedded store, or the API at
``OVERCAST_API_URL``), like ``overcast flow-run``.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer

from overcast.infra.cli.runs import _client, _console, _fail, _when

if TYPE_CHECKING:
    from rich.console import RenderableType

    from overcast.core.models import Artifact

artifact_app = typer.Typer(help="Inspect artifacts: what runs published.", no_args_is_help=True)

TYPES = ("markdown", "table", "link", "progress", "image")
BAR_WIDTH = 20


def register(app: typer.Typer) -> None:
    """Add ``artifact`` to the root app."""
    app.add_typer(artifact_app, name="artifact")


@artifact_app.command("ls")
def artifact_ls(
    key: Annotated[str | None, typer.Option(help="Only the versions of this key.")] = None,
    flow_run: Annotated[uuid.UUID | None, typer.Option(help="Only artifacts of this flow run.")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--type", help=f"Only artifacts of this type (repeatable): {', '.join(TYPES)}."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many artifacts to show.")] = 20,
) -> None:
    """List artifacts, newest first."""
    from pydantic import ValidationError
    from rich.table import Table

    from overcast.core.errors import OvercastError
    from overcast.core.schemas import ArtifactFilter

    try:
        query = ArtifactFilter.model_validate(
            {
                "key": key,
                "flow_run_id": flow_run,
                "type": [k.lower() for k in kind] if kind else None,
                "limit": limit,
            }
        )
        page = _client().filter_artifacts(query)
    except ValidationError as exc:
        _fail(f"cannot list artifacts: {_problems(exc)}")
        return
    except OvercastError as exc:
        _fail(f"cannot list artifacts: {exc}")
        return
    # on a narrow terminal the summary and the dates wrap; the rest keeps its width
    table = Table(title="Artifacts")
    table.add_column("Key", no_wrap=True, min_width=12)
    table.add_column("Version", min_width=7, justify="right")
    table.add_column("Type", min_width=8)
    table.add_column("Summary", max_width=40)
    table.add_column("Flow run", min_width=8)
    table.add_column("Created", min_width=10)
    table.add_column("ID", no_wrap=True, min_width=36)  # whole, so it can be copied
    for artifact in page.items:
        table.add_row(
            artifact.key or "-",
            str(artifact.version) if artifact.version else "-",
            artifact.type,
            summary(artifact, 40),
            str(artifact.flow_run_id)[:8] if artifact.flow_run_id else "-",
            _when(artifact.created),
            str(artifact.id),
        )
    _console().print(table)


@artifact_app.command("inspect")
def artifact_inspect(
    key: Annotated[str, typer.Argument(help="The artifact's key (or an artifact's id).")],
    history: Annotated[int, typer.Option(min=1, max=200, help="How many versions to list.")] = 20,
) -> None:
    """Show an artifact key's latest version in full, then its versions."""
    from rich.table import Table

    from overcast.core.errors import NotFoundError, OvercastError
    from overcast.core.schemas import ArtifactFilter

    client = _client()
    try:
        latest = _latest_or_by_id(client, key)
        versions = (
            client.filter_artifacts(ArtifactFilter(key=latest.key, limit=history)).items
            if latest.key
            else [latest]
        )
    except NotFoundError:
        _fail(f"no artifact has the key {key!r}")
        return
    except OvercastError as exc:
        _fail(f"cannot read artifact {key!r}: {exc}")
        return
    console = _console()
    details = Table.grid(padding=(0, 2))
    for label, value in [
        ("key", latest.key or "-"),
        ("version", f"{latest.version} (latest)" if latest.version else "-"),
        ("type", latest.type),
        ("id", str(latest.id)),
        ("flow run", str(latest.flow_run_id) if latest.flow_run_id else "-"),
        ("task run", str(latest.task_run_id) if latest.task_run_id else "-"),
        ("created", _when(latest.created)),
        ("updated", _when(latest.updated)),
        ("description", latest.description or "-"),
    ]:
        details.add_row(f"[bold]{label}[/bold]", value)
    console.print(details)
    console.print()
    console.print(render(latest))
    console.print()
    listing = Table("Version", "Type", "Summary", "Created", title=f"History of {latest.key or latest.id}")
    listing.add_column("ID", no_wrap=True, min_width=36)
    for artifact in versions:
        listing.add_row(
            str(artifact.version or "-"),
            artifact.type,
            summary(artifact),
            _when(artifact.created),
            str(artifact.id),
        )
    console.print(listing)


def _latest_or_by_id(client: Any, key: str) -> Artifact:
    from overcast.core.errors import InvalidValueError, NotFoundError

    try:
        latest: Artifact = client.read_latest_artifact(key)
    except (NotFoundError, InvalidValueError):
        try:
            artifact_id = uuid.UUID(key)
        except ValueError:
            raise NotFoundError("artifact", key) from None
        by_id: Artifact = client.read_artifact(artifact_id)
        if by_id.key is None:
            return by_id
        return client.read_latest_artifact(by_id.key)  # type: ignore[no-any-return]
    return latest


# -- rendering ----------------------------------------------------------------------------------


def summary(artifact: Artifact, width: int = 60) -> str:
    """One line that says what an artifact holds."""
    data = artifact.data
    if artifact.type == "markdown" and isinstance(data, str):
        lines = [line.strip().lstrip("#").strip() for line in data.splitlines() if line.strip()]
        text = lines[0] if lines else ""
    elif artifact.type == "table":
        columns, rows = table_rows(data)
        text = f"{len(rows)} rows x {len(columns)} columns"
    elif artifact.type == "link" and isinstance(data, dict):
        text = (
            f"{data.get('text') or data.get('url')} -> {data.get('url')}"
            if data.get("text")
            else str(data.get("url"))
        )
    elif artifact.type == "progress" and isinstance(data, int | float):
        text = f"{bar(float(data), 10)} {data:g}%"
    elif artifact.type == "image" and isinstance(data, dict):
        text = (
            str(data["url"])
            if data.get("url")
            else f"{data.get('content_type')}, {_size(data.get('size'))} (blob store)"
        )
    else:
        text = json.dumps(data)
    return text if len(text) <= width else text[: width - 1] + "…"


def render(artifact: Artifact) -> RenderableType:
    """The artifact's content, drawn for a terminal."""
    from rich.markdown import Markdown
    from rich.table import Table
    from rich.text import Text

    data = artifact.data
    if artifact.type == "markdown" and isinstance(data, str):
        return Markdown(data)
    if artifact.type == "table":
        columns, rows = table_rows(data)
        table = Table(*columns, show_header=isinstance(data, dict) or _has_header(data))
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        return table
    if artifact.type == "link" and isinstance(data, dict):
        return Text(f"{data.get('text') or data['url']} -> {data['url']}")
    if artifact.type == "progress" and isinstance(data, int | float):
        return Text(f"{bar(float(data), BAR_WIDTH)} {data:g}%")
    if artifact.type == "image" and isinstance(data, dict):
        if data.get("url"):
            return Text(f"image at {data['url']}")
        return Text(
            f"{data.get('content_type')} image, {_size(data.get('size'))}, in the blob store at {data.get('blob_key')}\n"
            f"download: GET /api/artifacts/{artifact.id}/image"
        )
    return Text(json.dumps(data, indent=2))


def table_rows(data: Any) -> tuple[list[str], list[list[Any]]]:
    """A table artifact's data as column names and rows (short rows and columns padded)."""
    if isinstance(data, dict):
        columns = [str(c) for c in data]
        length = max((len(v) for v in data.values() if isinstance(v, list)), default=0)
        cells = [v if isinstance(v, list) else [] for v in data.values()]
        return columns, [[col[i] if i < len(col) else None for col in cells] for i in range(length)]
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        names: dict[str, None] = {}
        for row in data:
            names.update(dict.fromkeys(row))
        return list(names), [[row.get(name) for name in names] for row in data]
    if isinstance(data, list):
        width = max((len(row) for row in data if isinstance(row, list)), default=0)
        rows = [row + [None] * (width - len(row)) if isinstance(row, list) else [row] for row in data]
        return [str(i) for i in range(width)], rows
    return [], []


def _has_header(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(row, dict) for row in data)


def bar(progress: float, width: int) -> str:
    """A progress bar of ``width`` characters."""
    filled = round(progress / 100 * width)
    return "█" * filled + "░" * (width - filled)


def _size(size: Any) -> str:
    if not isinstance(size, int):
        return "? bytes"
    return f"{size:,} bytes" if size < 10_000 else f"{size / 1024:,.1f} KiB"


def _problems(exc: Any) -> str:
    return "; ".join(str(error["msg"]) for error in exc.errors())
