"""Storage: upload an object into a bucket (``PUT /api/storage/{bucket}/{key}``, the raw bytes as body).

The bucket store is the app's ``buckets``: under ``overcast dev`` the local buckets, whose
uploads are announced at once as S3 notifications on the events queue; with settings that
point at S3, the bucket itself, whose notifications S3 sends. Either way the upload reaches
the ``events`` handler as an ``aws.s3.object.created`` event, which automations react to.
"""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from overcast.adapters.factory import open_bucket, validate_bucket_name
from overcast.core.blobkeys import validate_blob_key
from overcast.core.errors import BackendError, ConditionFailedError, InvalidKeyError, NotFoundError
from overcast.core.ports import BlobStore
from overcast.handlers.api.errors import ErrorResponse

router = APIRouter(prefix="/storage", tags=["storage"])

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
"""The largest body the route takes (it holds the object in memory); copy bigger files into
the bucket directory, or upload them to S3 directly."""

# S3's bucket naming rules and the blob key rules, for the OpenAPI schema only (clients and
# fuzzers read them there): the route checks names and keys itself, with messages that say
# which rule an input breaks, and pydantic's regex engine has no look-around to enforce these.
BUCKET_PATTERN = (
    r"^(?!xn--|sthree-|amzn-s3-demo-)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)"
    r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$(?<!-s3alias)(?<!--ol-s3)(?<!\.mrap)(?<!--x-s3)(?<!--table-s3)"
)
KEY_PATTERN = (
    r"^(?![A-Za-z]:)(?!(?:.*/)?\.\.?(?:/|$))[^/\\\x00-\x1f\x7f]{1,255}(?:/[^/\\\x00-\x1f\x7f]{1,255})*$"
)

MAX_SEGMENT = 255
"""The longest segment of a key: a file name in a local bucket, so the same everywhere."""

BucketName = Annotated[
    str,
    Path(
        description="The bucket: S3's rules (3-63 lowercase letters, digits, '.', '-').",
        json_schema_extra={"pattern": BUCKET_PATTERN, "minLength": 3, "maxLength": 63},
    ),
]
ObjectKey = Annotated[
    str,
    Path(
        description=(
            "The object's key: relative, '/'-separated, no empty, '.' or '..' segment (in local "
            "buckets, each segment is a file name: at most 255 bytes)."
        ),
        json_schema_extra={"pattern": KEY_PATTERN, "minLength": 1, "maxLength": 1024},
    ),
]

LOCAL_CONFLICT = "a local bucket holds files, so an object 'a' and objects under 'a/' cannot both exist"

Buckets = Callable[[str], BlobStore]
"""Opens a bucket by name (raises ``InvalidValueError`` for a name S3 would refuse)."""


class StoredObject(BaseModel):
    """An object just stored."""

    bucket: str
    key: str
    size: int
    etag: str  # the content's MD5 in hex, as S3's ETag of a single-part upload
    url: str


class BucketOpener:
    """The default ``Buckets``: opens buckets where a buckets URL says (``Settings.buckets_url``), once each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opened: dict[str, BlobStore] = {}
        self._lock = threading.Lock()

    def __call__(self, bucket: str) -> BlobStore:
        with self._lock:
            if bucket not in self._opened:
                self._opened[bucket] = open_bucket(self.url, bucket)
            return self._opened[bucket]


@router.put(
    "/{bucket}/{key:path}",
    response_model=StoredObject,
    responses={
        404: {"model": ErrorResponse, "description": "No such bucket (on S3, buckets are made beforehand)"},
        409: {
            "model": ErrorResponse,
            "description": "A local bucket has objects under KEY/ (or KEY is under one)",
        },
        413: {"model": ErrorResponse, "description": "The body is over the upload limit"},
    },
    openapi_extra={
        "requestBody": {
            "required": False,  # no body is an empty object, as on S3
            "description": "The object's bytes.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_object(bucket: BucketName, key: ObjectKey, request: Request) -> StoredObject:
    """Store the request's body as object ``key`` of ``bucket``, replacing any object there.

    Bucket names follow S3's rules and keys the blob key rules (relative, no ``..``): 422 otherwise.
    """
    validate_bucket_name(bucket)
    validate_blob_key(key)
    if any(len(segment) > MAX_SEGMENT for segment in key.split("/")):
        raise InvalidKeyError(key, f"each '/'-separated segment of a key is at most {MAX_SEGMENT} characters")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"an upload through the API is at most {MAX_UPLOAD_BYTES} bytes")
    data = await request.body()
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"an upload through the API is at most {MAX_UPLOAD_BYTES} bytes")
    buckets: Buckets = request.app.state.buckets
    return await run_in_threadpool(_store, buckets, bucket, key, data)


def _store(buckets: Buckets, bucket: str, key: str, data: bytes) -> StoredObject:
    store = buckets(bucket)
    try:
        store.put(key, data)
    except NotFoundError:  # a put finds nothing missing but the bucket itself
        raise NotFoundError("bucket", bucket) from None
    except (IsADirectoryError, NotADirectoryError, FileExistsError):
        raise ConditionFailedError(bucket, key, LOCAL_CONFLICT) from None
    except OSError as exc:  # a local bucket's file system refused
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidKeyError(key, "a segment is too long for a file name (255 bytes)") from None
        raise BackendError(f"cannot store s3://{bucket}/{key}: {exc}") from exc
    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return StoredObject(bucket=bucket, key=key, size=len(data), etag=etag, url=store.url(key))
