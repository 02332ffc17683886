"""What the invokers share: handler paths, a Lambda-like context, one run of a handler, error payloads.

A local invocation must behave like one on Lambda, so that code which works locally works when
deployed: the event and the result cross a JSON boundary (``json.dumps``/``json.loads``, never
the caller's objects), the context has Lambda's attributes, sizes are held to Lambda's limits,
and a failure is reported as Lambda's error payload ``{"errorType", "errorMessage",
"stackTrace"}``, which ``error_from_payload`` turns into the same exception on every invoker.
"""

from __future__ import annotations

import importlib
import json
import re
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from overcast.core.errors import (
    FunctionCrashedError,
    FunctionError,
    FunctionNotFoundError,
    InvalidValueError,
    InvocationError,
    InvocationTimeoutError,
    OvercastError,
)

MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
"""Lambda's limit for a RequestResponse request and for any response, in bytes."""
MAX_ASYNC_PAYLOAD = 1024 * 1024
"""Lambda's limit for an Event (asynchronous) request, in bytes."""
LOCAL_REGION, LOCAL_ACCOUNT = "us-east-1", "000000000000"

Handler = Callable[[Any, Any], Any]
Outcome = tuple[Literal["ok"], str] | tuple[Literal["error"], dict[str, Any]]
"""A handler run's result: ``("ok", result_json)`` or ``("error", lambda_error_payload)``."""

# Error types Lambda reports for failures of the sandbox rather than of the handler's code.
_NOT_FOUND_TYPES = frozenset({"Runtime.ImportModuleError", "Runtime.HandlerNotFound"})
_CRASH_TYPES = frozenset({"Runtime.ExitError", "Runtime.OutOfMemory"})


def function_arn(name: str, region: str = LOCAL_REGION, account: str = LOCAL_ACCOUNT) -> str:
    """Return the ARN Lambda would give function ``name``."""
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


def lookup_handler(functions: Mapping[str, str], function: str) -> str:
    """Return the handler path of ``function``: its registration, or itself when it is a ``module:attr``.

    Raises:
        FunctionNotFoundError: ``function`` is neither registered nor a handler path.
    """
    if function in functions:
        return functions[function]
    if ":" in function:
        return function
    known = ", ".join(sorted(functions)) or "none"
    raise FunctionNotFoundError(function, f"no function named {function!r} is registered (known: {known})")


def resolve_handler(path: str) -> Handler:
    """Import and return the callable named by ``package.module:attr`` or Lambda's ``package.module.attr``.

    Raises:
        FunctionNotFoundError: the path is malformed, the module cannot be imported (chained to
            the ``ImportError``) or it has no such callable attribute.
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise FunctionNotFoundError(path, f"bad handler {path!r}: expected 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        # Lambda's wording, so that the message reads the same locally and deployed.
        raise FunctionNotFoundError(path, f"Unable to import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise FunctionNotFoundError(path, f"Handler {attr!r} missing on module {module_name!r}")
    return target  # type: ignore[no-any-return]


@dataclass
class LambdaContext:
    """The ``context`` a handler receives, with the attributes of Lambda's Python runtime.

    ``memory_limit_in_mb`` is a string, as Lambda's runtime gives it. The remaining time counts
    down from the invocation's timeout whether or not the invoker can enforce it.
    """

    function_name: str
    timeout_s: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: str = "128"
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    client_context: Any = None
    identity: Any = None
    _deadline: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.invoked_function_arn = self.invoked_function_arn or function_arn(self.function_name)
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self.log_stream_name = self.log_stream_name or f"{day}/[$LATEST]{uuid.uuid4().hex}"

    def get_remaining_time_in_millis(self) -> int:
        """Return the milliseconds left before the invocation's timeout (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _json_default(value: Any) -> Any:
    # Lambda's runtime writes Decimals (which DynamoDB hands out) as numbers; so do we.
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_payload(function: str, payload: Any, *, wait: bool) -> str:
    """Return ``payload`` as JSON text, held to Lambda's request size limits.

    Raises:
        InvalidValueError: the payload is not JSON-serializable or is too large for Lambda.
    """
    try:
        text = json.dumps(payload, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"payload for {function!r} is not JSON-serializable: {exc}") from exc
    limit = MAX_SYNC_PAYLOAD if wait else MAX_ASYNC_PAYLOAD
    if len(text.encode()) > limit:
        raise InvalidValueError(f"payload for {function!r} is over Lambda's {limit}-byte limit")
    return text


def error_payload(error_type: str, message: str, exc: BaseException | None = None) -> dict[str, Any]:
    """Return Lambda's error payload, with ``exc``'s trace lines when given."""
    trace = traceback.format_list(traceback.extract_tb(exc.__traceback__)) if exc else []
    return {"errorType": error_type, "errorMessage": message, "stackTrace": trace}


