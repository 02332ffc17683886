"""The AWS Lambda invoker: Lambda's Invoke API through boto3 (imported only when a client is built).

Lambda reports a handler's failure inside a successful response (``FunctionError`` set, the
error payload as body); those payloads become the same errors the local invokers raise. API
errors (an unknown function, throttling, a bad request) are translated once, in ``_translate``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from overcast.adapters._aws import aws_client, error_code, is_throttle
from overcast.adapters._retry import DEFAULT_BACKOFF, Backoff
from overcast.adapters.invokers._handlers import encode_payload, error_from_payload
from overcast.core.errors import BackendError, FunctionNotFoundError, InvalidValueError, OvercastError

if TYPE_CHECKING:
    from overcast.core.settings import BackendURL

READ_TIMEOUT_S = 15 * 60 + 30
"""A synchronous Invoke answers only when the function returns: up to Lambda's 15 minutes."""

_BAD_REQUEST_CODES = frozenset(
    {"RequestTooLargeException", "InvalidRequestContentException", "UnsupportedMediaTypeException"}
)


def lambda_client(region: str | None = None, endpoint_url: str | None = None) -> Any:
    """Return a boto3 Lambda client whose read timeout outlasts the longest invocation."""
    return aws_client("lambda", region=region, endpoint_url=endpoint_url, read_timeout_s=READ_TIMEOUT_S)


class LambdaInvoker:
    """An ``Invoker`` over AWS Lambda (or anything that speaks its Invoke API, such as ``FunctionHost``).

    Args:
        client: a boto3 Lambda client (injected, so callers choose endpoint and credentials).
        backoff: the retry policy for throttled calls.
    """

    def __init__(self, client: Any, *, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self.client = client
        self.backoff = backoff

    @classmethod
    def from_url(cls, url: BackendURL) -> LambdaInvoker:
        """Build the invoker from ``lambda://?region=R&endpoint=URL``."""
        return cls(lambda_client(url.param("region"), url.param("endpoint")))

    def invoke(self, function: str, payload: Any, *, wait: bool = True) -> Any:
        """Invoke ``function`` (a name, ARN or partial ARN; a ``:QUALIFIER`` suffix picks a version or alias).

        Args:
            function: the function to invoke.
            payload: a JSON value, the handler's event.
            wait: ``True`` invokes RequestResponse and returns the result; ``False`` invokes
                Event (Lambda queues it and answers 202) and returns ``None``.

        Returns:
            The handler's result, or ``None`` when ``wait`` is false.

        Raises:
            FunctionNotFoundError: no such function, or its handler cannot be imported.
            FunctionError: the handler raised; its type, message and stack trace are kept.
            InvocationTimeoutError: Lambda stopped the function at its timeout.
            FunctionCrashedError: the function's runtime exited (or ran out of memory).
            ThrottledError: Lambda kept throttling after our retries.
            InvalidValueError: the payload is not JSON or is over Lambda's size limit.
            BackendError: any other failure of the Invoke call.
        """
        body = encode_payload(function, payload, wait=wait).encode()
        response = self._send(function, body, wait=wait)
        if not wait:
            return None
        raw: bytes = response["Payload"].read()
        if response.get("FunctionError"):
            raise error_from_payload(function, _error_body(raw))
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise BackendError(f"function {function!r} returned a response that is not JSON") from exc

    def _send(self, function: str, body: bytes, *, wait: bool) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        def call() -> dict[str, Any]:
            response: dict[str, Any] = self.client.invoke(
                FunctionName=function, InvocationType="RequestResponse" if wait else "Event", Payload=body
            )
            return response

        try:
            return self.backoff.run(call, is_throttle=is_throttle, what=f"Lambda Invoke of {function!r}")
        except ClientError as exc:
            raise _translate(function, exc) from exc
        except BotoCoreError as exc:
            raise BackendError(f"Lambda Invoke of {function!r} failed: {exc}") from exc


def _translate(function: str, exc: Exception) -> OvercastError:
    """Map an Invoke API error to ours (throttling never gets here: the backoff owns it)."""
    code = error_code(exc)
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")) or str(exc)
    if code == "ResourceNotFoundException":
        return FunctionNotFoundError(function, message)
    if code in _BAD_REQUEST_CODES:
        return InvalidValueError(f"Lambda refused the payload for {function!r}: {code}: {message}")
    return BackendError(f"Lambda Invoke of {function!r} failed: {code or type(exc).__name__}: {message}")


def _error_body(raw: bytes) -> dict[str, Any]:
    """Parse an error payload, tolerating runtimes that answer with plain text."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"errorType": "Unhandled", "errorMessage": raw.decode(errors="replace")}
