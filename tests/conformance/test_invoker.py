"""Conformance suite of the ``Invoker`` port, run against every invoker.

- ``inline``: ``InlineInvoker``, handlers in the test process;
- ``process``: ``LocalProcessInvoker`` with two warm workers;
- ``lambda``: ``LambdaInvoker`` with a real boto3 Lambda client talking to a ``FunctionHost`` on
  127.0.0.1 (itself over a two-worker ``LocalProcessInvoker``), so the wire format, botocore's
  parsing and our translation of Lambda's error payloads are all exercised.

The handlers live in ``tests/functions.py``. The function host's own HTTP behaviour is checked
with urllib at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from functions import FUNCTIONS
from support import wait_until

from overcast.adapters._retry import Backoff
from overcast.adapters.invokers import InlineInvoker, LambdaInvoker, LocalProcessInvoker
from overcast.adapters.invokers._handlers import error_from_payload
from overcast.core.errors import (
    BackendError,
    FunctionCrashedError,
    FunctionError,
    FunctionNotFoundError,
    InvalidValueError,
    InvocationTimeoutError,
    ThrottledError,
)
from overcast.core.ports import Invoker
from overcast.core.settings import BackendURL
from overcast.infra.function_host import FunctionHost

REGION = "us-east-1"


@dataclass
class Backend:
    """An invoker under test, and the local invoker that actually runs the code (its ``failures``)."""

    kind: str
    invoker: Invoker
    runner: InlineInvoker | LocalProcessInvoker


@pytest.fixture(scope="module")
def dummy_aws() -> Iterator[None]:
    """Credentials and config for a boto3 client that must only ever talk to 127.0.0.1."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield


def lambda_for(host: FunctionHost) -> LambdaInvoker:
    return LambdaInvoker.from_url(BackendURL(f"lambda://?region={REGION}&endpoint={host.url}"))


@pytest.fixture(scope="module", params=["inline", "process", "lambda"])
def backend(request: pytest.FixtureRequest, dummy_aws: None) -> Iterator[Backend]:
    """One invoker per backend for the whole module: the suite also proves it survives every test.

    ``impatient`` is ``sleep`` registered with a 1-second timeout of its own.
    """
    kind: str = request.param
    with contextlib.ExitStack() as stack:
        if kind == "inline":
            inline = stack.enter_context(InlineInvoker(FUNCTIONS, timeout_s=60))
            inline.register("impatient", "functions:sleep", timeout_s=1)
            yield Backend(kind, inline, inline)
            return
        pool = stack.enter_context(LocalProcessInvoker(FUNCTIONS, max_workers=2, timeout_s=60))
        if kind == "process":
            pool.register("impatient", "functions:sleep", timeout_s=1)
            yield Backend(kind, pool, pool)
            return
        host = stack.enter_context(FunctionHost(pool))
        host.register("impatient", "functions:sleep", timeout_s=1)
        yield Backend(kind, lambda_for(host), pool)


def test_implements_the_port(backend: Backend) -> None:
    assert isinstance(backend.invoker, Invoker)


def test_result_round_trips_as_json(backend: Backend) -> None:
    payload = {
        "text": 'héllo ✓ 🌩 \u0000 "quoted"',
        "nested": {"list": [1, 2.5, None, True, False, {"deep": ["x", []]}]},
        "big": 2**80,
        "negative": -(2**70),
        "tuple": (1, 2),
    }
    result = backend.invoker.invoke("echo", payload)
    assert result["event"] == {**payload, "tuple": [1, 2]}
    assert result["function_name"] == "echo"
    assert 0 < result["remaining_ms"] <= 60_000
    for scalar in (None, 0, "just a string", [1, [2]]):
        assert backend.invoker.invoke("echo", scalar)["event"] == scalar


def test_function_error_keeps_type_message_and_trace(backend: Backend) -> None:
    with pytest.raises(FunctionError) as info:
        backend.invoker.invoke("fail", {"message": "bad input ✗"})
    assert info.value.function == "fail"
    assert info.value.error_type == "ValueError"
    assert info.value.error_message == "bad input ✗"
    assert any("functions.py" in line for line in info.value.stack_trace)


def test_result_that_is_not_json_is_a_marshal_error(backend: Backend) -> None:
    with pytest.raises(FunctionError) as info:
        backend.invoker.invoke("bad-result", {})
    assert info.value.error_type == "Runtime.MarshalError"
    assert "set" in info.value.error_message


