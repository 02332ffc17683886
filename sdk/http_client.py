"""``HttpClient``: the engine's client for a control plane behind its HTTP API.

Chosen when ``OVERCAST_API_URL`` is set (``OVERCAST_API_KEY`` for the bearer token). Answers
are mapped back to the same errors the in-process client raises, so the engine cannot tell
the two apart; transient failures (connection errors, 502/503/504, 429) are retried with the
same capped, jittered backoff the adapters use.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import httpx2

from overcast.client import warn_rejected
from overcast.core.errors import (
    BackendError,
    ConditionFailedError,
    ConfigurationError,
    InvalidValueError,
    NotFoundError,
)
from overcast.core.models import FlowRun, LogLine, TaskRun
from overcast.core.schemas import FlowRunCreate, FlowRunFilter, OrchestrationResult, Page, TaskRunFilter
from overcast.core.states import State

TASK_RUN_BATCH = 500  # the API's limit per request
LOG_BATCH = 1000
RETRYABLE = frozenset({429, 502, 503, 504})


class HttpClient:
    """A ``Client`` over the control plane's HTTP API.

    Args:
        api_url: the API's base URL (``http://127.0.0.1:4200``; ``/api`` is added).
        api_key: the bearer token, if the API requires one.
        http: an ``httpx2.Client`` to use instead of building one (tests inject one).
        attempts: tries per request for transient failures.
    """

    def __init__(
        self, api_url: str, *, api_key: str = "", http: httpx2.Client | None = None, attempts: int = 5
    ) -> None:
        base = api_url.rstrip("/")
        self._base = base if base.endswith("/api") else f"{base}/api"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx2.Client(headers=headers, timeout=httpx2.Timeout(30.0, connect=5.0))
        self._attempts = attempts

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- the Client interface -------------------------------------------------------------------------

    def create_flow_run(self, request: FlowRunCreate) -> FlowRun:
        """Create a flow run (idempotent by ``idempotency_key``)."""
        return FlowRun.model_validate(self._call("POST", "/flow_runs", request.model_dump(mode="json")))

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        """Read a flow run. Raises ``NotFoundError``."""
        return FlowRun.model_validate(self._call("GET", f"/flow_runs/{run_id}"))

    def set_flow_run_state(
        self, run_id: uuid.UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose a state for a flow run and return the decision."""
        body = {"state": state.model_dump(mode="json"), "force": force}
        return OrchestrationResult.model_validate(self._call("POST", f"/flow_runs/{run_id}/set_state", body))

    def report_task_runs(self, documents: list[dict[str, Any]]) -> None:
        """Upsert task-run documents, in batches of the API's size; log the ones refused."""
        for start in range(0, len(documents), TASK_RUN_BATCH):
            outcomes = self._call(
                "POST", "/task_runs/batch", {"updates": documents[start : start + TASK_RUN_BATCH]}
            )
            warn_rejected((o["id"], o.get("reason")) for o in outcomes if o["status"] == "rejected")

    def write_logs(self, lines: list[dict[str, Any]]) -> None:
        """Store log lines, in batches of the API's size."""
        for start in range(0, len(lines), LOG_BATCH):
            self._call("POST", "/logs", {"lines": lines[start : start + LOG_BATCH]})

    def filter_flow_runs(self, query: FlowRunFilter) -> Page[FlowRun]:
        """List flow runs."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[FlowRun].model_validate(self._call("POST", "/flow_runs/filter", body))

    def read_task_run(self, task_run_id: uuid.UUID) -> TaskRun:
        """Read a task run. Raises ``NotFoundError``."""
        return TaskRun.model_validate(self._call("GET", f"/task_runs/{task_run_id}"))

    def filter_task_runs(self, query: TaskRunFilter) -> Page[TaskRun]:
        """List task runs of a flow run."""
        body = query.model_dump(mode="json", exclude_none=True)
        return Page[TaskRun].model_validate(self._call("POST", "/task_runs/filter", body))

    def read_flow_run_states(self, run_id: uuid.UUID) -> list[State]:
        """A flow run's state history."""
        return [State.model_validate(s) for s in self._call("GET", f"/flow_runs/{run_id}/states")]

    def read_logs(self, run_id: uuid.UUID, *, limit: int = 200, cursor: str | None = None) -> Page[LogLine]:
        """A run's log lines, oldest first."""
        path = f"/logs/{run_id}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        return Page[LogLine].model_validate(self._call("GET", path))

    # -- transport ---------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        url = self._base + path
        for attempt in range(self._attempts):
            try:
                response = self._http.request(method, url, json=body)
            except httpx2.TransportError as exc:
                if attempt == self._attempts - 1:
                    raise BackendError(f"the Overcast API at {self._base} is unreachable: {exc}") from exc
            else:
                if response.status_code not in RETRYABLE or attempt == self._attempts - 1:
                    return _answer(response)
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))  # noqa: S311 - jitter, not crypto
        raise AssertionError("unreachable")  # pragma: no cover


def _answer(response: httpx2.Response) -> Any:
    status = response.status_code
    if status < 400:
        return response.json()
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # validation errors: one line per problem
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail)
    message = f"{response.request.method} {response.request.url.path} -> {status}: {detail}"
    if status == 404:
        raise NotFoundError("resource", str(response.request.url.path), message)
    if status == 409:
        raise ConditionFailedError("-", "-", message)
    if status == 422:
        raise InvalidValueError(message)
    if status in (401, 403):
        raise ConfigurationError(f"{message} (set OVERCAST_API_KEY to the API's key)")
    raise BackendError(message)
