"""How an action calls a webhook: one request, retried with backoff while retrying can help.

A 2xx answer is success. An answer of 5xx or 429, or no answer at all (the connection failed,
the timeout passed), is tried again after 0.2 s, 0.4 s, 0.8 s … (at most 5 s); any other
answer (a 4xx, a redirect) is final. Outcomes name the URL by its scheme and host only: a
webhook's path and query often carry a secret (Slack's do).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Protocol

from overcast.core.ports import WebhookSender
from overcast.core.services._action_targets import ActionError

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
_URL = re.compile(r"^https?://\S+$")


class Sleep(Protocol):
    """Waits between attempts (``time.sleep``; tests pass a recorder)."""

    def __call__(self, seconds: float, /) -> None: ...


@dataclass(frozen=True, slots=True)
class WebhookCall:
    """One request, as rendered from an action's templates."""

    method: str
    url: str
    body: bytes
    headers: dict[str, str]
    timeout_s: float


def deliver(sender: WebhookSender, call: WebhookCall, *, retries: int, sleep: Sleep) -> str:
    """Send ``call``, retrying up to ``retries`` times, and say how it went.

    Raises:
        ActionError: the URL is not http(s), the answer was final and not 2xx, or the
            retries ran out; the reason says which.
    """
    if not _URL.match(call.url):
        raise ActionError(
            f"the webhook URL must be http:// or https:// without spaces; it rendered {call.url[:12]!r}…"
        )
    where = f"{call.method} {origin(call.url)}"
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(min(BACKOFF_FIRST_S * 2 ** (attempt - 1), BACKOFF_MAX_S))
        try:
            status = sender.send(call.method, call.url, call.body, call.headers, call.timeout_s)
        except OSError as exc:  # no answer (TimeoutError is one): worth another try
            problem = f"no answer ({exc or type(exc).__name__})"
            continue
        tries = f"after {attempt + 1} attempts" if attempt else "on the first attempt"
        if 200 <= status < 300:
            return f"{where} answered {status} {tries}"
        problem = f"answered {status}"
        if status != 429 and status < 500:
            raise ActionError(f"{where} {problem} {tries}; not retried")
    raise ActionError(f"{where} {problem}; gave up after {retries + 1} attempts")


def origin(url: str) -> str:
    """The URL up to its host: a webhook's path and query often carry a secret (Slack's do)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"


def content_type(body: str) -> str:
    """``application/json`` for a body that is JSON, else plain text."""
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"
