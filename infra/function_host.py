"""The local function host: Lambda's Invoke API over HTTP, served by a pool of worker processes.

The real boto3 Lambda client, and so ``LambdaInvoker``, can invoke local functions through it,
which lets the AWS code paths run on a laptop (moto cannot run Lambda code without Docker).
``overcast dev`` runs the ``runner`` and ``events`` handlers here.

Routes:

- ``POST /2015-03-31/functions/{name or ARN}/invocations``, with ``X-Amz-Invocation-Type``
  ``RequestResponse`` (200 with the result; a failed handler gives 200 with
  ``X-Amz-Function-Error: Unhandled`` and Lambda's error payload), ``Event`` (202 at once, run
  in the background) or ``DryRun`` (204). API errors carry ``x-amzn-ErrorType`` and a JSON
  body ``{"Type", "message"}``, which botocore turns into its modeled exceptions.
- ``GET /health``: 200 with the registered function names.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from overcast.adapters.invokers._handlers import (
    LOCAL_ACCOUNT,
    LOCAL_REGION,
    MAX_ASYNC_PAYLOAD,
    MAX_SYNC_PAYLOAD,
    function_arn,
    payload_from_error,
)
from overcast.adapters.invokers.inline import InlineInvoker
from overcast.adapters.invokers.process_pool import LocalProcessInvoker
from overcast.core.errors import (
    FunctionCrashedError,
    FunctionError,
    FunctionNotFoundError,
    InvalidValueError,
    InvocationTimeoutError,
)

logger = logging.getLogger(__name__)

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
_INVOCATION_TYPES = frozenset({"RequestResponse", "Event", "DryRun"})
_DISCARD_LIMIT = 64 * 1024 * 1024  # past this, an oversized body is not read but the connection closed


@dataclass
class Reply:
    """An HTTP response to write: status, body and headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> Reply:
        """A reply whose body is ``value`` as JSON."""
        return cls(
            status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})}
        )


def api_error(status: int, code: str, message: str) -> Reply:
    """Return an error shaped as the Lambda API sends it, so that botocore raises exception ``code``."""
    return Reply.json(status, {"Type": "User", "message": message}, {"x-amzn-ErrorType": code})


def function_name(identifier: str) -> str:
    """Return the function name in a name, ``NAME:QUALIFIER``, full ARN or partial ARN."""
    parts = unquote(identifier).split(":")
    if "function" in parts[:-1]:
        return parts[parts.index("function") + 1]
    return parts[0]


