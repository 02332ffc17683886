"""The AWS stack deployed to moto's CloudFormation, checked resource by resource, then driven.

One stack for the module (moto builds it in a few seconds). The checks read what moto made:
the table, the queues and their dead-letter queues, the functions (handler, sizes, the
environment that points them at the stack), the event source mappings and each role's
policies. Then the deployed handlers run in this process over the stack's resources, with the
environment read back from the functions: an upload to the stack's bucket lands an S3
notification in the events queue, the ``events`` handler turns it into an event, the
registered deployment's trigger fires, its run goes to the runs queue, and the ``runner``
handler runs it to COMPLETED.

moto does not do everything CloudFormation does, and the tests say where they step in:

- ``AWS::SQS::QueuePolicy`` and ``AWS::ApiGatewayV2::Api`` are not implemented (skipped with a
  warning): no queue policy (moto needs none) and no HTTP API, so the API function is served
  here through a test client instead of API Gateway;
- the bucket's ``NotificationConfiguration`` and the table's ``TimeToLiveSpecification`` are
  ignored: ``moto_gaps`` applies them from the deployed template, through the S3 and DynamoDB
  APIs, as CloudFormation would;
- Lambda cannot run code without Docker, so the event source mappings are switched off and
  the tests play Lambda's poller, calling the handlers with the SQS events it would send.
"""

from __future__ import annotations

import ast
import json
import sys
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from typer.testing import CliRunner

from overcast.adapters.kv.dynamodb import table_layout
from overcast.infra.aws.deploy import AwsSession, DeployResult, deploy_stack, describe_stack, destroy_stack
from overcast.infra.aws.package import Package, PackageOptions, build_package
from overcast.infra.aws.template import build_template

pytestmark = [
    pytest.mark.aws,
    pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),
]

STACK = "overcast-e2e"
UNSUPPORTED_BY_MOTO = {"EventsQueuePolicy", "HttpApi"}

FLOWS = """
from overcast import flow


@flow
def describe_upload(bucket: str, key: str, size: int) -> str:
    return f"{bucket}/{key}: {size} bytes"
"""

REGISTER = """
from overcast.automations import DeploymentEventTrigger

from upload_flows import describe_upload

describe_upload.deploy(
    "on-upload",
    work_pool_name="aws-queue",
    triggers=[
        DeploymentEventTrigger(
            expect={"aws.s3.object.created"},
            parameters={
                "bucket": "{{ event.resource['aws.s3.bucket'] }}",
                "key": "{{ event.resource['aws.s3.key'] }}",
                "size": "{{ event.resource['aws.s3.size'] | int }}",
            },
        )
    ],
)
"""


