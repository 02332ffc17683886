"""Stable hashing for cache keys: of named values (a task's inputs) and of a function's source.

Stable means the same in every process, on every machine, in every run: Python's ``hash`` is
salted per process, so it is never used. Values are encoded as canonical JSON by orjson
(sorted keys; sets sorted by their elements' encodings), with datetimes, UUIDs, enums and
dataclasses as orjson writes them, pydantic models, decimals, paths and the like through
pydantic (tagged with their type, so ``Decimal("1")`` is not ``"1"``), and anything else
through the sha256 of its cloudpickle bytes. A key is the first ``KEY_LENGTH`` (32) hex
digits of a sha256: 128 bits, short enough for any store key.

The common case, arguments that are ints, strings, lists and dicts of them, is one orjson
call and one sha256: about a microsecond.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from functools import partial
from types import CodeType
from typing import Any

import orjson
import pydantic_core
from pydantic import BaseModel

from overcast.core.errors import OvercastError

KEY_LENGTH = 32  # hex digits of sha256 kept: 128 bits
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_SOURCE_ATTR = "__overcast_source_hash__"
_SOURCE_HASHES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


class CacheKeyError(OvercastError, ValueError):
    """Raised when an input cannot be hashed into a cache key (a lock, a socket, a generator …).

    Attributes:
        argument: the argument's (or flow parameter's) name.
        type_name: the argument's type.
        culprit: the type inside it that could not be hashed (the argument's own type when
            the argument itself is the problem).
    """

    def __init__(self, argument: str, type_name: str, culprit: str, *, kind: str = "argument") -> None:
        self.argument, self.type_name, self.culprit = argument, type_name, culprit
        inner = "" if culprit == type_name else f" holding a {culprit}"
        super().__init__(
            f"cannot compute a cache key: {kind} {argument!r} (a {type_name}{inner}) can be "
            f'neither JSON-encoded nor pickled; leave it out with cache_policy=INPUTS - "{argument}" '
            "(plus whatever else the key should cover), or compute the key with cache_key_fn"
        )


def digest(data: bytes) -> str:
    """Return the key of ``data``: the first ``KEY_LENGTH`` hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:KEY_LENGTH]


def hash_values(values: Mapping[str, Any], *, kind: str = "argument") -> str:
    """Return the stable key of named values (a task's arguments, a flow's parameters).

    Args:
        values: the values by name.
        kind: what to call a value in an error message.

    Raises:
        CacheKeyError: a value can be neither JSON-encoded nor pickled; the message names it.
    """
    try:
        # The common case in one C call: JSON-native values, and the rest through _canonical.
        return digest(orjson.dumps(values, default=_canonical, option=_OPTIONS))
    except orjson.JSONEncodeError:
        pass
    # One value defeats orjson as a whole (an int over 64 bits, a tuple dict key, a cycle, a
    # value nothing can encode): encode value by value, to pickle what JSON cannot take and
    # to name the culprit.
    parts: dict[str, Any] = {}
    for name, value in values.items():
        try:
            parts[name] = orjson.Fragment(orjson.dumps(value, default=_canonical, option=_OPTIONS))
        except orjson.JSONEncodeError as exc:
            unhashable = _unhashable_cause(exc)
            if unhashable is not None:
                raise CacheKeyError(
                    name, _type_name(value), unhashable.type_name, kind=kind
                ) from unhashable.__cause__
            try:
                parts[name] = ["pickle", _pickle_digest(value)]
            except _UnhashableError as err:
                raise CacheKeyError(name, _type_name(value), err.type_name, kind=kind) from err.__cause__
    return digest(b"\x00" + orjson.dumps(parts, option=_OPTIONS))


class _UnhashableError(Exception):
    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(type_name)


def _unhashable_cause(exc: BaseException) -> _UnhashableError | None:
    # orjson chains what ``default`` raised as __cause__, once per nesting level (sets nest).
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _UnhashableError):
            return seen
        seen = seen.__cause__
    return None