class FunctionHost:
    """Serves Lambda's Invoke API for the functions of a local invoker.

    Args:
        invoker: runs the functions; its ``functions`` mapping is what the host serves. The
            host does not close it: its owner does, after ``stop``.
        host: the interface to listen on.
        port: the port; 0 picks a free one (see ``url``).
        region, account: what the ARNs in messages name.
    """

    def __init__(
        self,
        invoker: LocalProcessInvoker | InlineInvoker,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = LOCAL_REGION,
        account: str = LOCAL_ACCOUNT,
    ) -> None:
        self.invoker = invoker
        self.region, self.account = region, account
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._idle = threading.Condition()
        self._stopping = False

    def register(self, name: str, handler: str, *, timeout_s: float | None = None) -> None:
        """Serve function ``name``, run by ``handler`` (``module:attr``), with its own timeout if given."""
        self.invoker.register(name, handler, timeout_s=timeout_s)

    @property
    def serving(self) -> bool:
        """Whether the host takes invocations (started, and not stopping)."""
        return self._server is not None and not self._stopping

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:53117`` (the endpoint for boto3)."""
        if self._server is None:
            raise RuntimeError("the function host is not started")
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> FunctionHost:
        """Start listening and serving on a background thread; return ``self``."""
        if self._server is None:
            self._stopping = False
            self._server = _Server(self._address, _RequestHandler, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="overcast-function-host",
            )
            self._thread.start()
            logger.info("function host listening on %s", self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully: refuse new requests, then wait up to ``timeout`` for running and queued ones."""
        server = self._server
        if server is None or self._stopping:
            return
        self._stopping = True  # requests on open keep-alive connections are refused from now
        deadline = time.monotonic() + timeout
        server.shutdown()
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout=max(0.0, deadline - time.monotonic()))
        server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
        if not self.invoker.drain(max(0.0, deadline - time.monotonic())):
            logger.warning("function host stopped with event invocations still running")

    def __enter__(self) -> FunctionHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def arn(self, name: str) -> str:
        """Return the ARN of function ``name`` on this host."""
        return function_arn(name, self.region, self.account)

    def invoke(self, identifier: str, invocation_type: str, body: bytes, request_id: str) -> Reply:
        """Serve one Invoke request (called by the request threads).

        Args:
            identifier: the function as the URL names it (name, ``NAME:QUALIFIER`` or ARN).
            invocation_type: ``RequestResponse``, ``Event`` or ``DryRun``.
            body: the request body, the event as JSON.
            request_id: the id to log, send back and give the handler's context.
        """
        name = function_name(identifier)
        if name not in self.invoker.functions:
            return api_error(404, "ResourceNotFoundException", f"Function not found: {self.arn(name)}")
        if invocation_type == "DryRun":
            return Reply(204)
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            message = f"Could not parse request body into json: {exc}"
            return api_error(400, "InvalidRequestContentException", message)
        return self._run(name, invocation_type, payload, request_id)

    def _run(self, name: str, invocation_type: str, payload: Any, request_id: str) -> Reply:
        started = time.monotonic()
        wait = invocation_type == "RequestResponse"
        try:
            result = self.invoker.invoke(name, payload, wait=wait, request_id=request_id)
        except InvalidValueError as exc:
            return api_error(400, "InvalidRequestContentException", str(exc))
        except (FunctionError, InvocationTimeoutError, FunctionCrashedError, FunctionNotFoundError) as exc:
            error = payload_from_error(exc, request_id)
            self._log(name, request_id, invocation_type, error["errorType"], started)
            headers = {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST"}
            return Reply.json(200, error, headers)
        self._log(name, request_id, invocation_type, "ok" if wait else "queued", started)
        if not wait:
            return Reply(202)
        return Reply.json(200, result, {"X-Amz-Executed-Version": "$LATEST"})

    def _log(self, name: str, request_id: str, invocation_type: str, outcome: str, started: float) -> None:
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info(
            "invoke %s request=%s type=%s outcome=%s duration=%.1fms",
            name, request_id, invocation_type, outcome, elapsed_ms,
        )  # fmt: skip

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Count a request as in flight while the block runs, so that ``stop`` can wait for it."""
        with self._idle:
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()


class _Server(ThreadingHTTPServer):
    # Requests are tracked by the host, so stop() can wait for them with a deadline instead of
    # joining threads that may be blocked on a 15-minute invocation.
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], host: FunctionHost
    ) -> None:
        self.function_host = host
        super().__init__(address, handler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    timeout = 60  # idle keep-alive connections give their thread back after this
    server: _Server

    def do_GET(self) -> None:
        host = self.server.function_host
        if urlsplit(self.path).path == "/health":
            health = {
                "status": "ok" if host.serving else "stopping",
                "functions": sorted(host.invoker.functions),
            }
            self._reply(Reply.json(200 if host.serving else 503, health), str(uuid.uuid4()))
        else:
            reply = api_error(404, "UnknownOperationException", f"no route for GET {self.path}")
            self._reply(reply, str(uuid.uuid4()))

    def do_POST(self) -> None:
        host = self.server.function_host
        request_id = str(uuid.uuid4())
        with host.tracking():
            self._reply(self._invoke(host, request_id), request_id)

    def _invoke(self, host: FunctionHost, request_id: str) -> Reply:
        route = _INVOKE_PATH.match(urlsplit(self.path).path)
        invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        refusal = self._refusal(host, route, invocation_type, length)
        if refusal is not None:
            self._discard(length)
            return refusal
        assert route is not None
        return host.invoke(route["function"], invocation_type, self.rfile.read(length), request_id)

    def _refusal(self, host: FunctionHost, route: Any, invocation_type: str, length: int) -> Reply | None:
        """Return the answer to a request that must not reach a function, or ``None``."""
        if route is None:
            return api_error(404, "UnknownOperationException", f"no route for POST {self.path}")
        if not host.serving:
            return api_error(503, "ServiceException", "the function host is stopping")
        if length < 0:
            return api_error(400, "InvalidRequestContentException", "bad Content-Length header")
        if invocation_type not in _INVOCATION_TYPES:
            message = f"invalid X-Amz-Invocation-Type {invocation_type!r}"
            return api_error(400, "InvalidParameterValueException", message)
        limit = MAX_ASYNC_PAYLOAD if invocation_type == "Event" else MAX_SYNC_PAYLOAD
        if length > limit:
            message = f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
            return api_error(413, "RequestTooLargeException", message)
        return None

    def _discard(self, length: int) -> None:
        # Reading an unwanted body keeps the connection usable and lets the client see our
        # answer instead of a reset; an unknown or huge one is not worth it.
        if not 0 <= length <= _DISCARD_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _reply(self, reply: Reply, request_id: str) -> None:
        if not self.server.function_host.serving:
            self.close_connection = True  # so that idle keep-alive connections end with the host
        self.send_response(reply.status)
        self.send_header("x-amzn-RequestId", request_id)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:  # a 204 carries no body, so no length either
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)