def run_handler(
    function: str,
    handler_path: str,
    event_json: str,
    *,
    timeout_s: float,
    request_id: str | None = None,
    max_result_bytes: int | None = MAX_SYNC_PAYLOAD,
) -> Outcome:
    """Run one invocation in this process, reporting every handler failure as an error payload.

    Only ``Exception``s are caught: ``SystemExit`` and friends end the sandbox, as on Lambda.

    Args:
        function: the function's name (the context's ``function_name``).
        handler_path: where the handler lives (see ``resolve_handler``).
        event_json: the event as JSON text.
        timeout_s: the invocation's timeout, from which the context counts down.
        request_id: the context's ``aws_request_id``; a fresh UUID when omitted.
        max_result_bytes: the largest result accepted (``None``: no limit, for Event calls).

    Returns:
        ``("ok", result_json)`` or ``("error", payload)``.
    """
    context = LambdaContext(function, timeout_s, aws_request_id=request_id or str(uuid.uuid4()))
    handler = _load(handler_path)
    if isinstance(handler, dict):
        return "error", handler
    try:
        result = handler(json.loads(event_json), context)
    except Exception as exc:
        return "error", error_payload(type(exc).__name__, str(exc), exc)
    return _marshal(result, max_result_bytes)


def _load(handler_path: str) -> Handler | dict[str, Any]:
    """Return the handler, or the error payload Lambda reports when it cannot be loaded."""
    try:
        return resolve_handler(handler_path)
    except FunctionNotFoundError as exc:
        missing_module = isinstance(exc.__cause__, ImportError)
        return error_payload(
            "Runtime.ImportModuleError" if missing_module else "Runtime.HandlerNotFound", str(exc)
        )
    except SyntaxError as exc:
        return error_payload("Runtime.UserCodeSyntaxError", str(exc), exc)
    except Exception as exc:  # raised while the module initialises
        return error_payload(type(exc).__name__, str(exc), exc)


def _marshal(result: Any, max_result_bytes: int | None) -> Outcome:
    try:
        text = json.dumps(result, default=_json_default)
    except (TypeError, ValueError) as exc:
        return "error", error_payload("Runtime.MarshalError", f"Unable to marshal response: {exc}")
    if max_result_bytes is not None and len(text.encode()) > max_result_bytes:
        message = f"Response payload size exceeded maximum allowed payload size ({max_result_bytes} bytes)."
        return "error", error_payload("Function.ResponseSizeTooLarge", message)
    return "ok", text


def unwrap(function: str, outcome: Outcome) -> Any:
    """Return the result of ``outcome``, or raise the error its payload describes."""
    if outcome[0] == "ok":
        return json.loads(outcome[1])
    raise error_from_payload(function, outcome[1])


def error_from_payload(function: str, payload: Mapping[str, Any]) -> InvocationError | FunctionNotFoundError:
    """Translate Lambda's error payload into the invoker error it stands for.

    ``Sandbox.Timedout`` is a timeout (seconds parsed from the message), ``Runtime.ExitError``
    and ``Runtime.OutOfMemory`` a crash (exit status or signal parsed from the message), a
    handler that cannot be imported or found is a missing function, anything else a
    ``FunctionError`` keeping the reported type, message and trace.
    """
    error_type = str(payload.get("errorType") or "Unhandled")
    message = str(payload.get("errorMessage") or "")
    if error_type == "Sandbox.Timedout":
        seconds = re.search(r"after ([0-9.]+) seconds", message)
        return InvocationTimeoutError(function, float(seconds[1]) if seconds else None)
    if error_type in _CRASH_TYPES:
        return FunctionCrashedError(function, parse_exit_code(message), message)
    if error_type in _NOT_FOUND_TYPES:
        return FunctionNotFoundError(function, message)
    trace = payload.get("stackTrace")
    lines = [str(line) for line in trace] if isinstance(trace, list) else []
    return FunctionError(function, error_type, message, lines)


def payload_from_error(exc: OvercastError, request_id: str) -> dict[str, Any]:
    """Return the error payload Lambda would send for an invocation that failed with ``exc``.

    The inverse of ``error_from_payload``: what the function host answers, and what
    ``LambdaInvoker`` reads back into the same error.
    """
    if isinstance(exc, FunctionError):
        return exc.to_payload()
    if isinstance(exc, InvocationTimeoutError):
        after = f" after {exc.timeout_s:.2f} seconds" if exc.timeout_s is not None else ""
        message = f"RequestId: {request_id} Error: Task timed out{after}"
        return {"errorType": "Sandbox.Timedout", "errorMessage": message}
    if isinstance(exc, FunctionCrashedError):
        message = f"RequestId: {request_id} Error: {exit_reason(exc.exit_code)}"
        return {"errorType": "Runtime.ExitError", "errorMessage": message}
    if isinstance(exc, FunctionNotFoundError):  # the function exists, but its handler cannot be loaded
        return {"errorType": "Runtime.ImportModuleError", "errorMessage": str(exc)}
    return {"errorType": "Runtime.Unknown", "errorMessage": str(exc)}


def exit_reason(exit_code: int | None) -> str:
    """Describe a process's end as Lambda does (``exit status 3``, ``signal: killed``)."""
    if exit_code is None:
        return "Runtime exited without providing a reason"
    if exit_code < 0:
        name = signal.strsignal(-exit_code) or f"signal {-exit_code}"
        return f"Runtime exited with error: signal: {name.lower()}"
    return f"Runtime exited with error: exit status {exit_code}"


def parse_exit_code(message: str) -> int | None:
    """Read the exit code back from an ``exit_reason`` text (negative for a signal)."""
    if status := re.search(r"exit status (\d+)", message):
        return int(status[1])
    if by_signal := re.search(r"signal: ([a-z ]+)", message):
        name = by_signal[1].strip()
        for sig in signal.Signals:
            if (signal.strsignal(sig) or "").lower() == name:
                return -int(sig)
    return None