@dataclass
class Deployed:
    aws: AwsSession
    result: DeployResult
    package: Package
    project: Path

    @property
    def outputs(self) -> dict[str, str]:
        return self.result.outputs

    def client(self, service: str) -> Any:
        return self.aws.client(service)

    def function(self, logical_id: str) -> dict[str, Any]:
        configuration: dict[str, Any] = self.client("lambda").get_function_configuration(
            FunctionName=self.outputs[logical_id]
        )
        return configuration

    def queue(self, output: str) -> tuple[str, str]:
        """A queue's URL on this endpoint and its ARN, from the stack output holding its URL."""
        sqs = self.client("sqs")
        url = sqs.get_queue_url(QueueName=self.outputs[output].rsplit("/", 1)[1])["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def template(self) -> dict[str, Any]:
        body = self.client("cloudformation").get_template(StackName=STACK)["TemplateBody"]
        return body if isinstance(body, dict) else json.loads(body)


def write_project(root: Path) -> Path:
    (root / "upload_flows.py").write_text(FLOWS)
    (root / "register.py").write_text(REGISTER)
    return root


@pytest.fixture(scope="module")
def deployed(_aws_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    if not _aws_session.is_moto:
        pytest.skip("deploys and destroys whole stacks: on moto only")
    project = write_project(tmp_path_factory.mktemp("project"))
    # code only: moto stores the zip but runs nothing, so the dependencies would only cost time
    package = build_package(PackageOptions(project, dependencies=False), tmp_path_factory.mktemp("build"))
    aws = AwsSession(
        region=_aws_session.region, endpoint_url=_aws_session.endpoint_url, poll_s=0.1, timeout_s=120
    )
    try:
        result = deploy_stack(aws, STACK, build_template(), package)
        yield Deployed(aws, result, package, project)
    finally:
        _aws_session.reset()


@pytest.fixture(scope="module")
def moto_gaps(deployed: Deployed) -> Deployed:
    """Do what CloudFormation does and moto does not (see the module's docstring)."""
    resources = deployed.template()["Resources"]
    s3, dynamodb = deployed.client("s3"), deployed.client("dynamodb")
    _, events_arn = deployed.queue("EventsQueueUrl")
    notifications = resources["UploadsBucket"]["Properties"]["NotificationConfiguration"]
    queues = []
    for item in notifications["QueueConfigurations"]:
        assert item["Queue"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
        queues.append({"Events": [item["Event"]], "QueueArn": events_arn})
    bucket = deployed.outputs["UploadsBucket"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queues}
    )
    ttl = resources["Table"]["Properties"]["TimeToLiveSpecification"]
    dynamodb.update_time_to_live(
        TableName=deployed.outputs["Table"],
        TimeToLiveSpecification={"Enabled": ttl["Enabled"], "AttributeName": ttl["AttributeName"]},
    )
    lambda_ = deployed.client("lambda")
    for mapping in lambda_.list_event_source_mappings()["EventSourceMappings"]:
        lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    receive(deployed, "EventsQueueUrl")  # S3's s3:TestEvent, sent when notifications are set
    return deployed


def receive(deployed: Deployed, output: str) -> list[dict[str, Any]]:
    """Take every message of a queue (as Lambda's poller would), deleting them."""
    url, _ = deployed.queue(output)
    sqs = deployed.client("sqs")
    taken: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        )
        if not batch:
            return taken
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        taken += batch


def sqs_event(deployed: Deployed, output: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS poller sends a function for ``messages``."""
    _, arn = deployed.queue(output)
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": deployed.aws.region_name,
            }
            for m in messages
        ]
    }


# -- what was created ---------------------------------------------------------------------------


def test_the_stack_has_every_resource_moto_implements(deployed: Deployed) -> None:
    assert deployed.result.created and deployed.result.changed and deployed.result.uploaded
    assert describe_stack(deployed.aws, STACK)["StackStatus"] == "CREATE_COMPLETE"
    listed = deployed.client("cloudformation").describe_stack_resources(StackName=STACK)["StackResources"]
    created = {r["LogicalResourceId"] for r in listed if r.get("LogicalResourceId")}
    assert created == set(build_template()["Resources"]) - UNSUPPORTED_BY_MOTO
    assert all(r["ResourceStatus"] == "CREATE_COMPLETE" for r in listed)
    outputs = deployed.outputs
    assert outputs["UploadsBucket"].startswith("overcast-")
    assert deployed.result.code.endswith(f"/{STACK}/{deployed.package.name}")
    assert deployed.result.api_key  # generated, and shown once


def test_the_table_has_the_store_layout_and_its_ttl(moto_gaps: Deployed) -> None:
    dynamodb = moto_gaps.client("dynamodb")
    table = dynamodb.describe_table(TableName=moto_gaps.outputs["Table"])["Table"]
    layout = table_layout()
    assert table["KeySchema"] == layout["KeySchema"]
    assert {i["IndexName"]: i["KeySchema"] for i in table["GlobalSecondaryIndexes"]} == {
        i["IndexName"]: i["KeySchema"] for i in layout["GlobalSecondaryIndexes"]
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=moto_gaps.outputs["Table"])["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")


def test_an_upload_lands_an_s3_notification_in_the_events_queue(moto_gaps: Deployed) -> None:
    bucket = moto_gaps.outputs["UploadsBucket"]
    moto_gaps.client("s3").put_object(Bucket=bucket, Key="probe/hello.txt", Body=b"hello")
    (message,) = wait_until(lambda: receive(moto_gaps, "EventsQueueUrl"), timeout=10)
    (record,) = json.loads(message["Body"])["Records"]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == bucket
    moto_gaps.client("s3").delete_object(Bucket=bucket, Key="probe/hello.txt")
    (removed,) = wait_until(lambda: receive(moto_gaps, "EventsQueueUrl"), timeout=10)
    assert json.loads(removed["Body"])["Records"][0]["eventName"].startswith("ObjectRemoved:")


def test_the_queues_feed_the_right_functions_and_park_failures_in_their_dlqs(deployed: Deployed) -> None:
    lambda_, sqs = deployed.client("lambda"), deployed.client("sqs")
    wiring = {}
    for mapping in lambda_.list_event_source_mappings()["EventSourceMappings"]:
        wiring[mapping["EventSourceArn"]] = mapping["FunctionArn"].rsplit(":", 1)[1]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    events_url, events_arn = deployed.queue("EventsQueueUrl")
    runs_url, runs_arn = deployed.queue("RunsQueueUrl")
    assert wiring == {
        events_arn: deployed.outputs["EventsFunction"],
        runs_arn: deployed.outputs["RunnerFunction"],
    }
    for url in (events_url, runs_url):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        policy = json.loads(attributes["RedrivePolicy"])
        assert "DeadLetterQueue" in policy["deadLetterTargetArn"]
        assert int(policy["maxReceiveCount"]) == 5


def test_the_functions_have_their_handlers_and_point_at_the_stacks_resources(deployed: Deployed) -> None:
    region = deployed.aws.region_name
    outputs = deployed.outputs
    handlers = {}
    for logical_id in ("ApiFunction", "EventsFunction", "RunnerFunction", "TickFunction"):
        configuration = deployed.function(logical_id)
        handlers[logical_id] = configuration["Handler"]
        assert configuration["Runtime"] == "python3.12"
        env = configuration["Environment"]["Variables"]
        assert env["OVERCAST_STORE"] == f"dynamodb://{outputs['Table']}?region={region}"
        assert env["OVERCAST_QUEUE"] == f"sqs://{outputs['RunsQueueName']}?region={region}"
        assert env["OVERCAST_BLOBS"].startswith(f"s3://{outputs['BlobsBucket']}/")
        assert env["OVERCAST_BUCKETS"] == f"s3://?region={region}"
    assert handlers == {
        "ApiFunction": "overcast.handlers.aws.api.handler",
        "EventsFunction": "overcast.handlers.aws.events.handler",
        "RunnerFunction": "overcast.handlers.aws.runner.handler",
        "TickFunction": "overcast.handlers.aws.tick.handler",
    }
    runner = deployed.function("RunnerFunction")
    assert (runner["MemorySize"], runner["Timeout"]) == (2048, 900)
    assert (
        deployed.function("ApiFunction")["Environment"]["Variables"]["OVERCAST_API_KEY"]
        == deployed.result.api_key
    )


def live_reach(deployed: Deployed, logical_id: str) -> dict[str, set[str]]:
    """What the function's role allows, by the stack resource each statement names."""
    outputs = deployed.outputs
    table_arn = deployed.client("dynamodb").describe_table(TableName=outputs["Table"])["Table"]["TableArn"]
    runner_arn = deployed.function("RunnerFunction")["FunctionArn"]
    names = {
        table_arn: "Table",
        f"{table_arn}/index/*": "Table",
        deployed.queue("RunsQueueUrl")[1]: "RunsQueue",
        deployed.queue("EventsQueueUrl")[1]: "EventsQueue",
        runner_arn: "RunnerFunction",
    }
    for bucket in ("UploadsBucket", "BlobsBucket"):
        names[f"arn:aws:s3:::{outputs[bucket]}"] = bucket
        names[f"arn:aws:s3:::{outputs[bucket]}/*"] = bucket
    groups = deployed.client("logs").describe_log_groups(logGroupNamePrefix=f"/overcast/{STACK}/")
    for group in groups["logGroups"]:
        log_group = group["logGroupName"].rsplit("/", 1)[1].capitalize() + "LogGroup"
        # AWS's Arn attribute ends in ':*' (the group's streams); moto's does not
        names[group["arn"]] = names[group["arn"].removesuffix(":*")] = log_group
    iam = deployed.client("iam")
    role = deployed.function(logical_id)["Role"].rsplit("/", 1)[1]
    reach: dict[str, set[str]] = {}
    for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
        if isinstance(document, str):  # moto keeps a CloudFormation role's policy as Python's repr
            document = ast.literal_eval(urllib.parse.unquote(document))
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            resources = (
                [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
            )
            assert not any("*" in action for action in actions), statement
            for resource in resources:
                assert resource in names, f"{logical_id} reaches {resource}, outside the stack"
                reach.setdefault(names[resource], set()).update(actions)
    return reach


def test_each_role_grants_what_its_function_needs_and_nothing_broader(deployed: Deployed) -> None:
    api, events, runner, tick = (
        live_reach(deployed, f) for f in ("ApiFunction", "EventsFunction", "RunnerFunction", "TickFunction")
    )
    every = {"Table", "RunsQueue", "RunnerFunction"}
    assert set(api) == every | {"ApiLogGroup", "BlobsBucket", "UploadsBucket"}
    assert set(events) == every | {"EventsLogGroup", "EventsQueue"}
    assert set(runner) == every | {"RunnerLogGroup", "BlobsBucket", "UploadsBucket"}
    assert set(tick) == every | {"TickLogGroup"}
    for reach in (api, events, runner, tick):
        assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"} <= reach["Table"]
        assert "dynamodb:DeleteTable" not in reach["Table"]
        assert reach["RunnerFunction"] == {"lambda:InvokeFunction"}
        assert "sqs:SendMessage" in reach["RunsQueue"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= events["EventsQueue"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= runner["RunsQueue"]
    assert "sqs:ReceiveMessage" not in api["RunsQueue"] | tick["RunsQueue"] | events["RunsQueue"]
    assert "s3:GetObject" not in api["UploadsBucket"]


# -- driving the deployed handlers --------------------------------------------------------------


@pytest.fixture
def as_deployed(moto_gaps: Deployed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """This process as the stack's functions: their environment, the package unpacked as the code root."""
    from overcast.handlers import bootstrap

    env = moto_gaps.function("ApiFunction")["Environment"]["Variables"]
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("/tmp/overcast", str(tmp_path / "home")))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_gaps.aws.endpoint_url or "")  # boto3 reads it
    code_root = tmp_path / "task"
    with zipfile.ZipFile(moto_gaps.package.path) as archive:
        archive.extractall(code_root)
    bootstrap.reset()
    try:
        yield code_root
    finally:
        bootstrap.reset()
        sys.modules.pop("upload_flows", None)


def test_an_upload_runs_the_registered_deployment_through_the_deployed_handlers(
    moto_gaps: Deployed, as_deployed: Path
) -> None:
    from starlette.testclient import TestClient

    from overcast._runtime import _build, use_runtime
    from overcast.core.schemas import FlowRunFilter
    from overcast.core.settings import Settings
    from overcast.handlers import bootstrap
    from overcast.handlers.aws import events, runner, tick
    from overcast.http_client import HttpClient
    from overcast.infra.aws.register import ensure_pools, register_project, stack_pools

    deployed = moto_gaps
    # the project registers itself with the deployed API (its function, served here)
    http = TestClient(bootstrap.api_app(), headers={"Authorization": f"Bearer {deployed.result.api_key}"})
    client = HttpClient("http://testserver", http=http)
    assert ensure_pools(client, stack_pools(deployed.outputs, deployed.aws.region_name)) == [
        "aws-queue",
        "aws-lambda",
    ]
    (deployment,) = register_project(
        client, Path("register.py"), project=deployed.project, code_root=str(as_deployed)
    )
    assert (deployment.entrypoint, deployment.path) == ("upload_flows.py:describe_upload", str(as_deployed))
    assert deployment.work_pool_name == "aws-queue"
    assert (as_deployed / "upload_flows.py").is_file()  # the package has the project at its root

    # an upload: S3 notifies the events queue; Lambda would hand the batch to the events function
    bucket = deployed.outputs["UploadsBucket"]
    deployed.client("s3").put_object(Bucket=bucket, Key="incoming/report.csv", Body=b"a,b\n1,2\n")
    notifications = wait_until(lambda: receive(deployed, "EventsQueueUrl"), timeout=10)
    answer = events.handler(sqs_event(deployed, "EventsQueueUrl", notifications), None)
    assert answer == {"batchItemFailures": []}

    # the trigger fired: the deployment's run went to the stack's runs queue, for the runner
    runs = wait_until(lambda: receive(deployed, "RunsQueueUrl"), timeout=20)
    with use_runtime(_build(Settings())):
        answer = runner.handler(sqs_event(deployed, "RunsQueueUrl", runs), None)
    assert answer == {"batchItemFailures": []}

    plane = bootstrap.control_plane()
    (run,) = plane.flow_runs.filter(FlowRunFilter(deployment_id=[deployment.id])).items
    assert run.state.is_completed(), run.state
    assert run.parameters == {"bucket": bucket, "key": "incoming/report.csv", "size": 8}
    assert run.state.result() == f"{bucket}/incoming/report.csv: 8 bytes"
    assert isinstance(tick.handler({"source": "aws.events"}, None), dict)  # the tick runs there too


# -- updating and removing ----------------------------------------------------------------------


def test_a_second_deploy_with_nothing_changed_changes_nothing(deployed: Deployed) -> None:
    from overcast.infra.cli import build

    again = deploy_stack(deployed.aws, STACK, build_template(), deployed.package)
    assert (again.created, again.changed, again.uploaded, again.api_key) == (False, False, False, None)
    assert again.outputs == deployed.outputs

    args = ["deploy", "aws", "--stack", STACK, "--project", str(deployed.project), "--code-only"]
    args += ["--region", deployed.aws.region_name, "--endpoint-url", deployed.aws.endpoint_url or ""]
    result = CliRunner().invoke(build(), args)
    assert result.exit_code == 0, result.output
    assert f"stack {STACK} unchanged" in result.output
    assert f"s3://{deployed.outputs['UploadsBucket']}/" in result.output


def test_a_new_package_updates_the_stack(deployed: Deployed, tmp_path: Path) -> None:
    (deployed.project / "upload_flows.py").write_text(FLOWS + "\n# a change\n")
    package = build_package(PackageOptions(deployed.project, dependencies=False), tmp_path)
    assert package.sha256 != deployed.package.sha256
    updated = deploy_stack(deployed.aws, STACK, build_template(), package)
    assert (updated.created, updated.changed, updated.uploaded) == (False, True, True)
    assert describe_stack(deployed.aws, STACK)["StackStatus"] == "UPDATE_COMPLETE"
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue") for p in describe_stack(deployed.aws, STACK)["Parameters"]
    }
    assert parameters["CodeKey"] == f"{STACK}/{package.name}"


def test_destroy_keeps_the_data_unless_asked(deployed: Deployed) -> None:
    outputs = deployed.outputs
    gone = destroy_stack(deployed.aws, STACK)
    assert gone.existed and describe_stack(deployed.aws, STACK) is None
    assert gone.kept == {
        "Table": outputs["Table"],
        "UploadsBucket": outputs["UploadsBucket"],
        "BlobsBucket": outputs["BlobsBucket"],
    }
    assert gone.packages_deleted >= 1  # the packages uploaded for the stack
    deployed.client("dynamodb").describe_table(TableName=outputs["Table"])  # still there
    deployed.client("s3").head_bucket(Bucket=outputs["UploadsBucket"])
    assert not destroy_stack(deployed.aws, STACK).existed

    other = deploy_stack(deployed.aws, "overcast-e2e-data", build_template(), deployed.package)
    wiped = destroy_stack(deployed.aws, "overcast-e2e-data", delete_data=True)
    assert set(wiped.deleted_data) == {"Table", "UploadsBucket", "BlobsBucket"} and not wiped.kept
    tables = deployed.client("dynamodb").list_tables()["TableNames"]
    assert other.outputs["Table"] not in tables
    buckets = {b["Name"] for b in deployed.client("s3").list_buckets()["Buckets"]}
    assert not {other.outputs["UploadsBucket"], other.outputs["BlobsBucket"]} & buckets
