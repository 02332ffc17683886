"""Result serializers: how a task's return value becomes bytes and comes back.

A serializer has a ``name`` that goes into every stored result reference, so that any process
can load the result with the serializer that wrote it. The built-in names are Prefect 3's:

==================  ============================================================================
``pickle``          cloudpickle (the default): any picklable value, functions and lambdas too
``json``            UTF-8 JSON; datetimes, UUIDs, pydantic models, dataclasses, sets … are kept
                    as ``{"__class__": "module.Name", "data": …}`` and rebuilt on load
``compressed/…``    the inner serializer's bytes, zlib-compressed
==================  ============================================================================

::

    Serializer                      the base: name, dumps(value), loads(data)
    ├── PickleSerializer            "pickle"
    ├── JSONSerializer              "json"
    └── CompressedSerializer        "compressed/<inner>"

    SerializationError              a value the serializer cannot write (or data it cannot read)
"""

from __future__ import annotations

import base64
import importlib
import json
import pickle
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from typing import Any

import pydantic_core
from pydantic import TypeAdapter

from overcast.core.errors import OvercastError

# Values of these exact types pickle the same way with the standard library, ten times faster
# than cloudpickle (0.3 µs against 2 µs for an int): cloudpickle only matters for values that
# reference code (functions, classes defined in ``__main__``, closures).
_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})


class SerializationError(OvercastError, TypeError):
    """Raised when a serializer cannot write a value (or read back data it is given).

    Attributes:
        serializer: the serializer's name.
        type_name: the qualified name of the type it could not handle (``None`` when reading).
    """

    def __init__(self, serializer: str, message: str, *, type_name: str | None = None) -> None:
        self.serializer = serializer
        self.type_name = type_name
        super().__init__(message)


class Serializer(ABC):
    """Turns values into bytes and back.

    Subclasses set ``name`` (stored in every result reference; it must identify the byte
    format, because loading picks the serializer by name) and implement ``dumps`` and ``loads``.
    """

    name: str

    @abstractmethod
    def dumps(self, value: Any) -> bytes:
        """Return ``value`` as bytes.

        Raises:
            SerializationError: the value cannot be serialized this way.
        """

    @abstractmethod
    def loads(self, data: bytes) -> Any:
        """Return the value ``data`` holds (what ``dumps`` was given, or its equivalent).

        Raises:
            SerializationError: the data was not written by this serializer or is damaged.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PickleSerializer(Serializer):
    """``pickle``: cloudpickle to write (functions, lambdas and closures included), pickle to read."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` (by value for code that cloudpickle cannot reference by name).

        Raises:
            SerializationError: the value cannot be pickled (a lock, a socket, an open file …).
        """
        try:
            if type(value) in _PLAIN_TYPES:
                return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            import cloudpickle  # imported on first need: 25 ms of a cold start otherwise

            data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            return data
        except Exception as exc:  # __reduce__ of user types may raise anything
            type_name = _qualname(type(value))
            raise SerializationError(
                self.name, f"cannot pickle a value of type {type_name}: {exc}", type_name=type_name
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data``.

        Raises:
            SerializationError: the data is not a pickle, or names code this process cannot import.
        """
        try:
            return pickle.loads(data)  # noqa: S301 - results are written by our own SDK
        except Exception as exc:
            raise SerializationError(self.name, f"cannot unpickle the stored result: {exc}") from exc


class JSONSerializer(Serializer):
    """``json``: UTF-8 JSON, readable by any tool.

    JSON's own types (dicts with string keys, lists, strings, numbers, booleans, ``None``) are
    written as they are; tuples come back as lists and integer dict keys as strings. Any other
    value that pydantic can make JSON-able (datetimes, UUIDs, decimals, enums, paths, sets,
    pydantic models, dataclasses) is written as ``{"__class__": "module.Name", "data": …}``
    and rebuilt on load by validating ``data`` against that class.
    """

    name = "json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as UTF-8 JSON.

        Raises:
            SerializationError: a value (or a part of it) has a type JSON cannot hold; the
                message names it and suggests the ``pickle`` serializer.
        """
        try:
            return json.dumps(value, default=self._encode_object, ensure_ascii=False).encode("utf-8")
        except SerializationError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:  # non-str keys, cycles
            raise SerializationError(
                self.name,
                f"cannot encode a {_qualname(type(value))} as JSON: {exc}; "
                "use result_serializer='pickle' for values JSON cannot hold",
                type_name=_qualname(type(value)),
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Decode UTF-8 JSON, rebuilding tagged objects.

        Raises:
            SerializationError: the data is not JSON, or names a class this process cannot import.
        """
        try:
            return json.loads(data, object_hook=_decode_object)
        except SerializationError:
            raise
        except ValueError as exc:
            raise SerializationError(self.name, f"cannot decode the stored result as JSON: {exc}") from exc

    def _encode_object(self, value: Any) -> dict[str, Any]:
        cls = type(value)
        if cls is bytes or cls is bytearray:
            return {"__class__": cls.__name__, "data": base64.b64encode(value).decode("ascii")}
        # pydantic would drain an iterator to encode it: that would eat the caller's generator.
        if not isinstance(value, Iterator | AsyncIterator):
            try:
                data = pydantic_core.to_jsonable_python(value)
            except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
                pass
            else:
                return {"__class__": _qualname(cls), "data": data}
        type_name = _qualname(cls)
        raise SerializationError(
            self.name,
            f"JSON cannot hold a value of type {type_name}; use result_serializer='pickle' "
            "(the default) for it, or return a JSON-friendly value",
            type_name=type_name,
        )


