"""Cache policies: how a task run's cache key is computed (Prefect 3's ``cache_policies``).

A policy turns a task call into a key, or into ``None`` for "do not cache". Two runs with the
same key share one committed result: the second is a cache hit. Policies combine with ``+``
and leave arguments out with ``-``::

    INPUTS + TASK_SOURCE + RUN_ID       # DEFAULT: cached per flow run (retries, resumes)
    INPUTS + TASK_SOURCE                # cached across runs, until the code changes
    (INPUTS - "client") + TASK_SOURCE   # ignore an argument that is not data
    NO_CACHE                            # never cached

Keys are the first 32 hex digits (128 bits) of a sha256: short enough for any store key,
and stable across processes, machines and runs (see ``_hashing``: canonical JSON, pydantic
for datetimes, UUIDs and models, cloudpickle bytes for the rest). An input none of these can
encode raises ``CacheKeyError``, which names it.

Differences from Prefect: a compound key is ``None`` as soon as one part is (Prefect drops
``None`` parts), so ``NO_CACHE`` anywhere, or ``RUN_ID`` outside a flow run, means no caching
(Prefect's ``RUN_ID`` falls back to the task run's id there, which caches nothing either).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overcast._hashing import KEY_LENGTH, CacheKeyError, digest, hash_values, source_hash

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "KEY_LENGTH",
    "NONE",
    "NO_CACHE",
    "RUN_ID",
    "TASK_SOURCE",
    "CacheKeyContext",
    "CacheKeyError",
    "CacheKeyFnPolicy",
    "CachePolicy",
    "CompoundCachePolicy",
    "FlowParameters",
    "Inputs",
    "NoCache",
    "RunId",
    "TaskSource",
    "hash_values",
    "source_hash",
    "task_input_hash",
]


@dataclass(slots=True)  # not frozen: one is built per cached call, and frozen fields cost µs to set
class CacheKeyContext:
    """What a cache policy (and a ``cache_key_fn``) may look at besides the inputs.

    The counterpart of the ``context`` Prefect passes to ``cache_key_fn(context, parameters)``.

    Attributes:
        task_key: the task's stable key (qualified name and a hash of its code).
        task_name: the task's name.
        fn: the task's function.
        flow_run_id: the flow run the task runs in (``None`` outside a flow).
        task_run_id: the task run's id (``None`` before it has one).
        parameters: the call's bound arguments (the same mapping the policy gets as ``inputs``).
        task: the ``Task`` object, when the engine has it (Prefect's ``context.task``).
        task_run: the engine's task-run record, when it has one (Prefect's ``context.task_run``).
    """

    task_key: str
    task_name: str
    fn: Callable[..., Any]
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    task: Any = None
    task_run: Any = None


class CachePolicy:
    """The base of cache policies: ``compute_key``, ``+`` to combine, ``-`` to leave out an input."""

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> str | None:
        """Return the cache key of a task call, or ``None`` when it must not be cached.

        Args:
            context: the task and run the call belongs to.
            inputs: the call's arguments by parameter name (defaults applied).
            flow_parameters: the flow run's parameters (empty outside a flow).

        Raises:
            CacheKeyError: an input the policy looks at cannot be hashed.
        """
        raise NotImplementedError

    def __add__(self, other: CachePolicy) -> CachePolicy:
        """Combine two policies: the key covers both (``NO_CACHE`` with anything is ``NO_CACHE``)."""
        if not isinstance(other, CachePolicy):
            return NotImplemented
        if isinstance(self, NoCache) or isinstance(other, NoCache):
            return NO_CACHE
        parts: list[CachePolicy] = []
        for policy in (self, other):
            for part in policy.policies if isinstance(policy, CompoundCachePolicy) else (policy,):
                if part not in parts:
                    parts.append(part)
        return parts[0] if len(parts) == 1 else CompoundCachePolicy(tuple(parts))

    def __sub__(self, name: str) -> CachePolicy:
        """Leave the argument ``name`` out of the key (a no-op for policies that ignore inputs)."""
        if not isinstance(name, str):
            return NotImplemented
        return self  # only policies that look at inputs have anything to leave out


@dataclass(frozen=True)
class Inputs(CachePolicy):
    """The task's arguments, minus ``exclude`` (``INPUTS - "name"`` builds one)."""

    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = (self.exclude,) if isinstance(self.exclude, str) else self.exclude
        object.__setattr__(self, "exclude", tuple(sorted(set(names))))  # Prefect passes a list

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> str:
        """Hash the arguments (all but the excluded ones).

        Raises:
            CacheKeyError: an argument can be neither JSON-encoded nor pickled.
        """
        if self.exclude:
            inputs = {k: v for k, v in inputs.items() if k not in self.exclude}
        return hash_values(inputs)

    def __sub__(self, name: str) -> CachePolicy:
        """Return the policy that also leaves out the argument ``name``."""
        if not isinstance(name, str):
            return NotImplemented
        return self if name in self.exclude else Inputs((*self.exclude, name))


