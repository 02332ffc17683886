"""A stand-in for the Cloud Functions v2 REST API on 127.0.0.1, for ``overcast deploy gcp``'s tests.

It serves what google-cloud-functions' REST transport calls (paths from its
``transports/rest_base.py``) and the signed URL it hands out:

- ``POST /v2/projects/P/locations/L/functions:generateUploadUrl`` → an upload URL on this
  server and the ``storageSource`` to build from;
- ``PUT /upload/OBJECT`` (the signed URL) → keeps the zip;
- ``GET|DELETE /v2/…/functions/ID``, ``PATCH /v2/…/functions/ID?updateMask=…``,
  ``POST /v2/…/functions?functionId=ID``, ``GET /v2/…/functions`` (list);
- ``GET /v2/…/operations/OP``: create, update and delete answer an operation that is not
  done; its first poll finds it done, carrying the function (or ``Empty``) in ``response``.

Like the real service, a function whose ``storageSource`` names nothing uploaded fails to build
(the operation ends with an error), as does one named in ``failing_builds``. Every request is recorded (method, path, query, JSON body)
for the tests to check the shapes the client sent.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FUNCTION_TYPE = "type.googleapis.com/google.cloud.functions.v2.Function"
METADATA_TYPE = "type.googleapis.com/google.cloud.functions.v2.OperationMetadata"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
UPLOAD_BUCKET = "gcf-v2-uploads-standin"

_LOCATION = r"/v2/(?P<parent>projects/[^/]+/locations/[^/:]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(_LOCATION + r"/functions:generateUploadUrl$"), "generate_upload_url"),
    ("PUT", re.compile(r"/upload/(?P<object>[^/]+)$"), "upload"),
    ("GET", re.compile(_LOCATION + r"/functions$"), "list_functions"),
    ("POST", re.compile(_LOCATION + r"/functions$"), "create_function"),
    ("GET", re.compile(_LOCATION + r"/functions/(?P<id>[^/:]+)$"), "get_function"),
    ("PATCH", re.compile(_LOCATION + r"/functions/(?P<id>[^/:]+)$"), "update_function"),
    ("DELETE", re.compile(_LOCATION + r"/functions/(?P<id>[^/:]+)$"), "delete_function"),
    ("GET", re.compile(_LOCATION + r"/operations/(?P<op>[^/:]+)$"), "get_operation"),
]


@dataclass(frozen=True)
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any  # the JSON body, or the byte count of an upload


class StandInError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass
class CloudFunctionsStandIn:
    """The API's state (functions, uploads, operations) and a server over it."""

    functions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by full name
    uploads: dict[str, bytes] = field(default_factory=dict)  # by object name
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    failing_builds: set[str] = field(default_factory=set)  # function ids whose builds fail
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CloudFunctionsStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin._serve(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def calls(self, method: str, path_suffix: str = "") -> list[Recorded]:
        """The requests with this method whose path ends with ``path_suffix``."""
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    # -- the API ---------------------------------------------------------------------------------

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        query = parse_qs(parts.query)
        route = next(
            (
                (action, match)
                for method, pattern, action in ROUTES
                if method == http.command and (match := pattern.match(parts.path))
            ),
            None,
        )
        if route is None:
            self._answer(
                http, 404, {"error": {"code": 404, "message": f"no route {http.command} {parts.path}"}}
            )
            return
        action, match = route
        with self._lock:
            if action == "upload":
                body: Any = len(raw)
            else:
                body = json.loads(raw) if raw else None
            self.requests.append(Recorded(http.command, parts.path, query, body))
            try:
                if action == "upload":
                    status, answer = self._upload(match["object"], raw, http.headers.get("Content-Type"))
                else:
                    status, answer = 200, getattr(self, "_" + action)(match, query, body)
            except StandInError as exc:
                status = exc.status
                answer = {"error": {"code": exc.status, "message": str(exc), "status": exc.reason}}
        self._answer(http, status, answer)

    @staticmethod
    def _answer(http: BaseHTTPRequestHandler, status: int, answer: Any) -> None:
        data = json.dumps(answer).encode() if answer is not None else b""
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)

    def _generate_upload_url(self, match: re.Match[str], query: Any, body: Any) -> dict[str, Any]:
        name = f"{uuid.uuid4().hex}.zip"
        return {
            "uploadUrl": f"{self.url}/upload/{name}",
            "storageSource": {"bucket": UPLOAD_BUCKET, "object": name},
        }

    def _upload(self, name: str, data: bytes, content_type: str | None) -> tuple[int, Any]:
        if content_type != "application/zip":  # the signed URL is signed for this type
            raise StandInError(
                403, "SignatureDoesNotMatch", f"content type {content_type!r}, not application/zip"
            )
        self.uploads[name] = data
        return 200, None

    def _list_functions(self, match: re.Match[str], query: Any, body: Any) -> dict[str, Any]:
        prefix = match["parent"] + "/functions/"
        return {"functions": [f for name, f in sorted(self.functions.items()) if name.startswith(prefix)]}

    def _get_function(self, match: re.Match[str], query: Any, body: Any) -> dict[str, Any]:
        name = f"{match['parent']}/functions/{match['id']}"
        if name not in self.functions:
            raise StandInError(404, "NOT_FOUND", f"Resource '{name}' was not found")
        return self.functions[name]

    def _create_function(self, match: re.Match[str], query: Any, body: Any) -> dict[str, Any]:
        function_id = query["functionId"][0]
        name = f"{match['parent']}/functions/{function_id}"
        if name in self.functions:
            raise StandInError(409, "ALREADY_EXISTS", f"Function {function_id} already exists")
        return self._operation(match["parent"], name, "create", {**body, "name": name})

    def _update_function(self, match: re.Match[str], query: Any, body: Any) -> dict[str, Any]:
        name = f"{match['parent']}/functions/{match['id']}"
        current = self._get_function(match, query, body)
        mask = query.get("updateMask", [""])[0].split(",")
        changed = {**current, **{key: body[key] for key in mask if key in body}}
        return self._operation(match["parent"], name, "update", changed)

    def _delete_function(self, match: re.Match[str], query: Any, body: Any) -> dict[str, Any]:
        name = f"{match['parent']}/functions/{match['id']}"
        self._get_function(match, query, body)
        return self._operation(match["parent"], name, "delete", None)

    def _operation(
        self, parent: str, name: str, verb: str, function: dict[str, Any] | None
    ) -> dict[str, Any]:
        op_name = f"{parent}/operations/operation-{uuid.uuid4().hex[:12]}"
        metadata = {"@type": METADATA_TYPE, "target": name, "verb": verb, "apiVersion": "v2"}
        outcome: dict[str, Any]
        if function is None:
            del self.functions[name]
            outcome = {"response": {"@type": EMPTY_TYPE}}
        else:
            function_id = name.rsplit("/", 1)[1]
            source = function.get("buildConfig", {}).get("source", {}).get("storageSource", {})
            if source.get("bucket") != UPLOAD_BUCKET or source.get("object") not in self.uploads:
                outcome = {"error": {"code": 3, "message": f"Build failed: no source at {source}"}}
            elif function_id in self.failing_builds:
                message = "Build failed: pip install -r requirements.txt: exit status 1"
                outcome = {"error": {"code": 3, "message": message}}
            else:
                uri = f"https://{function_id}-standin.a.run.app"
                deployed = {
                    **function,
                    "state": "ACTIVE",
                    "url": uri,
                    "environment": "GEN_2",
                    "serviceConfig": {**function.get("serviceConfig", {}), "uri": uri},
                }
                self.functions[name] = deployed
                outcome = {"response": {"@type": FUNCTION_TYPE, **deployed}}
        self.operations[op_name] = {"name": op_name, "metadata": metadata, "done": True, **outcome}
        return {"name": op_name, "metadata": metadata, "done": False}

    def _get_operation(self, match: re.Match[str], query: Any, body: Any) -> dict[str, Any]:
        name = f"{match['parent']}/operations/{match['op']}"
        if name not in self.operations:
            raise StandInError(404, "NOT_FOUND", f"Operation '{name}' was not found")
        return self.operations[name]
