"""The control-plane API over SQLite and over DynamoDB on moto's server, through FastAPI's TestClient."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier
from typing import Any

import pytest
from fastapi.testclient import TestClient

from overcast.core.orchestration import Decision
from overcast.core.schemas import FlowRunCreate
from overcast.core.services import ControlPlane
from overcast.core.settings import Settings
from overcast.core.states import Pending, Running
from overcast.handlers.api import create_app


def create(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post("/api/flow_runs", json={"flow_name": "etl", **body})
    assert response.status_code in (200, 201), response.text
    return response.json()


def propose(api: TestClient, run_id: str, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = api.post(f"/api/flow_runs/{run_id}/set_state", json={"state": state, **extra})
    assert response.status_code == 200, response.text
    return response.json()


# -- creating and driving runs -------------------------------------------------------------------


def test_a_run_is_driven_to_completed(api: TestClient) -> None:
    run = create(api, parameters={"day": "2026-11-24", "n": 3}, tags=["nightly"])
    assert run["state"]["type"] == "PENDING" and run["flow_name"] == "etl"
    for state in ("RUNNING", "COMPLETED"):
        assert propose(api, run["id"], {"type": state, "data": {"rows": 42}})["status"] == "ACCEPT"
    done = api.get(f"/api/flow_runs/{run['id']}").json()
    assert done["state"]["type"] == "COMPLETED" and done["state"]["data"] == {"rows": 42}
    assert done["run_count"] == 1 and done["start_time"] and done["end_time"]
    history = api.get(f"/api/flow_runs/{run['id']}/states").json()
    assert [s["type"] for s in history] == ["PENDING", "RUNNING", "COMPLETED"]
    flow = api.get(f"/api/flows/{run['flow_id']}").json()
    assert flow["name"] == "etl" and api.get("/api/flows/name/etl").json()["id"] == run["flow_id"]


def test_creation_is_idempotent_by_key_per_flow(api: TestClient) -> None:
    first = api.post("/api/flow_runs", json={"flow_name": "etl", "idempotency_key": "2026-11-24"})
    again = api.post("/api/flow_runs", json={"flow_name": "etl", "idempotency_key": "2026-11-24"})
    other_flow = api.post("/api/flow_runs", json={"flow_name": "report", "idempotency_key": "2026-11-24"})
    assert (first.status_code, again.status_code, other_flow.status_code) == (201, 200, 201)
    assert first.json()["id"] == again.json()["id"] != other_flow.json()["id"]


def test_duplicate_and_racing_proposals(api: TestClient) -> None:
    run = create(api)
    running = {"type": "RUNNING", "id": str(uuid.uuid4())}
    assert propose(api, run["id"], running)["status"] == "ACCEPT"
    replay = propose(api, run["id"], running)
    assert replay["status"] == "REJECT" and replay["state"]["id"] == running["id"]
    second_runner = propose(api, run["id"], {"type": "RUNNING"})
    assert second_runner["status"] == "ABORT" and "another runner" in second_runner["reason"]
    assert len(api.get(f"/api/flow_runs/{run['id']}/states").json()) == 2


def test_finished_runs_stay_finished(api: TestClient) -> None:
    run = create(api, state={"type": "RUNNING"})
    propose(api, run["id"], {"type": "COMPLETED"})
    answer = propose(api, run["id"], {"type": "RUNNING"})
    assert answer["status"] == "ABORT" and answer["state"]["type"] == "COMPLETED"


def test_failures_are_retried_then_fail(api: TestClient) -> None:
    run = create(api, retry_policy={"retries": 1, "retry_delay_seconds": 0})
    propose(api, run["id"], {"type": "RUNNING"})
    first = propose(api, run["id"], {"type": "FAILED", "message": "boom"})
    assert first["status"] == "REJECT" and first["state"]["name"] == "AwaitingRetry"
    assert propose(api, run["id"], {"type": "RUNNING"})["status"] == "ACCEPT"
    final = propose(api, run["id"], {"type": "FAILED", "message": "boom again"})
    assert final["status"] == "ACCEPT"
    assert api.get(f"/api/flow_runs/{run['id']}").json()["run_count"] == 2


def test_cancellation(api: TestClient) -> None:
    scheduled = create(
        api, state={"type": "SCHEDULED", "details": {"scheduled_time": "2099-01-01T00:00:00Z"}}
    )
    assert api.post(f"/api/flow_runs/{scheduled['id']}/cancel").json()["state"]["type"] == "CANCELLED"
    running = create(api, state={"type": "RUNNING"})
    assert api.post(f"/api/flow_runs/{running['id']}/cancel").json()["state"]["type"] == "CANCELLING"
    assert propose(api, running["id"], {"type": "COMPLETED"})["status"] == "ABORT"
    assert propose(api, running["id"], {"type": "CANCELLED"})["status"] == "ACCEPT"


def test_pause_and_resume(api: TestClient) -> None:
    run = create(api, state={"type": "RUNNING"})
    assert api.post(f"/api/flow_runs/{run['id']}/resume").status_code == 422  # not paused
    assert propose(api, run["id"], {"type": "PAUSED"})["status"] == "ACCEPT"
    resumed = api.post(f"/api/flow_runs/{run['id']}/resume").json()
    assert resumed["status"] == "ACCEPT" and resumed["state"]["type"] == "RUNNING"
    assert api.get(f"/api/flow_runs/{run['id']}").json()["run_count"] == 1


def test_starting_a_scheduled_run_early_waits(api: TestClient) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    run = create(api, state={"type": "SCHEDULED", "details": {"scheduled_time": start.isoformat()}})
    answer = propose(api, run["id"], {"type": "RUNNING"})
    assert answer["status"] == "WAIT" and 3500 < answer["wait_seconds"] <= 3600
    assert answer["state"]["type"] == "SCHEDULED"


def test_twenty_concurrent_proposers_get_exactly_one_accept(plane: ControlPlane) -> None:
    run, _ = plane.flow_runs.create(FlowRunCreate(flow_name="race"))
    proposers = 20
    barrier = Barrier(proposers)

    def start() -> Decision:
        barrier.wait()
        return plane.flow_runs.set_state(run.id, Running()).status

    with ThreadPoolExecutor(proposers) as pool:
        decisions = list(pool.map(lambda _i: start(), range(proposers)))
    assert decisions.count(Decision.ACCEPT) == 1
    assert decisions.count(Decision.ABORT) == proposers - 1
    assert plane.flow_runs.get(run.id).run_count == 1
    assert [s.type.value for s in plane.flow_runs.states(run.id)] == ["PENDING", "RUNNING"]
    assert plane.flow_runs.set_state(run.id, Pending()).status is Decision.ABORT


# -- listing ----------------------------------------------------------------------------------------


def test_filters_and_pages(api: TestClient) -> None:
    runs = [
        create(api, flow_name="etl" if i % 2 else "report", tags=["a", "b"] if i < 3 else ["a"])
        for i in range(6)
    ]
    for run in runs[:2]:
        propose(api, run["id"], {"type": "RUNNING"})

    def ids(body: dict[str, Any]) -> list[str]:
        response = api.post("/api/flow_runs/filter", json=body)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]

    newest_first = [r["id"] for r in reversed(runs)]
    assert ids({}) == newest_first
    assert ids({"sort": "EXPECTED_START_TIME_ASC"}) == [r["id"] for r in runs]
    assert ids({"state_type": ["RUNNING"]}) == [runs[1]["id"], runs[0]["id"]]
    assert ids({"state_type": ["PENDING", "RUNNING"], "flow_name": ["report"]}) == [
        runs[4]["id"],
        runs[2]["id"],
        runs[0]["id"],
    ]
    assert ids({"tags_all": ["a", "b"]}) == [runs[2]["id"], runs[1]["id"], runs[0]["id"]]
    seen, cursor = [], None
    while True:
        page = api.post(
            "/api/flow_runs/filter", json={"limit": 4, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [r["id"] for r in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == newest_first
    middle = runs[2]["expected_start_time"]
    assert ids({"expected_start_after": middle, "sort": "EXPECTED_START_TIME_ASC"}) == [
        r["id"] for r in runs[2:]
    ]
    assert ids({"expected_start_before": middle}) == [r["id"] for r in reversed(runs[:3])]
    assert api.post("/api/flow_runs/filter", json={"cursor": "forged"}).status_code == 422


# -- task runs and logs -----------------------------------------------------------------------------


def _task_run(flow_run_id: str | None, state: dict[str, Any], task_id: str | None = None) -> dict[str, Any]:
    return {
        "id": task_id or str(uuid.uuid4()),
        "flow_run_id": flow_run_id,
        "task_key": "etl.extract",
        "name": "extract-0",
        "state": state,
    }


def test_task_run_batches_are_idempotent_and_keep_the_newest_state(api: TestClient) -> None:
    flow_run = create(api, state={"type": "RUNNING"})
    t0 = datetime.now(UTC)
    running = {"type": "RUNNING", "id": str(uuid.uuid4()), "timestamp": t0.isoformat()}
    done = {
        "type": "COMPLETED",
        "id": str(uuid.uuid4()),
        "timestamp": (t0 + timedelta(seconds=1)).isoformat(),
    }
    task = _task_run(flow_run["id"], running)
    batch = {"updates": [{"task_run": task, "states": [running]}]}
    assert [r["status"] for r in api.post("/api/task_runs/batch", json=batch).json()] == ["applied"]
    assert [r["status"] for r in api.post("/api/task_runs/batch", json=batch).json()] == [
        "ignored"
    ]  # a replay
    finished = {"updates": [{"task_run": {**task, "state": done}, "states": [running, done]}]}
    assert api.post("/api/task_runs/batch", json=finished).json()[0]["status"] == "applied"
    late = {"updates": [{"task_run": {**task, "state": running}}]}  # an older state, arriving late
    assert api.post("/api/task_runs/batch", json=late).json()[0]["status"] == "ignored"
    stored = api.get(f"/api/task_runs/{task['id']}").json()
    assert stored["state"]["type"] == "COMPLETED"
    history = api.get(f"/api/task_runs/{task['id']}/states").json()
    assert [s["type"] for s in history] == ["RUNNING", "COMPLETED"]


def test_a_bad_task_run_in_a_batch_does_not_block_the_others(api: TestClient) -> None:
    flow_run = create(api)
    good = [_task_run(flow_run["id"], {"type": "COMPLETED"}) for _ in range(3)]
    orphan = _task_run(str(uuid.uuid4()), {"type": "COMPLETED"})
    results = api.post(
        "/api/task_runs/batch", json={"updates": [{"task_run": t} for t in [good[0], orphan, *good[1:]]]}
    ).json()
    assert [r["status"] for r in results] == ["applied", "rejected", "applied", "applied"]
    assert "does not exist" in results[1]["reason"]
    listed = api.post("/api/task_runs/filter", json={"flow_run_id": flow_run["id"]}).json()["items"]
    assert sorted(t["id"] for t in listed) == sorted(t["id"] for t in good)
    outside = _task_run(None, {"type": "COMPLETED"})
    assert (
        api.post("/api/task_runs/batch", json={"updates": [{"task_run": outside}]}).json()[0]["status"]
        == "applied"
    )


def test_logs_are_written_once_and_read_in_pages(api: TestClient) -> None:
    run = create(api)
    t0 = datetime.now(UTC)
    lines = [
        {
            "id": str(uuid.uuid4()),
            "flow_run_id": run["id"],
            "message": f"line {i}",
            "timestamp": (t0 + timedelta(milliseconds=i)).isoformat(),
        }
        for i in range(7)
    ]
    assert api.post("/api/logs", json={"lines": lines}).json() == {"written": 7}
    api.post("/api/logs", json={"lines": lines[:3]})  # a replayed batch
    first = api.get(f"/api/logs/{run['id']}", params={"limit": 5}).json()
    rest = api.get(f"/api/logs/{run['id']}", params={"limit": 5, "cursor": first["next_cursor"]}).json()
    assert [line["message"] for line in first["items"] + rest["items"]] == [f"line {i}" for i in range(7)]
    assert rest["next_cursor"] is None


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/api/flow_runs/not-a-uuid", None, 404),
        ("get", f"/api/flow_runs/{uuid.uuid4()}", None, 404),
        ("get", f"/api/task_runs/{uuid.uuid4()}", None, 404),
        ("get", "/api/flows/name/nobody", None, 404),
        ("post", "/api/flow_runs", {"flow_name": "etl", "surprise": 1}, 422),
        ("post", "/api/flow_runs", {"flow_name": "a/b"}, 422),
        ("post", "/api/flow_runs", {"flow_name": "x" * 201}, 422),
        ("post", "/api/flow_runs", {"flow_name": "etl", "state": {"type": "COMPLETED"}}, 422),
        ("post", "/api/flow_runs", {"flow_name": "etl", "state": {"type": "RUNNING", "name": "Late"}}, 422),
        ("post", "/api/flow_runs", {"flow_name": "etl", "parameters": {"blob": "x" * 500_000}}, 422),
        ("post", f"/api/flow_runs/{uuid.uuid4()}/set_state", {"state": {"type": "RUNNING"}}, 404),
        ("post", "/api/flow_runs/filter", {"limit": 0}, 422),
        ("post", "/api/task_runs/batch", {"updates": []}, 422),
        ("post", "/api/logs", {"lines": [{"message": "x", "level": 500}]}, 422),
    ],
)
def test_bad_input_gets_a_clear_4xx(api: TestClient, method: str, path: str, body: Any, status: int) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail  # a message, never an empty body
    if status == 422 and isinstance(detail, list):
        assert all(entry["msg"] for entry in detail)


def test_an_oversized_run_names_the_limit(api: TestClient) -> None:
    response = api.post("/api/flow_runs", json={"flow_name": "etl", "parameters": {"blob": "x" * 500_000}})
    assert "blob store" in response.json()["detail"][0]["msg"]


# -- auth -----------------------------------------------------------------------------------------------


def test_an_api_key_guards_every_route_but_health(plane: ControlPlane) -> None:
    api = TestClient(create_app(plane, settings=Settings(api_key="s3cret")))
    assert api.get("/api/health").status_code == 200
    missing = api.post("/api/flow_runs", json={"flow_name": "etl"})
    assert missing.status_code == 401 and "Bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = api.post("/api/flow_runs", json={"flow_name": "etl"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    right = api.post("/api/flow_runs", json={"flow_name": "etl"}, headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 201