@dataclass(frozen=True)
class TaskSource(CachePolicy):
    """The task function's source text (its bytecode when the source is unavailable)."""

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> str:
        """Hash the task function's source (computed once per function)."""
        return source_hash(context.fn)


@dataclass(frozen=True)
class FlowParameters(CachePolicy):
    """The flow run's parameters."""

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> str:
        """Hash the flow run's parameters.

        Raises:
            CacheKeyError: a parameter can be neither JSON-encoded nor pickled.
        """
        return hash_values(flow_parameters, kind="flow parameter")


@dataclass(frozen=True)
class RunId(CachePolicy):
    """The flow run's id: results are reused within one flow run (its retries and resumes)."""

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> str | None:
        """Return the flow run's id as hex, or ``None`` outside a flow run (no caching)."""
        run_id: Any = context.flow_run_id
        if run_id is None:
            return None
        if type(run_id) is int:  # the engine's integer ids: the same text as the UUID's .hex
            return f"{run_id:032x}"
        return run_id.hex if isinstance(run_id, uuid.UUID) else str(run_id)


@dataclass(frozen=True)
class NoCache(CachePolicy):
    """No key: the task is never cached, and any compound that includes it is not either."""

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> None:
        """Return ``None``."""


@dataclass(frozen=True)
class CompoundCachePolicy(CachePolicy):
    """Several policies at once (``a + b``): the key hashes all their keys.

    The key is ``None`` as soon as one part's key is. The parts' keys are sorted before
    hashing, so ``a + b`` and ``b + a`` give the same key.
    """

    policies: tuple[CachePolicy, ...] = ()

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> str | None:
        """Hash the parts' keys; ``None`` when any part says not to cache.

        Raises:
            CacheKeyError: a part could not hash its inputs.
        """
        keys = []
        for policy in self.policies:
            key = policy.compute_key(context, inputs, flow_parameters)
            if key is None:
                return None
            keys.append(key)
        keys.sort()
        return digest("\x1f".join(keys).encode("utf-8", "surrogatepass"))

    def __sub__(self, name: str) -> CachePolicy:
        """Leave ``name`` out of every ``Inputs`` part (a no-op when there is none)."""
        if not isinstance(name, str):
            return NotImplemented
        return CompoundCachePolicy(tuple(p - name if isinstance(p, Inputs) else p for p in self.policies))


@dataclass(frozen=True)
class CacheKeyFnPolicy(CachePolicy):
    """A user's ``cache_key_fn(context, parameters) -> str | None`` (Prefect's signature)."""

    cache_key_fn: Callable[[CacheKeyContext, dict[str, Any]], str | None]

    def compute_key(
        self, context: CacheKeyContext, inputs: dict[str, Any], flow_parameters: dict[str, Any]
    ) -> str | None:
        """Return what the function returns (``None``: do not cache).

        Raises:
            TypeError: the function returned something other than a string or ``None``.
            ValueError: it returned an empty string.
        """
        key = self.cache_key_fn(context, inputs)
        if key is None or (type(key) is str and key):
            return key
        name = getattr(self.cache_key_fn, "__qualname__", repr(self.cache_key_fn))
        if isinstance(key, str):
            raise ValueError(f"cache_key_fn {name} returned an empty key; return None to skip caching")
        raise TypeError(f"cache_key_fn {name} must return a str or None, not {type(key).__name__}")


INPUTS = Inputs()
TASK_SOURCE = TaskSource()
FLOW_PARAMETERS = FlowParameters()
RUN_ID = RunId()
NO_CACHE = NoCache()
NONE = NO_CACHE  # Prefect's other name for it
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID


def task_input_hash(context: CacheKeyContext, arguments: dict[str, Any]) -> str | None:
    """Prefect's ready-made ``cache_key_fn``: the task's key, its code and its arguments.

    Returns ``None`` (no caching) when an argument cannot be hashed, as Prefect's does.
    """
    try:
        return digest(
            "\x1f".join((context.task_key, source_hash(context.fn), hash_values(arguments))).encode()
        )
    except CacheKeyError:
        return None
