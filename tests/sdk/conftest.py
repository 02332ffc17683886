"""The engine's suite runs twice: over the in-process client, and over HTTP to a real API server."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
import uvicorn
from support import wait_until

from overcast._runtime import Runtime, use_runtime
from overcast.adapters.factory import open_blobs, open_store
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.handlers.api import create_app
from overcast.http_client import HttpClient
from overcast.testing import Harness, overcast_test_harness


def _http_harness() -> Iterator[Harness]:
    plane = ControlPlane(open_store("memory://"), blobs=open_blobs("memory://"))
    app = create_app(plane, settings=Settings(api_key="engine-suite"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10)
    client = HttpClient(f"http://127.0.0.1:{port}", api_key="engine-suite")
    runtime = Runtime(client, Settings(blobs=f"memory://engine-suite-{uuid.uuid4().hex}"))
    try:
        with use_runtime(runtime):
            yield Harness(runtime, plane)
    finally:
        runtime.close()
        client.close()
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(params=["direct", "http"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "direct":
        with overcast_test_harness() as h:
            yield h
    else:
        yield from _http_harness()
