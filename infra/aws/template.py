"""The CloudFormation template of an Overcast stack on AWS, built as a Python dict.

Plain CloudFormation (no SAM transform), so that any CloudFormation endpoint takes it (moto's
too). Resources, by logical id:

=========================  ==================================================================
``Table``                  DynamoDB, the store: the layout ``create_table`` makes (both GSIs,
                           TTL on ``ttl``), shared through ``table_layout()``; kept on delete
``UploadsBucket``          S3, where users upload; ObjectCreated/ObjectRemoved notify the
                           events queue; kept on delete
``BlobsBucket``            S3, results and artifact bytes (no notifications); kept on delete
``EventsQueue`` (+ DLQ)    SQS, S3 notifications for the ``events`` function
``EventsQueuePolicy``      lets ``s3.amazonaws.com`` send the uploads bucket's notifications
``RunsQueue`` (+ DLQ)      SQS, flow runs for the ``runner`` function (the ``queue`` pool's)
``<Name>Function``         the four functions (``FUNCTIONS``), one code package for all
``<Name>Role``             each function's role: only what that function touches
``<Name>LogGroup``         each function's log group (the role may write there only)
``InvokeRunnerPolicy``     lets every function invoke the runner (``aws-lambda`` pools)
``EventsQueueMapping``     events queue -> ``events`` (``ReportBatchItemFailures``)
``RunsQueueMapping``       runs queue -> ``runner`` (``ReportBatchItemFailures``)
``HttpApi``                API Gateway HTTP API, every route to ``api`` (payload 2.0)
``TickSchedule``           EventBridge rule invoking ``tick`` every minute
=========================  ==================================================================

The uploads bucket is named after the stack's id (``overcast-<uuid>``), so that the queue policy
can name the bucket without a dependency cycle (S3 checks that policy when the bucket's
notifications are created, so the bucket must come after it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from overcast.adapters.kv.dynamodb import TTL_ATTRIBUTE, table_layout

Json = dict[str, Any]

LAMBDA_RUNTIMES = ("python3.11", "python3.12", "python3.13")
ARCHITECTURES = ("x86_64", "arm64")


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the stack.

    Attributes:
        name: its short name (``api``, ``events``, ``runner``, ``tick``).
        handler: the Lambda handler string.
        memory_mb: its memory (Lambda gives CPU in proportion).
        timeout_s: its timeout.
        grants: what its role may do, by the names of ``GRANTS``.
        description: what it does.
    """

    name: str
    handler: str
    memory_mb: int
    timeout_s: int
    grants: tuple[str, ...]
    description: str

    @property
    def logical_id(self) -> str:
        """``ApiFunction``, ``RunnerFunction``, …"""
        return f"{self.name.capitalize()}Function"

    @property
    def role_id(self) -> str:
        return f"{self.name.capitalize()}Role"

    @property
    def log_group_id(self) -> str:
        return f"{self.name.capitalize()}LogGroup"


# Every function runs the control plane (a transition may fire an automation whose action
# starts a deployment's run), so each may write the table, send to the runs queue and invoke
# the runner; beyond that, each gets only what its own work needs.
_CONTROL_PLANE = ("table", "send-runs", "invoke-runner")

FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        "api",
        "overcast.handlers.aws.api.handler",
        memory_mb=1024,
        timeout_s=30,  # API Gateway's HTTP API answers 503 after 30 s anyway
        grants=(*_CONTROL_PLANE, "blobs", "put-uploads"),
        description="Overcast's API (API Gateway HTTP API, through Mangum)",
    ),
    FunctionSpec(
        "events",
        "overcast.handlers.aws.events.handler",
        memory_mb=512,
        timeout_s=60,
        grants=(*_CONTROL_PLANE, "consume-events"),
        description="Overcast's storage events: S3 notifications become events for automations",
    ),
    FunctionSpec(
        "runner",
        "overcast.handlers.aws.runner.handler",
        memory_mb=2048,
        timeout_s=900,
        grants=(*_CONTROL_PLANE, "blobs", "read-write-uploads", "consume-runs"),
        description="Overcast's runner: executes the flow runs of the runs queue (and aws-lambda pools)",
    ),
    FunctionSpec(
        "tick",
        "overcast.handlers.aws.tick.handler",
        memory_mb=512,
        timeout_s=60,
        grants=_CONTROL_PLANE,
        description="Overcast's tick: schedules, late runs, leases, proactive automations",
    ),
)

