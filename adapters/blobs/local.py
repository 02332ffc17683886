"""Blobs as files under one directory, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from overcast.core.blobkeys import validate_blob_key, validate_blob_prefix
from overcast.core.errors import InvalidKeyError, NotFoundError

_TMP_PREFIX = ".overcast-tmp-"


class LocalBlobStore:
    """A ``BlobStore`` in a directory (``file:///path``).

    A reader never sees a half-written blob: each put writes a temporary file beside the
    target, flushes it to disk and renames it over the target, which is atomic on POSIX.

    Args:
        root: the directory; created when missing.
        fsync: flush each blob to disk before the rename (off only for throwaway stores).
    """

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def _path(self, key: str) -> Path:
        path = self.root / validate_blob_key(key)
        # The key rules already forbid escaping; this guards against symlinks inside the root.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise InvalidKeyError(key, "the key resolves outside the blob store")
        return path

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(bytes(data))
                if self._fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        """Return the blob under ``key``; raise ``NotFoundError`` when there is none."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError("blob", key) from None

    def exists(self, key: str) -> bool:
        """Say whether a blob is stored under ``key``."""
        return self._path(key).is_file()

    def delete(self, key: str) -> bool:
        """Delete the blob under ``key``; return whether there was one."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        self._prune(path.parent)
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix``, sorted."""
        validate_blob_prefix(prefix)
        # Walk only the deepest directory the prefix names, then filter by the string prefix.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return iter(())
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def url(self, key: str) -> str:
        """Return the blob's ``file://`` URL."""
        return self._path(key).as_uri()

    def _prune(self, directory: Path) -> None:
        # Remove directories a delete left empty, so listings and the disk stay tidy.
        while directory != self.root:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
