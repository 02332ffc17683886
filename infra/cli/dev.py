"""``overcast deploy`` (a flow in a file becomes a deployment) and ``overcast dev`` (the local stack).

overcast deploy flows.py:etl --name nightly --pool local-queue --cron "0 2 * * *" --param day=today
overcast dev            # the API on :4200, the function host, the runs queue, the tick
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add ``deploy`` and ``dev`` to the root app."""
    app.command("deploy")(deploy)
    app.command("dev")(dev)


def deploy(
    entrypoint: Annotated[
        str, typer.Argument(help="The flow: path/to/file.py:flow_function or module:flow.")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="The deployment's name.")],
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="The work pool that runs it.")] = None,
    queue: Annotated[str | None, typer.Option(help="The pool's work queue.")] = None,
    cron: Annotated[str | None, typer.Option(help="A cron schedule, e.g. '0 2 * * *'.")] = None,
    interval: Annotated[float | None, typer.Option(help="An interval schedule, in seconds.")] = None,
    rrule: Annotated[str | None, typer.Option(help="An RRULE schedule.")] = None,
    timezone: Annotated[str | None, typer.Option(help="The schedule's IANA time zone.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="A default parameter NAME=VALUE (VALUE as JSON, else text)."),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
    concurrency_limit: Annotated[int | None, typer.Option(min=1, help="The most runs at once.")] = None,
) -> None:
    """Create (or update) a deployment of the flow ENTRYPOINT names."""
    from overcast.core.errors import OvercastError
    from overcast.deployments import deploy as deploy_flow
    from overcast.flows import load_flow_from_entrypoint

    try:
        flow = load_flow_from_entrypoint(entrypoint)
        deployment_id = deploy_flow(
            flow,
            name,
            work_pool_name=pool,
            work_queue_name=queue,
            parameters=_parameters(param or []),
            cron=cron,
            interval=interval,
            rrule=rrule,
            timezone=timezone,
            tags=tag,
            paused=paused,
            concurrency_limit=concurrency_limit,
            entrypoint=entrypoint,
        )
    except (OvercastError, ValueError, ImportError, OSError) as exc:
        typer.echo(f"cannot deploy {entrypoint}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"deployment {flow.name}/{name} ({deployment_id}) is ready")
    typer.echo(f"run it: overcast deployment run {flow.name}/{name} --watch")


def _parameters(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def dev(
    port: Annotated[int, typer.Option(min=0, max=65535, help="The API's port (0: no API).")] = 4200,
    function_port: Annotated[int, typer.Option(min=0, max=65535, help="The function host's port.")] = 4210,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Runner worker processes.")] = 2,
    tick: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks.")] = 5.0,
) -> None:
    """Run the local stack: the API, the function host running the runner, the runs queue, the tick.

    Deployments of the work pools ``local-queue`` (through the queue) and ``local-lambda``
    (invoked directly) run here. Ctrl-C stops everything.
    """
    import logging

    import uvicorn
    from rich.console import Console

    from overcast.handlers import bootstrap
    from overcast.infra.stack import LocalStack

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    console = Console(highlight=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalStack(workers=workers, function_port=function_port, tick_s=tick) as stack:
        server = None
        if port:
            server = uvicorn.Server(
                uvicorn.Config(bootstrap.api_app(), host="127.0.0.1", port=port, log_level="warning")
            )
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            threading.Thread(target=server.run, name="overcast-api", daemon=True).start()
        console.print(f"[bold]overcast dev[/bold]: home {stack.settings.home}")
        if port:
            console.print(
                f"  API            http://127.0.0.1:{port}/api  (OVERCAST_API_URL=http://127.0.0.1:{port})"
            )
        console.print(f"  function host  {stack.host.url}  (runner: {workers} worker processes)")
        console.print(
            "  work pools     local-queue (through the runs queue), local-lambda (invoked directly)"
        )
        console.print(f"  tick           every {tick:g} s    — Ctrl-C stops everything")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            console.print("stopping…")
        if server is not None:
            server.should_exit = True
