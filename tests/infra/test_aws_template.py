"""The AWS stack's CloudFormation template: valid (cfn-lint), complete, wired, least privilege.

What ``overcast deploy aws --template-only`` writes is what CloudFormation gets; these tests read
it as a reviewer would: what each resource is, what it points at, and what each role allows.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from overcast.adapters.kv.dynamodb import table_layout
from overcast.infra.aws.template import FUNCTIONS, TemplateOptions, build_template, template_json
from overcast.infra.cli import build

HANDLERS = {
    "ApiFunction": "overcast.handlers.aws.api.handler",
    "EventsFunction": "overcast.handlers.aws.events.handler",
    "RunnerFunction": "overcast.handlers.aws.runner.handler",
    "TickFunction": "overcast.handlers.aws.tick.handler",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return build_template()


def resources(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def props(template: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][name]["Properties"]
    return properties


def lint(text: str) -> list[str]:
    from cfnlint.api import lint as cfn_lint

    return [str(match) for match in cfn_lint(text)]


def test_the_cli_writes_a_template_cfn_lint_accepts_as_json_and_yaml(tmp_path: Any) -> None:
    runner = CliRunner()
    as_json = runner.invoke(build(), ["deploy", "aws", "--template-only"])
    assert as_json.exit_code == 0, as_json.output
    as_yaml = runner.invoke(
        build(), ["deploy", "aws", "--template-only", "--yaml", "-o", str(tmp_path / "t.yaml")]
    )
    assert as_yaml.exit_code == 0, as_yaml.output
    yaml_text = (tmp_path / "t.yaml").read_text()

    assert lint(as_json.output) == []
    assert lint(yaml_text) == []
    assert json.loads(as_json.output) == yaml.safe_load(yaml_text) == build_template()
    assert "Transform" not in json.loads(as_json.output)  # plain CloudFormation, no SAM


def test_cfn_lint_catches_a_broken_template(template: dict[str, Any]) -> None:
    broken = json.loads(template_json(template))
    broken["Resources"]["RunnerFunction"]["Properties"]["Runtime"] = "python2.7"
    del broken["Resources"]["EventsQueueMapping"]["Properties"]["FunctionName"]
    problems = " ".join(lint(template_json(broken)))
    assert "python2.7" in problems
    assert "FunctionName" in problems


def test_the_template_is_the_same_text_every_time() -> None:
    assert template_json(build_template()) == template_json(build_template())


def test_the_table_is_the_store_layout_with_its_ttl_and_is_kept_on_delete(template: dict[str, Any]) -> None:
    (name,) = resources(template, "AWS::DynamoDB::Table")
    table = template["Resources"][name]
    for field, value in table_layout().items():
        assert table["Properties"][field] == value
    assert {i["IndexName"] for i in table["Properties"]["GlobalSecondaryIndexes"]} == {"gsi1", "gsi2"}
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_uploads_notify_the_events_queue_which_lets_s3_send_from_that_bucket_only(
    template: dict[str, Any],
) -> None:
    bucket = template["Resources"]["UploadsBucket"]
    queues = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert {q["Event"] for q in queues} == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
    assert all(q["Queue"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]} for q in queues)
    # S3 checks the queue's policy when the notifications are set: the policy must come first
    assert bucket["DependsOn"] == "EventsQueuePolicy"
    (statement,) = props(template, "EventsQueuePolicy")["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    source = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source[1]["Name"] == bucket["Properties"]["BucketName"]  # the same expression
    assert bucket["DeletionPolicy"] == "Retain"
    assert "NotificationConfiguration" not in props(template, "BlobsBucket")


def test_each_queue_has_a_dead_letter_queue_and_outlasts_its_consumer(template: dict[str, Any]) -> None:
    for queue, consumer in (("EventsQueue", "EventsFunction"), ("RunsQueue", "RunnerFunction")):
        properties = props(template, queue)
        assert properties["RedrivePolicy"]["deadLetterTargetArn"] == {
            "Fn::GetAtt": [f"{queue}DeadLetterQueue", "Arn"]
        }
        assert properties["RedrivePolicy"]["maxReceiveCount"] >= 2
        assert properties["VisibilityTimeout"] >= props(template, consumer)["Timeout"]


def test_the_four_functions_have_their_handlers_sizes_and_the_stacks_backends(
    template: dict[str, Any],
) -> None:
    functions = resources(template, "AWS::Lambda::Function")
    assert {name: f["Properties"]["Handler"] for name, f in functions.items()} == HANDLERS
    for spec in FUNCTIONS:
        properties = props(template, spec.logical_id)
        assert (properties["MemorySize"], properties["Timeout"]) == (spec.memory_mb, spec.timeout_s)
        assert properties["Runtime"] == "python3.12"
        assert properties["Architectures"] == ["x86_64"]
        assert properties["Code"] == {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}}
        env = properties["Environment"]["Variables"]
        assert env["OVERCAST_STORE"] == {"Fn::Sub": "dynamodb://${Table}?region=${AWS::Region}"}
        assert env["OVERCAST_QUEUE"] == {"Fn::Sub": "sqs://${RunsQueue.QueueName}?region=${AWS::Region}"}
        assert "${BlobsBucket}" in env["OVERCAST_BLOBS"]["Fn::Sub"]
        assert env["OVERCAST_BUCKETS"] == {"Fn::Sub": "s3://?region=${AWS::Region}"}
        assert env["OVERCAST_HOME"].startswith("/tmp/")
        assert ("OVERCAST_API_KEY" in env) == (spec.name == "api")
    assert props(template, "RunnerFunction")["Timeout"] == 900
    assert props(template, "ApiFunction")["Timeout"] <= 30  # API Gateway's own limit


def test_the_queues_feed_their_functions_with_partial_batch_failures(template: dict[str, Any]) -> None:
    mappings = resources(template, "AWS::Lambda::EventSourceMapping")
    wiring = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]["FunctionName"]["Ref"]
        for m in mappings.values()
    }
    assert wiring == {"EventsQueue": "EventsFunction", "RunsQueue": "RunnerFunction"}
    for mapping in mappings.values():
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props(template, "RunsQueueMapping")["BatchSize"] == 1  # a run gets a whole invocation


def test_the_http_api_fronts_the_api_function_and_the_tick_runs_every_minute(
    template: dict[str, Any],
) -> None:
    api = props(template, "HttpApi")
    assert api["ProtocolType"] == "HTTP"
    assert api["Target"] == {"Fn::GetAtt": ["ApiFunction", "Arn"]}
    assert props(template, "HttpApiPermission")["Principal"] == "apigateway.amazonaws.com"
    assert props(template, "HttpApiPermission")["FunctionName"] == {"Ref": "ApiFunction"}
    tick = props(template, "TickSchedule")
    assert tick["ScheduleExpression"] == "rate(1 minute)"
    assert tick["Targets"][0]["Arn"] == {"Fn::GetAtt": ["TickFunction", "Arn"]}
    assert props(template, "TickPermission")["SourceArn"] == {"Fn::GetAtt": ["TickSchedule", "Arn"]}


def statements_of(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = props(template, function)["Role"]["Fn::GetAtt"][0]
    found = [s for p in props(template, role)["Policies"] for s in p["PolicyDocument"]["Statement"]]
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def touched(template: dict[str, Any], function: str) -> dict[str, set[str]]:
    """Logical id of each resource the function's role reaches -> the actions allowed on it."""
    out: dict[str, set[str]] = {}
    for statement in statements_of(template, function):
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            target = resource["Fn::GetAtt"][0] if "Fn::GetAtt" in resource else resource["Fn::Sub"]
            name = target.removeprefix("${").split(".")[0]
            out.setdefault(name, set()).update(statement["Action"])
    return out