class CompressedSerializer(Serializer):
    """``compressed/<inner>``: another serializer's bytes, zlib-compressed.

    Why zlib and not lzma (Prefect's choice): measured on 1-2 MB of pickled and JSON rows,
    lzma's default preset compresses 30-40 % smaller but 15-35x slower (2 MB/s against
    30-60 MB/s for zlib level 6) and decompresses 4-8x slower, and its 60-byte header makes
    small results *larger* (79 bytes became 100) where zlib halves them. A function pays for
    its CPU time by the millisecond, and a result is usually read once or a few times; zlib
    is the better trade, and it ships with every Python.

    Args:
        serializer: the inner serializer (a name or an instance; default pickle).
        level: zlib's compression level, 1 (fastest) to 9 (smallest); 6 is zlib's own default
            and most of level 9's gain at a fifth of its time.
    """

    def __init__(self, serializer: str | Serializer | None = None, level: int = 6) -> None:
        if not 1 <= level <= 9:
            raise ValueError(f"compression level must be 1-9, not {level}")
        self.serializer = resolve_serializer(serializer)
        self.level = level
        self.name = f"compressed/{self.serializer.name}"

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value`` with the inner serializer and compress the bytes.

        Raises:
            SerializationError: the inner serializer cannot write the value.
        """
        return zlib.compress(self.serializer.dumps(value), self.level)

    def loads(self, data: bytes) -> Any:
        """Decompress ``data`` and load it with the inner serializer.

        Raises:
            SerializationError: the data is not zlib-compressed, or the inner load fails.
        """
        try:
            raw = zlib.decompress(data)
        except zlib.error as exc:
            raise SerializationError(self.name, f"cannot decompress the stored result: {exc}") from exc
        return self.serializer.loads(raw)

    def __repr__(self) -> str:
        return f"CompressedSerializer({self.serializer!r}, level={self.level})"


def _qualname(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"


@lru_cache(maxsize=256)
def _adapter(class_path: str) -> TypeAdapter[Any]:
    module_name, _, qualname = class_path.rpartition(".")
    candidates = [(module_name, qualname)] if module_name else [("builtins", class_path)]
    # A nested class ("pkg.mod.Outer.Inner") splits at an earlier dot: try each split.
    parts = class_path.split(".")
    candidates += [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 2, 0, -1)]
    for module, attrs in candidates:
        try:
            target: Any = importlib.import_module(module)
        except ImportError:
            continue
        try:
            for attr in attrs.split("."):
                target = getattr(target, attr)
        except AttributeError:
            continue
        return TypeAdapter(target)
    raise SerializationError("json", f"cannot import {class_path!r} to rebuild a stored JSON result")


def _decode_object(obj: dict[str, Any]) -> Any:
    if len(obj) != 2 or "__class__" not in obj or "data" not in obj:
        return obj
    class_path, data = obj["__class__"], obj["data"]
    if class_path == "bytes":
        return base64.b64decode(data)
    if class_path == "bytearray":
        return bytearray(base64.b64decode(data))
    try:
        return _adapter(class_path).validate_python(data)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(
            "json", f"cannot rebuild a {class_path} from the stored JSON: {exc}"
        ) from exc


def register_serializer(serializer: Serializer) -> Serializer:
    """Make a custom serializer loadable by name in this process (``serializer_named``).

    A process that loads results written by a custom serializer must register it too (import
    the module that does, say). A name already taken keeps its first serializer.

    Returns:
        The serializer registered under ``serializer.name``.

    Raises:
        ValueError: the serializer has no name.
    """
    name = getattr(serializer, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{serializer!r} needs a non-empty str `name` to be registered")
    with _NAMED_LOCK:
        return _NAMED.setdefault(name, serializer)


def serializer_named(name: str) -> Serializer:
    """Return the serializer a stored result reference names.

    Raises:
        ValueError: no serializer has that name; the message lists the known ones.
    """
    try:
        return _NAMED[name]
    except (KeyError, TypeError):
        known = ", ".join(repr(n) for n in _NAMED)
        raise ValueError(f"unknown result serializer {name!r}; use one of {known}") from None


def resolve_serializer(spec: str | Serializer | None) -> Serializer:
    """Return the serializer a ``result_serializer`` option asks for.

    Args:
        spec: ``None`` (pickle), a name (``"pickle"``, ``"json"``, ``"compressed/pickle"``,
            ``"compressed/json"``), or a ``Serializer`` (registered by name if it is new, so
            this process can load what it writes).

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
        TypeError: ``spec`` is neither a name nor a ``Serializer``.
    """
    if spec is None:
        return PICKLE
    if isinstance(spec, str):
        return serializer_named(spec)
    if isinstance(spec, Serializer):
        if spec.name not in _NAMED:
            register_serializer(spec)
        return spec
    raise TypeError(
        f"result_serializer must be a name ({', '.join(_BUILT_IN)}) or a Serializer, "
        f"not {type(spec).__name__}"
    )


PICKLE = PickleSerializer()
JSON = JSONSerializer()

_NAMED_LOCK = threading.Lock()
_NAMED: dict[str, Serializer] = {"pickle": PICKLE, "json": JSON}
_NAMED["compressed/pickle"] = CompressedSerializer(PICKLE)
_NAMED["compressed/json"] = CompressedSerializer(JSON)
_BUILT_IN = tuple(_NAMED)
