"""DynamoDB-only behaviour: throttling and unprocessed items as the service sends them, the table layout.

Throttles are injected at the wire: a botocore ``before-send`` hook answers some requests with
DynamoDB's own 400 throttling response (or a 200 with UnprocessedItems) instead of sending
them to moto, so the whole client stack, retries included, runs as it would against AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from overcast.adapters._retry import Backoff
from overcast.adapters.kv.dynamodb import DynamoDBKeyValueStore, create_table
from overcast.core.errors import ThrottledError

pytestmark = pytest.mark.aws


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _response(status: int, body: dict[str, Any]) -> Any:
    from botocore.awsrequest import AWSResponse

    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "test"}
    return AWSResponse("http://test", status, headers, _Raw(json.dumps(body).encode()))


class WireFault:
    """Answers the first ``times`` requests of one operation with a canned response."""

    def __init__(self, client: Any, operation: str, times: int, respond: Any) -> None:
        self.calls = 0
        self.faults = 0
        self._times, self._respond = times, respond
        client.meta.events.register(f"before-send.dynamodb.{operation}", self)

    def __call__(self, request: Any, **_: Any) -> Any:
        self.calls += 1
        if self.faults < self._times:
            self.faults += 1
            return self._respond(request)
        return None  # send it for real


THROTTLE = {
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded.",
}


@pytest.fixture
def table(aws: Any, unique: Any) -> Iterator[tuple[Any, str]]:
    client = aws.client("dynamodb")
    name = unique("overcast-ddb")
    create_table(client, name)
    yield client, name
    client.delete_table(TableName=name)


def _store(client: Any, name: str, attempts: int = 6) -> DynamoDBKeyValueStore:
    return DynamoDBKeyValueStore(
        name, client=client, backoff=Backoff(attempts=attempts, sleep=lambda _s: None)
    )


def test_throttled_writes_are_retried_until_they_pass(table: tuple[Any, str]) -> None:
    client, name = table
    fault = WireFault(client, "PutItem", times=4, respond=lambda _r: _response(400, THROTTLE))
    store = _store(client, name)
    assert store.put({"pk": "P", "sk": "S", "n": 1}, if_absent=True) == 1
    assert fault.faults == 4
    assert store.get("P", "S") == {"pk": "P", "sk": "S", "v": 1, "n": 1}


def test_persistent_throttling_surfaces_as_throttled_error(table: tuple[Any, str]) -> None:
    client, name = table
    WireFault(client, "GetItem", times=10_000, respond=lambda _r: _response(400, THROTTLE))
    with pytest.raises(ThrottledError) as info:
        _store(client, name, attempts=3).get("P", "S")
    assert info.value.attempts == 3


def test_unprocessed_batch_items_are_resent(table: tuple[Any, str]) -> None:
    client, name = table

    def all_unprocessed(request: Any) -> Any:
        return _response(200, {"UnprocessedItems": json.loads(request.body)["RequestItems"]})

    fault = WireFault(client, "BatchWriteItem", times=2, respond=all_unprocessed)
    store = _store(client, name)
    store.batch_put([{"pk": "LOG", "sk": f"{i:03d}"} for i in range(60)])
    assert fault.faults == 2
    assert len(store.query("LOG").items) == 60


def test_create_table_makes_both_indexes_and_ttl_and_is_idempotent(table: tuple[Any, str]) -> None:
    client, name = table
    create_table(client, name)  # again: no error, nothing changes
    description = client.describe_table(TableName=name)["Table"]
    indexes = {
        i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]]
        for i in description["GlobalSecondaryIndexes"]
    }
    assert indexes == {"gsi1": ["gsi1pk", "gsi1sk"], "gsi2": ["gsi2pk", "gsi2sk"]}
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")


def test_items_are_stored_in_the_documented_layout(table: tuple[Any, str]) -> None:
    client, name = table
    _store(client, name).put(
        {"pk": "P", "sk": "S", "ttl": 1_900_000_000, "gsi1pk": "G", "gsi1sk": "1", "x": 0.5}
    )
    raw = client.get_item(TableName=name, Key={"pk": {"S": "P"}, "sk": {"S": "S"}})["Item"]
    assert raw["v"] == {"N": "1"} and raw["ttl"] == {"N": "1900000000"}
    assert raw["gsi1pk"] == {"S": "G"} and json.loads(raw["data"]["S"]) == {"x": 0.5}