# The calls the adapters make (adapters/kv/dynamodb.py, queues/sqs.py, blobs/s3.py,
# invokers/aws_lambda.py); a transaction is authorized by the actions it contains.
_TABLE_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Query",
]
_SEND_ACTIONS = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"]
# what Lambda's poller does with the function's role
_CONSUME_ACTIONS = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
]
_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]


def _arn(logical_id: str) -> Json:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _statement(actions: list[str], resources: list[Any]) -> Json:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def _objects(bucket: str) -> Json:
    return {"Fn::Sub": f"${{{bucket}.Arn}}/*"}


GRANTS: dict[str, list[Json]] = {
    # read and write the table and its indexes
    "table": [_statement(_TABLE_ACTIONS, [_arn("Table"), {"Fn::Sub": "${Table.Arn}/index/*"}])],
    # send flow runs to the runs queue (queue pools)
    "send-runs": [_statement(_SEND_ACTIONS, [_arn("RunsQueue")])],
    # invoke the runner (aws-lambda pools): granted by InvokeRunnerPolicy, see _invoke_runner
    "invoke-runner": [],
    # read, write and list results and artifacts
    "blobs": [
        _statement(_OBJECT_ACTIONS, [_objects("BlobsBucket")]),
        _statement(["s3:ListBucket"], [_arn("BlobsBucket")]),
    ],
    # store uploads (PUT /api/storage/BUCKET/KEY)
    "put-uploads": [_statement(["s3:PutObject", "s3:AbortMultipartUpload"], [_objects("UploadsBucket")])],
    # read, write and list uploads (the flows that process them)
    "read-write-uploads": [
        _statement(_OBJECT_ACTIONS, [_objects("UploadsBucket")]),
        _statement(["s3:ListBucket"], [_arn("UploadsBucket")]),
    ],
    # what Lambda's poller does with the consumer's role
    "consume-events": [_statement(_CONSUME_ACTIONS, [_arn("EventsQueue")])],
    "consume-runs": [_statement(_CONSUME_ACTIONS, [_arn("RunsQueue")])],
}
"""What a role may be granted: name -> its policy statements."""


@dataclass(frozen=True)
class TemplateOptions:
    """What the template is built for.

    Attributes:
        runtime: the Lambda Python runtime (``python3.12``).
        architecture: ``x86_64`` or ``arm64`` (the package's wheels must match).
        functions: the functions and their settings.
        tick_schedule: how often EventBridge invokes the tick.
        max_receive_count: deliveries of a message before its queue parks it in the DLQ.
        log_retention_days: how long the functions' logs are kept.
        description: the template's description.
    """

    runtime: str = "python3.12"
    architecture: str = "x86_64"
    functions: tuple[FunctionSpec, ...] = FUNCTIONS
    tick_schedule: str = "rate(1 minute)"
    max_receive_count: int = 5
    log_retention_days: int = 30
    description: str = "Overcast: serverless workflow orchestration (API, events, runner, tick)"

    def __post_init__(self) -> None:
        if self.runtime not in LAMBDA_RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r} is not one of {', '.join(LAMBDA_RUNTIMES)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")

    def function(self, name: str) -> FunctionSpec:
        """The function called ``name``."""
        for spec in self.functions:
            if spec.name == name:
                return spec
        raise KeyError(name)


def build_template(options: TemplateOptions | None = None) -> Json:
    """Return the stack's CloudFormation template (a JSON-able dict)."""
    options = options or TemplateOptions()
    resources: Json = {}
    resources.update(_table())
    resources.update(_queues(options))
    resources.update(_buckets())
    for spec in options.functions:
        resources.update(_function(spec, options))
    resources.update(_invoke_runner(options))
    resources.update(_event_sources(options))
    resources.update(_http_api())
    resources.update(_tick(options))
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": options.description,
        "Parameters": _parameters(),
        "Resources": resources,
        "Outputs": _outputs(options),
    }
    # a fresh tree: no node shared between two places (YAML would write an alias, which
    # CloudFormation refuses; a caller changing one place would change both)
    fresh: Json = json.loads(json.dumps(template))
    return fresh


def template_json(template: Json) -> str:
    """The template as JSON text (stable: the same template gives the same text)."""
    return json.dumps(template, indent=1, sort_keys=False) + "\n"


def template_yaml(template: Json) -> str:
    """The template as YAML text (long-form intrinsics, which every tool reads)."""
    import yaml

    text: str = yaml.safe_dump(template, sort_keys=False, default_flow_style=False, width=110)
    return text