def test_each_role_reaches_only_what_its_function_needs(template: dict[str, Any]) -> None:
    table = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    consume = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
    every = {"Table", "RunsQueue", "RunnerFunction"}  # each runs the control plane (automations)

    api, events, runner, tick = (touched(template, f) for f in HANDLERS)
    assert set(api) == every | {"ApiLogGroup", "BlobsBucket", "UploadsBucket"}
    assert set(events) == every | {"EventsLogGroup", "EventsQueue"}
    assert set(runner) == every | {"RunnerLogGroup", "BlobsBucket", "UploadsBucket"}
    assert set(tick) == every | {"TickLogGroup"}

    for reach in (api, events, runner, tick):
        assert table <= reach["Table"]
        assert reach["RunnerFunction"] == {"lambda:InvokeFunction"}
        assert "sqs:SendMessage" in reach["RunsQueue"]
    assert consume <= events["EventsQueue"]
    assert consume <= runner["RunsQueue"]
    assert not {"sqs:ReceiveMessage", "sqs:DeleteMessage"} & api["RunsQueue"]  # the runner's alone
    assert "s3:GetObject" not in api["UploadsBucket"]  # the API only stores uploads
    assert "s3:GetObject" in runner["UploadsBucket"]  # flows read them
    assert api["ApiLogGroup"] == {"logs:CreateLogStream", "logs:PutLogEvents"}


def test_no_policy_allows_a_wildcard_action_or_resource(template: dict[str, Any]) -> None:
    for name, role in resources(template, "AWS::IAM::Role").items():
        assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "lambda.amazonaws.com"
        }, name
        assert "ManagedPolicyArns" not in role["Properties"], name
    for function in HANDLERS:
        for statement in statements_of(template, function):
            assert all("*" not in action for action in statement["Action"]), statement
            for resource in statement["Resource"]:
                # only named resources, or the objects and indexes inside one
                assert resource != "*" and isinstance(resource, dict), statement
                if "Fn::Sub" in resource:
                    assert resource["Fn::Sub"].endswith(("/*", "/index/*")), statement


def test_runtime_and_architecture_are_options_and_bad_ones_are_refused() -> None:
    arm = build_template(TemplateOptions(runtime="python3.13", architecture="arm64"))
    runner = arm["Resources"]["RunnerFunction"]["Properties"]
    assert (runner["Runtime"], runner["Architectures"]) == ("python3.13", ["arm64"])
    result = CliRunner().invoke(build(), ["deploy", "aws", "--template-only", "--runtime", "python3.9"])
    assert result.exit_code != 0
    assert "python3.9" in result.output


def test_deploy_of_a_flow_still_takes_an_entrypoint_while_aws_names_the_cloud() -> None:
    runner = CliRunner()
    flow = runner.invoke(build(), ["deploy", "--help"])
    assert "ENTRYPOINT" in flow.output
    assert "overcast deploy aws" in flow.output
    aws = runner.invoke(build(), ["deploy", "aws", "--help"])
    assert "--template-only" in aws.output
    missing = runner.invoke(build(), ["deploy", "aws"])
    assert missing.exit_code != 0
    assert "--stack" in missing.output
