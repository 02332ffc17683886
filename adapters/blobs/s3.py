"""Blobs in an S3 bucket under an optional prefix, through s3fs (aiobotocore underneath)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from overcast.core.blobkeys import validate_blob_key, validate_blob_prefix
from overcast.core.errors import BackendError, ConfigurationError, NotFoundError
from overcast.core.settings import BackendURL

T = TypeVar("T")


class S3BlobStore:
    """A ``BlobStore`` in ``s3://BUCKET/PREFIX`` (``?region=R&endpoint=URL`` for other endpoints).

    A put is a single PutObject (or a multipart upload for large blobs), which S3 makes
    visible atomically. Listing caches are off, so a blob written by another process is seen
    at once.

    Args:
        bucket: the bucket.
        prefix: a key prefix inside the bucket (no leading or trailing slash).
        fs: an ``s3fs.S3FileSystem`` (injected, so callers choose endpoint and credentials).
    """

    def __init__(self, bucket: str, prefix: str = "", *, fs: Any) -> None:
        if not bucket:
            raise ConfigurationError("an S3 blob store needs a bucket: s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_blob_key(self.prefix)
        self.fs = fs

    @classmethod
    def from_url(cls, url: BackendURL) -> S3BlobStore:
        """Build the store from ``s3://BUCKET/PREFIX?region=R&endpoint=URL``."""
        import s3fs

        client_kwargs = {"region_name": url.param("region")}
        if url.param("endpoint"):
            client_kwargs["endpoint_url"] = url.param("endpoint")
        fs = s3fs.S3FileSystem(
            client_kwargs=client_kwargs, use_listings_cache=False, skip_instance_cache=True
        )
        return cls(url.require_netloc("bucket"), url.path, fs=fs)

    @property
    def _root(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def _path(self, key: str) -> str:
        return f"{self._root}/{validate_blob_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""
        path = self._path(key)
        self._call(key, lambda: self.fs.pipe_file(path, bytes(data)))

    def get(self, key: str) -> bytes:
        """Return the blob under ``key``; raise ``NotFoundError`` when there is none."""
        path = self._path(key)
        data: bytes = self._call(key, lambda: self.fs.cat_file(path))
        return data

    def exists(self, key: str) -> bool:
        """Say whether a blob is stored under ``key``."""
        path = self._path(key)
        try:
            info = self._call(key, lambda: self.fs.info(path))
        except NotFoundError:
            return False
        return bool(info.get("type") == "file")

    def delete(self, key: str) -> bool:
        """Delete the blob under ``key``; return whether there was one."""
        if not self.exists(key):
            return False
        path = self._path(key)
        try:
            self._call(key, lambda: self.fs.rm_file(path))
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix``, sorted (S3 lists in key order)."""
        validate_blob_prefix(prefix)
        root = self._root
        try:
            paths = self._call(prefix, lambda: self.fs.find(root, prefix=prefix))
        except NotFoundError:
            return iter(())
        cut = len(root) + 1
        return iter(sorted(p[cut:] for p in paths if p.startswith(root + "/")))

    def url(self, key: str) -> str:
        """Return the blob's ``s3://`` URL."""
        return f"s3://{self._path(key)}"

    def _call(self, key: str, action: Callable[[], T]) -> T:
        # s3fs reports a missing object (or bucket) as FileNotFoundError; everything else
        # that goes wrong is a backend failure, chained for the trace.
        try:
            return action()
        except FileNotFoundError:
            raise NotFoundError("blob", key) from None
        except (OSError, ValueError) as exc:
            raise BackendError(f"S3 request for {key!r} in s3://{self._root} failed: {exc}") from exc
