"""``overcast deploy gcp`` and ``overcast destroy gcp``: Overcast on Google Cloud Functions (2nd gen).

``deploy_gcp`` builds the source archive of a project folder (``overcast.infra.gcp.source``),
then creates or updates the stack's functions (``overcast.infra.gcp.deploy``): the API (HTTP),
the runner (Pub/Sub), the tick (HTTP, for a Cloud Scheduler job) and one storage function per
``--bucket``. It prints each function's URL and what was done to it, then the steps outside
the Cloud Functions API (the runner's topic, the scheduler job, public access to the API, a
``gcp-functions`` work pool). ``destroy_gcp`` deletes the stack's functions.

Both are plain typer commands; the ``deploy`` and ``destroy`` command groups register them as
their ``gcp`` subcommands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from overcast.infra.gcp.deploy import GcpStack, Outcome

ENDPOINT_HELP = "The Cloud Functions API's URL (an emulator's); credentials are then anonymous."


def deploy_gcp(
    project: Annotated[str, typer.Option(help="The Google Cloud project id.")],
    region: Annotated[str, typer.Option(help="The functions' region, e.g. europe-west1.")],
    store: Annotated[
        str,
        typer.Option(
            help="The store every function uses (OVERCAST_STORE), shared by all: "
            "dynamodb://TABLE?region=R (there is no Firestore adapter yet)."
        ),
    ],
    source: Annotated[
        Path,
        typer.Option(file_okay=False, help="Your project's folder: the flows your deployments name."),
    ] = Path(),
    bucket: Annotated[
        list[str] | None,
        typer.Option(help="A Cloud Storage bucket whose uploads become events (repeatable)."),
    ] = None,
    blobs: Annotated[
        str,
        typer.Option(help="The blob store for results and artifacts (OVERCAST_BLOBS): s3://BUCKET/PREFIX."),
    ] = "",
    name: Annotated[
        str, typer.Option(help="The stack's name: its functions are NAME-api, NAME-runner …")
    ] = "overcast",
    topic: Annotated[str, typer.Option(help="The runner's Pub/Sub topic id (default NAME-runs).")] = "",
    api_key: Annotated[str, typer.Option(help="The bearer token the API requires (OVERCAST_API_KEY).")] = "",
    env: Annotated[
        list[str] | None,
        typer.Option(help="NAME=VALUE: an environment variable of every function (repeatable)."),
    ] = None,
    service_account: Annotated[
        str, typer.Option(help="The service account the functions and their triggers run as.")
    ] = "",
    runner_memory: Annotated[str, typer.Option(help="The runner's memory (512Mi, 1Gi, 2Gi …).")] = "1Gi",
    runner_timeout: Annotated[
        int, typer.Option(min=1, max=540, help="The runner's timeout in seconds.")
    ] = 540,
    endpoint: Annotated[str, typer.Option(help=ENDPOINT_HELP)] = "",
) -> None:
    """Create or update Overcast's Cloud Functions; a second deploy with nothing changed changes nothing."""
    from overcast.core.errors import OvercastError
    from overcast.infra.gcp.deploy import Deployer, GcpStack, open_client
    from overcast.infra.gcp.source import build_source

    try:
        stack = GcpStack(
            project=project,
            region=region,
            store=store,
            name=name,
            blobs=blobs,
            buckets=tuple(bucket or ()),
            topic=topic,
            api_key=api_key,
            env=_pairs(env or []),
            service_account=service_account,
            runner_memory=runner_memory,
            runner_timeout_s=runner_timeout,
        )
        archive = build_source(source, extras=stack.extras)
        typer.echo(
            f"source: {source.resolve()} ({len(archive.names)} files, {len(archive.data) / 1024:.0f} KiB, "
            f"digest {archive.digest[:12]})"
        )
        if not blobs:
            typer.echo(
                "warning: no --blobs: results and artifacts stay in each instance's /tmp, "
                "where other functions cannot read them",
                err=True,
            )
        deployer = Deployer(open_client(endpoint))
        try:
            outcomes = deployer.deploy(stack, archive)
        finally:
            deployer.close()
    except OvercastError as exc:
        typer.echo(f"cannot deploy to Google Cloud: {exc}", err=True)
        raise typer.Exit(1) from None
    width = max(len(outcome.function_id) for outcome in outcomes)
    for outcome in outcomes:
        typer.echo(f"{outcome.function_id:<{width}}  {outcome.action:<9}  {outcome.url}".rstrip())
    typer.echo("")
    typer.echo(_next_steps(stack, outcomes))


def destroy_gcp(
    project: Annotated[str, typer.Option(help="The Google Cloud project id.")],
    region: Annotated[str, typer.Option(help="The functions' region.")],
    name: Annotated[str, typer.Option(help="The stack's name.")] = "overcast",
    endpoint: Annotated[str, typer.Option(help=ENDPOINT_HELP)] = "",
) -> None:
    """Delete the stack's Cloud Functions (the store, buckets, topic and scheduler job stay)."""
    from overcast.core.errors import OvercastError
    from overcast.infra.gcp.deploy import Deployer, open_client

    try:
        deployer = Deployer(open_client(endpoint))
        try:
            deleted = deployer.destroy(name, f"projects/{project}/locations/{region}")
        finally:
            deployer.close()
    except OvercastError as exc:
        typer.echo(f"cannot destroy stack {name!r}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not deleted:
        typer.echo(f"stack {name!r} has no functions in {project}/{region}")
        return
    for function_id in deleted:
        typer.echo(f"deleted {function_id}")
    typer.echo(
        f"left in place: the topic, the scheduler job (gcloud scheduler jobs delete {name}-tick "
        f"--project {project} --location {region}), the store and the buckets"
    )


def _pairs(values: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="--env")
        pairs[key] = rest
    return pairs


def _next_steps(stack: GcpStack, outcomes: list[Outcome]) -> str:
    from overcast.infra.gcp.deploy import scheduler_command

    urls = {outcome.role: outcome.url for outcome in outcomes}
    topic = stack.topic_path.rsplit("/", 1)[1]
    pool_config = json.dumps({"url": urls.get("runner", "RUNNER_URL")})
    lines = [
        "Once per stack (outside the Cloud Functions API):",
        f"  the runner's topic:  gcloud pubsub topics create {topic} --project {stack.project}",
        f"  the tick, every minute:  {scheduler_command(stack, urls.get('tick', 'TICK_URL'))}",
        f"  callers of the API:  gcloud functions add-invoker-policy-binding {stack.function_id('api')} "
        f"--project {stack.project} --region {stack.region} --member allUsers"
        + ("" if stack.api_key else "   (with --api-key set first!)"),
        "  runs pushed straight to the runner (with OVERCAST_STORE set to the same store):",
        f"    overcast work-pool create gcp --type gcp-functions --config '{pool_config}'",
    ]
    return "\n".join(lines)