def _canonical(value: Any) -> Any:
    # orjson's fallback for what it does not encode itself; each result is tagged with the
    # value's type, so that e.g. Decimal("1") and "1" differ.
    cls = type(value)
    if cls is set or cls is frozenset:
        # A set iterates in an order that depends on the process's string-hash salt.
        items = sorted(orjson.dumps(item, default=_canonical, option=_OPTIONS) for item in value)
        return [cls.__name__, [orjson.Fragment(item) for item in items]]
    if isinstance(value, BaseModel):
        return [_type_name(value), value.model_dump()]  # python mode: sets inside reach us again
    if cls is bytes or cls is bytearray:
        return [cls.__name__, value.hex()]
    # pydantic would drain an iterator to encode it, eating the caller's generator or file.
    if not isinstance(value, Iterator | AsyncIterator):
        try:
            return [_type_name(value), pydantic_core.to_jsonable_python(value)]
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
            pass
    return ["pickle", _pickle_digest(value)]


def _pickle_digest(value: Any) -> str:
    import cloudpickle  # only for values JSON cannot take: keep it off the import path

    try:
        return hashlib.sha256(cloudpickle.dumps(value, protocol=5)).hexdigest()
    except Exception as exc:  # __reduce__ of user types may raise anything
        raise _UnhashableError(_innermost_unpicklable(value)) from exc


def _innermost_unpicklable(value: Any) -> str:
    # Name the part that cannot be pickled (the lock inside the dict), not just the container.
    import cloudpickle

    children: Iterable[Any] = ()
    if isinstance(value, Mapping):
        children = list(value.values())
    elif isinstance(value, list | tuple | set | frozenset):
        children = list(value)
    for child in children:
        try:
            cloudpickle.dumps(child)
        except Exception:
            return _innermost_unpicklable(child)
    return _type_name(value)


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


# -- task source ----------------------------------------------------------------------------------


def source_hash(fn: Callable[..., Any]) -> str:
    """Return the stable hash of a function's source text, computed once per function.

    The hash is kept on the function itself (so it travels with the function when cloudpickle
    ships it to a worker that has no source file) or, for objects that take no attributes, in
    a weak map. Without source (a REPL, ``exec``), the code object's bytecode and constants
    stand in; without a code object, the qualified name.
    """
    try:
        cached = getattr(fn, _SOURCE_ATTR)
    except AttributeError:
        pass
    else:
        if type(cached) is str:
            return cached
    try:
        return _SOURCE_HASHES[fn]
    except (KeyError, TypeError):
        pass
    key = _compute_source_hash(fn)
    target = fn.__func__ if inspect.ismethod(fn) else fn
    try:
        setattr(target, _SOURCE_ATTR, key)
    except (AttributeError, TypeError):
        # Neither attributes nor weak references (a builtin): recompute each time.
        with contextlib.suppress(TypeError):
            _SOURCE_HASHES[fn] = key
    return key


def _compute_source_hash(fn: Callable[..., Any]) -> str:
    target: Any = fn
    while isinstance(target, partial):
        target = target.func
    if not (inspect.isroutine(target) or inspect.isclass(target)) and callable(target):
        target = type(target)  # a callable object: its class holds the code
    try:
        return digest(inspect.getsource(target).encode("utf-8", "surrogatepass"))
    except (OSError, TypeError):
        pass
    code = getattr(inspect.unwrap(target), "__code__", None)
    if isinstance(code, CodeType):
        return digest(b"\x01" + _code_bytes(code))
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or repr(target)
    return digest(f"\x02{module}.{name}".encode())


def _code_bytes(code: CodeType) -> bytes:
    # Nested code objects (inner functions, comprehensions) print with their memory address,
    # so recurse into them instead of using repr.
    consts = [_code_bytes(c) if isinstance(c, CodeType) else repr(c).encode() for c in code.co_consts]
    return b"\x1f".join([code.co_code, *consts, repr(code.co_names).encode()])
