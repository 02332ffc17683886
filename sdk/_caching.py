"""What a task run's transaction needs: its cache key, where its result goes, how long it counts.

Prefect 3's rules, with one difference (a policy's key is scoped to its task): a task persists its result when ``persist_result`` says so, or (left unset)
when it asks for a cache (a cache policy other than ``NO_CACHE``, or a ``cache_key_fn``), says
where results go (``result_storage``, ``result_serializer``), or its flow persists results. A persisting run is recorded under the key its cache policy computes
(``DEFAULT``: inputs, task source, flow run id), so a retried flow run redoes only what did not
complete. Results go to the task's ``result_storage``, else the flow's, else the settings' blob
store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from overcast.cache_policies import DEFAULT, CacheKeyContext, CacheKeyFnPolicy, CachePolicy

if TYPE_CHECKING:
    from overcast._records import TaskRunRecord
    from overcast._runtime import Runtime
    from overcast.context import FlowRunContext
    from overcast.results import ResultStore
    from overcast.tasks import Task


@dataclass(slots=True)
class Plan:
    """A task run's persistence: ``store`` None means nothing is persisted."""

    key: str | None = None
    refresh: bool = False
    expires_at: datetime | None = None
    store: ResultStore | None = None
    result_key: str = ""

    def persist(self, value: Any) -> dict[str, Any] | None:
        """Persist ``value`` and return its reference (``None`` when nothing is persisted)."""
        if self.store is None:
            return None
        return self.store.persist(self.result_key, value)


_NOTHING = Plan()


def plan(
    task: Task[..., Any],
    record: TaskRunRecord,
    runtime: Runtime,
    flow_ctx: FlowRunContext | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Plan:
    """The persistence plan of one run of ``task`` with these arguments.

    Raises:
        CacheKeyError: an input the cache policy cannot hash (the message names it).
    """
    flow = flow_ctx.flow if flow_ctx is not None else None  # None in a process-pool worker too
    persist = task.persist_result
    if persist is None:
        persist = task.persists_by_default or bool(flow is not None and flow.persist_result)
    if not persist:
        return _NOTHING
    default_storage = runtime.settings.blobs_url
    fixed: _Fixed | None = task.persistence
    if fixed is None or fixed.flow is not flow or fixed.default_storage != default_storage:
        fixed = task.persistence = _fixed(task, flow, default_storage)
    inputs = task.parameters(args, kwargs)
    context = CacheKeyContext(
        task_key=task.task_key,
        task_name=task.name,
        fn=task.fn,
        flow_run_id=flow_ctx.flow_run.id if flow_ctx is not None else None,
        task_run_id=record.id,
        parameters=inputs,
        task=task,
        task_run=record,
    )
    key = fixed.policy.compute_key(context, inputs, flow_ctx.parameters if flow_ctx is not None else {})
    if key is not None and fixed.scope is not None:
        # A policy's key is scoped to its task: two tasks called with the same inputs under
        # INPUTS never answer for each other (Prefect's keys are not scoped). A cache_key_fn's
        # key is the user's to share, e.g. with a transaction of the same key.
        key = f"{fixed.scope}/{key}"
    expires_at = datetime.now(UTC) + task.cache_expiration if task.cache_expiration is not None else None
    return Plan(
        key=key,
        refresh=bool(task.refresh_cache),
        expires_at=expires_at,
        store=fixed.store,
        result_key=key or record.text,
    )


@dataclass(slots=True, frozen=True)
class _Fixed:
    """What every run of a task in one flow shares: its key policy, scope and result store."""

    flow: Any
    default_storage: str
    policy: CachePolicy
    scope: str | None  # ``None``: the key is a cache_key_fn's, used as it is
    store: ResultStore


def _fixed(task: Task[..., Any], flow: Any, default_storage: str) -> _Fixed:
    if task.cache_key_fn is not None:
        policy: CachePolicy = CacheKeyFnPolicy(task.cache_key_fn)
        scope = None
    else:
        policy = task.cache_policy or DEFAULT
        fn = task.fn  # the task's name in its module: stable across code changes (TASK_SOURCE covers those)
        scope = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', task.name)}"
    return _Fixed(flow, default_storage, policy, scope, result_store(task, flow, default_storage))


_stores: dict[tuple[Any, Any], ResultStore] = {}


def result_store(task: Task[..., Any], flow: Any, default_storage: str) -> ResultStore:
    """The result store of ``task`` (in ``flow``): its own storage and serializer, else the flow's,
    else ``default_storage`` (the runtime's blob store) and pickle. Built once per combination."""
    storage = (
        task.result_storage if task.result_storage is not None else getattr(flow, "result_storage", None)
    )
    serializer = task.result_serializer or getattr(flow, "result_serializer", None)
    return store_for(storage, serializer, default_storage)


def store_for(storage: Any, serializer: Any, default_storage: str) -> ResultStore:
    """The result store of ``storage`` (a URL, a blob store or a ``ResultStore``; ``None``:
    ``default_storage``) and ``serializer`` (``None``: pickle). Built once per combination."""
    from overcast.results import ResultStore

    if isinstance(storage, ResultStore):
        return storage
    spec = (storage if storage is not None else default_storage, serializer)
    try:
        return _stores[spec]
    except KeyError:
        store = _stores[spec] = ResultStore(*spec)
        return store
    except TypeError:  # an unhashable serializer or storage: nothing to remember it by
        return ResultStore(*spec)
