"""Shared fixtures: moto's server on 127.0.0.1 (or a real AWS endpoint), temp homes, deadlines.

The AWS adapters run against moto's server started once per session on an ephemeral port and
reset after each test that used it. To run the same suites against real AWS or another
endpoint, set:

- ``OVERCAST_TEST_AWS_ENDPOINT``: an endpoint URL (e.g. ``http://127.0.0.1:4566``), or ``aws``
  for the real AWS endpoints of the region (credentials from the usual AWS variables);
- ``OVERCAST_TEST_AWS_REGION``: the region (default ``us-east-1``).

Every AWS test creates its resources under unique names and deletes them afterwards, so an
external target is left as it was found.
"""

from __future__ import annotations

import logging
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class AwsTarget:
    """Where the AWS adapters under test send their requests."""

    endpoint_url: str | None
    region: str
    is_moto: bool

    def client(self, service: str) -> Any:
        """A boto3 client built the way the adapters build theirs."""
        from overcast.adapters._aws import aws_client

        return aws_client(service, region=self.region, endpoint_url=self.endpoint_url)

    def query(self) -> str:
        """Backend-URL query parameters that point an adapter here."""
        q = f"region={self.region}"
        return q + (f"&endpoint={self.endpoint_url}" if self.endpoint_url else "")

    def reset(self) -> None:
        if self.is_moto:
            req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
            urllib.request.urlopen(req, timeout=10).read()


@pytest.fixture(scope="session")
def _aws_session() -> Iterator[AwsTarget]:
    configured = os.environ.get("OVERCAST_TEST_AWS_ENDPOINT", "")
    region = os.environ.get("OVERCAST_TEST_AWS_REGION", "us-east-1")
    if configured:
        yield AwsTarget(None if configured == "aws" else configured, region, is_moto=False)
        return
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    # moto's server must never reach real AWS: dummy credentials, and no profile lookups.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": region,
    }.items():
        os.environ[name] = value
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield AwsTarget(f"http://{host}:{port}", region, is_moto=True)
    finally:
        server.stop()


@pytest.fixture
def aws(_aws_session: AwsTarget) -> Iterator[AwsTarget]:
    """An AWS target (moto's server by default), reset after the test."""
    yield _aws_session
    _aws_session.reset()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Make resource names unique per test, so that runs against a shared endpoint never collide."""
    token = uuid.uuid4().hex[:10]
    return lambda base: f"{base}-{token}"
