"""``@task``: a function whose calls are tracked as task runs, retried, timed and hooked.

Prefect 3's options and call styles: call it (on the caller's thread), ``submit`` it (a future),
``map`` it over iterables; sync, async, generator and async generator functions; inside a flow
or on its own.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import random
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from overcast import _task_engine as engine
from overcast._options import HookedCallable, call_hook
from overcast.futures import FutureList, OvercastFuture, allow_failure, quote, unmapped

if TYPE_CHECKING:
    from overcast._records import TaskRunRecord
    from overcast.core.states import State
    from overcast.futures import OvercastDistributedFuture

__all__ = [
    "Task",
    "allow_failure",
    "exponential_backoff",
    "quote",
    "task",
    "unmapped",
]

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger("overcast.tasks")

RetryDelay = float | int | list[float] | Callable[[int], list[float]]
MAX_RETRY_DELAYS = 50


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Retry delays that double: ``backoff_factor * 2**n`` before retry ``n`` (0-based).

    Use as ``retry_delay_seconds=exponential_backoff(10)``: 10 s, 20 s, 40 s …
    """

    def delays(retries: int) -> list[float]:
        return [backoff_factor * 2**n for n in range(retries)]

    return delays


class Task(HookedCallable, Generic[P, R]):
    """A task: wraps a function so that each call is a tracked task run.

    Args:
        fn: the function (sync, async, generator or async generator).
        name: the task's name (default: the function's name).
        description: a description (default: the docstring).
        version: a version string.
        tags: tags of every run.
        retries: retries after a failed attempt.
        retry_delay_seconds: the pause before each retry: a number, a list (indexed by retry,
            the last repeating; at most 50), or a callable of the retry count returning a list
            (``exponential_backoff``).
        retry_jitter_factor: spread each pause uniformly within ``±factor`` of itself.
        retry_condition_fn: ``(task, task_run, state) -> bool``; false stops retrying.
        timeout_seconds: fail the attempt (TimedOut) when it runs longer.
        task_run_name: a ``str.format`` template over the parameters, or a callable.
        log_prints: send ``print`` to the run's log (default: the flow's setting).
        on_completion, on_failure, on_running: hooks ``(task, task_run, state)``, plain or
            ``async`` (run to completion); a hook's exception is logged, never raised.
        persist_result: store the result (and a record of the run under its cache key);
            default: when a cache policy, a ``cache_key_fn``, a ``result_storage`` or a
            ``result_serializer`` is given, or the flow persists.
        result_storage: where results go: a blob store URL (``s3://bucket/prefix``,
            ``file:///path``), a ``ResultStore``; default the flow's, else the settings' store.
        result_serializer: ``"pickle"`` (default), ``"json"``, ``"compressed/pickle"``,
            ``"compressed/json"`` or a ``Serializer``.
        cache_policy: how the cache key is computed (``INPUTS``, ``TASK_SOURCE``, ``RUN_ID``,
            ``FLOW_PARAMETERS``, ``NO_CACHE``, combined with ``+``/``-``); default ``DEFAULT``.
        cache_key_fn: ``(context, parameters) -> str | None``, instead of a policy.
        cache_expiration: how long a recorded result counts (a ``timedelta``).
        refresh_cache: run even when a record exists, and replace it.
        on_commit, on_rollback: hooks ``(transaction)`` run when the run's transaction commits
            or rolls back (rollbacks newest first).
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        tags: Iterable[str] | None = None,
        retries: int = 0,
        retry_delay_seconds: RetryDelay = 0,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        timeout_seconds: float | None = None,
        task_run_name: str | Callable[..., str] | None = None,
        log_prints: bool | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_running: list[Callable[..., Any]] | None = None,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: Any = None,
        cache_policy: Any = None,
        cache_key_fn: Callable[..., str | None] | None = None,
        cache_expiration: timedelta | None = None,
        refresh_cache: bool | None = None,
        on_commit: list[Callable[..., Any]] | None = None,
        on_rollback: list[Callable[..., Any]] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task needs a function, not {type(fn).__name__}")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if retry_jitter_factor is not None and retry_jitter_factor < 0:
            raise ValueError("retry_jitter_factor must be 0 or more")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "task")
        self.description = description if description is not None else inspect.getdoc(fn)
        self.version = version
        self.tags = sorted(set(tags or ()))
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_jitter_factor = retry_jitter_factor
        self.retry_condition_fn = retry_condition_fn
        self.timeout_seconds = timeout_seconds
        self.task_run_name = task_run_name
        self.log_prints = log_prints
        self.on_completion_hooks = list(on_completion or [])
        self.on_failure_hooks = list(on_failure or [])
        self.on_running_hooks = list(on_running or [])
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        self.cache_policy = cache_policy
        self.cache_key_fn = cache_key_fn
        self.cache_expiration = cache_expiration
        self.refresh_cache = refresh_cache
        self.on_commit_hooks = list(on_commit or [])
        self.on_rollback_hooks = list(on_rollback or [])
        # Asked for a cache explicitly: results persist unless persist_result says otherwise.
        self.caches = cache_key_fn is not None or (
            cache_policy is not None and not _is_no_cache(cache_policy)
        )
        # Persists unless persist_result says otherwise: it caches, or says where results go.
        self.persists_by_default = self.caches or result_storage is not None or result_serializer is not None
        # Runs in a transaction of its own (checked on every call: keep it one attribute).
        self.transactional = bool(
            self.persists_by_default or persist_result or self.on_commit_hooks or self.on_rollback_hooks
        )
        self.is_async = inspect.iscoroutinefunction(fn)
        self.is_generator = inspect.isgeneratorfunction(fn)
        self.is_async_generator = inspect.isasyncgenfunction(fn)
        self.task_key = _task_key(fn)
        self._delays = self._resolve_delays()
        self._signature: inspect.Signature | None = None
        self._plain: dict[str, Any] | None = None
        self._names: tuple[str, ...] | None = None  # a plain signature's names, in order
        self.persistence: Any = None  # the engine's cache of what its runs persist (``_caching``)
        self.__doc__ = self.description
        self.__wrapped__ = fn

    # -- calling --------------------------------------------------------------------------------

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def __call__(self, *args: Any, return_state: bool = ..., wait_for: Any = ..., **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        """Run the task now, on this thread, and return its result (or its state)."""
        if self.is_generator:
            return engine.run_generator(self, args, kwargs, wait_for)
        if self.is_async_generator:
            return engine.run_async_generator(self, args, kwargs, wait_for)
        if self.is_async:
            return engine.run_async(self, args, kwargs, return_state, wait_for)
        return engine.run_sync(self, args, kwargs, return_state, wait_for)

    @overload
    def submit(
        self, *args: Any, return_state: Literal[False] = ..., wait_for: Any = ..., **kwargs: Any
    ) -> OvercastFuture[R]: ...

    @overload
    def submit(
        self, *args: Any, return_state: Literal[True], wait_for: Any = ..., **kwargs: Any
    ) -> State: ...

    def submit(
        self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any
    ) -> OvercastFuture[R] | State:
        """Run the task on the flow run's task runner; return its future at once.

        With ``return_state=True``, wait for the run and return its final state instead (a
        failed run's state is returned, not raised).
        """
        if self.is_generator or self.is_async_generator:
            raise TypeError(f"generator task {self.name!r} cannot be submitted; call it and iterate")
        future = engine.submit(self, args, kwargs, wait_for)
        return engine.final_state(future) if return_state else future

    @overload
    def map(
        self, *args: Any, return_state: Literal[False] = ..., wait_for: Any = ..., **kwargs: Any
    ) -> FutureList[R]: ...

    @overload
    def map(
        self, *args: Any, return_state: Literal[True], wait_for: Any = ..., **kwargs: Any
    ) -> list[State]: ...

    def map(
        self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any
    ) -> FutureList[R] | list[State]:
        """Submit one task run per element of the iterable arguments (zipped).

        Arguments wrapped in ``unmapped`` or ``quote`` — and non-iterable ones — go whole to
        every run. A future argument is waited for and its result used (mapped over, if it is
        iterable). Under ``allow_failure``, each run gets its item under ``allow_failure``.

        Args:
            return_state: wait for every run and return their final states, in order.
            wait_for: futures every run waits for.

        Raises:
            ValueError: no iterable argument, or iterables of different lengths.
            UpstreamTaskError: a future argument's run did not complete (not under ``allow_failure``).
        """
        bound = {**{i: a for i, a in enumerate(args)}, **kwargs}
        iterables: dict[int | str, list[Any]] = {}
        whole: dict[int | str, Any] = {}
        for key, value in bound.items():
            items, whole[key] = _split_mapped(value)
            if items is not None:
                iterables[key] = items
        if not iterables:
            raise ValueError(f"{self.name}.map() needs at least one iterable argument")
        lengths = {len(v) for v in iterables.values()}
        if len(lengths) > 1:
            raise ValueError(f"{self.name}.map() got iterables of different lengths: {sorted(lengths)}")
        futures: FutureList[R] = FutureList()
        for i in range(lengths.pop()):
            call = {k: (iterables[k][i] if k in iterables else whole[k]) for k in bound}
            positional = tuple(call[k] for k in range(len(args)))
            named = {k: v for k, v in call.items() if isinstance(k, str)}
            futures.append(engine.submit(self, positional, named, wait_for))
        if return_state:
            return [engine.final_state(f) for f in futures]
        return futures

    # -- background runs (task workers) --------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> OvercastDistributedFuture[R]:
        """Queue a run of the task for a task worker and return its future at once.

        The task does not run here: its run is created Scheduled, its arguments are persisted
        (pickled, so any picklable value goes), and a worker serving the task
        (``overcast task-worker module:task``, ``task.serve()``) runs it, in any process that
        shares this process's settings. ``future.result(timeout=…)`` waits for the run and
        returns its result (or raises its exception). Works inside a flow too; the run is not
        part of the flow run's graph.

        Raises:
            TypeError: a generator task, or arguments the function does not take.
        """
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        wait_for: Iterable[OvercastDistributedFuture[Any]] | None = None,
    ) -> OvercastDistributedFuture[R]:
        """Queue a run of the task for a task worker (``delay`` with its arguments given whole).

        Args:
            args: the positional arguments.
            kwargs: the keyword arguments.
            wait_for: futures of background runs that must complete first; the worker holds
                the run back until they are over, and fails it (``UpstreamTaskError``) if one
                did not complete. Futures of background runs may be arguments too: the
                worker passes their results.

        Raises:
            TypeError: a generator task, arguments the function does not take, or the future of
                a run submitted in this process (``.submit()``) among the arguments.
        """
        from overcast._background import schedule

        return schedule(self, tuple(args or ()), dict(kwargs or {}), wait_for)

    def serve(self, *, limit: int = 10, timeout: float | None = None) -> None:
        """Run this task's background runs in this process until Ctrl-C (``overcast.task_worker.serve``).

        Args:
            limit: the most runs at once.
            timeout: stop after this many seconds (``None``: until interrupted).
        """
        from overcast.task_worker import serve

        serve(self, limit=limit, timeout=timeout)

    # -- options and hooks ------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this task from its function."""
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "tags": self.tags,
            "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds,
            "retry_jitter_factor": self.retry_jitter_factor,
            "retry_condition_fn": self.retry_condition_fn,
            "timeout_seconds": self.timeout_seconds,
            "task_run_name": self.task_run_name,
            "log_prints": self.log_prints,
            "on_completion": self.on_completion_hooks,
            "on_failure": self.on_failure_hooks,
            "on_running": self.on_running_hooks,
            "persist_result": self.persist_result,
            "result_storage": self.result_storage,
            "result_serializer": self.result_serializer,
            "cache_policy": self.cache_policy,
            "cache_key_fn": self.cache_key_fn,
            "cache_expiration": self.cache_expiration,
            "refresh_cache": self.refresh_cache,
            "on_commit": self.on_commit_hooks,
            "on_rollback": self.on_rollback_hooks,
        }

    def on_commit(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: add a hook ``(transaction)`` run when the run's transaction commits."""
        self.transactional = True
        return self._add_hook("commit", hook)

    def on_rollback(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: add a hook ``(transaction)`` run when the run's transaction rolls back."""
        self.transactional = True
        return self._add_hook("rollback", hook)

    # -- for the engine -----------------------------------------------------------------------------

    def run_name(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The run's name from ``task_run_name`` and the call's parameters."""
        template = self.task_run_name
        if callable(template):
            return str(template())
        assert template is not None
        try:
            return template.format(**self.parameters(args, kwargs))
        except (KeyError, IndexError) as exc:
            raise ValueError(
                f"task_run_name {template!r} names {exc}, which is not a parameter of {self.name}"
            ) from None

    def parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied."""
        names = self._names
        if names is not None and len(args) == len(names) and not kwargs:
            return dict(zip(names, args, strict=True))  # every parameter given by position: the usual call
        if self._signature is None:
            self._signature = inspect.signature(self.fn)
            self._plain = _plain_parameters(self._signature)
            self._names = tuple(self._plain) if self._plain is not None else None
        plain = self._plain
        # A plain signature (named parameters only) called validly binds without inspect (µs).
        if plain is not None and len(args) <= len(plain) and not (kwargs.keys() - plain.keys()):
            names = list(plain)
            bound = dict(zip(names, args, strict=False))
            if not (kwargs.keys() & bound.keys()):
                bound.update(kwargs)
                for name in names[len(args) :]:
                    if name not in bound:
                        if plain[name] is inspect.Parameter.empty:
                            break  # a missing argument: inspect says which
                        bound[name] = plain[name]
                else:
                    return {name: bound[name] for name in names}
        call = self._signature.bind(*args, **kwargs)
        call.apply_defaults()
        return dict(call.arguments)

    def retry_delay(self, record: TaskRunRecord, exc: BaseException) -> float | None:
        """The pause before retrying after attempt ``record.run_count`` failed; ``None``: no retry."""
        if record.run_count > self.retries:
            return None
        if self.retry_condition_fn is not None:
            try:
                if not self.retry_condition_fn(self, self._task_run_model(record), record.state()):
                    return None
            except Exception:
                logger.exception("retry_condition_fn of task %r raised; not retrying", self.name)
                return None
        delay = self._delays[min(record.run_count - 1, len(self._delays) - 1)] if self._delays else 0.0
        if self.retry_jitter_factor:
            spread = delay * self.retry_jitter_factor
            delay = max(0.0, random.uniform(delay - spread, delay + spread))  # noqa: S311
        return delay

    def run_hooks(self, hooks: list[Callable[..., Any]], record: TaskRunRecord, **outcome: Any) -> None:
        """Call state hooks (an async one runs to completion); a hook's exception is logged, never raised."""
        task_run = self._task_run_model(record)
        state = record.state()
        state.attach(outcome.get("value"), outcome.get("exception"))
        for hook in hooks:
            try:
                call_hook(hook, self, task_run, state)
            except Exception:
                logger.exception("hook %s of task %r raised", getattr(hook, "__name__", hook), self.name)

    def _task_run_model(self, record: TaskRunRecord) -> Any:
        from overcast.core.models import TaskRun

        return TaskRun.model_validate(record.document()["task_run"])

    def _resolve_delays(self) -> list[float]:
        spec = self.retry_delay_seconds
        if callable(spec):
            spec = spec(self.retries)
        delays = [float(spec)] if isinstance(spec, int | float) else [float(d) for d in spec]
        if len(delays) > MAX_RETRY_DELAYS:
            raise ValueError(f"retry_delay_seconds may list at most {MAX_RETRY_DELAYS} delays")
        if any(d < 0 for d in delays):
            raise ValueError("retry delays must be 0 or more")
        return delays

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a process-pool or Dask worker) without the engine's caches of this process."""
        state = dict(self.__dict__)
        state["persistence"] = None
        return state

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


def _plain_parameters(signature: inspect.Signature) -> dict[str, Any] | None:
    """Parameter name -> default (``Parameter.empty``: none), when all are positional-or-keyword."""
    params = signature.parameters.values()
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params}


def _is_no_cache(policy: Any) -> bool:
    from overcast.cache_policies import NO_CACHE

    return policy is NO_CACHE


def _task_key(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    digest = hashlib.blake2b(code.co_code if code else repr(fn).encode(), digest_size=4).hexdigest()
    return f"{getattr(fn, '__qualname__', 'task')}-{digest}"


def _split_mapped(value: Any, failures_allowed: bool = False) -> tuple[list[Any] | None, Any]:
    """A ``map`` argument as ``(items, None)`` to iterate over, or ``(None, value)`` for every run."""
    if isinstance(value, allow_failure):
        items, whole = _split_mapped(value.value, failures_allowed=True)
        if items is not None:
            return [allow_failure(item) for item in items], None
        return None, allow_failure(whole)
    if isinstance(value, unmapped):
        return None, value.value
    if isinstance(value, quote):
        return None, value  # the engine unwraps it without looking inside
    if isinstance(value, OvercastFuture):
        value = _mapped_future_result(value, failures_allowed)
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        return None, value
    return list(value), None


def _mapped_future_result(future: OvercastFuture[Any], failures_allowed: bool) -> Any:
    """What ``map`` does with a future argument: wait for it and use its result."""
    future.wait()
    if not failures_allowed and not future.state.is_completed():
        raise engine.UpstreamTaskError(
            f"map() was given the future of task run {future.task_run_id}, which is {future.state.name}",
            upstream_task_run_id=future.task_run_id,
        )
    return future.result(raise_on_failure=False)


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...


@overload
def task(**options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(__fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """Make a function a task: ``@task`` or ``@task(retries=3, ...)`` (options of ``Task``)."""
    if __fn is not None:
        return Task(__fn, **options)
    return lambda fn: Task(fn, **options)