# -- the parts --------------------------------------------------------------------------------


def _parameters() -> Json:
    return {
        "CodeBucket": {
            "Type": "String",
            "Description": "The S3 bucket holding the functions' code package",
            "MinLength": 3,
        },
        "CodeKey": {
            "Type": "String",
            "Description": "The package's key in CodeBucket (its name carries its hash)",
            "MinLength": 1,
        },
        "ApiKey": {
            "Type": "String",
            "NoEcho": True,
            "Default": "",
            "Description": "The bearer token the API requires (empty: none, which a public URL should not have)",
        },
    }


def _table() -> Json:
    return {
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                **table_layout(),
                "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            },
        }
    }


# Queues and logs hold what is in flight, not the data: they go with the stack.
_IN_FLIGHT: Json = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}


def _queue_pair(name: str, visibility_s: int, options: TemplateOptions) -> Json:
    dlq = f"{name}DeadLetterQueue"
    return {
        dlq: {
            "Type": "AWS::SQS::Queue",
            **_IN_FLIGHT,
            "Properties": {"MessageRetentionPeriod": 14 * 24 * 3600, "SqsManagedSseEnabled": True},
        },
        name: {
            "Type": "AWS::SQS::Queue",
            **_IN_FLIGHT,
            "Properties": {
                "VisibilityTimeout": visibility_s,
                "MessageRetentionPeriod": 4 * 24 * 3600,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": _arn(dlq),
                    "maxReceiveCount": options.max_receive_count,
                },
            },
        },
    }


def _queues(options: TemplateOptions) -> Json:
    # Lambda asks for a visibility timeout of at least six times the consumer's timeout, so that
    # a message is not redelivered while its batch is still being retried.
    return {
        **_queue_pair("EventsQueue", min(6 * options.function("events").timeout_s, 43_200), options),
        **_queue_pair("RunsQueue", min(6 * options.function("runner").timeout_s, 43_200), options),
        "EventsQueuePolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [{"Ref": "EventsQueue"}],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "UploadsBucketNotifications",
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": _arn("EventsQueue"),
                            "Condition": {
                                "ArnEquals": {
                                    "aws:SourceArn": {
                                        "Fn::Sub": [
                                            "arn:${AWS::Partition}:s3:::${Name}",
                                            {"Name": _UPLOADS_NAME},
                                        ]
                                    }
                                },
                                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                            },
                        }
                    ],
                },
            },
        },
    }


# overcast-<the stack id's uuid>: unique, lowercase, 45 characters, known before the bucket exists
_UPLOADS_NAME: Json = {
    "Fn::Join": ["-", ["overcast", {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}]]
}

_PRIVATE_BUCKET: Json = {
    "BucketEncryption": {
        "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    },
    "PublicAccessBlockConfiguration": {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    },
    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
}


def _buckets() -> Json:
    notify = [
        {"Event": event, "Queue": _arn("EventsQueue")}
        for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
    ]
    return {
        "UploadsBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "DependsOn": "EventsQueuePolicy",
            "Properties": {
                "BucketName": _UPLOADS_NAME,
                **_PRIVATE_BUCKET,
                "NotificationConfiguration": {"QueueConfigurations": notify},
            },
        },
        "BlobsBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": dict(_PRIVATE_BUCKET),
        },
    }


def _environment(spec: FunctionSpec) -> Json:
    """The settings (``OVERCAST_*``) that point a function at the stack's own resources."""
    variables: Json = {
        "OVERCAST_HOME": "/tmp/overcast",  # noqa: S108 - the one writable place in a Lambda sandbox
        "OVERCAST_STORE": {"Fn::Sub": "dynamodb://${Table}?region=${AWS::Region}"},
        "OVERCAST_BLOBS": {"Fn::Sub": "s3://${BlobsBucket}/overcast?region=${AWS::Region}"},
        "OVERCAST_QUEUE": {"Fn::Sub": "sqs://${RunsQueue.QueueName}?region=${AWS::Region}"},
        "OVERCAST_BUCKETS": {"Fn::Sub": "s3://?region=${AWS::Region}"},
        "OVERCAST_INVOKER": {"Fn::Sub": "lambda://?region=${AWS::Region}"},
    }
    if spec.name == "api":
        variables["OVERCAST_API_KEY"] = {"Ref": "ApiKey"}
    return {"Variables": variables}


