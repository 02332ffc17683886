"""The AWS emulator of ``overcast dev --aws-emulator``: moto's server with Overcast's AWS resources.

It starts moto's server on 127.0.0.1 (or uses one already running) and creates what the
CloudFormation stack creates on AWS:

- the DynamoDB table (Overcast's layout, through the adapter's own ``create_table``);
- the S3 bucket for results, code bundles and artifacts;
- the uploads bucket(s), whose ``ObjectCreated:*`` and ``ObjectRemoved:*`` notifications S3
  sends to the events queue (moto delivers them as S3 does, at once);
- the SQS runs and events queues, each with its dead-letter queue.

``configure`` points settings at them, so that the control plane, the function host's workers
and the event source mappings run the real DynamoDB, S3 and SQS adapters. Credentials are
dummies, set for the emulator's lifetime: no request leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from overcast.adapters.kv.dynamodb import create_table
from overcast.adapters.queues.sqs import create_queue
from overcast.core.errors import BackendError
from overcast.core.settings import Settings

logger = logging.getLogger("overcast.aws_emulator")

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
NOTIFIED_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


class AwsEmulator:
    """moto's server and the resources Overcast uses on AWS. Start it, configure settings, stop it.

    Args:
        endpoint_url: an emulator already running (tests share one); ``None`` starts moto's
            server in this process on 127.0.0.1.
        port: the port of the server started (0: any free one).
        region: the region of every resource.
        table: the DynamoDB table.
        blobs_bucket: the bucket of results, code bundles and artifacts.
        buckets: the uploads buckets, whose changes are announced on the events queue.
        runs_queue, events_queue: the SQS queues (their DLQs are ``NAME-dlq``).
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        port: int = 0,
        region: str = "us-east-1",
        table: str = "overcast",
        blobs_bucket: str = "overcast-blobs",
        buckets: Sequence[str] = ("uploads",),
        runs_queue: str = "overcast-runs",
        events_queue: str = "overcast-events",
    ) -> None:
        self._endpoint_url = endpoint_url
        self.port, self.region = port, region
        self.table, self.blobs_bucket, self.buckets = table, blobs_bucket, tuple(buckets)
        self.runs_queue, self.events_queue = runs_queue, events_queue
        self._server: Any = None
        self._saved: dict[str, str | None] = {}

    @property
    def endpoint_url(self) -> str:
        """The emulator's URL, e.g. ``http://127.0.0.1:53117``."""
        if self._endpoint_url is None:
            raise RuntimeError("the AWS emulator is not started")
        return self._endpoint_url

    @property
    def query(self) -> str:
        """The backend-URL parameters that point an adapter at the emulator."""
        return f"region={self.region}&endpoint={self.endpoint_url}"

    @property
    def runs_queue_url(self) -> str:
        """The runs queue as a backend URL (a ``queue`` work pool's ``config.url``)."""
        return f"sqs://{self.runs_queue}?{self.query}"

    @property
    def events_queue_url(self) -> str:
        """The events queue as a backend URL."""
        return f"sqs://{self.events_queue}?{self.query}"

    def start(self) -> AwsEmulator:
        """Start moto's server (unless given one), set dummy credentials, create the resources."""
        self._saved = {name: os.environ.get(name) for name in (*CREDENTIALS, "AWS_DEFAULT_REGION")}
        os.environ.update({**CREDENTIALS, "AWS_DEFAULT_REGION": self.region})
        if self._endpoint_url is None:
            from moto.server import ThreadedMotoServer

            if self.port:  # moto's server would wait forever for a port it cannot have
                _check_free(self.port)
            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
            self._endpoint_url = f"http://{host}:{port}"
        try:
            self._create_resources()
        except BaseException:
            self.stop()
            raise
        logger.info("AWS emulator on %s", self._endpoint_url)
        return self

    def stop(self) -> None:
        """Stop the server this emulator started, and restore the credentials it replaced."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._endpoint_url = None
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved = {}

    def __enter__(self) -> AwsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configure(self, settings: Settings) -> Settings:
        """Return ``settings`` with the store, blobs, queue and buckets on the emulator."""
        fields = settings.model_dump(exclude={"store", "blobs", "queue", "buckets"})
        return Settings(
            **fields,
            store=f"dynamodb://{self.table}?{self.query}",
            blobs=f"s3://{self.blobs_bucket}?{self.query}",
            queue=self.runs_queue_url,
            buckets=f"s3://?{self.query}",
        )

    def environment(self) -> dict[str, str]:
        """The variables a process needs to reach the emulator (the dummy credentials and region)."""
        return {**CREDENTIALS, "AWS_DEFAULT_REGION": self.region}

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` on the emulator."""
        from overcast.adapters._aws import aws_client

        return aws_client(service, region=self.region, endpoint_url=self.endpoint_url)

    # -- resources ----------------------------------------------------------------------------------

    def _create_resources(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            create_table(self.client("dynamodb"), self.table)
            sqs, s3 = self.client("sqs"), self.client("s3")
            create_queue(sqs, self.runs_queue, visibility_s=960)
            events_url = create_queue(sqs, self.events_queue, visibility_s=120)
            events_arn = sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            sqs.set_queue_attributes(
                QueueUrl=events_url, Attributes={"Policy": json.dumps(self._queue_policy(events_arn))}
            )
            for bucket in (self.blobs_bucket, *self.buckets):
                self._create_bucket(s3, bucket)
            for bucket in self.buckets:
                s3.put_bucket_notification_configuration(
                    Bucket=bucket,
                    NotificationConfiguration={
                        "QueueConfigurations": [
                            {"Id": "overcast-events", "QueueArn": events_arn, "Events": NOTIFIED_EVENTS}
                        ]
                    },
                )
        except (BotoCoreError, ClientError) as exc:
            raise BackendError(f"cannot create Overcast's resources on {self.endpoint_url}: {exc}") from exc

    def _create_bucket(self, s3: Any, bucket: str) -> None:
        extra = (
            {}
            if self.region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
        )
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket, **extra)

    def _queue_policy(self, queue_arn: str) -> dict[str, Any]:
        # What AWS requires for S3 to send to the queue (moto does not check it).
        sources = [f"arn:aws:s3:::{bucket}" for bucket in self.buckets]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": sources}},
                }
            ],
        }


def _check_free(port: int) -> None:
    """Raise ``OSError`` when 127.0.0.1:``port`` is taken."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise OSError(
                exc.errno, f"the AWS emulator cannot listen on 127.0.0.1:{port}: {exc.strerror}"
            ) from None
