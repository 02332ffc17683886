"""``overcast work-pool …`` and ``overcast work-queue …``: where deployments' runs wait, and how they start."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from overcast.infra.cli.runs import _client, _console, _fail, _when

if TYPE_CHECKING:
    from overcast.core.work_pools import WorkPool

work_pool_app = typer.Typer(
    help="Manage work pools: where deployments' runs wait to start.", no_args_is_help=True
)
work_queue_app = typer.Typer(help="Manage the queues of a work pool.", no_args_is_help=True)

STATUS_COLORS = {
    "READY": "green",
    "NOT_READY": "yellow",
    "PAUSED": "grey50",
    "ONLINE": "green",
    "OFFLINE": "red",
}
TYPES = "process, aws-lambda, gcp-functions, queue"

Pool = Annotated[str, typer.Argument(help="The work pool's name.", show_default=False)]
PoolOption = Annotated[str, typer.Option("--pool", "-p", help="The work pool's name.", show_default=False)]
Queue = Annotated[str, typer.Argument(help="The queue's name.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add ``work-pool`` and ``work-queue`` to the root app."""
    app.add_typer(work_pool_app, name="work-pool")
    app.add_typer(work_queue_app, name="work-queue")


def status_text(value: str) -> str:
    """A status, colored for the terminal."""
    color = STATUS_COLORS.get(value, "white")
    return f"[{color}]{value}[/{color}]"


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _problems(exc: Any) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'][1:]) or 'value'}: {error['msg']}"
        if len(error["loc"]) > 1
        else str(error["msg"])
        for error in exc.errors()
    )


def _describe(pool: WorkPool) -> str:
    """What a pool's config says, in one line."""
    if pool.config is None:
        return "-"
    fields = pool.config.model_dump(exclude_none=True, exclude_defaults=True)
    return ", ".join(f"{k}={v}" for k, v in fields.items()) or "-"


# -- work-pool -------------------------------------------------------------------------------------


@work_pool_app.command("ls")
def work_pool_ls(
    as_json: Annotated[bool, typer.Option("--json", help="Print the pools as a JSON array.")] = False,
) -> None:
    """List work pools with their status."""
    from rich.table import Table

    from overcast.core.errors import OvercastError
    from overcast.core.work_pools import WorkPoolFilter

    client = _client()
    pools: list[WorkPool] = []
    cursor = None
    try:
        while True:
            page = client.filter_work_pools(WorkPoolFilter(limit=500, cursor=cursor))
            pools += page.items
            if (cursor := page.next_cursor) is None:
                break
    except OvercastError as exc:
        _fail(f"cannot list work pools: {exc}")
        return
    if as_json:
        typer.echo(json.dumps([pool.model_dump(mode="json") for pool in pools], indent=2))
        return
    table = Table("Name", "Type", "Status", "Concurrency", "Config", "Detail", title="Work pools")
    for pool in pools:
        table.add_row(
            pool.name,
            pool.type.value,
            status_text(pool.status.value),
            _limit(pool.concurrency_limit),
            _describe(pool),
            pool.status_detail or "",
        )
    _console().print(table)


