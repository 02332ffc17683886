"""Turning items into stored records and back, the same way on every key-value backend.

An item's reserved attributes (key, version, ttl, index keys) are stored as typed columns or
attributes, so that the backend can index, condition and expire on them. Every other
attribute is encoded together into one JSON text (``data``). One codec for all backends is
what makes a value read back identical everywhere: DynamoDB's number type cannot tell a float
from a Decimal or hold an int past 38 digits, and JSON alone has no bytes, so this codec tags
those few types explicitly.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import re
import uuid
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from overcast.core.errors import InvalidKeyError, InvalidValueError, ItemTooLargeError
from overcast.core.ports import INDEXES, MAX_ITEM_BYTES, RESERVED_ATTRIBUTES, Item

_TAG = "__overcast__"
_ESCAPE = "~"  # appended to user keys that begin with the tag, so they never read as a tag
MAX_PK_BYTES = 2048
MAX_SK_BYTES = 1024
_SHORT_PK = MAX_PK_BYTES // 4
_SHORT_SK = MAX_SK_BYTES // 4
_OVERHEAD_BYTES = 128  # above Record.size()'s attribute names and fixed costs


class Record(NamedTuple):
    """An item as backends store it: typed reserved attributes plus the encoded rest.

    A named tuple (in the SQLite table's column order) because one is built per item written
    and read: several times cheaper than a frozen dataclass, and it binds to SQL as it is.
    """

    pk: str
    sk: str
    v: int
    data: str
    ttl: int | None = None
    gsi1pk: str | None = None
    gsi1sk: str | None = None
    gsi2pk: str | None = None
    gsi2sk: str | None = None

    def alive(self, now: float) -> bool:
        """Say whether the record is visible at ``now`` (its ttl, if any, lies in the future)."""
        return self.ttl is None or self.ttl > now

    def index_key(self, index: str) -> tuple[str | None, str | None]:
        """Return the record's (partition, sort) key in ``index``."""
        pk_attr, sk_attr = INDEXES[index]
        return getattr(self, pk_attr), getattr(self, sk_attr)

    def with_version(self, v: int) -> Record:
        """Return a copy with version ``v``."""
        return self._replace(v=v)

    def size(self) -> int:
        """Approximate the stored size in bytes as DynamoDB counts it (names plus values)."""
        total = len(self.pk.encode()) + len(self.sk.encode()) + len(self.data.encode()) + 4 + 2 + 1 + 4
        for name in ("gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"):
            value = getattr(self, name)
            if value is not None:
                total += len(name) + len(value.encode())
        return total + (3 + 21 if self.ttl is not None else 0) + 21


def check_key(pk: object, sk: object) -> None:
    """Raise ``InvalidKeyError`` unless ``pk`` and ``sk`` are non-empty strings within DynamoDB's sizes."""
    for name, value, limit in (("pk", pk, MAX_PK_BYTES), ("sk", sk, MAX_SK_BYTES)):
        if not isinstance(value, str) or not value:
            raise InvalidKeyError(value, f"{name} must be a non-empty string")
        # a character is at most 4 bytes in UTF-8: most keys are accepted without encoding them
        if len(value) * 4 > limit and len(value.encode("utf-8", "surrogatepass")) > limit:
            raise InvalidKeyError(value, f"{name} must be at most {limit} bytes")


def to_record(item: Item, v: int = 0) -> Record:
    """Validate ``item`` and return its record with version ``v``.

    Raises:
        InvalidKeyError: a missing or malformed key.
        InvalidValueError: a reserved attribute of the wrong type, or a value the codec cannot hold.
        ItemTooLargeError: the record is over 400 KB.
    """
    if not isinstance(item, dict):
        raise InvalidValueError(f"an item must be a dict, not {type(item).__name__}")
    pk, sk = item.get("pk"), item.get("sk")
    # Short string keys (nearly all) pass without a call: 4 bytes a character at most in UTF-8.
    if not (type(pk) is str and type(sk) is str and 0 < len(pk) <= _SHORT_PK and 0 < len(sk) <= _SHORT_SK):
        check_key(pk, sk)
    assert isinstance(pk, str) and isinstance(sk, str)
    ttl = item.get("ttl")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
            raise InvalidValueError(f"ttl of ({pk!r}, {sk!r}) must be epoch seconds (a number), not {ttl!r}")
        ttl = int(ttl)
    index_keys: dict[str, str | None] = {}
    for index, (ipk, isk) in INDEXES.items():
        a, b = item.get(ipk), item.get(isk)
        if a is None and b is None:
            continue
        if not (type(a) is str and type(b) is str and a and b):
            _check_index_keys(pk, sk, index, {ipk: a, isk: b})
        index_keys[ipk], index_keys[isk] = a, b
    data = {k: val for k, val in item.items() if k not in RESERVED_ATTRIBUTES}
    try:
        text = encode_data(data)
    except _UnsupportedValueError as exc:
        raise InvalidValueError(f"item ({pk!r}, {sk!r}): {exc}") from None
    record = Record(pk, sk, v, text, ttl, **index_keys)
    # Counted exactly only when 4 bytes a character (UTF-8's most) could pass the limit.
    chars = len(pk) + len(sk) + len(text)
    for key in index_keys.values():
        chars += len(key) if key else 0
    if chars * 4 + _OVERHEAD_BYTES > MAX_ITEM_BYTES:
        size = record.size()
        if size > MAX_ITEM_BYTES:
            raise ItemTooLargeError(pk, sk, size, MAX_ITEM_BYTES)
    return record


def _check_index_keys(pk: str, sk: str, index: str, keys: dict[str, Any]) -> None:
    """Raise ``InvalidValueError`` unless both of an index's keys are non-empty strings."""
    if any(value is None for value in keys.values()):
        names = " and ".join(keys)
        raise InvalidValueError(f"item ({pk!r}, {sk!r}) must have both {names} for {index}, or neither")
    for name, value in keys.items():
        if not isinstance(value, str) or not value:
            raise InvalidValueError(f"{name} of ({pk!r}, {sk!r}) must be a non-empty string, not {value!r}")


def encode_data(data: dict[str, Any]) -> str:
    """Encode an item's non-reserved attributes as the codec's JSON text.

    The common case runs at C speed: orjson encodes, tagging bytes and Decimals through its
    ``default`` hook, which counts the tags it emits. The standard library's encoder takes over
    when the text holds a ``null`` (orjson writes NaN and infinities as null, which the codec
    refuses) or orjson refused a value (an int past 64 bits, a lone surrogate, a non-string key);
    the careful walk runs when the text holds more tag-like keys than tags (a user key that
    begins with the tag, or such text inside a string), or neither encoder took a value: it
    escapes such keys, or names the offending value's path in the error. Map keys that are int,
    float, bool or None become strings, as in JSON (and in a DynamoDB map); any other key type is
    refused. UUIDs are stored as their text and enum members as their value, as in pydantic's
    JSON mode, on every path.
    """
    try:
        raw = orjson.dumps(data, default=_tag, option=_ORJSON_OPTIONS)
    except (TypeError, ValueError):
        raw = None
    if raw is not None and b"null" not in raw:
        if _TAG_BYTES not in raw:
            return raw.decode()  # the common case: nothing tagged, nothing refused
        counter = _TagCounter()  # again, counting the tags to tell them from tag-like user text
        raw = orjson.dumps(data, default=counter, option=_ORJSON_OPTIONS)
        if raw.count(_TAG_BYTES) == counter.tags:
            return raw.decode()
    counter = _TagCounter()
    try:
        text = json.dumps(data, default=counter, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = None  # the walk below says exactly what was refused, and where
    if text is not None and text.count(_TAG_TEXT) == counter.tags and _utf8(text):
        return text
    return _ENCODER.encode(_prepare(data, ""))


def _utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogate, which no backend can store)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _TagCounter:
    """``json.dumps``'s hook for the two non-JSON types the codec holds; counts what it tags."""

    __slots__ = ("tags",)

    def __init__(self) -> None:
        self.tags = 0

    def __call__(self, value: Any) -> Any:
        tagged = _tag(value)
        if type(tagged) is dict:
            self.tags += 1
        return tagged


def decode_data(text: str) -> dict[str, Any]:
    """Decode the codec's JSON text back into attributes (the inverse of ``encode_data``)."""
    if _TAG not in text:
        # Nothing tagged: orjson alone, unless a run of 20+ digits may be an int past 64 bits,
        # which orjson would read as a float (the standard library keeps it an int).
        if _LONG_DIGITS.search(text) is None:
            fast: dict[str, Any] = orjson.loads(text)
            return fast
        hook = None
    else:
        hook = _revive_escaped if _TAG + _ESCAPE in text else _revive
    result: dict[str, Any] = json.loads(text, object_hook=hook)
    return result


def to_item(record: Record) -> Item:
    """Return the item a record holds: its attributes, key, version, ttl and index keys."""
    item: Item = decode_data(record.data)
    item["pk"], item["sk"], item["v"] = record.pk, record.sk, record.v
    if record.ttl is not None:
        item["ttl"] = record.ttl
    for name in ("gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"):
        value = getattr(record, name)
        if value is not None:
            item[name] = value
    return item


class _UnsupportedValueError(Exception):
    pass


_TAG_TEXT = '"' + _TAG
_TAG_BYTES = _TAG_TEXT.encode()
_LONG_DIGITS = re.compile(r"[0-9]{20}")  # every int past 64 bits has 20 digits or more
# Dataclasses, datetimes and subclasses of str, int, dict and list reach ``default`` (and so the
# standard library's rules) instead of orjson's own encodings.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _tag(value: Any) -> Any:
    """``json.dumps``'s hook for the two non-JSON types the codec holds."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal) and value.is_finite():
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(type(value).__name__)


def _prepare(value: Any, path: str) -> Any:
    """Return ``value`` as plain JSON types, tagging bytes and Decimals and escaping tag-like keys."""
    if value is None or isinstance(value, bool | int | float | str | Decimal):
        return _scalar(value, path)
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            if not isinstance(key, str):
                raise _UnsupportedValueError(
                    f"{path or 'value'} has a non-string key {key!r}; map keys must be strings"
                )
            out[key + _ESCAPE if key.startswith(_TAG) else key] = _prepare(
                inner, f"{path}.{key}" if path else key
            )
        return out
    if isinstance(value, list | tuple):
        return [_prepare(inner, f"{path}[{i}]") for i, inner in enumerate(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, uuid.UUID | enum.Enum):
        return str(value) if isinstance(value, uuid.UUID) else _prepare(value.value, path)
    raise _UnsupportedValueError(
        f"{path or 'value'} is a {type(value).__name__}; items hold None, bool, int, float, Decimal, "
        "str, bytes, lists and string-keyed dicts"
    )


def _scalar(value: Any, path: str) -> Any:
    """A scalar as the codec stores it; non-finite numbers and lone surrogates are refused."""
    where = path or "value"
    if isinstance(value, str) and not _utf8(value):
        raise _UnsupportedValueError(f"{where} holds a lone surrogate, which is not valid Unicode text")
    if isinstance(value, float) and not math.isfinite(value):
        raise _UnsupportedValueError(f"{where} is {value}, which no backend stores as a number")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _UnsupportedValueError(f"{where} is Decimal {value}, which no backend stores as a number")
        return {_TAG: "decimal", "v": str(value)}
    return value


def _revive(obj: dict[str, Any]) -> Any:
    tag = obj.get(_TAG)
    if tag is None:
        return obj
    if tag == "bytes":
        return base64.b64decode(obj["v"])
    if tag == "decimal":
        return Decimal(obj["v"])
    raise InvalidValueError(f"stored value has an unknown type tag {tag!r}")


def _revive_escaped(obj: dict[str, Any]) -> Any:
    if _TAG in obj:
        return _revive(obj)
    return {(k[:-1] if k.startswith(_TAG) else k): v for k, v in obj.items()}


_ENCODER = json.JSONEncoder(default=_tag, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
