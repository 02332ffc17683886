"""``overcast deploy aws|gcp`` and ``overcast destroy aws|gcp``: Overcast's own stack in a cloud.

overcast deploy aws --template-only > overcast.json     # the CloudFormation template, nothing else
overcast deploy aws --stack prod --register deployments.py
overcast destroy aws --stack prod [--delete-data]

``overcast deploy ENTRYPOINT --name N`` (a flow's deployment, in ``dev.py``) stays what it was:
its command class, ``DeployCommand``, hands the arguments to a subcommand of ``deploy_app``
when the first one names a cloud (``aws``, ``gcp``). ``destroy`` is a plain group.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from overcast.infra.cli.cloud_gcp import deploy_gcp, destroy_gcp

if TYPE_CHECKING:
    from rich.console import Console

    from overcast.infra.aws.deploy import AwsSession, DeployResult, StackEvent

deploy_app = typer.Typer(name="deploy", add_completion=False, help="Deploy Overcast itself to a cloud.")
destroy_app = typer.Typer(name="destroy", add_completion=False, help="Remove Overcast's stack from a cloud.")


@deploy_app.callback()
def _deploy_group() -> None:
    """Deploy Overcast itself to a cloud."""


@destroy_app.callback()
def _destroy_group() -> None:
    """Remove Overcast's stack from a cloud."""


