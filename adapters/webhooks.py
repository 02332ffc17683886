"""``HttpxWebhookSender``: the ``WebhookSender`` port over httpx (automations' webhooks).

One client per sender, so that calls to the same host reuse their connections. One ``send``
is one attempt: the caller retries. The response's body is read (up to a bound, so a chatty
endpoint cannot fill memory) only so that the connection can be reused, then dropped.
"""

from __future__ import annotations

import threading

import httpx2

from overcast.core.errors import InvalidValueError

USER_AGENT = "overcast-automations"
MAX_RESPONSE_BYTES = 64 * 1024
"""How much of a response's body is read before the connection is dropped instead of reused."""


class HttpxWebhookSender:
    """Sends automations' webhook requests with httpx.

    Args:
        client: an ``httpx2.Client`` to use (tests inject one); by default one is made on first
            use, with no redirects followed and the caller's timeout on each request.
    """

    def __init__(self, client: httpx2.Client | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()

    def send(self, method: str, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        """Send one request and return its status (see ``WebhookSender.send``).

        Raises:
            TimeoutError: no answer within ``timeout_s``.
            OSError: the connection failed or broke.
            InvalidValueError: the URL cannot be requested (not http or https, malformed).
        """
        client = self._http()
        try:
            with client.stream(
                method, url, content=body, headers=headers, timeout=httpx2.Timeout(timeout_s)
            ) as response:
                read = 0
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        break  # the status is all we need; this connection is not reused
                return response.status_code
        except httpx2.TimeoutException as exc:
            raise TimeoutError(f"{method} {_origin(url)}: no answer within {timeout_s:g} s") from exc
        except (httpx2.UnsupportedProtocol, httpx2.InvalidURL) as exc:
            raise InvalidValueError(f"cannot request {_origin(url)}: {exc}") from exc
        except httpx2.TransportError as exc:
            raise OSError(f"{method} {_origin(url)}: {exc or type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the client's connections."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx2.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx2.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT})
            return self._client


def _origin(url: str) -> str:
    """The URL's scheme and host only: webhook paths often carry a secret (Slack's do)."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL:
        return "<invalid URL>"
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}"
