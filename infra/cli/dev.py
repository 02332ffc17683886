"""``overcast deploy`` (a flow in a file becomes a deployment) and ``overcast dev`` (the local stack).

overcast deploy flows.py:etl --name nightly --pool local-queue --cron "0 2 * * *" --param day=today
overcast dev            # the API on :4200, buckets, queues, the function host, the tick
overcast dev --aws-emulator   # the same on moto's DynamoDB, S3 and SQS
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from overcast.infra.stack import LocalStack


def register(app: typer.Typer) -> None:
    """Add ``deploy`` and ``dev`` to the root app (``deploy aws|gcp …`` goes to ``cli.cloud``)."""
    from overcast.infra.cli.cloud import DeployCommand

    app.command("deploy", cls=DeployCommand)(deploy)
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
    workers: Annotated[int, typer.Option(min=1, max=32, help="Function-host worker processes.")] = 2,
    tick: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks.")] = 5.0,
    bucket: Annotated[
        list[str] | None, typer.Option("--bucket", help="A bucket to create (repeatable; default: uploads).")
    ] = None,
    aws_emulator: Annotated[
        bool, typer.Option("--aws-emulator", help="Run DynamoDB, S3 and SQS on moto's server instead.")
    ] = False,
    emulator_port: Annotated[
        int, typer.Option(min=0, max=65535, help="moto's port with --aws-emulator (0: any free one).")
    ] = 4220,
) -> None:
    """Run the local stack: API, store, buckets, queues, the function host (runner, events) and the tick.

    Uploads to a bucket (overcast upload, the API, or a file copied into its directory) become
    aws.s3.object.created events that automations react to. Deployments of the work pools
    local-queue (through the runs queue) and local-lambda (invoked directly) run here.
    Ctrl-C stops everything.
    """
    import logging
    from contextlib import ExitStack

    from rich.console import Console

    from overcast.adapters.factory import validate_bucket_name
    from overcast.core.errors import OvercastError
    from overcast.core.settings import Settings
    from overcast.infra.stack import LocalStack

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    console = Console(highlight=False, soft_wrap=True)
    buckets = tuple(bucket or ("uploads",))
    try:
        for name in buckets:
            validate_bucket_name(name)
    except OvercastError as exc:
        raise typer.BadParameter(str(exc), param_hint="--bucket") from None
    stop = threading.Event()
    stopping = _stop_on_signals(stop)
    try:
        with ExitStack() as running:
            emulator = None
            if aws_emulator:
                from overcast.infra.aws_emulator import AwsEmulator

                emulator = running.enter_context(AwsEmulator(port=emulator_port, buckets=buckets))
            stack = running.enter_context(
                LocalStack(
                    Settings(),
                    workers=workers,
                    function_port=function_port,
                    tick_s=tick,
                    buckets=buckets,
                    aws=emulator,
                )
            )
            api_url = running.enter_context(_api(stack, port)) if port else None
            _describe(console, stack, api_url, buckets, workers, tick)
            while not stop.wait(0.5):
                pass
            console.print("stopping…")
    except (OvercastError, OSError) as exc:
        console.print(f"[red]overcast dev cannot run: {exc}[/red]")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: stop without waiting
        raise typer.Exit(130) from None
    finally:
        stopping()
    console.print("stopped.")


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop`` (a second one interrupts); return what restores them."""

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


@contextmanager
def _api(stack: LocalStack, port: int) -> Iterator[str]:
    """Serve the API over the stack's control plane and buckets on 127.0.0.1 until the block ends."""
    import uvicorn

    from overcast.core.errors import BackendError
    from overcast.handlers.api import create_app
    from overcast.infra.cli.server import _bind, _url

    buckets = stack.buckets.bucket if stack.buckets is not None else None
    app = create_app(stack.plane, settings=stack.settings, buckets=buckets)
    sock = _bind("127.0.0.1", port)  # ours, so that the URL printed is the real one (port 0 too)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="overcast-api")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            raise BackendError(f"the API did not start on {_url(sock)}")
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _describe(
    console: Console,
    stack: LocalStack,
    api_url: str | None,
    buckets: tuple[str, ...],
    workers: int,
    tick: float,
) -> None:
    """Say what runs, where, and how to upload."""
    aws = stack.aws
    console.print(
        f"[bold]overcast dev[/bold]{' with the AWS emulator' if aws else ''}: home {stack.settings.home}"
    )
    if api_url:
        console.print(f"  API            {api_url}/api  (docs: {api_url}/api/docs)")
    console.print(f"  function host  {stack.host.url}  (runner and events: {workers} worker processes)")
    if aws:
        console.print(f"  AWS emulator   {aws.endpoint_url}  (moto: DynamoDB, S3, SQS)")
    console.print(f"  store          {stack.settings.store_url}")
    console.print(f"  queues         runs: {stack.queue_url}")
    console.print(f"                 events: {stack.events_queue_url}")
    for name in buckets:
        where = (
            f"{stack.buckets.root / name}/"
            if stack.buckets
            else "on the emulator, notifying the events queue"
        )
        console.print(f"  bucket         s3://{name}  {where}")
    console.print("  work pools     local-queue (through the runs queue), local-lambda (invoked directly)")
    console.print(f"  tick           every {tick:g} s")
    console.print("Upload a file (it becomes an aws.s3.object.created event for automations):")
    exports = {"OVERCAST_API_URL": api_url} if api_url else {}
    if aws and not api_url:
        exports = {"OVERCAST_BUCKETS": stack.settings.buckets, **aws.environment()}
    for name, value in exports.items():
        console.print(f"  export {name}='{value}'")
    console.print(f"  overcast upload FILE s3://{buckets[0]}/KEY")
    if stack.buckets is not None:
        console.print(f"  or copy the file into {stack.buckets.root / buckets[0]}/")
    elif aws:
        console.print(f"  or aws --endpoint-url {aws.endpoint_url} s3 cp FILE s3://{buckets[0]}/KEY")
    console.print("Ctrl-C stops everything.")
