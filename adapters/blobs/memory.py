"""Blobs in a dict: for tests and the in-memory harness."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from overcast.core.blobkeys import validate_blob_key, validate_blob_prefix
from overcast.core.errors import NotFoundError


class MemoryBlobStore:
    """A ``BlobStore`` held in memory (``memory://NAME``), safe across threads."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        """Store a copy of ``data`` under ``key``."""
        with self._lock:
            self._blobs[validate_blob_key(key)] = bytes(data)

    def get(self, key: str) -> bytes:
        """Return the blob under ``key``; raise ``NotFoundError`` when there is none."""
        try:
            return self._blobs[validate_blob_key(key)]
        except KeyError:
            raise NotFoundError("blob", key) from None

    def exists(self, key: str) -> bool:
        """Say whether a blob is stored under ``key``."""
        return validate_blob_key(key) in self._blobs

    def delete(self, key: str) -> bool:
        """Delete the blob under ``key``; return whether there was one."""
        with self._lock:
            return self._blobs.pop(validate_blob_key(key), None) is not None

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix``, sorted."""
        validate_blob_prefix(prefix)
        with self._lock:
            keys = sorted(k for k in self._blobs if k.startswith(prefix))
        return iter(keys)

    def url(self, key: str) -> str:
        """Return a ``memory://`` URL naming the blob."""
        return f"memory://{self.name}/{validate_blob_key(key)}"
