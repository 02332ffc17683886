"""Create, update and delete Overcast's Cloud Functions (2nd gen) with the google-cloud-functions client.

One stack (``--name``, default ``overcast``) in one project and region is these functions, all
built from one source archive (``overcast.infra.gcp.source``) on the ``python312`` runtime:

==========================  ============  ===================================================
function                    entry point   trigger
==========================  ============  ===================================================
``NAME-api``                ``api``       HTTP: the control plane's API
``NAME-runner``             ``runner``    Pub/Sub messages on ``NAME-runs`` (or ``--topic``);
                                          the ``gcp-functions`` work pools push to its URL too
``NAME-tick``               ``tick``      HTTP, called every minute by a Cloud Scheduler job
``NAME-storage-BUCKET``     ``storage``   ``google.cloud.storage.object.v1.finalized`` in
                                          BUCKET (one function per ``--bucket``)
==========================  ============  ===================================================

Each function carries labels ``overcast-stack`` (the stack's name), ``overcast-role`` and
``overcast-digest``: a hash of the source archive's contents and of the function's settings.
A deploy lists the region's functions once and leaves alone a function that is ACTIVE with the
digest it would give it, so a second deploy with nothing changed changes nothing; otherwise it
uploads the archive (to the signed URL ``generateUploadUrl`` hands out) and creates or updates
the function. It deletes the stack's functions it no longer has (a bucket dropped), then waits
for every long-running operation. ``destroy`` deletes every function labelled with the stack's
name.

Cloud Scheduler jobs and Pub/Sub topics are outside the Cloud Functions API: the tick's job
command is given by ``scheduler_command``, and the runner's topic must exist (``gcloud pubsub
topics create``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
from google.api_core import exceptions as google_exceptions
from google.cloud import functions_v2

from overcast.core.errors import ConfigurationError, OvercastError
from overcast.core.settings import BackendURL
from overcast.infra.gcp.source import MAX_ARCHIVE_BYTES, SourceArchive

RUNTIME = "python312"
STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
STACK_LABEL, ROLE_LABEL, DIGEST_LABEL = "overcast-stack", "overcast-role", "overcast-digest"
FUNCTION_HOME = "/tmp/overcast"  # noqa: S108 - a function's only writable folder is /tmp
MAX_EVENT_TIMEOUT_S = 540  # event-driven 2nd-gen functions run at most 9 minutes

Role = Literal["api", "runner", "tick", "storage"]
Action = Literal["created", "updated", "unchanged", "deleted"]

_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$")
_FUNCTION_ID_MAX = 63
_EMBEDDED = frozenset({"sqlite", "memory", "file", "local"})
_ON_AWS = frozenset({"dynamodb", "s3", "sqs"})


class DeployError(OvercastError):
    """Raised when Cloud Functions refuses a request, or a deployment's operation ends in error.

    Attributes:
        function: the function's full name (``projects/P/locations/R/functions/ID``), if any.
    """

    def __init__(self, message: str, *, function: str | None = None) -> None:
        super().__init__(message)
        self.function = function


@dataclass(frozen=True)
class GcpStack:
    """What ``overcast deploy gcp`` creates in one project and region.

    Attributes:
        project: the Google Cloud project id.
        region: the functions' region (``europe-west1`` …).
        store: the key-value store URL every function uses (``OVERCAST_STORE``); shared, so
            not SQLite nor memory: today ``dynamodb://TABLE?region=R`` (there is no Firestore
            adapter yet).
        name: the stack's name, the prefix of its functions' ids.
        blobs: the blob store URL (``OVERCAST_BLOBS``) for results and artifacts; empty means
            each instance's ``/tmp``, which other functions cannot read.
        buckets: Cloud Storage buckets whose uploads become events (one function each).
        topic: the runner's Pub/Sub topic id; empty means ``NAME-runs``.
        api_key: the bearer token the API requires (``OVERCAST_API_KEY``), if any.
        env: more environment variables for every function.
        service_account: the functions' (and triggers') service account email, if not the
            default compute one.
        runner_memory: the runner's memory (``512Mi``, ``1Gi``, ``2Gi`` …).
        runner_timeout_s: the runner's timeout, at most 540 s (an event-driven function's).
    """

    project: str
    region: str
    store: str
    name: str = "overcast"
    blobs: str = ""
    buckets: tuple[str, ...] = ()
    topic: str = ""
    api_key: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    runner_memory: str = "1Gi"
    runner_timeout_s: int = MAX_EVENT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigurationError(
                f"stack name {self.name!r}: 1-30 lowercase letters, digits and dashes, starting with a letter"
            )
        if not self.project or not self.region or "/" in self.project + self.region:
            raise ConfigurationError("a project id and a region are required (e.g. my-project, europe-west1)")
        _require_shared("store", self.store, example="dynamodb://TABLE?region=R")
        if self.blobs:
            _require_shared("blobs", self.blobs, example="s3://BUCKET/PREFIX?region=R")
        if not 1 <= self.runner_timeout_s <= MAX_EVENT_TIMEOUT_S:
            raise ConfigurationError(f"the runner's timeout is 1 to {MAX_EVENT_TIMEOUT_S} seconds")

    @property
    def parent(self) -> str:
        """``projects/P/locations/R``."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def topic_path(self) -> str:
        """The runner's topic: ``projects/P/topics/T``."""
        return f"projects/{self.project}/topics/{self.topic or f'{self.name}-runs'}"

    @property
    def extras(self) -> tuple[str, ...]:
        """Overcast extras the functions need besides ``api`` and ``gcp``."""
        schemes = {BackendURL(url).scheme for url in (self.store, self.blobs) if url}
        return ("aws",) if schemes & _ON_AWS else ()

    def function_id(self, role: Role, bucket: str = "") -> str:
        """The id of the function of ``role`` (and ``bucket``, for storage functions)."""
        if role != "storage":
            return f"{self.name}-{role}"
        slug = re.sub(r"[^a-z0-9]+", "-", bucket.lower()).strip("-")
        function_id = f"{self.name}-storage-{slug}"
        if len(function_id) > _FUNCTION_ID_MAX:  # keep it unique: cut, then a hash of the bucket
            tag = hashlib.sha256(bucket.encode()).hexdigest()[:6]
            function_id = f"{function_id[: _FUNCTION_ID_MAX - 7].rstrip('-')}-{tag}"
        return function_id

    def functions(self) -> list[functions_v2.Function]:
        """The stack's functions as they should be, without their source (set at upload)."""
        base = {
            "OVERCAST_HOME": FUNCTION_HOME,
            "OVERCAST_STORE": self.store,
            **({"OVERCAST_BLOBS": self.blobs} if self.blobs else {}),
            **self.env,
        }
        api_env = {**base, **({"OVERCAST_API_KEY": self.api_key} if self.api_key else {})}
        functions = [
            self._function("api", "api", memory="512Mi", timeout_s=60, env=api_env),
            self._function(
                "runner",
                "runner",
                memory=self.runner_memory,
                timeout_s=self.runner_timeout_s,
                env=base,
                trigger=self._trigger(PUBSUB_PUBLISHED, pubsub_topic=self.topic_path),
            ),
            self._function("tick", "tick", memory="512Mi", timeout_s=300, env=base),
        ]
        for bucket in self.buckets:
            trigger = self._trigger(
                STORAGE_FINALIZED, event_filters=[functions_v2.EventFilter(attribute="bucket", value=bucket)]
            )
            functions.append(
                self._function(
                    "storage",
                    "storage",
                    memory="512Mi",
                    timeout_s=60,
                    env=base,
                    trigger=trigger,
                    bucket=bucket,
                )
            )
        return functions

    def _function(
        self,
        role: Role,
        entry_point: str,
        *,
        memory: str,
        timeout_s: int,
        env: Mapping[str, str],
        trigger: functions_v2.EventTrigger | None = None,
        bucket: str = "",
    ) -> functions_v2.Function:
        function = functions_v2.Function(
            name=f"{self.parent}/functions/{self.function_id(role, bucket)}",
            description=f"Overcast {role}" + (f" for gs://{bucket}" if bucket else "") + f" ({self.name})",
            build_config=functions_v2.BuildConfig(runtime=RUNTIME, entry_point=entry_point),
            service_config=functions_v2.ServiceConfig(
                available_memory=memory,
                timeout_seconds=timeout_s,
                environment_variables=dict(env),
                service_account_email=self.service_account,
            ),
            labels={STACK_LABEL: self.name, ROLE_LABEL: role},
        )
        if trigger is not None:
            function.event_trigger = trigger
        return function

    def _trigger(self, event_type: str, **fields: Any) -> functions_v2.EventTrigger:
        return functions_v2.EventTrigger(
            event_type=event_type,
            # a failed delivery comes again: the runner and the storage entry raise to ask for it
            retry_policy=functions_v2.EventTrigger.RetryPolicy.RETRY_POLICY_RETRY,
            service_account_email=self.service_account,
            **fields,
        )