@work_pool_app.command("create")
def work_pool_create(
    name: Pool,
    pool_type: Annotated[
        str, typer.Option("--type", "-t", help=f"How its runs start: {TYPES}.", show_default=False)
    ],
    config: Annotated[
        str | None,
        typer.Option(
            help='The settings of its type, as JSON: aws-lambda {"function": …, "region": …}, '
            'gcp-functions {"url": …}, queue {"url": "sqs://NAME" or "local:///PATH"}, '
            'process {"env": {…}, "working_dir": …}.'
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the pool is for.")] = None,
    concurrency_limit: Annotated[
        int | None, typer.Option(min=0, help="The most of its runs PENDING or RUNNING at once.")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
) -> None:
    """Create a work pool (with its default queue)."""
    from pydantic import ValidationError

    from overcast.core.errors import OvercastError
    from overcast.core.services.work_pools import WorkPoolExistsError
    from overcast.core.work_pools import work_pool_create

    fields: dict[str, Any] = {"name": name, "type": pool_type, "paused": paused}
    if config is not None:
        try:
            fields["config"] = json.loads(config)
        except ValueError as exc:
            _fail(f"--config is not JSON: {exc}")
            return
    if description is not None:
        fields["description"] = description
    if concurrency_limit is not None:
        fields["concurrency_limit"] = concurrency_limit
    if pool_type not in TYPES.split(", "):
        _fail(f"unknown work pool type {pool_type!r}; use one of {TYPES}")
        return
    try:
        pool = _client().create_work_pool(work_pool_create(fields))
    except ValidationError as exc:
        _fail(f"cannot create work pool {name!r}: {_problems(exc)}")
        return
    except WorkPoolExistsError:
        _fail(f"work pool {name!r} already exists")
        return
    except OvercastError as exc:
        _fail(f"cannot create work pool {name!r}: {exc}")
        return
    _console().print(f"created work pool {pool.name} ({pool.type.value}): {status_text(pool.status.value)}")


@work_pool_app.command("inspect")
def work_pool_inspect(name: Pool) -> None:
    """Show a work pool: its settings and status, its queues and its workers."""
    from rich.table import Table

    from overcast.core.errors import NotFoundError, OvercastError
    from overcast.core.work_pools import WorkerFilter

    client = _client()
    try:
        pool = client.read_work_pool(name)
        queues = client.read_work_queues(name)
        workers = client.filter_workers(name, WorkerFilter(limit=500)).items
    except NotFoundError:
        _fail(f"work pool {name!r} not found")
        return
    except OvercastError as exc:
        _fail(f"cannot read work pool {name!r}: {exc}")
        return
    console = _console()
    details = Table.grid(padding=(0, 2))
    config = pool.config.model_dump(mode="json", exclude_none=True) if pool.config is not None else None
    for label, value in [
        ("name", pool.name),
        ("id", str(pool.id)),
        ("type", pool.type.value + (" (push)" if pool.is_push else " (pull: workers poll it)")),
        (
            "status",
            status_text(pool.status.value) + (f"  {pool.status_detail}" if pool.status_detail else ""),
        ),
        ("concurrency limit", _limit(pool.concurrency_limit)),
        ("config", json.dumps(config) if config is not None else "- (not configured)"),
        ("description", pool.description or "-"),
        ("created", _when(pool.created)),
        ("updated", _when(pool.updated)),
    ]:
        details.add_row(f"[bold]{label}[/bold]", value)
    console.print(details)
    console.print(_queue_table(queues))
    if not pool.is_push:
        console.print(_worker_table(workers))


@work_pool_app.command("pause")
def work_pool_pause(name: Pool) -> None:
    """Pause a work pool: it hands out no runs until resumed."""
    _pool_action(name, "pause")


@work_pool_app.command("resume")
def work_pool_resume(name: Pool) -> None:
    """Resume a paused work pool."""
    _pool_action(name, "resume")


@work_pool_app.command("delete")
def work_pool_delete(name: Pool) -> None:
    """Delete a work pool with its queues and workers (runs waiting in it stay scheduled)."""
    from overcast.core.errors import OvercastError

    try:
        deleted = _client().delete_work_pool(name)
    except OvercastError as exc:
        _fail(f"cannot delete work pool {name!r}: {exc}")
        return
    if not deleted:
        _fail(f"work pool {name!r} not found")
        return
    typer.echo(f"deleted work pool {name}")


def _pool_action(name: str, action: str) -> None:
    from overcast.core.errors import NotFoundError, OvercastError

    client = _client()
    try:
        pool = client.pause_work_pool(name) if action == "pause" else client.resume_work_pool(name)
    except NotFoundError:
        _fail(f"work pool {name!r} not found")
        return
    except OvercastError as exc:
        _fail(f"cannot {action} work pool {name!r}: {exc}")
        return
    _console().print(f"work pool {pool.name} is {status_text(pool.status.value)}")


# -- work-queue ------------------------------------------------------------------------------------


def _queue_table(queues: list[Any]) -> Any:
    from rich.table import Table

    table = Table("Name", "Priority", "Status", "Concurrency", "Detail", title="Work queues")
    for queue in queues:
        table.add_row(
            queue.name,
            str(queue.priority),
            status_text(queue.status.value),
            _limit(queue.concurrency_limit),
            queue.status_detail or "",
        )
    return table


def _worker_table(workers: list[Any]) -> Any:
    from rich.table import Table

    table = Table("Name", "Status", "Last heartbeat", "Queues", title="Workers")
    for worker in workers:
        table.add_row(
            worker.name,
            status_text(worker.status.value),
            _when(worker.last_heartbeat),
            ", ".join(worker.queues) or "all",
        )
    return table


@work_queue_app.command("ls")
def work_queue_ls(pool: PoolOption) -> None:
    """List a work pool's queues in the order they are served (priority 1 first)."""
    from overcast.core.errors import NotFoundError, OvercastError

    try:
        queues = _client().read_work_queues(pool)
    except NotFoundError:
        _fail(f"work pool {pool!r} not found")
        return
    except OvercastError as exc:
        _fail(f"cannot list the queues of {pool!r}: {exc}")
        return
    _console().print(_queue_table(queues))


@work_queue_app.command("create")
def work_queue_create(
    name: Queue,
    pool: PoolOption,
    priority: Annotated[
        int | None, typer.Option(min=1, help="1 is served first; by default after the pool's other queues.")
    ] = None,
    concurrency_limit: Annotated[
        int | None, typer.Option(min=0, help="The most of its runs PENDING or RUNNING at once.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the queue is for.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
) -> None:
    """Create a queue in a work pool."""
    from pydantic import ValidationError

    from overcast.core.errors import NotFoundError, OvercastError
    from overcast.core.services.work_pools import WorkQueueExistsError
    from overcast.core.work_pools import WorkQueueCreate

    fields: dict[str, Any] = {"name": name, "paused": paused}
    for key, value in (
        ("priority", priority),
        ("concurrency_limit", concurrency_limit),
        ("description", description),
    ):
        if value is not None:
            fields[key] = value
    try:
        queue = _client().create_work_queue(pool, WorkQueueCreate.model_validate(fields))
    except ValidationError as exc:
        _fail(f"cannot create queue {name!r}: {_problems(exc)}")
        return
    except WorkQueueExistsError:
        _fail(f"work pool {pool!r} already has a queue {name!r}")
        return
    except NotFoundError:
        _fail(f"work pool {pool!r} not found")
        return
    except OvercastError as exc:
        _fail(f"cannot create queue {name!r}: {exc}")
        return
    _console().print(
        f"created queue {queue.name} in {pool} (priority {queue.priority}): {status_text(queue.status.value)}"
    )


@work_queue_app.command("pause")
def work_queue_pause(name: Queue, pool: PoolOption) -> None:
    """Pause a queue: it hands out no runs until resumed."""
    _queue_action(pool, name, "pause")


@work_queue_app.command("resume")
def work_queue_resume(name: Queue, pool: PoolOption) -> None:
    """Resume a paused queue."""
    _queue_action(pool, name, "resume")


@work_queue_app.command("delete")
def work_queue_delete(name: Queue, pool: PoolOption) -> None:
    """Delete a queue (not the pool's default queue)."""
    from overcast.core.errors import OvercastError

    try:
        deleted = _client().delete_work_queue(pool, name)
    except OvercastError as exc:
        _fail(f"cannot delete queue {name!r}: {exc}")
        return
    if not deleted:
        _fail(f"work pool {pool!r} has no queue {name!r}")
        return
    typer.echo(f"deleted queue {name} of {pool}")


def _queue_action(pool: str, name: str, action: str) -> None:
    from overcast.core.errors import NotFoundError, OvercastError

    client = _client()
    try:
        queue = (
            client.pause_work_queue(pool, name) if action == "pause" else client.resume_work_queue(pool, name)
        )
    except NotFoundError:
        _fail(f"work pool {pool!r} has no queue {name!r}")
        return
    except OvercastError as exc:
        _fail(f"cannot {action} queue {name!r}: {exc}")
        return
    _console().print(f"queue {queue.name} of {pool} is {status_text(queue.status.value)}")
