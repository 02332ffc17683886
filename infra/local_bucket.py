"""Local buckets: directories whose changes become S3 event notifications, for ``overcast dev``.

``<root>/<bucket>/<key>`` holds each object of each bucket, so a file copied into
``~/.overcast/buckets/uploads/`` by hand is an upload to ``s3://uploads``. Every new, changed or
removed object is announced as S3 announces it to an SQS queue: one message per change, whose
body is ``{"Records": [record]}`` with the record AWS sends (``eventName``
``ObjectCreated:Put`` or ``ObjectRemoved:Delete``, the key URL-encoded as S3 encodes it, size,
MD5 ``eTag`` and a ``sequencer`` that grows with each change of a key). The ``events`` handler
reads them from that queue exactly as it reads S3's on AWS.

Two paths lead to a notification:

- ``LocalBucket.put`` and ``delete`` (uploads through ``overcast upload`` or the API) write
  atomically (a temporary file under ``<bucket>/.tmp/``, then a rename) and announce the change
  at once;
- ``LocalBuckets.scan`` notices what other programs did to the directories: it compares each
  file's ``(size, mtime_ns)`` with the version it last announced. A file still being written
  (modified less than ``settle_s`` ago) waits for the next look. The ``BucketWatcher``
  (``bucket_watcher``) calls it whenever the file system reports a change.

Each announced version is remembered (and kept in ``<root>/.overcast-index.json`` across
restarts, so a restart announces only what changed meanwhile): the same version is never
announced twice, whichever path saw it first. A record of a version is the same whenever it is
made (its time and sequencer come from the file's times, its request id from those), so a
consumer that derives event ids from it stores a repeat once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from overcast.adapters.factory import validate_bucket_name
from overcast.core.blobkeys import validate_blob_key, validate_blob_prefix
from overcast.core.errors import (
    ConditionFailedError,
    InvalidKeyError,
    InvalidValueError,
    NotFoundError,
)
from overcast.core.ports import Queue
from overcast.infra.s3_notifications import Version, s3_record

logger = logging.getLogger("overcast.local_bucket")

TMP_DIR = ".tmp"
"""Each bucket's directory for partial writes (never announced, never an object)."""
INDEX_FILE = ".overcast-index.json"
LOCAL_CONFLICT = "a local bucket holds files, so an object 'a' and objects under 'a/' cannot both exist"
_TMP_PREFIXES = (".overcast-tmp-", ".#", ".~")  # ours (LocalBlobStore's), and editors' droppings
_TMP_SUFFIXES = ("~", ".swp", ".swx", ".part", ".crdownload")


def is_temporary(relative: str) -> bool:
    """Say whether a path inside a bucket is a partial or scratch file rather than an object."""
    parts = relative.split("/")
    name = parts[-1]
    return parts[0] == TMP_DIR or name.startswith(_TMP_PREFIXES) or name.endswith(_TMP_SUFFIXES)


