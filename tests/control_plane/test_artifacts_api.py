"""Artifacts through the API, over SQLite and over DynamoDB on moto's server."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
from fastapi.testclient import TestClient

from overcast.adapters.factory import open_blobs, open_store
from overcast.adapters.kv.dynamodb import DynamoDBKeyValueStore, create_table
from overcast.core.ports import BlobStore
from overcast.core.schemas import MarkdownArtifactCreate
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.handlers.api import create_app

BACKENDS = ["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return open_blobs(f"file://{tmp_path / 'blobs'}")


@pytest.fixture(params=BACKENDS)
def plane(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Any, blobs: BlobStore
) -> Iterator[ControlPlane]:
    if request.param == "sqlite":
        store = open_store(f"sqlite://{tmp_path / 'api.db'}")
        yield ControlPlane(store, blobs=blobs)
        store.close()  # type: ignore[attr-defined]
        return
    aws = request.getfixturevalue("aws")
    client = aws.client("dynamodb")
    table = unique("overcast-artifacts")
    create_table(client, table)
    yield ControlPlane(DynamoDBKeyValueStore(table, client=client), blobs=blobs)
    client.delete_table(TableName=table)


def create(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post("/api/artifacts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def flow_run(api: TestClient) -> str:
    response = api.post("/api/flow_runs", json={"flow_name": "report"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- every type -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "stored"),
    [
        ("markdown", "# Report\n\n*all* good", "# Report\n\n*all* good"),
        ("table", [{"city": "Oslo", "temp": 9.5}, {"city": "Lima", "temp": None}], None),
        ("table", {"city": ["Oslo", "Lima"], "temp": [9.5, 19]}, None),
        ("table", [["Oslo", 9.5], ["Lima", 19, "extra"]], None),
        ("link", {"url": "https://example.com/report", "text": "The report"}, None),
        ("link", {"url": "s3://bucket/key.csv"}, {"url": "s3://bucket/key.csv", "text": None}),
        ("progress", 42, 42.0),
        ("image", {"url": "https://example.com/chart.png"}, None),
    ],
)
def test_every_type_reads_back_as_it_was_created(api: TestClient, kind: str, data: Any, stored: Any) -> None:
    created = create(api, type=kind, data=data, key=f"{kind}-sample", description="what it is")
    for read in (
        api.get(f"/api/artifacts/{created['id']}").json(),
        api.get(f"/api/artifacts/{kind}-sample/latest").json(),
    ):
        assert read["type"] == kind and read["description"] == "what it is"
        assert read["data"] == (data if stored is None else stored)
        assert read["key"] == f"{kind}-sample" and read["version"] == 1


def test_image_bytes_go_to_the_blob_store_and_come_back(api: TestClient, blobs: BlobStore) -> None:
    created = create(api, type="image", data={"content_base64": base64.b64encode(PNG).decode()})
    assert created["data"]["content_type"] == "image/png" and created["data"]["size"] == len(PNG)
    assert blobs.get(created["data"]["blob_key"]) == PNG
    image = api.get(f"/api/artifacts/{created['id']}/image")
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["content-type"] == "image/png"
    svg = create(
        api,
        type="image",
        data={"content_base64": base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()},
    )
    assert svg["data"]["content_type"] == "image/svg+xml"
    typed = create(
        api,
        type="image",
        data={"content_base64": base64.b64encode(b"raw").decode(), "content_type": "image/x-raw"},
    )
    assert api.get(f"/api/artifacts/{typed['id']}/image").headers["content-type"] == "image/x-raw"


def test_no_blob_store_means_images_by_url_only(tmp_path: Path) -> None:
    api = TestClient(
        create_app(ControlPlane(open_store(f"sqlite://{tmp_path / 'x.db'}")), settings=Settings())
    )
    response = api.post(
        "/api/artifacts", json={"type": "image", "data": {"content_base64": base64.b64encode(PNG).decode()}}
    )
    assert response.status_code == 503 and "no blob store" in response.json()["detail"]
    assert (
        api.post(
            "/api/artifacts", json={"type": "image", "data": {"url": "https://x.test/a.png"}}
        ).status_code
        == 201
    )


# -- keys and versions --------------------------------------------------------------------------------


def test_a_key_keeps_every_version_and_names_the_latest(api: TestClient) -> None:
    versions = [create(api, type="markdown", data=f"v{n}", key="daily-report") for n in range(1, 4)]
    keyless = create(api, type="markdown", data="loose")
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert keyless["key"] is None and keyless["version"] is None
    assert api.get("/api/artifacts/daily-report/latest").json()["data"] == "v3"
    history = api.post("/api/artifacts/filter", json={"key": "daily-report"}).json()["items"]
    assert [a["data"] for a in history] == ["v3", "v2", "v1"]
    oldest_first = api.post("/api/artifacts/filter", json={"key": "daily-report", "sort": "CREATED_ASC"})
    assert [a["version"] for a in oldest_first.json()["items"]] == [1, 2, 3]


def test_racing_creators_get_distinct_versions(plane: ControlPlane, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["plane"] == "dynamodb" and request.getfixturevalue("aws").is_moto:
        pytest.skip(
            "moto does not isolate concurrent DynamoDB transactions (see tests/control_plane/conftest.py)"
        )
    writers = 8
    barrier = Barrier(writers)

    def write(n: int) -> int | None:
        barrier.wait()
        artifact, _ = plane.artifacts.create(
            MarkdownArtifactCreate(type="markdown", data=f"w{n}", key="raced")
        )
        return artifact.version

    with ThreadPoolExecutor(writers) as pool:
        versions = list(pool.map(write, range(writers)))
    assert sorted(v for v in versions if v is not None) == list(range(1, writers + 1))
    assert plane.artifacts.latest("raced").version == writers


def test_a_retried_creation_creates_one_artifact(api: TestClient) -> None:
    body = {"id": str(uuid.uuid4()), "type": "markdown", "data": "once", "key": "retried"}
    first, again = api.post("/api/artifacts", json=body), api.post("/api/artifacts", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert len(api.post("/api/artifacts/filter", json={"key": "retried"}).json()["items"]) == 1


# -- progress -----------------------------------------------------------------------------------------


def test_progress_only_moves_forward_and_shows_at_once(api: TestClient) -> None:
    progress = create(api, type="progress", data=0, key="load-progress")
    seen = []
    for value in (10, 40, 25, 40, 100):
        answer = api.patch(f"/api/artifacts/{progress['id']}", json={"data": value})
        assert answer.status_code == 200, answer.text
        seen.append(
            (
                answer.json()["data"],
                api.get(f"/api/artifacts/{progress['id']}").json()["data"],
                api.get("/api/artifacts/load-progress/latest").json()["data"],
            )
        )
    # 25 after 40 is ignored: the stored value never goes back
    assert [s[0] for s in seen] == [10, 40, 40, 40, 100]
    assert all(answer == by_id == latest for answer, by_id, latest in seen)
    described = api.patch(f"/api/artifacts/{progress['id']}", json={"description": "done"}).json()
    assert described["description"] == "done" and described["data"] == 100


def test_only_progress_data_changes_in_place(api: TestClient) -> None:
    report = create(api, type="markdown", data="text")
    refused = api.patch(f"/api/artifacts/{report['id']}", json={"data": 50})
    assert refused.status_code == 409 and "only a progress artifact" in refused.json()["detail"]
    assert (
        api.patch(f"/api/artifacts/{report['id']}", json={"description": "new"}).json()["description"]
        == "new"
    )


# -- listing --------------------------------------------------------------------------------------------


def test_filters_by_run_task_run_and_type_and_pages(api: TestClient) -> None:
    run_a, run_b = flow_run(api), flow_run(api)
    task_run = str(uuid.uuid4())
    a1 = create(api, type="markdown", data="a1", flow_run_id=run_a)
    a2 = create(api, type="table", data=[[1]], flow_run_id=run_a, task_run_id=task_run)
    a3 = create(api, type="progress", data=5, flow_run_id=run_a, task_run_id=task_run)
    b1 = create(api, type="markdown", data="b1", flow_run_id=run_b)
    outside = create(api, type="markdown", data="outside any run")

    def ids(body: dict[str, Any]) -> list[str]:
        response = api.post("/api/artifacts/filter", json=body)
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["items"]]

    assert ids({"flow_run_id": run_a}) == [a3["id"], a2["id"], a1["id"]]
    assert ids({"flow_run_id": run_a, "type": ["markdown"]}) == [a1["id"]]
    assert ids({"task_run_id": task_run}) == [a3["id"], a2["id"]]
    assert ids({"type": ["markdown"]}) == [outside["id"], b1["id"], a1["id"]]
    assert ids({"flow_run_id": run_b, "sort": "CREATED_ASC"}) == [b1["id"]]
    seen, cursor = [], None
    while True:
        page = api.post(
            "/api/artifacts/filter", json={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [a["id"] for a in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [outside["id"], b1["id"], a3["id"], a2["id"], a1["id"]]


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "markdown", "data": "x", "key": "Daily Report"}, "lowercase letters, digits and dashes"),
        ({"type": "markdown", "data": "x", "key": "a_b"}, "lowercase letters, digits and dashes"),
        ({"type": "chart", "data": "x"}, "does not match any of the expected tags"),
        ({"type": "markdown", "data": "x" * 300_000}, "at most 262144 characters"),
        ({"type": "markdown", "data": "é" * 200_000}, "over the limit of 262,144"),
        ({"type": "table", "data": "not a table"}, "valid"),
        ({"type": "progress", "data": 101}, "less than or equal to 100"),
        ({"type": "progress", "data": -1}, "greater than or equal to 0"),
        ({"type": "progress", "data": "50"}, "expected a JSON number"),
        ({"type": "link", "data": {"url": "javascript:alert(1)"}}, "should match pattern"),
        (
            {"type": "image", "data": {"url": "https://x.test/a.png", "content_base64": "AAAA"}},
            "either a url or content_base64",
        ),
        ({"type": "image", "data": {"content_base64": "AAAAA"}}, "not valid base64"),
        (
            {"type": "image", "data": {"content_base64": base64.b64encode(b"plain text").decode()}},
            "content_type",
        ),
        ({"type": "markdown", "data": "x", "surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_artifacts_get_a_clear_422(api: TestClient, body: dict[str, Any], message: str) -> None:
    response = api.post("/api/artifacts", json=body)
    assert response.status_code == 422, response.text
    assert message in " ".join(entry["msg"] for entry in response.json()["detail"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"type": "table", "data": [[1, NaN]]}', "NaN"),
        (b'{"type": "table", "data": [{"name": "\\udc00"}]}', "lone surrogate"),
        (b'{"type": "markdown", "data": "\\ud800"}', "unicode"),
    ],
)
def test_what_json_cannot_carry_is_a_422_not_a_500(api: TestClient, raw: bytes, message: str) -> None:
    response = api.post("/api/artifacts", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and message in response.json()["detail"][0]["msg"]


def test_an_oversized_image_names_the_limit(api: TestClient) -> None:
    big = base64.b64encode(PNG + bytes(4 * 1024 * 1024)).decode()
    response = api.post("/api/artifacts", json={"type": "image", "data": {"content_base64": big}})
    assert response.status_code == 422 and "4,194,304" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", f"/api/artifacts/{uuid.uuid4()}", None, 404),
        ("get", "/api/artifacts/nobody-uses-this/latest", None, 404),
        ("get", "/api/artifacts/Not%20A%20Key/latest", None, 422),
        ("patch", f"/api/artifacts/{uuid.uuid4()}", {"data": 5}, 404),
        ("get", f"/api/artifacts/{uuid.uuid4()}/image", None, 404),
        ("post", "/api/artifacts", {"type": "markdown", "data": "x", "flow_run_id": str(uuid.uuid4())}, 404),
        ("post", "/api/artifacts/filter", {"limit": 0}, 422),
        ("post", "/api/artifacts/filter", {"type": ["chart"]}, 422),
    ],
)
def test_missing_things_and_bad_queries(
    api: TestClient, method: str, path: str, body: Any, status: int
) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_a_linked_image_has_no_bytes_to_download(api: TestClient) -> None:
    linked = create(api, type="image", data={"url": "https://x.test/a.png"})
    response = api.get(f"/api/artifacts/{linked['id']}/image")
    assert response.status_code == 404 and "https://x.test/a.png" in response.json()["detail"]
