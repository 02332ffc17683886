"""Bearer-token auth: when an API key is configured, every route but health requires it."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


class BearerAuth:
    """A FastAPI dependency checking ``Authorization: Bearer <key>`` in constant time.

    Args:
        api_key: the key; empty turns auth off (the embedded default on a laptop).
    """

    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode()

    async def __call__(self, request: Request) -> None:
        # async: a header compare needs no thread of its own
        if not self._key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                "this API needs a bearer token: send 'Authorization: Bearer <OVERCAST_API_KEY>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(token.strip().encode(), self._key):
            raise HTTPException(403, "the bearer token is not this API's key")
