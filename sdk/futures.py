"""Futures of submitted task runs: wait for them, read their state and result, pass them on.

A future passed as an argument to another task (directly, or inside a list, tuple, set or
dict) is resolved to its result before that task runs; if its run did not complete, the task
does not run. Prefect's annotations change how an argument is passed on:

- ``unmapped(x)``: ``map`` gives ``x`` whole to every run instead of iterating over it;
- ``allow_failure(x)``: the task runs even when a run of a future in ``x`` failed, and gets
  that run's exception in its place;
- ``quote(x)``: ``x`` is passed as it is, never searched for futures (a large collection), and
  ``map`` does not iterate over it.
"""

from __future__ import annotations

import concurrent.futures as cf
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

if TYPE_CHECKING:
    from overcast._records import TaskRunRecord
    from overcast.core.states import State

R = TypeVar("R")
T = TypeVar("T")


class OvercastFuture(Generic[R]):
    """The future of one submitted task run.

    Attributes:
        task_run_id: the task run's id.
    """

    def __init__(self, record: TaskRunRecord, future: cf.Future[R]) -> None:
        self._record = record
        self._future = future

    @property
    def task_run_id(self) -> uuid.UUID:
        """The task run's id."""
        return self._record.id

    @property
    def state(self) -> State:
        """The task run's current state (Pending, Running, Completed, Failed …)."""
        return self._record.state()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the task run is finished, or ``timeout`` seconds pass."""
        cf.wait([self._future], timeout=timeout)

    def done(self) -> bool:
        """Whether the task run is finished."""
        return self._future.done()

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """Return the task's result, waiting for it.

        Args:
            timeout: seconds to wait; ``TimeoutError`` when the run is not finished by then.
            raise_on_failure: re-raise the task's exception (else return it).
        """
        try:
            return self._future.result(timeout=timeout)
        except Exception as exc:
            # concurrent.futures' timeout is the builtin TimeoutError, which a task may raise
            # too: only an unfinished future means that *waiting* timed out.
            if not self._future.done():
                raise TimeoutError(
                    f"task run {self.task_run_id} did not finish within {timeout} seconds"
                ) from None
            if raise_on_failure:
                raise
            return exc  # type: ignore[return-value]

    def add_done_callback(self, fn: Callable[[OvercastFuture[R]], None]) -> None:
        """Call ``fn(self)`` once the task run is finished."""
        self._future.add_done_callback(lambda _f: fn(self))

    def __repr__(self) -> str:
        return f"OvercastFuture(task_run_id={self.task_run_id}, state={self._record.state_type})"


class FutureList(list[OvercastFuture[R]]):
    """The futures ``map`` returns, with ``wait`` and ``result`` over all of them."""

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every task run is finished, or ``timeout`` seconds pass."""
        wait(self, timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """Every result, in order; the first failure is raised (unless ``raise_on_failure`` is false)."""
        return [f.result(timeout=timeout, raise_on_failure=raise_on_failure) for f in self]


class DoneAndNotDoneFutures(NamedTuple, Generic[R]):
    """What ``wait`` returns."""

    done: set[OvercastFuture[R]]
    not_done: set[OvercastFuture[R]]


def wait(futures: Iterable[OvercastFuture[R]], timeout: float | None = None) -> DoneAndNotDoneFutures[R]:
    """Wait until every future is finished, or ``timeout`` seconds pass; say which are done."""
    by_inner = {f._future: f for f in futures}
    done, not_done = cf.wait(list(by_inner), timeout=timeout)
    return DoneAndNotDoneFutures({by_inner[f] for f in done}, {by_inner[f] for f in not_done})


def as_completed(
    futures: Iterable[OvercastFuture[R]], timeout: float | None = None
) -> Iterator[OvercastFuture[R]]:
    """Yield the futures as their task runs finish (first finished first)."""
    by_inner = {f._future: f for f in futures}
    try:
        for inner in cf.as_completed(list(by_inner), timeout=timeout):
            yield by_inner[inner]
    except cf.TimeoutError:
        raise TimeoutError(f"not every task run finished within {timeout} seconds") from None


class _Annotation(Generic[T]):
    """An argument wrapped to say how it is passed on; ``value`` is what it wraps."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        """The wrapped value."""
        return self.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"


class unmapped(_Annotation[T]):  # noqa: N801 - Prefect's name
    """Wrap an argument of ``map`` that every mapped call receives whole (not iterated)."""

    __slots__ = ()


class allow_failure(_Annotation[T]):  # noqa: N801 - Prefect's name
    """Wrap an argument so that the task runs even when an upstream run in it did not complete.

    ``x`` may be a future or a collection holding futures. A future whose run failed is passed
    on as its exception (what ``future.result(raise_on_failure=False)`` returns); without
    ``allow_failure`` the task would not run (Pending, ``NotReady``). Given to ``map``, a
    collection of futures is iterated and each run gets its item under ``allow_failure``.
    """

    __slots__ = ()


class quote(_Annotation[T]):  # noqa: N801 - Prefect's name
    """Wrap an argument to pass it as it is: it is not searched for futures, nor mapped over.

    Use it for a large collection known to hold no futures (searching it costs time), or to
    hand on the futures themselves.
    """

    __slots__ = ()


_MARKED = (OvercastFuture, _Annotation)  # what sends an argument down the resolving path


def resolve(value: Any, failures_allowed: bool = False) -> Any:
    """Replace every future in ``value`` (recursing into lists, tuples, sets and dicts) by its result.

    Annotations are removed: ``quote``'s value is returned as it is; under ``allow_failure`` a
    failed run's exception takes its future's place (elsewhere it is raised).
    """
    if isinstance(value, OvercastFuture):
        return value.result(raise_on_failure=not failures_allowed)
    if isinstance(value, _Annotation):
        if isinstance(value, quote):
            return value.value
        return resolve(value.value, failures_allowed or isinstance(value, allow_failure))
    if isinstance(value, list):  # FutureList included: it resolves to a plain list
        return [resolve(v, failures_allowed) for v in value]
    if type(value) in (tuple, set):
        return type(value)(resolve(v, failures_allowed) for v in value)
    if type(value) is dict:
        return {k: resolve(v, failures_allowed) for k, v in value.items()}
    return value


def upstream_futures(value: Any) -> Iterator[OvercastFuture[Any]]:
    """The futures in ``value`` whose runs must complete first: all but those under ``allow_failure`` or ``quote``."""
    if isinstance(value, OvercastFuture):
        yield value
    elif isinstance(value, unmapped):
        yield from upstream_futures(value.value)
    elif isinstance(value, list) or type(value) in (tuple, set):
        for v in value:
            yield from upstream_futures(v)
    elif type(value) is dict:
        for v in value.values():
            yield from upstream_futures(v)


def contains_future(value: Any) -> bool:
    """Whether ``value`` holds a future or an annotation (the cheap check before ``resolve``)."""
    if isinstance(value, _MARKED):
        return True
    if isinstance(value, list) or type(value) in (tuple, set):
        return any(contains_future(v) for v in value)
    if type(value) is dict:
        return any(contains_future(v) for v in value.values())
    return False
