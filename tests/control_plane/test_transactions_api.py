"""The records and locks routes over SQLite and DynamoDB (moto's server), through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.handlers.api import create_app

# The stores a deployed API runs on (the memory store is the schemathesis suite's).
pytestmark = pytest.mark.parametrize(
    "kv_backend", ["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)], indirect=True
)
ODD_KEY = "results/2026-11-24 ?a=b&c#frag %2F é😀 ../x"


@pytest.fixture
def plane(kv_backend: Any) -> Iterator[ControlPlane]:
    store = kv_backend.open()
    yield ControlPlane(store)
    store.close()


def acquire(api: TestClient, key: str, holder: str, lease_s: float = 30) -> Any:
    return api.post("/api/locks/acquire", json={"key": key, "holder": holder, "lease_s": lease_s})


# -- records ------------------------------------------------------------------------------------


def test_a_record_commits_once_and_reads_back(api: TestClient) -> None:
    key = {"key": ODD_KEY}
    assert api.get("/api/records", params=key).status_code == 404

    first = api.put("/api/records", params=key, json={"data": {"storage_key": "a", "n": [1, 2.5, None]}})
    assert first.status_code == 200
    assert first.json()["written"] is True
    record = first.json()["record"]
    assert record["key"] == ODD_KEY and record["data"] == {"storage_key": "a", "n": [1, 2.5, None]}
    assert record["expires_at"] is None

    again = api.put("/api/records", params=key, json={"data": {"storage_key": "b"}})
    assert again.json() == {"written": False, "record": record}
    assert api.get("/api/records", params=key).json() == record
    assert api.get("/api/records", params={"key": ODD_KEY[:-1]}).status_code == 404

    replaced = api.put("/api/records", params=key, json={"data": {"storage_key": "c"}, "overwrite": True})
    assert replaced.json()["written"] is True
    assert api.get("/api/records", params=key).json()["data"] == {"storage_key": "c"}

    assert api.delete("/api/records", params=key).json() == {"deleted": True}
    assert api.get("/api/records", params=key).status_code == 404
    assert api.delete("/api/records", params=key).json() == {"deleted": False}


def test_an_expired_record_is_gone(api: TestClient) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    api.put("/api/records", params={"key": "old"}, json={"data": {}, "expires_at": past})
    api.put("/api/records", params={"key": "new"}, json={"data": {}, "expires_at": future})
    assert api.get("/api/records", params={"key": "old"}).status_code == 404
    fresh = api.get("/api/records", params={"key": "new"}).json()
    assert datetime.fromisoformat(fresh["expires_at"]) == datetime.fromisoformat(future)


# -- locks --------------------------------------------------------------------------------------


def test_a_lock_is_acquired_held_renewed_and_released(api: TestClient) -> None:
    taken = acquire(api, ODD_KEY, "alice")
    assert taken.status_code == 200
    lease = taken.json()
    assert (lease["key"], lease["holder"], lease["lease_s"]) == (ODD_KEY, "alice", 30)

    refused = acquire(api, ODD_KEY, "bob")
    assert refused.status_code == 409 and refused.headers["Retry-After"] == "1"
    assert "alice" in refused.json()["detail"]
    assert api.get("/api/locks", params={"key": ODD_KEY}).json() == lease
    assert acquire(api, ODD_KEY, "alice").json()["token"] == lease["token"]  # a retried acquire

    renewed = api.post("/api/locks/renew", json={**lease, "lease_s": 120})
    assert renewed.status_code == 200 and renewed.json()["token"] == lease["token"]
    assert renewed.json()["expires_at"] > lease["expires_at"]
    assert api.post("/api/locks/check", json=lease).json() == renewed.json()

    assert api.post("/api/locks/release", json=lease).status_code == 204
    assert api.post("/api/locks/release", json=lease).status_code == 204  # a retried release
    assert api.get("/api/locks", params={"key": ODD_KEY}).status_code == 404
    next_lease = acquire(api, ODD_KEY, "bob").json()
    assert next_lease["token"] > lease["token"]


def test_a_lost_lease_is_refused_with_409(api: TestClient) -> None:
    lease = acquire(api, "k", "alice", lease_s=30).json()
    api.post("/api/locks/release", json=lease)
    successor = acquire(api, "k", "bob").json()
    for route in ("renew", "check", "release"):
        answer = api.post(f"/api/locks/{route}", json=lease)
        assert answer.status_code == 409, route
        assert "lost" in answer.json()["detail"]
    assert api.get("/api/locks", params={"key": "k"}).json() == successor


def test_a_commit_with_a_stale_fencing_token_writes_nothing(api: TestClient) -> None:
    old = acquire(api, "k", "alice").json()
    api.post("/api/locks/release", json=old)
    new = acquire(api, "k", "bob").json()
    stale = api.put(
        "/api/records", params={"key": "k"}, json={"data": {"by": "alice"}, "fencing_token": old["token"]}
    )
    assert stale.status_code == 409
    assert api.get("/api/records", params={"key": "k"}).status_code == 404
    fresh = api.put(
        "/api/records", params={"key": "k"}, json={"data": {"by": "bob"}, "fencing_token": new["token"]}
    )
    assert fresh.status_code == 200 and fresh.json()["written"] is True


# -- validation ---------------------------------------------------------------------------------

LEASE = {
    "key": "k",
    "holder": "alice",
    "token": 1,
    "expires_at": "2026-01-01T00:00:00Z",
    "lease_s": 30,
}


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/api/records", {}, None),
        ("GET", "/api/records", {"key": ""}, None),
        ("GET", "/api/records", {"key": "x" * 501}, None),
        ("DELETE", "/api/records", {}, None),
        ("PUT", "/api/records", {"key": "k"}, {}),
        ("PUT", "/api/records", {"key": "k"}, {"data": ["not", "an", "object"]}),
        ("PUT", "/api/records", {"key": "k"}, {"data": {}, "expires_at": 1_800_000_000}),
        ("PUT", "/api/records", {"key": "k"}, {"data": {}, "overwrite": 1}),
        ("PUT", "/api/records", {"key": "k"}, {"data": {}, "fencing_token": 0}),
        ("PUT", "/api/records", {"key": "k"}, {"data": {}, "ttl": 5}),
        ("PUT", "/api/records", {"key": "k"}, {"data": {"big": "x" * 410_000}}),
        ("GET", "/api/locks", {"key": ""}, None),
        ("POST", "/api/locks/acquire", {}, {"key": "", "holder": "a", "lease_s": 5}),
        ("POST", "/api/locks/acquire", {}, {"key": "k", "holder": "", "lease_s": 5}),
        ("POST", "/api/locks/acquire", {}, {"key": "k", "holder": "a", "lease_s": 0}),
        ("POST", "/api/locks/acquire", {}, {"key": "k", "holder": "a", "lease_s": 86_401}),
        ("POST", "/api/locks/acquire", {}, {"key": "k", "holder": "a", "lease_s": "5"}),
        ("POST", "/api/locks/acquire", {}, {"key": "k", "holder": "a"}),
        ("POST", "/api/locks/acquire", {}, {"key": "k", "holder": "a", "lease_s": 5, "wait_s": 5}),
        ("POST", "/api/locks/renew", {}, {**LEASE, "token": 0}),
        ("POST", "/api/locks/renew", {}, {k: v for k, v in LEASE.items() if k != "token"}),
        ("POST", "/api/locks/release", {}, {**LEASE, "expires_at": "soon"}),
        ("POST", "/api/locks/check", {}, {**LEASE, "key": "x" * 501}),
    ],
)
def test_bad_requests_are_refused_with_422(
    api: TestClient, method: str, path: str, params: dict[str, str], body: Any
) -> None:
    response = api.request(method, path, params=params, json=body)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert isinstance(problems, list) and problems[0]["msg"]


def test_a_body_that_is_not_json_is_refused_with_422(api: TestClient) -> None:
    response = api.post(
        "/api/locks/acquire", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_the_routes_need_the_api_key(plane: ControlPlane) -> None:
    locked = TestClient(create_app(plane, settings=Settings(api_key="s3cret")))
    assert locked.get("/api/records", params={"key": "k"}).status_code == 401
    assert acquire(locked, "k", "alice").status_code == 401
    authorized = locked.get("/api/records", params={"key": "k"}, headers={"Authorization": "Bearer s3cret"})
    assert authorized.status_code == 404