def _function(spec: FunctionSpec, options: TemplateOptions) -> Json:
    statements = [_statement(["logs:CreateLogStream", "logs:PutLogEvents"], [_arn(spec.log_group_id)])]
    for grant in spec.grants:
        statements += GRANTS[grant]
    return {
        spec.log_group_id: {
            "Type": "AWS::Logs::LogGroup",
            **_IN_FLIGHT,
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/overcast/${{AWS::StackName}}/{spec.name}"},
                "RetentionInDays": options.log_retention_days,
            },
        },
        spec.role_id: {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"What Overcast's {spec.name} function may do",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": f"overcast-{spec.name}",
                        "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                    }
                ],
            },
        },
        spec.logical_id: {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Description": spec.description,
                "Runtime": options.runtime,
                "Architectures": [options.architecture],
                "Handler": spec.handler,
                "MemorySize": spec.memory_mb,
                "Timeout": spec.timeout_s,
                "Role": _arn(spec.role_id),
                "Code": {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}},
                "Environment": _environment(spec),
                "LoggingConfig": {"LogGroup": {"Ref": spec.log_group_id}, "LogFormat": "Text"},
            },
        },
    }


def _invoke_runner(options: TemplateOptions) -> Json:
    # A policy of its own: inside the runner's role it would make the runner depend on itself.
    roles = [{"Ref": spec.role_id} for spec in options.functions if "invoke-runner" in spec.grants]
    return {
        "InvokeRunnerPolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "overcast-invoke-runner",
                "Roles": roles,
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [_statement(["lambda:InvokeFunction"], [_arn("RunnerFunction")])],
                },
            },
        }
    }


def _event_sources(options: TemplateOptions) -> Json:
    def mapping(queue: str, function: str, batch_size: int) -> Json:
        return {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": _arn(queue),
                "FunctionName": {"Ref": function},
                "BatchSize": batch_size,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "Enabled": True,
            },
        }

    return {
        "EventsQueueMapping": mapping("EventsQueue", "EventsFunction", 10),
        # one run per invocation: each flow run gets the whole of the function's timeout
        "RunsQueueMapping": mapping("RunsQueue", "RunnerFunction", 1),
    }


def _http_api() -> Json:
    # Quick create: Target makes the $default route, its Lambda proxy integration (payload 2.0)
    # and the auto-deployed $default stage.
    return {
        "HttpApi": {
            "Type": "AWS::ApiGatewayV2::Api",
            "Properties": {
                "Name": {"Fn::Sub": "${AWS::StackName}-api"},
                "ProtocolType": "HTTP",
                "Description": "Overcast's API",
                "Target": _arn("ApiFunction"),
            },
        },
        "HttpApiPermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Ref": "ApiFunction"},
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": {
                    "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}/*"
                },
            },
        },
    }


def _tick(options: TemplateOptions) -> Json:
    return {
        "TickSchedule": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": "Overcast's tick",
                "ScheduleExpression": options.tick_schedule,
                "State": "ENABLED",
                "Targets": [{"Id": "tick", "Arn": _arn("TickFunction")}],
            },
        },
        "TickPermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Ref": "TickFunction"},
                "Principal": "events.amazonaws.com",
                "SourceArn": _arn("TickSchedule"),
            },
        },
    }


def _outputs(options: TemplateOptions) -> Json:
    outputs: Json = {
        # the API's default endpoint, spelled out: (moto has no HTTP APIs to GetAtt)
        "ApiUrl": {
            "Description": "The API's URL (set OVERCAST_API_URL to it)",
            "Value": {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"},
        },
        "UploadsBucket": {
            "Description": "Upload here: uploads become events",
            "Value": {"Ref": "UploadsBucket"},
        },
        "BlobsBucket": {"Description": "Results and artifacts", "Value": {"Ref": "BlobsBucket"}},
        "Table": {"Description": "The store", "Value": {"Ref": "Table"}},
        "RunsQueueName": {
            "Description": "Flow runs for the runner",
            "Value": {"Fn::GetAtt": ["RunsQueue", "QueueName"]},
        },
        "RunsQueueUrl": {"Description": "Flow runs for the runner", "Value": {"Ref": "RunsQueue"}},
        "EventsQueueUrl": {
            "Description": "S3 notifications for the events function",
            "Value": {"Ref": "EventsQueue"},
        },
    }
    for spec in options.functions:
        outputs[spec.logical_id] = {
            "Description": f"The {spec.name} function's name",
            "Value": {"Ref": spec.logical_id},
        }
    return outputs