@pytest.mark.parametrize("wait", [True, False])
def test_unknown_function_is_not_found(backend: Backend, wait: bool) -> None:
    with pytest.raises(FunctionNotFoundError) as info:
        backend.invoker.invoke("no-such-function", {}, wait=wait)
    assert info.value.function == "no-such-function"


@pytest.mark.parametrize(
    ("function", "named"), [("no-module", "functions_that_do_not_exist"), ("no-attr", "not_a_handler")]
)
def test_handler_that_cannot_be_loaded_is_not_found(backend: Backend, function: str, named: str) -> None:
    with pytest.raises(FunctionNotFoundError) as info:
        backend.invoker.invoke(function, {})
    assert named in str(info.value)


@pytest.mark.parametrize("payload", [{"x": object()}, {"x": float("nan")}])
def test_payload_that_is_not_json_is_refused(backend: Backend, payload: Any) -> None:
    with pytest.raises(InvalidValueError):
        backend.invoker.invoke("echo", payload)


def test_event_invocation_runs_in_the_background(backend: Backend, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    assert backend.invoker.invoke("touch", {"path": str(target), "data": {"n": 1}}, wait=False) is None
    wait_until(target.exists)
    assert json.loads(target.read_text()) == {"n": 1}


def test_event_invocation_failure_is_kept(backend: Backend) -> None:
    message = f"async boom {uuid.uuid4()}"
    assert backend.invoker.invoke("fail", {"message": message}, wait=False) is None
    [failure] = wait_until(lambda: [f for f in backend.runner.failures if message in str(f)])
    assert isinstance(failure, FunctionError)
    assert failure.error_type == "ValueError"


def test_timeout_stops_the_function_and_the_pool_recovers(backend: Backend) -> None:
    if backend.kind == "inline":
        pytest.skip("inline cannot stop a handler on the caller's thread")
    with pytest.raises(InvocationTimeoutError) as info:
        backend.invoker.invoke("impatient", {"seconds": 30})
    assert info.value.timeout_s == 1
    assert backend.invoker.invoke("echo", {"after": "timeout"})["event"] == {"after": "timeout"}


@pytest.mark.parametrize(
    ("how", "exit_code"),
    [("exit", 3), ("kill", -signal.SIGKILL), ("segfault", -signal.SIGSEGV)],
)
def test_crash_is_reported_and_the_pool_recovers(backend: Backend, how: str, exit_code: int) -> None:
    if backend.kind == "inline":
        pytest.skip("inline shares the test's process")
    with pytest.raises(FunctionCrashedError) as info:
        backend.invoker.invoke("crash", {"how": how, "code": 3})
    assert info.value.exit_code == exit_code
    assert backend.invoker.invoke("echo", {"after": how})["event"] == {"after": how}


def test_concurrent_invocations_all_complete(backend: Backend) -> None:
    with ThreadPoolExecutor(max_workers=8) as threads:
        results = list(
            threads.map(lambda i: backend.invoker.invoke("sleep", {"seconds": 0.1 + i / 1000}), range(8))
        )
    assert [r["slept"] for r in results] == [0.1 + i / 1000 for i in range(8)]
    if backend.kind != "inline":
        assert len({r["pid"] for r in results}) <= 2  # warm workers are reused, never more than max_workers


# --- error payloads as AWS Lambda itself words them -------------------------------------------


def test_lambda_payloads_from_aws_map_to_our_errors() -> None:
    killed = error_from_payload(
        "f",
        {
            "errorType": "Runtime.ExitError",
            "errorMessage": "RequestId: r Error: Runtime exited with error: signal: killed",
        },
    )
    assert isinstance(killed, FunctionCrashedError)
    assert killed.exit_code == -signal.SIGKILL
    timed_out = error_from_payload(
        "f",
        {
            "errorType": "Sandbox.Timedout",
            "errorMessage": "2025-01-01T00:00:00Z r Task timed out after 3.00 seconds",
        },
    )
    assert isinstance(timed_out, InvocationTimeoutError)
    assert timed_out.timeout_s == 3.0
    import_error = {"errorType": "Runtime.ImportModuleError", "errorMessage": "Unable to import module 'app'"}
    assert isinstance(error_from_payload("f", import_error), FunctionNotFoundError)


# --- LambdaInvoker's translation of API errors ------------------------------------------------


class _ScriptedLambda:
    """A stand-in Lambda client that fails with the given error codes, then answers."""

    def __init__(self, *codes: str) -> None:
        self.codes = list(codes)
        self.calls = 0

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.codes:
            code = self.codes.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": f"{code} says no"}}, "Invoke")
        return {"StatusCode": 200, "Payload": io.BytesIO(b'{"ok": true}')}


NO_SLEEP = Backoff(attempts=4, sleep=lambda _: None)


def test_lambda_invoker_retries_throttling() -> None:
    client = _ScriptedLambda("TooManyRequestsException", "TooManyRequestsException")
    assert LambdaInvoker(client, backoff=NO_SLEEP).invoke("f", {}) == {"ok": True}
    assert client.calls == 3


def test_lambda_invoker_gives_up_on_endless_throttling() -> None:
    client = _ScriptedLambda(*["TooManyRequestsException"] * 10)
    with pytest.raises(ThrottledError) as info:
        LambdaInvoker(client, backoff=NO_SLEEP).invoke("f", {})
    assert info.value.attempts == 4


def test_lambda_invoker_translates_other_api_errors() -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(BackendError) as info:
        LambdaInvoker(_ScriptedLambda("ServiceException"), backoff=NO_SLEEP).invoke("f", {})
    assert isinstance(info.value.__cause__, ClientError)
    with pytest.raises(FunctionNotFoundError):
        LambdaInvoker(_ScriptedLambda("ResourceNotFoundException"), backoff=NO_SLEEP).invoke("f", {})


# --- the function host over HTTP --------------------------------------------------------------


@pytest.fixture
def host(dummy_aws: None) -> Iterator[FunctionHost]:
    with LocalProcessInvoker(FUNCTIONS, max_workers=1, timeout_s=60) as pool, FunctionHost(pool) as running:
        yield running


def _http(host: FunctionHost, path: str, body: bytes | None = None, **headers: str) -> tuple[int, Any, Any]:
    request = urllib.request.Request(
        host.url + path, data=body, headers=headers, method="POST" if body else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_host_rejects_a_body_that_is_not_json(host: FunctionHost) -> None:
    status, headers, body = _http(host, "/2015-03-31/functions/echo/invocations", b"{not json")
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    assert json.loads(body)["Type"] == "User"


@pytest.mark.parametrize("path", ["/nope", "/2015-03-31/functions/echo/other"])
def test_host_answers_unknown_routes_with_404(host: FunctionHost, path: str) -> None:
    assert _http(host, path)[0] == 404
    assert _http(host, path, b"{}")[0] == 404


def test_host_names_the_missing_function_as_lambda_does(host: FunctionHost) -> None:
    status, headers, body = _http(host, "/2015-03-31/functions/ghost/invocations", b"{}")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert (
        json.loads(body)["message"]
        == "Function not found: arn:aws:lambda:us-east-1:000000000000:function:ghost"
    )


@pytest.mark.parametrize(
    ("invocation_type", "limit"), [("Event", 1024 * 1024), ("RequestResponse", 6 * 1024 * 1024)]
)
def test_host_refuses_payloads_over_lambdas_limits(
    host: FunctionHost, invocation_type: str, limit: int
) -> None:
    body = json.dumps("x" * limit).encode()
    status, headers, _ = _http(
        host, "/2015-03-31/functions/echo/invocations", body, **{"X-Amz-Invocation-Type": invocation_type}
    )
    assert status == 413
    assert headers["x-amzn-ErrorType"] == "RequestTooLargeException"


def test_host_health(host: FunctionHost) -> None:
    status, _, body = _http(host, "/health")
    assert status == 200
    assert "echo" in json.loads(body)["functions"]


def test_host_takes_arns_qualifiers_and_all_invocation_types(host: FunctionHost) -> None:
    client = lambda_for(host).client
    arn = f"{host.arn('echo')}:$LATEST"
    response = client.invoke(FunctionName=arn, Payload=b'{"a": 1}')
    assert response["ExecutedVersion"] == "$LATEST"
    assert json.loads(response["Payload"].read())["event"] == {"a": 1}
    assert client.invoke(FunctionName=arn, InvocationType="DryRun")["StatusCode"] == 204
    assert client.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202


def test_host_stop_finishes_accepted_event_invocations(host: FunctionHost, tmp_path: Path) -> None:
    target = tmp_path / "late.json"
    lambda_for(host).invoke("touch", {"path": str(target), "data": "done", "delay": 0.3}, wait=False)
    host.stop()
    assert json.loads(target.read_text()) == "done"
