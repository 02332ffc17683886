"""The runner's Cloud Functions entry, ``runner`` in ``handlers/gcp/runner.py``, through functions-framework's app.

A Pub/Sub push of ``{"flow_run_id": …}`` as a CloudEvent runs the flow run; a malformed
message answers an error, so that Pub/Sub delivers it again (and then dead-letters it).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient

from overcast._runtime import Runtime, _build, use_runtime
from overcast.core.settings import Settings
from overcast.deployments import run_deployment
from overcast.flows import load_flow_from_entrypoint

_spec = importlib.util.find_spec("overcast.handlers.gcp.runner")
assert _spec is not None and _spec.origin is not None
SOURCE = Path(_spec.origin)

FLOW = textwrap.dedent(
    """
    from overcast import flow

    @flow
    def double(n: int) -> int:
        return n * 2
    """
)


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FlaskClient, Runtime]]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # functions-framework adds the source's folder
    previous = sys.modules.get(SOURCE.stem)
    runtime = _build(Settings(home=tmp_path))
    (tmp_path / "flows.py").write_text(FLOW)
    with use_runtime(runtime):
        load_flow_from_entrypoint(f"{tmp_path / 'flows.py'}:double").deploy(
            "pubsub", entrypoint=f"{tmp_path / 'flows.py'}:double"
        )
        app = functions_framework.create_app(target="runner", source=str(SOURCE), signature_type="cloudevent")
        yield app.test_client(), runtime
    runtime.close()
    if previous is None:
        sys.modules.pop(SOURCE.stem, None)
    else:
        sys.modules[SOURCE.stem] = previous


def _push(client: FlaskClient, data: bytes) -> int:
    event = {
        "specversion": "1.0",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": "//pubsub.googleapis.com/projects/p/topics/overcast-runs",
        "id": str(uuid.uuid4()),
        "datacontenttype": "application/json",
        "data": {"message": {"data": base64.b64encode(data).decode(), "messageId": str(uuid.uuid4())}},
    }
    response = client.post("/", json=event, headers={"Content-Type": "application/cloudevents+json"})
    return response.status_code


def test_a_pubsub_message_runs_its_flow_run_once(instance: tuple[FlaskClient, Runtime]) -> None:
    client, runtime = instance
    run = run_deployment("double/pubsub", parameters={"n": 21}, timeout=0)
    body = json.dumps({"flow_run_id": str(run.id)}).encode()
    assert _push(client, body) == 200
    done = runtime.client.read_flow_run(run.id)
    assert done.state.is_completed() and done.state.result() == 42
    assert _push(client, body) == 200  # delivered again: already over, nothing to do
    assert [s.type.value for s in runtime.client.read_flow_run_states(run.id)].count("RUNNING") == 1


def test_a_malformed_message_is_answered_with_an_error_so_pubsub_retries_it(
    instance: tuple[FlaskClient, Runtime],
) -> None:
    client, _ = instance
    assert _push(client, b"not json") == 500


def test_a_gcp_functions_pool_pushes_its_runs_to_the_function_url(
    instance: tuple[FlaskClient, Runtime], tmp_path: Path
) -> None:
    import threading

    from werkzeug.serving import make_server

    from overcast.core.work_pools import GcpFunctionsPoolCreate

    client, runtime = instance
    server = make_server("127.0.0.1", 0, client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        runtime.client.create_work_pool(
            GcpFunctionsPoolCreate.model_validate({"name": "gcf", "config": {"url": url}})
        )
        load_flow_from_entrypoint(f"{tmp_path / 'flows.py'}:double").deploy(
            "pushed", work_pool_name="gcf", entrypoint=f"{tmp_path / 'flows.py'}:double"
        )
        run = run_deployment("double/pushed", parameters={"n": 5}, timeout=60, poll_interval=0.05)
    finally:
        server.shutdown()
        thread.join(10)
    assert run.state.is_completed() and run.state.result() == 10
