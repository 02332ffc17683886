"""S3 event notification records, as S3 sends them to a queue: what local buckets announce.

The shape is AWS's (``eventVersion`` 2.1; moto sends the same, minus ``userIdentity``,
``requestParameters``, ``responseElements``, the bucket's ``ownerIdentity`` and the object's
``sequencer``). The key is form-encoded as S3 encodes it (spaces as ``+``, ``/`` kept), so
consumers decode it with ``urllib.parse.unquote_plus``, as they must on AWS.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

CONFIGURATION_ID = "overcast-local"
"""The ``configurationId`` of the records: the notification configuration's name on S3."""


@dataclass(frozen=True)
class Version:
    """One version of an object in a local bucket, as its file shows it.

    ``(size, mtime_ns)`` tells versions apart. ``changed_ns`` (the later of mtime and ctime)
    is when the version arrived: a file moved or copied in with an old mtime gets a new ctime,
    so its notification is as recent as S3's would be (and within the events' retention).
    """

    size: int
    mtime_ns: int
    etag: str  # the content's MD5, in hex, as S3's eTag of a single-part upload
    changed_ns: int

    @classmethod
    def of(cls, stat: os.stat_result, etag: str) -> Version:
        """The version a file's ``stat`` shows, with its content's MD5."""
        return cls(stat.st_size, stat.st_mtime_ns, etag, max(stat.st_mtime_ns, stat.st_ctime_ns))

    @property
    def sequencer(self) -> str:
        """S3's ``sequencer``: hex that orders the changes of one key."""
        return f"{self.changed_ns:016X}"


def s3_record(
    bucket: str,
    key: str,
    event_name: str,
    *,
    sequencer: str,
    occurred: datetime,
    version: Version | None = None,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """Return one S3 event notification record, shaped as S3 sends it.

    Args:
        bucket, key: the object (the key as stored; the record carries it URL-encoded).
        event_name: e.g. ``ObjectCreated:Put`` or ``ObjectRemoved:Delete``.
        sequencer: orders the changes of the key.
        occurred: the ``eventTime``.
        version: the object's size and eTag (created records; removed ones carry neither).
        region: the ``awsRegion``.
    """
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/")}
    if version is not None:
        obj |= {"size": version.size, "eTag": version.etag}
    obj["sequencer"] = sequencer
    request_id = hashlib.md5(f"{bucket}/{key}/{sequencer}".encode(), usedforsecurity=False).hexdigest()
    owner = {"principalId": CONFIGURATION_ID}
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": occurred.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{occurred.microsecond // 1000:03d}Z",
        "eventName": event_name,
        "userIdentity": owner,
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": request_id[:16].upper(), "x-amz-id-2": request_id},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": CONFIGURATION_ID,
            "bucket": {"name": bucket, "ownerIdentity": owner, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }
