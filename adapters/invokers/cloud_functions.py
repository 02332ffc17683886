"""An ``Invoker`` for Google Cloud Functions: a function is its HTTPS URL, called with a CloudEvent.

Cloud Functions (2nd gen) run CloudEvent functions behind an HTTPS endpoint; functions-framework
accepts a CloudEvent there in structured mode (``application/cloudevents+json``). The payload
travels as a Pub/Sub ``messagePublished`` event (``data.message.data`` holds its JSON,
base64-encoded), so a function deployed with a Pub/Sub trigger — Overcast's ``runner`` — takes
a direct push unchanged.

``wait=False`` (how dispatch pushes runs) sends from a background thread and returns at once:
the function answers only when its run is over. A push that fails is logged; the run stays
PENDING and the tick sends it again. A function that is not public needs an identity token for
its ``audience`` (``google-auth`` fetches it from the environment's credentials).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx2

from overcast.core.errors import FunctionError, FunctionNotFoundError, InvocationTimeoutError

logger = logging.getLogger("overcast.invokers.cloud_functions")

EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
TIMEOUT_S = 3600.0  # a 2nd-gen HTTP function may run an hour


class CloudFunctionsInvoker:
    """Invokes Cloud Functions by URL (``gcf://`` in settings and pool configs).

    Args:
        audience: when set, each call carries an identity token for it (private functions).
        source: the CloudEvent ``source`` to name.
        http: an ``httpx2.Client`` (tests inject one).
    """

    def __init__(
        self,
        *,
        audience: str | None = None,
        source: str = "//overcast/dispatch",
        http: httpx2.Client | None = None,
    ) -> None:
        self.audience = audience
        self.source = source
        self._http = http or httpx2.Client(timeout=httpx2.Timeout(TIMEOUT_S, connect=10.0))
        self._background = ThreadPoolExecutor(8, thread_name_prefix="overcast-gcf")

    def invoke(self, function: str, payload: Any, *, wait: bool = True) -> Any:
        """POST ``payload`` as a Pub/Sub CloudEvent to the function at URL ``function``.

        Returns:
            The function's answer (JSON when it sent JSON, else ``None``), or ``None`` at once
            when ``wait`` is false.

        Raises:
            FunctionNotFoundError: the URL answers 404.
            FunctionError: the function failed (a 5xx, or another non-2xx answer).
            InvocationTimeoutError: no answer within the timeout.
        """
        event = self._event(payload)
        if not wait:
            self._background.submit(self._send_logged, function, event)
            return None
        return self._send(function, event)

    def close(self) -> None:
        """Wait for background sends, then close the connection pool."""
        self._background.shutdown(wait=True)
        self._http.close()

    def _event(self, payload: Any) -> dict[str, Any]:
        message_id = str(uuid.uuid4())
        data = base64.b64encode(json.dumps(payload).encode()).decode("ascii")
        return {
            "specversion": "1.0",
            "type": EVENT_TYPE,
            "source": self.source,
            "id": message_id,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": {"message": {"data": data, "messageId": message_id}},
        }

    def _send(self, url: str, event: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/cloudevents+json"}
        if self.audience:
            headers["Authorization"] = f"Bearer {_identity_token(self.audience)}"
        try:
            response = self._http.post(url, content=json.dumps(event), headers=headers)
        except httpx2.TimeoutException as exc:
            raise InvocationTimeoutError(url, TIMEOUT_S) from exc
        except httpx2.TransportError as exc:
            raise FunctionError(url, "Unreachable", str(exc)) from exc
        if response.status_code == 404:
            raise FunctionNotFoundError(url)
        if response.status_code >= 300:
            raise FunctionError(url, f"HTTP {response.status_code}", response.text[:2000])
        try:
            return response.json() if response.content else None
        except ValueError:
            return None

    def _send_logged(self, url: str, event: dict[str, Any]) -> None:
        try:
            self._send(url, event)
        except Exception:
            logger.exception("pushing to %s failed; the tick will send it again", url)


def _identity_token(audience: str) -> str:
    import google.auth.transport.requests  # type: ignore[import-untyped]
    import google.oauth2.id_token  # type: ignore[import-untyped]

    token: str = google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)
    return token
