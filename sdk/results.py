"""Task results: serialized, inlined when small, otherwise stored in the blob store (a claim check).

``ResultStore.persist(key, value)`` returns a *reference*, a small JSON object that state and
transaction-record items carry instead of the value::

    {"serializer": "pickle", "inline": "gAVLAS4="}                       # payload <= inline_limit
    {"serializer": "pickle", "storage": "s3://bucket/prefix?region=…",
     "key": "results/<cache key>", "size": 52311}                      # stored as a blob

A reference is enough to load the value in any process (``load_result``): it names the
serializer and the storage URL. Large results never go into a store item (DynamoDB's items
stop at 400 KB); they go to ``results/<key>`` in the blob store, keyed by the cache key, so
a second run with the same key overwrites the same blob rather than adding one.

Blob stores are opened once per URL per process and shared (``_blobs_at``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from overcast.adapters.factory import open_blobs
from overcast.core.errors import InvalidKeyError, NotFoundError
from overcast.core.ports import BlobStore
from overcast.core.settings import Settings
from overcast.serializers import Serializer, resolve_serializer, serializer_named

# Payloads up to 1 KiB are inlined (as base64, so ~1.4 KB of text). DynamoDB refuses items
# over 400 KB, but that is a ceiling, not a target: a write costs one unit per KB, a state
# item is written at least twice per task run and read back by listings, and SQS and the API
# carry the same item. 1 KiB keeps every task-run item within a couple of write units while
# covering what most tasks return (numbers, short strings, ids, small dicts), which then cost
# no blob PUT (an S3 round trip of 10-50 ms and a per-request price). Anything bigger is one
# blob, however large.
INLINE_LIMIT = 1024
RESULTS_PREFIX = "results/"

# A key made only of these is used as it is (cache keys are hex); any other is percent-encoded.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
# One path segment must stay under the 255 bytes most file systems allow per file name.
_MAX_SEGMENT = 200

_STORES: dict[str, BlobStore] = {}
_STORES_LOCK = threading.Lock()

ResultReference = dict[str, Any]


class ResultNotFoundError(NotFoundError):
    """Raised when a reference names a result blob that is no longer in its storage.

    Attributes:
        storage: the storage URL the reference names.
        key: the blob key (``results/…``).
    """

    def __init__(self, storage: str, key: str) -> None:
        self.storage = storage
        super().__init__(
            "result",
            key,
            f"result blob {key!r} not found in {storage}: it was deleted (by a cleanup or a "
            "lifecycle rule), or this process reaches other storage than the one that wrote it",
        )


def result_blob_key(key: str) -> str:
    """Return the blob key a result with cache key ``key`` is stored under (``results/<key>``).

    Keys of letters, digits, ``_``, ``.`` and ``-`` (every hash-derived key) are used as they
    are; any other text is percent-encoded (``/`` included, so a key never makes folders or
    escapes ``results/``), and a key too long for a file name is cut and suffixed with its
    sha256, so distinct keys stay distinct blobs.

    Raises:
        InvalidKeyError: the key is not a string, or is empty.
    """
    if type(key) is not str or not key:
        raise InvalidKeyError(key, "a result key must be a non-empty string")
    if _PLAIN_KEY.fullmatch(key) and key not in (".", ".."):
        return RESULTS_PREFIX + key
    safe = quote(key, safe="-_.")
    if safe in (".", ".."):
        safe = safe.replace(".", "%2E")
    if len(safe) > _MAX_SEGMENT:
        # quote() never writes "%%", so a cut key cannot equal an encoded one.
        safe = f"{safe[:120]}%%{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"
    return RESULTS_PREFIX + safe


def storage_url(storage: str) -> str:
    """Return the blob-store URL for a ``result_storage`` string: a URL, or a local path.

    A string without ``://`` is a local directory (``~`` expanded, made absolute).
    """
    if "://" in storage:
        return storage
    return f"file://{Path(storage).expanduser().absolute()}"


def _blobs_at(url: str) -> BlobStore:
    blobs = _STORES.get(url)
    if blobs is None:
        with _STORES_LOCK:  # open each URL once: an S3 store costs an import and a session
            blobs = _STORES.get(url)
            if blobs is None:
                blobs = _STORES[url] = open_blobs(url)
    return blobs


def _url_of(blobs: BlobStore) -> str:
    # The store URL behind a BlobStore instance: its URL for a probe key, minus the key. (A
    # local store's URL is percent-encoded by pathlib; S3 stores give no endpoint, so pass a
    # URL rather than an instance when other processes must reach a custom endpoint.)
    probe = "results/.probe"
    url = blobs.url(probe)
    if not url.endswith("/" + probe):
        raise ValueError(f"cannot tell the storage URL of {blobs!r}; pass its URL instead")
    base = url[: -len(probe) - 1]
    return unquote(base) if base.startswith("file:") else base


def is_result_reference(data: Any) -> bool:
    """Say whether ``data`` is a result reference (as ``ResultStore.persist`` returns)."""
    if not isinstance(data, dict) or type(data.get("serializer")) is not str:
        return False
    if "inline" in data:
        return type(data["inline"]) is str
    return type(data.get("storage")) is str and type(data.get("key")) is str


class ResultStore:
    """Persists task results and loads them back from references.

    Args:
        storage: where large results go: ``None`` for the blob store of ``Settings().blobs_url``,
            a URL (``s3://BUCKET/PREFIX?region=R&endpoint=URL``, ``file:///PATH``,
            ``memory://NAME``), a plain local path, or a ``BlobStore``. URLs are opened on
            first use, once per URL per process.
        serializer: ``None`` (pickle), a serializer name, or a ``Serializer``.
        inline_limit: the largest payload, in bytes, returned inline in the reference.
        settings: the settings that give the default storage. Pass them (or a URL) on hot
            paths: building ``Settings()`` reads the environment and costs ~0.3 ms.

    Raises:
        ValueError: an unknown serializer name, or a negative ``inline_limit``.
    """

    def __init__(
        self,
        storage: str | BlobStore | None = None,
        serializer: str | Serializer | None = None,
        *,
        inline_limit: int = INLINE_LIMIT,
        settings: Settings | None = None,
    ) -> None:
        if inline_limit < 0:
            raise ValueError(f"inline_limit must be 0 or more, not {inline_limit}")
        self.serializer = resolve_serializer(serializer)
        self.inline_limit = inline_limit
        self._settings = settings
        self._url: str | None = None
        self._blobs: BlobStore | None = None
        if isinstance(storage, str):
            self._url = storage_url(storage)
        elif storage is not None:
            self._blobs = storage
            self._url = _url_of(storage)
            with _STORES_LOCK:  # so that load_result finds this very store in this process
                _STORES.setdefault(self._url, storage)

    @property
    def url(self) -> str:
        """The storage URL that references to stored results name."""
        if self._url is None:
            self._url = (self._settings or Settings()).blobs_url
        return self._url

    @property
    def blobs(self) -> BlobStore:
        """The blob store (opened on first use)."""
        if self._blobs is None:
            self._blobs = _blobs_at(self.url)
        return self._blobs

    def persist(self, key: str, value: Any) -> ResultReference:
        """Serialize ``value`` and return its reference: inline when small, else a stored blob.

        Args:
            key: the result's key (its cache key, or any unique text); a stored result goes to
                ``result_blob_key(key)``, replacing what a previous run stored there.
            value: the value.

        Returns:
            ``{"serializer", "inline"}`` for a payload of at most ``inline_limit`` bytes;
            otherwise ``{"serializer", "storage", "key", "size"}`` after the blob is written.

        Raises:
            InvalidKeyError: an empty or non-string key.
            SerializationError: the serializer cannot write the value.
            OvercastError: the blob store failed (a ``BackendError`` or ``ThrottledError``).
        """
        if type(key) is not str or not key:
            raise InvalidKeyError(key, "a result key must be a non-empty string")
        data = self.serializer.dumps(value)
        if len(data) <= self.inline_limit:
            return {"serializer": self.serializer.name, "inline": base64.b64encode(data).decode("ascii")}
        blob_key = result_blob_key(key)
        self.blobs.put(blob_key, data)
        return {"serializer": self.serializer.name, "storage": self.url, "key": blob_key, "size": len(data)}

    def load(self, reference: Mapping[str, Any]) -> Any:
        """Return the value a reference stands for (see ``load_result``).

        Raises:
            ValueError: ``reference`` is not a result reference, or names an unknown serializer.
            ResultNotFoundError: the blob it names is gone.
            SerializationError: the stored bytes cannot be loaded.
        """
        if (
            self._blobs is not None
            and isinstance(reference, Mapping)
            and reference.get("storage") == self._url
        ):
            return _load(reference, self._blobs)
        return load_result(reference)

    def __repr__(self) -> str:
        where = self._url or "<settings blobs_url>"
        return f"ResultStore({where!r}, {self.serializer.name!r}, inline_limit={self.inline_limit})"


def load_result(reference: Mapping[str, Any]) -> Any:
    """Return the value a result reference stands for, in any process, from the reference alone.

    An inline payload is decoded; a stored one is read from the storage URL the reference
    names (opened once per process). The reference's serializer loads the bytes.

    Raises:
        ValueError: ``reference`` is not a result reference, or names an unknown serializer.
        ResultNotFoundError: the blob it names is gone.
        SerializationError: the stored bytes cannot be loaded.
        OvercastError: the storage cannot be opened or read (``ConfigurationError``,
            ``BackendError``).
    """
    return _load(reference, None)


def _load(reference: Mapping[str, Any], blobs: BlobStore | None) -> Any:
    if not isinstance(reference, dict) and isinstance(reference, Mapping):
        reference = dict(reference)
    if not is_result_reference(reference):
        raise ValueError(f"not a result reference: {reference!r}")
    serializer = serializer_named(reference["serializer"])
    inline = reference.get("inline")
    if inline is not None:
        try:
            data = base64.b64decode(inline, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"result reference has a damaged inline payload: {exc}") from exc
        return serializer.loads(data)
    storage, key = reference["storage"], reference["key"]
    try:
        data = (blobs or _blobs_at(storage)).get(key)
    except NotFoundError as exc:
        raise ResultNotFoundError(storage, key) from exc
    return serializer.loads(data)