@dataclass(frozen=True)
class Outcome:
    """What a deploy did to one function."""

    function_id: str
    role: str
    action: Action
    url: str


def open_client(endpoint: str = "") -> functions_v2.FunctionServiceClient:
    """A Cloud Functions client over REST: Google's endpoint with the environment's credentials
    (Application Default Credentials), or ``endpoint`` (an emulator) with anonymous ones.

    Raises:
        DeployError: no credentials were found.
    """
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return functions_v2.FunctionServiceClient(
            transport="rest",
            client_options={"api_endpoint": endpoint},
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return functions_v2.FunctionServiceClient(transport="rest")
    except DefaultCredentialsError as exc:
        raise DeployError(
            f"no Google Cloud credentials: run `gcloud auth application-default login` ({exc})"
        ) from exc


class Deployer:
    """Deploys and destroys stacks through one Cloud Functions client.

    Args:
        client: the Cloud Functions client (``open_client``).
        http: the HTTP client that uploads archives to signed URLs.
        timeout_s: how long to wait for each long-running operation (a build takes minutes).
    """

    def __init__(
        self,
        client: functions_v2.FunctionServiceClient,
        *,
        http: httpx2.Client | None = None,
        timeout_s: float = 1200.0,
    ) -> None:
        self._client = client
        self._http = http or httpx2.Client(timeout=httpx2.Timeout(300.0, connect=10.0))
        self._timeout_s = timeout_s

    def deploy(self, stack: GcpStack, archive: SourceArchive) -> list[Outcome]:
        """Create or update the stack's functions from ``archive``; leave unchanged ones alone;
        delete the stack's functions it no longer has (a ``--bucket`` dropped).

        The operations run side by side; this returns when all are over.

        Raises:
            DeployError: a request was refused or an operation failed (the others still finish).
        """
        existing = {function.name: function for function in self._list(stack.parent)}
        wanted = stack.functions()
        started: list[tuple[str, str, Action, Any]] = []  # id, role, action, operation or function
        for function in wanted:
            function.labels[DIGEST_LABEL] = _digest(function, archive)
            function_id, role = function.name.rsplit("/", 1)[1], function.labels[ROLE_LABEL]
            current = existing.get(function.name)
            if current is not None and current.labels.get(STACK_LABEL) != stack.name:
                raise DeployError(
                    f"{function.name} exists and is not a function of stack {stack.name!r}; "
                    "delete it or deploy under another --name",
                    function=function.name,
                )
            if (
                current is not None
                and current.labels.get(DIGEST_LABEL) == function.labels[DIGEST_LABEL]
                and current.state == functions_v2.Function.State.ACTIVE
            ):
                started.append((function_id, role, "unchanged", current))
                continue
            function.build_config.source.storage_source = self._upload(stack.parent, archive)
            if current is None:
                operation = self._call(
                    function.name,
                    self._client.create_function,
                    parent=stack.parent,
                    function=function,
                    function_id=function_id,
                )
                started.append((function_id, role, "created", operation))
            else:
                paths = ["description", "build_config", "service_config", "labels"]
                if "event_trigger" in function:
                    paths.append("event_trigger")
                request = functions_v2.UpdateFunctionRequest(function=function, update_mask={"paths": paths})
                operation = self._call(function.name, self._client.update_function, request=request)
                started.append((function_id, role, "updated", operation))
        keep = {function.name for function in wanted}
        for name, function in existing.items():
            if function.labels.get(STACK_LABEL) == stack.name and name not in keep:
                operation = self._call(name, self._client.delete_function, name=name)
                started.append(
                    (name.rsplit("/", 1)[1], function.labels.get(ROLE_LABEL, ""), "deleted", operation)
                )
        return self._finish(stack.parent, started)

    def destroy(self, stack: GcpStack | str, parent: str = "") -> list[str]:
        """Delete every function labelled with the stack's name; return their ids.

        Args:
            stack: the stack, or its name (then ``parent`` is ``projects/P/locations/R``).

        Raises:
            DeployError: a deletion was refused or failed.
        """
        name, parent = (stack.name, stack.parent) if isinstance(stack, GcpStack) else (stack, parent)
        doomed = [function for function in self._list(parent) if function.labels.get(STACK_LABEL) == name]
        started: list[tuple[str, str, Action, Any]] = [
            (
                function.name.rsplit("/", 1)[1],
                function.labels.get(ROLE_LABEL, ""),
                "deleted",
                self._call(function.name, self._client.delete_function, name=function.name),
            )
            for function in doomed
        ]
        return [outcome.function_id for outcome in self._finish(parent, started)]

    def close(self) -> None:
        """Close the upload client."""
        self._http.close()

    def _list(self, parent: str) -> list[functions_v2.Function]:
        pages = self._call(parent, self._client.list_functions, parent=parent)
        try:
            return list(pages)  # the pager fetches the next pages as it goes
        except google_exceptions.GoogleAPICallError as exc:
            raise DeployError(f"{parent}: {exc.message}", function=parent) from exc

    def _finish(self, parent: str, started: list[tuple[str, str, Action, Any]]) -> list[Outcome]:
        """Wait for every operation; raise one error naming every failure once all are over."""
        outcomes: list[Outcome] = []
        failures: list[DeployError] = []
        for function_id, role, action, pending in started:
            try:
                done = (
                    pending
                    if isinstance(pending, functions_v2.Function)
                    else self._wait(f"{parent}/functions/{function_id}", pending)
                )
            except DeployError as exc:
                failures.append(exc)
                continue
            url = "" if action == "deleted" else done.service_config.uri or done.url
            outcomes.append(Outcome(function_id, role, action, url))
        if failures:
            message = "; ".join(str(exc) for exc in failures)
            raise DeployError(message, function=failures[0].function) from failures[0]
        return outcomes

    def _upload(self, parent: str, archive: SourceArchive) -> functions_v2.StorageSource:
        answer = self._call(parent, self._client.generate_upload_url, request={"parent": parent})
        headers = {
            "Content-Type": "application/zip",
            "x-goog-content-length-range": f"0,{MAX_ARCHIVE_BYTES}",  # as the URL was signed for
        }
        try:
            response = self._http.put(answer.upload_url, content=archive.data, headers=headers)
        except httpx2.HTTPError as exc:
            raise DeployError(f"uploading the source archive failed: {exc}") from exc
        if response.status_code >= 300:
            raise DeployError(
                f"uploading the source archive failed: HTTP {response.status_code}: {response.text[:500]}"
            )
        source: functions_v2.StorageSource = answer.storage_source
        return source

    def _call(self, target: str, method: Any, **arguments: Any) -> Any:
        try:
            return method(**arguments)
        except google_exceptions.GoogleAPICallError as exc:
            hint = ""
            if isinstance(exc, google_exceptions.PermissionDenied | google_exceptions.Unauthenticated):
                hint = " (is the Cloud Functions API enabled, and may your credentials deploy functions?)"
            raise DeployError(f"{target}: {exc.message}{hint}", function=target) from exc

    def _wait(self, name: str, operation: Any) -> Any:
        try:
            result = operation.result(timeout=self._timeout_s)  # a Function, or Empty for a deletion
        except google_exceptions.GoogleAPICallError as exc:
            raise DeployError(f"{name}: {exc.message}", function=name) from exc
        except FutureTimeoutError as exc:
            raise DeployError(
                f"{name}: not done after {self._timeout_s:.0f} s; see `gcloud functions describe`",
                function=name,
            ) from exc
        return result


def scheduler_command(stack: GcpStack, tick_url: str, *, schedule: str = "* * * * *") -> str:
    """The ``gcloud`` command that creates the job calling the tick (Cloud Scheduler)."""
    account = stack.service_account or "SERVICE_ACCOUNT_EMAIL"
    return (
        f"gcloud scheduler jobs create http {stack.name}-tick --project {stack.project} "
        f'--location {stack.region} --schedule "{schedule}" --uri {tick_url} --http-method POST '
        f"--oidc-service-account-email {account} --oidc-token-audience {tick_url}"
    )


def _digest(function: functions_v2.Function, archive: SourceArchive) -> str:
    settings = functions_v2.Function.to_json(function, sort_keys=True, indent=None)
    return hashlib.sha256(f"{archive.digest}\n{settings}".encode()).hexdigest()[:40]


def _require_shared(what: str, url: str, *, example: str) -> None:
    if not url or BackendURL(url).scheme in _EMBEDDED:
        raise ConfigurationError(
            f"{what} {url or '(none)'!s}: each Cloud Functions instance has its own disk, lost when "
            f"it stops, so the functions need a {what} they all reach, e.g. {example}"
        )
