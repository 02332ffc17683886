"""`overcast deploy gcp` / `destroy gcp` against a stand-in for the Cloud Functions v2 REST API.

The commands run in process with google-cloud-functions' REST transport pointed at the
stand-in (``--endpoint``, anonymous credentials); the stand-in records what the client sent.
Then the archive the deploy uploaded is unpacked and its ``main.py`` served by
functions-framework, entry point by entry point, as Cloud Functions would serve it.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
import uuid
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import typer
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from gcf_standin import CloudFunctionsStandIn
from typer.testing import CliRunner

from overcast._runtime import _build, use_runtime
from overcast.core.settings import Settings
from overcast.deployments import run_deployment
from overcast.flows import load_flow_from_entrypoint
from overcast.handlers import bootstrap
from overcast.infra.cli import build
from overcast.infra.gcp.source import ENTRY_POINTS

PARENT = "projects/proj-1/locations/europe-west1"
STORE = "dynamodb://overcast?region=eu-west-1"
FLOWS = textwrap.dedent(
    """
    from overcast import flow

    @flow
    def double(n: int) -> int:
        return n * 2
    """
)
EVENTS = Path(__file__).parent.parent / "handlers" / "events"


@pytest.fixture
def standin() -> Iterator[CloudFunctionsStandIn]:
    server = CloudFunctionsStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: a flow, its own requirements, and things that must stay out."""
    folder = tmp_path / "project"
    (folder / "pipelines").mkdir(parents=True)
    (folder / "flows.py").write_text(FLOWS)
    (folder / "pipelines" / "__init__.py").write_text("")
    (folder / "requirements.txt").write_text("requests==2.32.3\n")
    (folder / ".venv" / "lib").mkdir(parents=True)
    (folder / ".venv" / "lib" / "big.py").write_text("# a virtual environment stays out\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "flows.cpython-311.pyc").write_bytes(b"\0")
    return folder


def _cli() -> typer.Typer:
    return build()  # the `overcast` command itself


Run = Callable[..., Any]


@pytest.fixture
def overcast(standin: CloudFunctionsStandIn, project: Path) -> Run:
    """Run ``overcast deploy gcp …`` / ``destroy gcp …`` against the stand-in."""

    def run(command: str, *args: str, expect: int = 0) -> Any:
        common = ["--project", "proj-1", "--region", "europe-west1", "--endpoint", standin.url]
        if command == "deploy":
            common += ["--store", STORE, "--source", str(project)]
        result = CliRunner().invoke(_cli(), [command, "gcp", *common, *args])
        assert result.exit_code == expect, result.output
        return result

    return run


def _created(standin: CloudFunctionsStandIn) -> dict[str, dict[str, Any]]:
    return {call.query["functionId"][0]: call.body for call in standin.calls("POST", "/functions")}


def _archive(standin: CloudFunctionsStandIn, function: dict[str, Any]) -> zipfile.ZipFile:
    storage = function["buildConfig"]["source"]["storageSource"]
    return zipfile.ZipFile(io.BytesIO(standin.uploads[storage["object"]]))


# -- deploy, redeploy, destroy ---------------------------------------------------------------------


def test_a_first_deploy_creates_the_api_runner_tick_and_storage_functions(
    standin: CloudFunctionsStandIn, overcast: Run
) -> None:
    result = overcast(
        "deploy", "--bucket", "uploads.example", "--blobs", "s3://results/runs", "--api-key", "k1"
    )

    created = _created(standin)
    assert set(created) == {
        "overcast-api",
        "overcast-runner",
        "overcast-tick",
        "overcast-storage-uploads-example",
    }
    for function_id, function in created.items():
        assert function["name"] == f"{PARENT}/functions/{function_id}"
        assert function["buildConfig"]["runtime"] == "python312"
        env = function["serviceConfig"]["environmentVariables"]
        assert env["OVERCAST_STORE"] == STORE
        assert env["OVERCAST_BLOBS"] == "s3://results/runs"
        assert env["OVERCAST_HOME"] == "/tmp/overcast"
        assert function["labels"]["overcast-stack"] == "overcast"
    entry_points = {fid: f["buildConfig"]["entryPoint"] for fid, f in created.items()}
    assert entry_points == {
        "overcast-api": "api",
        "overcast-runner": "runner",
        "overcast-tick": "tick",
        "overcast-storage-uploads-example": "storage",
    }
    # the API alone knows the key; the HTTP functions have no trigger
    assert created["overcast-api"]["serviceConfig"]["environmentVariables"]["OVERCAST_API_KEY"] == "k1"
    assert "OVERCAST_API_KEY" not in created["overcast-runner"]["serviceConfig"]["environmentVariables"]
    assert "eventTrigger" not in created["overcast-api"] and "eventTrigger" not in created["overcast-tick"]
    retry = 2  # RETRY_POLICY_RETRY (the REST transport sends enums as numbers)
    assert created["overcast-storage-uploads-example"]["eventTrigger"] == {
        "eventType": "google.cloud.storage.object.v1.finalized",
        "eventFilters": [{"attribute": "bucket", "value": "uploads.example"}],
        "retryPolicy": retry,
    }
    assert created["overcast-runner"]["eventTrigger"] == {
        "eventType": "google.cloud.pubsub.topic.v1.messagePublished",
        "pubsubTopic": "projects/proj-1/topics/overcast-runs",
        "retryPolicy": retry,
    }
    assert created["overcast-runner"]["serviceConfig"]["timeoutSeconds"] == 540

    # each function builds from an archive uploaded to its signed URL
    objects = [f["buildConfig"]["source"]["storageSource"]["object"] for f in created.values()]
    assert len(set(objects)) == 4 and set(objects) <= set(standin.uploads)
    names = set(_archive(standin, created["overcast-api"]).namelist())
    assert {"main.py", "requirements.txt", "flows.py", "pipelines/__init__.py"} <= names
    assert {"overcast/__init__.py", "overcast/core/settings.py", "overcast/handlers/gcp/api.py"} <= names
    assert not any(n.startswith((".venv/", "__pycache__/", "overcast/infra/")) for n in names)
    requirements = _archive(standin, created["overcast-api"]).read("requirements.txt").decode().splitlines()
    assert "requests==2.32.3" in requirements  # the project's own
    pinned = {line.split("==")[0] for line in requirements if "==" in line}
    assert {"functions-framework", "a2wsgi", "fastapi", "pydantic"} <= pinned
    assert "boto3" in pinned  # the store is DynamoDB: the aws extra comes along

    # what was done, the URLs, and the steps outside the Cloud Functions API
    assert "overcast-api" in result.stdout and "created" in result.stdout
    assert "https://overcast-api-standin.a.run.app" in result.stdout
    assert "gcloud pubsub topics create overcast-runs --project proj-1" in result.stdout
    assert "gcloud scheduler jobs create http overcast-tick" in result.stdout
    assert "--uri https://overcast-tick-standin.a.run.app" in result.stdout
    assert '{"url": "https://overcast-runner-standin.a.run.app"}' in result.stdout


def test_a_second_deploy_with_nothing_changed_changes_nothing(
    standin: CloudFunctionsStandIn, overcast: Run
) -> None:
    overcast("deploy", "--bucket", "uploads")
    before = dict(standin.functions)
    standin.requests.clear()

    result = overcast("deploy", "--bucket", "uploads")

    assert standin.functions == before
    assert [(call.method, call.path) for call in standin.requests] == [("GET", f"/v2/{PARENT}/functions")]
    assert result.stdout.count("unchanged") == 4


def test_a_bucket_dropped_from_the_deploy_loses_its_storage_function(
    standin: CloudFunctionsStandIn, overcast: Run
) -> None:
    overcast("deploy", "--bucket", "uploads", "--bucket", "inbox")

    result = overcast("deploy", "--bucket", "inbox")

    assert f"{PARENT}/functions/overcast-storage-inbox" in standin.functions
    assert f"{PARENT}/functions/overcast-storage-uploads" not in standin.functions
    assert [call.path for call in standin.calls("DELETE")] == [
        f"/v2/{PARENT}/functions/overcast-storage-uploads"
    ]
    assert "overcast-storage-uploads  deleted" in result.stdout


def test_a_changed_flow_or_setting_updates_the_functions_in_place(
    standin: CloudFunctionsStandIn, overcast: Run, project: Path
) -> None:
    overcast("deploy")
    standin.requests.clear()
    (project / "flows.py").write_text(FLOWS.replace("n * 2", "n + n"))

    result = overcast("deploy", "--runner-memory", "2Gi")

    assert not standin.calls("POST", "/functions")
    patches = {call.path.rsplit("/", 1)[1]: call for call in standin.calls("PATCH")}
    assert set(patches) == {"overcast-api", "overcast-runner", "overcast-tick"}
    assert patches["overcast-runner"].query["updateMask"] == [
        "description,buildConfig,serviceConfig,labels,eventTrigger"
    ]
    runner = standin.functions[f"{PARENT}/functions/overcast-runner"]
    assert runner["serviceConfig"]["availableMemory"] == "2Gi"
    assert "n + n" in _archive(standin, runner).read("flows.py").decode()
    assert result.stdout.count("updated") == 3

    standin.requests.clear()
    overcast("deploy", "--runner-memory", "2Gi", "--env", "TZ=Europe/Paris")  # a setting alone
    assert {call.path.rsplit("/", 1)[1] for call in standin.calls("PATCH")} == {
        "overcast-api",
        "overcast-runner",
        "overcast-tick",
    }
    api = standin.functions[f"{PARENT}/functions/overcast-api"]
    assert api["serviceConfig"]["environmentVariables"]["TZ"] == "Europe/Paris"


def test_a_failed_build_is_reported_with_the_functions_name(
    standin: CloudFunctionsStandIn, overcast: Run
) -> None:
    standin.failing_builds.add("overcast-runner")

    result = overcast("deploy", expect=1)

    assert "cannot deploy to Google Cloud" in result.stderr
    assert f"{PARENT}/functions/overcast-runner: Build failed: pip install" in result.stderr
    assert f"{PARENT}/functions/overcast-api" in standin.functions  # the others went on


def test_a_store_each_instance_would_keep_to_itself_is_refused(
    overcast: Run, standin: CloudFunctionsStandIn
) -> None:
    result = CliRunner().invoke(
        _cli(),
        [
            "deploy",
            "gcp",
            "--project",
            "p",
            "--region",
            "r",
            "--store",
            "sqlite:///tmp/x.db",
            "--endpoint",
            standin.url,
        ],
    )
    assert result.exit_code == 1
    assert "functions need a store they all reach, e.g. dynamodb://" in result.stderr
    assert standin.requests == []


def test_a_function_of_the_same_name_outside_the_stack_is_not_overwritten(
    standin: CloudFunctionsStandIn, overcast: Run
) -> None:
    standin.functions[f"{PARENT}/functions/overcast-api"] = {
        "name": f"{PARENT}/functions/overcast-api",
        "state": 1,
    }

    result = overcast("deploy", expect=1)

    assert "exists and is not a function of stack 'overcast'" in result.stderr
    assert standin.functions[f"{PARENT}/functions/overcast-api"]["state"] == 1
    assert not standin.calls("PATCH")


def test_destroy_deletes_the_stacks_functions_and_no_others(
    standin: CloudFunctionsStandIn, overcast: Run
) -> None:
    overcast("deploy", "--bucket", "uploads")
    overcast("deploy", "--name", "other")

    result = overcast("destroy")

    assert sorted(standin.functions) == [
        f"{PARENT}/functions/other-api",
        f"{PARENT}/functions/other-runner",
        f"{PARENT}/functions/other-tick",
    ]
    assert "deleted overcast-storage-uploads" in result.stdout
    assert "no functions" in overcast("destroy").stdout


# -- the archive's entry points under functions-framework ------------------------------------------------


@pytest.fixture
def unpacked(standin: CloudFunctionsStandIn, overcast: Run, tmp_path: Path) -> Path:
    """The source the deploy uploaded, unpacked as Cloud Functions unpacks it into /workspace."""
    overcast("deploy")
    workspace = tmp_path / "workspace"
    _archive(standin, standin.functions[f"{PARENT}/functions/overcast-api"]).extractall(workspace)
    return workspace


@pytest.fixture
def serve(
    unpacked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], FlaskClient]]:
    """Serve one entry point of the unpacked ``main.py`` over an embedded store, as an instance would."""
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    monkeypatch.setenv("OVERCAST_STORE", f"sqlite://{tmp_path / 'overcast.db'}")
    monkeypatch.delenv("OVERCAST_API_KEY", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # functions-framework adds the source's folder
    for module in ("main", *(module for module, _ in ENTRY_POINTS.values())):
        monkeypatch.delitem(sys.modules, module, raising=False)  # each instance imports afresh
    bootstrap.reset()

    def start(target: str) -> FlaskClient:
        signature = ENTRY_POINTS[target][1]
        app = functions_framework.create_app(
            target=target, source=str(unpacked / "main.py"), signature_type=signature
        )
        return app.test_client()

    yield start
    bootstrap.reset()


def _post_cloud_event(client: FlaskClient, event: CloudEvent) -> int:
    headers, body = to_structured(event)
    return client.post("/", headers=headers, data=body).status_code


def test_the_api_entry_point_answers_health(serve: Callable[[str], FlaskClient]) -> None:
    response = serve("api").get("/api/health")
    assert response.status_code == 200


def test_the_storage_entry_point_stores_the_uploads_event(serve: Callable[[str], FlaskClient]) -> None:
    shape = json.loads((EVENTS / "gcs_object_finalized.json").read_text())
    data = shape.pop("data")
    shape["time"] = datetime.now(UTC).isoformat()  # within the events' retention

    assert _post_cloud_event(serve("storage"), CloudEvent(shape, data)) == 200

    [event] = bootstrap.control_plane().events.query(order="asc", limit=10).items
    assert event.event == "gcp.storage.object.finalized"
    assert event.resource_id == "gs://sample-bucket/in/my file+1.csv"


def test_the_runner_entry_point_runs_the_flow_from_the_archive(
    serve: Callable[[str], FlaskClient], unpacked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _build(Settings(home=tmp_path, store=f"sqlite://{tmp_path / 'overcast.db'}"))
    monkeypatch.chdir(unpacked)  # /workspace: where Cloud Functions runs the source from
    try:
        with use_runtime(runtime):
            load_flow_from_entrypoint("flows.py:double").deploy("cloud", entrypoint="flows.py:double")
            run = run_deployment("double/cloud", parameters={"n": 21}, timeout=0)
            message = {"data": base64.b64encode(json.dumps({"flow_run_id": str(run.id)}).encode()).decode()}
            event = CloudEvent(
                {
                    "type": "google.cloud.pubsub.topic.v1.messagePublished",
                    "source": "//pubsub.googleapis.com/projects/proj-1/topics/overcast-runs",
                },
                {"message": {**message, "messageId": str(uuid.uuid4())}},
            )
            assert _post_cloud_event(serve("runner"), event) == 200
            done = runtime.client.read_flow_run(run.id)
    finally:
        runtime.close()
    assert done.state.is_completed() and done.state.result() == 42


def test_the_tick_entry_point_runs_one_tick(serve: Callable[[str], FlaskClient]) -> None:
    response = serve("tick").post("/")
    assert response.status_code == 200
    assert set(response.get_json()) >= {"scheduled", "late", "crashed", "dispatched"}


def test_the_archive_imports_its_own_copy_of_overcast(unpacked: Path) -> None:
    # as in /workspace: nothing but the archive and the requirements it lists
    check = textwrap.dedent(
        f"""
        import importlib, sys
        sys.path.insert(0, {str(unpacked)!r})
        import main, overcast
        assert overcast.__file__.startswith({str(unpacked)!r}), overcast.__file__
        for name, module in main.ENTRY_POINTS.items():
            assert callable(getattr(main, name)), name
            assert sys.modules[module].__file__.startswith({str(unpacked)!r}), module
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"OVERCAST_HOME": str(unpacked / ".home"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
