"""Fixtures of the control-plane suites: one key-value backend per parameter."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import START, FakeClock

from overcast.adapters.factory import open_store
from overcast.adapters.kv.dynamodb import DynamoDBKeyValueStore, create_table
from overcast.adapters.kv.memory import MemoryKeyValueStore
from overcast.core.ports import KeyValueStore
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings

KV_BACKENDS = ["memory", "sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)]


@dataclass(frozen=True)
class KvBackend:
    """A backend under test: how to open its store here, and the URL another process opens.

    Attributes:
        name: ``memory``, ``sqlite`` or ``dynamodb``.
        url: the store's URL for other processes; ``None`` for memory (it lives in one process).
    """

    name: str
    url: str | None
    client: Any = None
    table: str | None = None
    is_moto: bool = False

    def skip_racing_transactions(self) -> None:
        """Skip a test of transactions racing each other on moto's DynamoDB.

        moto applies concurrent TransactWriteItems without isolation: two racing transactions
        whose ``attribute_not_exists`` conditions name the same item can both succeed (seen:
        one round in forty, with four threads). DynamoDB serializes them, so such a test
        proves our code only against real DynamoDB (``OVERCAST_TEST_AWS_ENDPOINT=aws``); the
        same test runs on SQLite and memory everywhere.
        """
        if self.name == "dynamodb" and self.is_moto:
            pytest.skip("moto does not isolate concurrent DynamoDB transactions (see KvBackend)")

    def open(self, clock: Callable[[], float] = time.time) -> KeyValueStore:
        """Open the backend's store in this process (a memory store is new on each call)."""
        if self.name == "memory":
            return MemoryKeyValueStore(clock=clock)
        if self.name == "sqlite":
            assert self.url is not None
            return open_store(self.url, clock=clock)
        assert self.table is not None
        return DynamoDBKeyValueStore(self.table, client=self.client, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at ``START``; a suite that starts elsewhere overrides this fixture."""
    return FakeClock(START)


@pytest.fixture
def store(kv_backend: KvBackend, clock: FakeClock) -> Iterator[KeyValueStore]:
    """The backend's store on the fake clock, closed after the test."""
    kv = kv_backend.open(clock)
    yield kv
    kv.close()  # type: ignore[attr-defined]


@pytest.fixture(params=KV_BACKENDS)
def kv_backend(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> Iterator[KvBackend]:
    """Each backend in turn; a DynamoDB table is created on the AWS target and dropped after."""
    name = request.param
    if name == "memory":
        yield KvBackend(name, None)
    elif name == "sqlite":
        yield KvBackend(name, f"sqlite://{tmp_path / 'kv.db'}")
    else:
        aws = request.getfixturevalue("aws")
        table = unique("overcast-txn")
        client = aws.client("dynamodb")
        create_table(client, table)
        try:
            yield KvBackend(name, f"dynamodb://{table}?{aws.query()}", client, table, aws.is_moto)
        finally:
            client.delete_table(TableName=table)


API_BACKENDS = ["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)]


@pytest.fixture(params=API_BACKENDS)
def plane(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> Iterator[ControlPlane]:
    """A control plane on SQLite, then on DynamoDB (moto's server); suites with other needs override it."""
    if request.param == "sqlite":
        store = open_store(f"sqlite://{tmp_path / 'api.db'}")
        yield ControlPlane(store)
        store.close()  # type: ignore[attr-defined]
        return
    aws = request.getfixturevalue("aws")
    client = aws.client("dynamodb")
    table = unique("overcast-api")
    create_table(client, table)
    yield ControlPlane(DynamoDBKeyValueStore(table, client=client))
    client.delete_table(TableName=table)


@pytest.fixture
def api(plane: ControlPlane) -> Any:
    """The API over ``plane``, auth off, through Starlette's test client."""
    from fastapi.testclient import TestClient

    from overcast.handlers.api import create_app

    return TestClient(create_app(plane, settings=Settings(api_key="")))
