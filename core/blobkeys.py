"""Validation of blob keys, shared by every blob store so that all of them refuse the same keys."""

from __future__ import annotations

import re

from overcast.core.errors import InvalidKeyError

MAX_BLOB_KEY_BYTES = 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


def validate_blob_key(key: object) -> str:
    """Return ``key`` when it is a safe, relative, slash-separated blob key.

    A key must be a non-empty string of at most 1,024 UTF-8 bytes, made of segments separated
    by ``/``, none of them empty, ``.`` or ``..``; it must not start with ``/`` or a drive
    letter, nor hold a backslash, a NUL or another control character. These rules keep every
    key inside its store on a local disk and mean the same thing on S3.

    Raises:
        InvalidKeyError: the key breaks a rule; the message says which.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(key, "a blob key must be a string")
    if not key:
        raise InvalidKeyError(key, "a blob key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_BLOB_KEY_BYTES:
        raise InvalidKeyError(key, f"a blob key must be at most {MAX_BLOB_KEY_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidKeyError(key, "a blob key must not contain NUL or other control characters")
    if "\\" in key:
        raise InvalidKeyError(key, "a blob key must not contain a backslash; separate segments with '/'")
    if key.startswith("/") or _DRIVE.match(key):
        raise InvalidKeyError(key, "a blob key must be relative, not an absolute path")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(key, "a blob key must not contain an empty, '.' or '..' segment")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(key, "a blob key must be valid Unicode (no lone surrogates)") from exc
    return key


def validate_blob_prefix(prefix: object) -> str:
    """Return ``prefix`` when it may begin a valid key (empty, or a key possibly ending in ``/``).

    Raises:
        InvalidKeyError: the prefix could not begin any valid key.
    """
    if prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise InvalidKeyError(prefix, "a blob prefix must be a string")
    # A prefix may stop anywhere inside a segment, so check it as a key with a stand-in tail.
    validate_blob_key(prefix + "x" if prefix.endswith("/") else prefix)
    return prefix
