"""Objects in buckets, for flows that an upload started: read what landed, write what they make.

A flow triggered by ``aws.s3.object.created`` gets the bucket and key from its parameters and
reads the object with ``read_object(bucket, key)``. Where buckets live comes from the settings
(``OVERCAST_BUCKETS``): the local buckets under the home by default (what ``overcast dev``
watches), or S3. The same flow code reads a local file on a laptop and an S3 object on Lambda.

    from overcast import flow
    from overcast.storage import read_object

    @flow
    def ingest(bucket: str, key: str) -> int:
        return len(read_object(bucket, key).splitlines())
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from overcast._runtime import get_runtime

if TYPE_CHECKING:
    from overcast.core.ports import BlobStore

__all__ = ["delete_object", "list_objects", "read_object", "write_object"]


def read_object(bucket: str, key: str) -> bytes:
    """Return the bytes of object ``key`` in ``bucket``.

    Raises:
        NotFoundError: there is no such object.
        InvalidValueError: the bucket name breaks S3's naming rules.
    """
    return _bucket(bucket).get(key)


def write_object(bucket: str, key: str, data: bytes) -> None:
    """Store ``data`` as object ``key`` in ``bucket`` (replacing one that is there).

    On S3 the bucket's notifications announce it; in the local buckets, ``overcast dev``'s
    watcher does, so a flow's output can start the next flow.
    """
    _bucket(bucket).put(key, data)


def delete_object(bucket: str, key: str) -> bool:
    """Delete object ``key`` from ``bucket``; return whether it was there."""
    return _bucket(bucket).delete(key)


def list_objects(bucket: str, prefix: str = "") -> list[str]:
    """The keys of ``bucket`` that start with ``prefix``, sorted."""
    return sorted(_bucket(bucket).list(prefix))


def _bucket(bucket: str) -> BlobStore:
    return _open(get_runtime().settings.buckets_url, bucket)


@lru_cache(maxsize=32)
def _open(url: str, bucket: str) -> BlobStore:
    from overcast.adapters.factory import open_bucket

    return open_bucket(url, bucket)
