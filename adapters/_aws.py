"""Building boto3 clients for the AWS adapters, with boto3 imported only when one is needed."""

from __future__ import annotations

from typing import Any

from overcast.core.settings import BackendURL

THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)


def aws_client(
    service: str, *, region: str | None = None, endpoint_url: str | None = None, read_timeout_s: float = 70
) -> Any:
    """Return a boto3 client for ``service``.

    botocore keeps a single retry of its own (standard mode: transient network and 5xx errors,
    and throttles); past that, throttling is retried by the adapters' ``Backoff`` so that one
    policy governs it and it surfaces as ``ThrottledError``. (Left alone, botocore's legacy
    policy for DynamoDB retries ten times with up to 25 s pauses.)

    Args:
        read_timeout_s: how long a response may take; raise it for calls that wait on work
            (a synchronous Lambda invoke may run 15 minutes). TCP keep-alive keeps such a
            silent connection from being dropped by NAT gateways.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": 2},
        connect_timeout=5,
        read_timeout=read_timeout_s,
        tcp_keepalive=True,
        max_pool_connections=32,
    )
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint_url or None, config=config
    )


def client_from_url(service: str, url: BackendURL) -> Any:
    """Return a boto3 client configured by a backend URL's ``region`` and ``endpoint`` parameters."""
    return aws_client(service, region=url.param("region"), endpoint_url=url.param("endpoint"))


def error_code(exc: BaseException) -> str:
    """Return the AWS error code of a botocore ``ClientError`` (empty for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def is_throttle(exc: BaseException) -> bool:
    """Say whether ``exc`` is AWS refusing a call for load."""
    return error_code(exc) in THROTTLE_CODES