class DeployCommand(TyperCommand):
    """``overcast deploy``: a flow's deployment, or, when the first argument names a cloud,
    that cloud's ``deploy_app`` subcommand (``overcast deploy aws --stack prod``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epilog = (self.epilog or "") + (
            "To deploy Overcast itself: overcast deploy aws --help, overcast deploy gcp --help."
        )

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        # the root group invokes the command of the context this returns: the cloud's, here
        targets = getattr(typer.main.get_command(deploy_app), "commands", {})
        if args and args[0] in targets:
            name = f"{info_name} {args[0]}"
            return targets[args[0]].make_context(name, args[1:], parent=parent, **extra)
        return super().make_context(info_name, args, parent, **extra)


def register(app: typer.Typer) -> None:
    """Add ``destroy`` (``deploy``'s cloud targets ride on ``DeployCommand``)."""
    app.add_typer(destroy_app, name="destroy")


# -- AWS ----------------------------------------------------------------------------------------

RegionOption = Annotated[str | None, typer.Option(help="The AWS region (default: boto3's, e.g. AWS_REGION).")]
EndpointOption = Annotated[
    str | None, typer.Option(help="Another endpoint than AWS's, for every service (moto, LocalStack).")
]
StackOption = Annotated[str | None, typer.Option("--stack", "-s", help="The CloudFormation stack's name.")]
ArtifactsOption = Annotated[
    str | None,
    typer.Option(help="The S3 bucket for code packages (default: overcast-artifacts-ACCOUNT-REGION)."),
]


@deploy_app.command("aws")
def deploy_aws(
    stack: StackOption = None,
    template_only: Annotated[
        bool, typer.Option("--template-only", help="Write the CloudFormation template and stop.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="With --template-only: the file (default: stdout).")
    ] = None,
    yaml: Annotated[bool, typer.Option("--yaml", help="With --template-only: YAML instead of JSON.")] = False,
    project: Annotated[
        Path, typer.Option(file_okay=False, help="Your project's directory: its files go into the package.")
    ] = Path(),
    register_script: Annotated[
        Path | None,
        typer.Option(
            "--register",
            dir_okay=False,
            help="A script of the project (relative to --project) whose flow.deploy(...) and "
            "Automation(...).create() calls go to the deployed API (it runs as 'python SCRIPT' would, "
            "from the project directory).",
        ),
    ] = None,
    runtime: Annotated[
        str, typer.Option(help="The Lambda runtime: python3.11, python3.12, python3.13.")
    ] = "python3.12",
    architecture: Annotated[str, typer.Option(help="x86_64 or arm64.")] = "x86_64",
    wheelhouse: Annotated[
        Path | None, typer.Option(file_okay=False, help="A directory of wheels pip may use (--find-links).")
    ] = None,
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Take wheels from --wheelhouse only (offline builds).")
    ] = False,
    constraints: Annotated[
        Path | None, typer.Option(dir_okay=False, help="A pip constraints file for the dependencies.")
    ] = None,
    code_only: Annotated[
        bool,
        typer.Option(
            "--code-only",
            help="Package the project and Overcast without their dependencies (for emulators, "
            "which do not run the functions).",
        ),
    ] = False,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="A project path pattern to leave out (repeatable).")
    ] = None,
    build_dir: Annotated[
        Path | None, typer.Option(help="Where the package is built (default: PROJECT/.overcast/aws).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="The API's bearer token (default: generated on creation, then kept)."),
    ] = None,
    artifacts_bucket: ArtifactsOption = None,
    region: RegionOption = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Deploy Overcast to AWS: the package to S3, then the CloudFormation stack (created or updated).

    The stack: a DynamoDB table, an uploads bucket whose uploads become events, a blobs bucket, the runs and events queues (with dead-letter queues), the api, events, runner and tick functions, an HTTP API and a one-minute schedule. A second deploy with nothing changed changes nothing. Prints the API's URL and the bucket to upload to.
    """
    from rich.console import Console

    from overcast.core.errors import OvercastError
    from overcast.infra.aws.template import TemplateOptions, build_template, template_json, template_yaml

    try:
        template = build_template(TemplateOptions(runtime=runtime, architecture=architecture))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if template_only:
        text = template_yaml(template) if yaml else template_json(template)
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.write_text(text)
            typer.echo(f"wrote {output}", err=True)
        return
    if stack is None:
        raise typer.BadParameter("give the stack's name (or --template-only)", param_hint="--stack")
    console = Console(highlight=False, soft_wrap=True)
    try:
        result, aws = _deploy(
            console,
            stack,
            template,
            project=project,
            runtime=runtime,
            architecture=architecture,
            wheelhouse=wheelhouse,
            no_download=no_download,
            constraints=constraints,
            code_only=code_only,
            exclude=tuple(exclude or ()),
            build_dir=build_dir,
            api_key=api_key,
            artifacts_bucket=artifacts_bucket,
            region=region,
            endpoint_url=endpoint_url,
        )
        _describe(console, result)
        _register(console, aws, result, project, register_script, api_key)
    except (OvercastError, *_aws_errors()) as exc:
        console.print(f"[red]cannot deploy to AWS: {exc}[/red]")
        raise typer.Exit(1) from None


@destroy_app.command("aws")
def destroy_aws(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The CloudFormation stack's name.")],
    delete_data: Annotated[
        bool, typer.Option("--delete-data", help="Also delete the table and the buckets, with all they hold.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    artifacts_bucket: ArtifactsOption = None,
    region: RegionOption = None,
    endpoint_url: EndpointOption = None,
) -> None:
    """Delete Overcast's stack from AWS. The table and the buckets are kept unless --delete-data."""
    from rich.console import Console

    from overcast.core.errors import OvercastError
    from overcast.infra.aws.deploy import AwsSession, destroy_stack

    if delete_data and not yes:
        typer.confirm(f"Delete stack {stack} AND its table and buckets, with everything in them?", abort=True)
    console = Console(highlight=False, soft_wrap=True)
    aws = AwsSession(region=region, endpoint_url=endpoint_url)
    try:
        with console.status(f"deleting stack {stack}…"):
            result = destroy_stack(
                aws,
                stack,
                delete_data=delete_data,
                artifacts_bucket=artifacts_bucket,
                on_event=lambda event: _print_event(console, event),
            )
    except (OvercastError, *_aws_errors()) as exc:
        console.print(f"[red]cannot destroy stack {stack}: {exc}[/red]")
        raise typer.Exit(1) from None
    if not result.existed:
        console.print(f"there is no stack {stack}")
        return
    console.print(f"stack {stack} deleted ({result.packages_deleted} code package(s) removed)")
    for logical_id, name in sorted(result.deleted_data.items()):
        console.print(f"  deleted  {logical_id:<14} {name}")
    for logical_id, name in sorted(result.kept.items()):
        console.print(f"  kept     {logical_id:<14} {name}")
    if result.kept:
        console.print("the data is kept: overcast destroy aws --stack NAME --delete-data removes it")


deploy_app.command("gcp")(deploy_gcp)
destroy_app.command("gcp")(destroy_gcp)


# -- the steps, printed -------------------------------------------------------------------------


def _deploy(
    console: Console,
    stack: str,
    template: dict[str, Any],
    *,
    project: Path,
    runtime: str,
    architecture: str,
    wheelhouse: Path | None,
    no_download: bool,
    constraints: Path | None,
    code_only: bool,
    exclude: tuple[str, ...],
    build_dir: Path | None,
    api_key: str | None,
    artifacts_bucket: str | None,
    region: str | None,
    endpoint_url: str | None,
) -> tuple[DeployResult, AwsSession]:
    from overcast.infra.aws.deploy import AwsSession, deploy_stack
    from overcast.infra.aws.package import PackageOptions, build_package

    options = PackageOptions(
        project=project,
        runtime=runtime,
        architecture=architecture,
        wheelhouse=wheelhouse,
        no_download=no_download,
        constraints=constraints,
        exclude=exclude,
        dependencies=not code_only,
    )
    with console.status(f"building the package for {runtime} on {architecture}…"):
        package = build_package(options, build_dir or project / ".overcast" / "aws")
    console.print(f"package  {package.summary()}")
    console.print(
        "         largest: "
        + ", ".join(f"{name} {size / 1024 / 1024:.1f} MB" for name, size in package.largest(4))
    )
    aws = AwsSession(region=region, endpoint_url=endpoint_url)
    with console.status(f"deploying stack {stack}…"):
        result = deploy_stack(
            aws,
            stack,
            template,
            package,
            artifacts_bucket=artifacts_bucket,
            api_key=api_key,
            on_event=lambda event: _print_event(console, event),
        )
    return result, aws


def _print_event(console: Console, event: StackEvent) -> None:
    colour = "red" if event.failed else "green" if event.status.endswith("_COMPLETE") else "yellow"
    reason = f"  {event.reason}" if event.reason and event.failed else ""
    console.print(
        f"  {event.timestamp:%H:%M:%S}  [{colour}]{event.status:<22}[/{colour}] "
        f"{event.logical_id:<24} {event.resource_type}{reason}"
    )


def _describe(console: Console, result: DeployResult) -> None:
    outputs = result.outputs
    verb = "created" if result.created else "updated" if result.changed else "unchanged (nothing to update)"
    console.print(
        f"[bold]stack {result.stack}[/bold] {verb}; code {result.code}"
        + (" (uploaded)" if result.uploaded else "")
    )
    console.print(f"  API            {outputs.get('ApiUrl', '?')}/api  (docs: /api/docs)")
    console.print(
        f"  upload to      s3://{outputs.get('UploadsBucket', '?')}/  (uploads become aws.s3.object.created events)"
    )
    console.print(f"  results        s3://{outputs.get('BlobsBucket', '?')}/")
    console.print(f"  table          {outputs.get('Table', '?')}")
    console.print(f"  runs queue     {outputs.get('RunsQueueName', '?')}")
    console.print(f"  export OVERCAST_API_URL='{outputs.get('ApiUrl', '')}'")
    if result.api_key:
        console.print(f"  export OVERCAST_API_KEY='{result.api_key}'   (generated now; shown only once)")
    console.print(f"  aws s3 cp FILE s3://{outputs.get('UploadsBucket', '?')}/KEY")


def _register(
    console: Console,
    aws: AwsSession,
    result: DeployResult,
    project: Path,
    script: Path | None,
    api_key: str | None,
) -> None:
    """Make the stack's work pools ready, then run the registration script, through the API."""
    from overcast.http_client import HttpClient
    from overcast.infra.aws.register import ensure_pools, register_project, stack_pools

    url = result.outputs.get("ApiUrl", "")
    if "${" in url or not url:
        console.print(
            "[yellow]this endpoint created no HTTP API (moto has none): work pools and deployments "
            "were not registered[/yellow]"
        )
        return
    key = result.api_key or api_key or _api_key_of(aws, result.outputs)
    client = HttpClient(url, api_key=key)
    try:
        pools = ensure_pools(client, stack_pools(result.outputs, aws.region_name))
        console.print(f"  work pools     {', '.join(pools)}")
        if script is not None:
            deployments = register_project(client, script, project=project)
            for deployment in deployments:
                console.print(
                    f"  deployment     {deployment.flow_name}/{deployment.name}  ({deployment.work_pool_name or 'no pool'})"
                )
    finally:
        client.close()


def _aws_errors() -> tuple[type[Exception], ...]:
    """botocore's errors (no credentials, an endpoint that cannot be reached, a refused call)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _api_key_of(aws: AwsSession, outputs: dict[str, str]) -> str:
    """The API key in the api function's environment (a NoEcho parameter is not read back)."""
    configuration = aws.client("lambda").get_function_configuration(FunctionName=outputs["ApiFunction"])
    return str(configuration.get("Environment", {}).get("Variables", {}).get("OVERCAST_API_KEY", ""))