class LocalBuckets:
    """The buckets under one directory: their objects, their notifications and their watcher.

    Args:
        root: the directory holding one directory per bucket (created when missing).
        queue: where notifications go (the events queue).
        region: the records' ``awsRegion``.
        settle_s: how long a file must go unmodified before the watcher announces it.

    Announced versions are kept in the index file by ``scan`` and ``close``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        queue: Queue,
        *,
        region: str = "us-east-1",
        settle_s: float = 0.1,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.queue, self.region = queue, region
        self.settle_s = settle_s
        self._lock = threading.RLock()  # one change at a time: write, remember, announce
        self._index: dict[tuple[str, str], Version] = self._load_index()
        self._dirty = False
        self._skipped: set[str] = set()  # paths already warned about

    def bucket(self, name: str, *, create: bool = True) -> LocalBucket:
        """Return bucket ``name`` (its directory is created unless ``create`` is false).

        Raises:
            InvalidValueError: the name breaks S3's bucket naming rules.
            NotFoundError: ``create`` is false and there is no such bucket.
        """
        validate_bucket_name(name)
        directory = self.root / name
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        elif not directory.is_dir():
            raise NotFoundError("bucket", name)
        return LocalBucket(self, name)

    def close(self) -> None:
        """Keep the index of announced versions for the next run (the buckets stay usable)."""
        with self._lock:
            self._save_index()

    def __enter__(self) -> LocalBuckets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scan(self) -> bool:
        """Announce every change since the last look; return whether a file is still settling."""
        settling = False
        with self._lock:
            seen: set[tuple[str, str]] = set()
            for bucket, key, path in self._files():
                seen.add((bucket, key))
                try:
                    settling |= self._look(bucket, key, path)
                except OSError:
                    continue  # gone or unreadable meanwhile: the next look decides
            for bucket, key in sorted(set(self._index) - seen):
                if not (self.root / bucket / key).is_file():
                    self._announce_removed(bucket, key)
            self._save_index()
        return settling

    def _look(self, bucket: str, key: str, path: Path) -> bool:
        stat = path.stat()
        known = self._index.get((bucket, key))
        if known is not None and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            return False
        if abs(time.time_ns() - stat.st_mtime_ns) < self.settle_s * 1e9:
            return True  # still being written, perhaps
        etag = _md5(path)
        again = path.stat()
        if (again.st_size, again.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            return True  # it changed while we read it
        self._announce_created(bucket, key, Version.of(stat, etag))
        return False

    def _files(self, only: str | None = None) -> Iterator[tuple[str, str, Path]]:
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir() or not _valid_bucket(directory.name):
                continue
            if only is not None and directory.name != only:
                continue
            for dirpath, dirnames, filenames in os.walk(directory):
                here = Path(dirpath)
                if here == directory:
                    dirnames[:] = [d for d in dirnames if d != TMP_DIR]
                for name in filenames:
                    path = here / name
                    key = path.relative_to(directory).as_posix()
                    if is_temporary(key) or path.is_symlink():
                        continue
                    try:
                        validate_blob_key(key)
                    except InvalidKeyError as exc:
                        self._warn_once(str(path), f"ignoring {path}: {exc}")
                        continue
                    yield directory.name, key, path

    def concerns(self, path: str | bytes) -> bool:
        """Whether a changed path may be an object (or a bucket, or a directory of objects):
        not the index, not a partial or temporary file."""
        if not path:
            return False
        try:
            relative = Path(os.fsdecode(path)).relative_to(self.root).as_posix()
        except ValueError:
            return False
        bucket, _, key = relative.partition("/")
        return _valid_bucket(bucket) and not (key and is_temporary(key))

    # -- changes and their notifications ---------------------------------------------------------

    def _announce_created(self, bucket: str, key: str, version: Version) -> None:
        occurred = datetime.fromtimestamp(version.changed_ns / 1e9, UTC)
        record = s3_record(
            bucket,
            key,
            "ObjectCreated:Put",
            sequencer=version.sequencer,
            occurred=occurred,
            version=version,
            region=self.region,
        )
        self._send(bucket, key, record)
        self._index[(bucket, key)] = version
        self._dirty = True

    def _announce_removed(self, bucket: str, key: str) -> None:
        now = time.time_ns()
        known = self._index.get((bucket, key))
        sequencer = f"{max(now, known.changed_ns + 1) if known else now:016X}"
        record = s3_record(
            bucket,
            key,
            "ObjectRemoved:Delete",
            sequencer=sequencer,
            occurred=datetime.fromtimestamp(now / 1e9, UTC),
            region=self.region,
        )
        self._send(bucket, key, record)
        self._index.pop((bucket, key), None)
        self._dirty = True

    def _send(self, bucket: str, key: str, record: dict[str, Any]) -> None:
        self.queue.send(json.dumps({"Records": [record]}, separators=(",", ":")))
        logger.info("s3://%s/%s: %s", bucket, key, record["eventName"])

    def _put(self, bucket: str, key: str, data: bytes) -> Version:
        directory = self.root / bucket
        path = _inside(directory, key)
        scratch = directory / TMP_DIR
        scratch.mkdir(parents=True, exist_ok=True)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIXES[0], dir=scratch)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            with self._lock:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Path(tmp).replace(path)
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    raise ConditionFailedError(bucket, key, LOCAL_CONFLICT) from None
                stat = path.stat()
                version = Version.of(stat, etag)
                self._announce_created(bucket, key, version)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return version

    def _delete(self, bucket: str, key: str) -> bool:
        path = _inside(self.root / bucket, key)
        with self._lock:
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return False
            self._announce_removed(bucket, key)
        _prune(path.parent, self.root / bucket)
        return True

    # -- the index of announced versions ---------------------------------------------------------

    def _load_index(self) -> dict[tuple[str, str], Version]:
        try:
            raw = json.loads((self.root / INDEX_FILE).read_text())
            return {
                (bucket, key): Version(int(size), int(mtime_ns), str(etag), int(changed_ns))
                for bucket, objects in raw.items()
                for key, (size, mtime_ns, etag, changed_ns) in objects.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning(
                "ignoring the unreadable index %s (%s): every object is announced again",
                self.root / INDEX_FILE,
                exc,
            )
            return {}

    def _save_index(self) -> None:
        if not self._dirty:
            return
        raw: dict[str, dict[str, list[Any]]] = {}
        for (bucket, key), v in sorted(self._index.items()):
            raw.setdefault(bucket, {})[key] = [v.size, v.mtime_ns, v.etag, v.changed_ns]
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIXES[0], dir=self.root)
        with os.fdopen(fd, "w") as handle:
            json.dump(raw, handle)
        Path(tmp).replace(self.root / INDEX_FILE)
        self._dirty = False

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._skipped:
            self._skipped.add(what)
            logger.warning(message)


class LocalBucket:
    """One local bucket as a ``BlobStore``: its writes and deletes are announced at once.

    Made by ``LocalBuckets.bucket``; keys follow the blob key rules, and ``.tmp/`` is reserved.
    """

    def __init__(self, buckets: LocalBuckets, name: str) -> None:
        self.buckets, self.name = buckets, name
        self.directory = buckets.root / name

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically and announce ``ObjectCreated:Put``."""
        self.put_object(key, data)

    def put_object(self, key: str, data: bytes) -> Version:
        """Store ``data`` under ``key`` atomically, announce it, and return its version."""
        return self.buckets._put(self.name, _object_key(key), bytes(data))

    def get(self, key: str) -> bytes:
        """Return the object under ``key``; raise ``NotFoundError`` when there is none."""
        try:
            return _inside(self.directory, _object_key(key)).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError("object", f"s3://{self.name}/{key}") from None

    def exists(self, key: str) -> bool:
        """Say whether an object is stored under ``key``."""
        return _inside(self.directory, _object_key(key)).is_file()

    def delete(self, key: str) -> bool:
        """Delete the object under ``key`` and announce ``ObjectRemoved:Delete``; return whether there was one."""
        return self.buckets._delete(self.name, _object_key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix``, sorted."""
        validate_blob_prefix(prefix)
        keys = [key for _, key, _ in self.buckets._files(only=self.name)]
        return iter(sorted(k for k in keys if k.startswith(prefix)))

    def url(self, key: str) -> str:
        """Return the object's ``s3://`` URL (what its notifications name)."""
        return f"s3://{self.name}/{_object_key(key)}"


def _object_key(key: str) -> str:
    validate_blob_key(key)
    if is_temporary(key):
        raise InvalidKeyError(key, f"'{TMP_DIR}/' and temporary-file names are reserved in local buckets")
    return key


def _inside(directory: Path, key: str) -> Path:
    path = directory / key
    # The key rules already forbid escaping; this guards against symlinks inside the bucket.
    if not path.resolve().is_relative_to(directory.resolve()):
        raise InvalidKeyError(key, "the key resolves outside its bucket")
    return path


def _valid_bucket(name: str) -> bool:
    try:
        validate_bucket_name(name)
    except InvalidValueError:
        return False
    return True


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _prune(directory: Path, top: Path) -> None:
    # Directories a delete left empty go too, as S3 has no directories to leave behind.
    while directory != top and directory.is_relative_to(top):
        with contextlib.suppress(OSError):
            directory.rmdir()
            directory = directory.parent
            continue
        return
