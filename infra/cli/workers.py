"""``overcast worker ls``: the workers of a pull pool and whether they are online.

``worker_app`` is the ``overcast worker`` group; ``overcast worker start`` joins it from the
module that runs a worker.
"""

from __future__ import annotations

from typing import Annotated

import typer

from overcast.infra.cli.runs import _client, _console, _fail
from overcast.infra.cli.work_pools import PoolOption, _worker_table

worker_app = typer.Typer(
    help="Workers: processes that poll a work pool and run its runs.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``worker`` to the root app."""
    app.add_typer(worker_app, name="worker")


@worker_app.command("ls")
def worker_ls(
    pool: PoolOption,
    status: Annotated[
        str | None, typer.Option(help="Only workers in this status: online or offline.")
    ] = None,
) -> None:
    """List a pool's workers, with their status (ONLINE while their heartbeats keep coming)."""
    from overcast.core.errors import NotFoundError, OvercastError
    from overcast.core.work_pools import WorkerFilter, WorkerStatus

    wanted = None
    if status is not None:
        try:
            wanted = WorkerStatus(status.upper())
        except ValueError:
            _fail(f"unknown worker status {status!r}; use online or offline")
            return
    client = _client()
    workers = []
    cursor = None
    try:
        while True:
            page = client.filter_workers(pool, WorkerFilter(status=wanted, limit=500, cursor=cursor))
            workers += page.items
            if (cursor := page.next_cursor) is None:
                break
    except NotFoundError:
        _fail(f"work pool {pool!r} not found")
        return
    except OvercastError as exc:
        _fail(f"cannot list the workers of {pool!r}: {exc}")
        return
    if not workers:
        _console().print(
            f"work pool {pool} has no workers; start one with: overcast worker start --pool {pool}"
        )
        return
    _console().print(_worker_table(workers))


@worker_app.command("start")
def worker_start(
    pool: PoolOption,
    name: Annotated[str | None, typer.Option(help="This worker's name (default: host and pid).")] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="A queue to serve (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=256, help="The most runs at once.")] = 4,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 2.0,
) -> None:
    """Run a pull worker for a ``process`` work pool: its due runs execute in subprocesses here."""
    import signal
    import threading

    from overcast.workers import Worker

    worker = Worker(_client(), pool, name=name, queues=queue, limit=limit, poll_s=poll)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _console().print(f"worker {worker.name} serving work pool {pool} (Ctrl-C stops it)")
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        stop.set()
