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
import threading
import time
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


class OvercastDistributedFuture(OvercastFuture[R]):
    """The future of a background task run (``task.delay``), run by a task worker anywhere.

    It holds only the task run's id: it reads the run from the control plane (first every
    10 ms, backing off to once a second) until the run is over, then loads the result the
    worker persisted. It pickles as its id, so it can be passed to another background task
    (the worker resolves it there).

    Args:
        task_run_id: the task run's id.
        client: the control plane to read it from (default: the process's).
    """

    def __init__(self, task_run_id: uuid.UUID, client: Any = None) -> None:
        self._task_run_id = task_run_id
        self._client = client
        self._final: State | None = None  # the terminal state, once seen (it never changes)
        self._loaded: tuple[Any, BaseException | None] | None = None
        self._watcher: cf.Future[None] | None = None

    @property
    def task_run_id(self) -> uuid.UUID:
        """The task run's id."""
        return self._task_run_id

    @property
    def state(self) -> State:
        """The task run's current state, read from the control plane (Scheduled until a worker takes it)."""
        if self._final is not None:
            return self._final
        state = self._read().state
        if state.is_final():
            self._final = state
        return state

    def done(self) -> bool:
        """Whether the task run is over (completed, failed, cancelled or crashed)."""
        return self.state.is_final()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the task run is over, or ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL_S
        while not self.done():
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, _LAST_POLL_S)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """Return the task's result, waiting for the run to end.

        Args:
            timeout: seconds to wait; ``TimeoutError`` when the run is not over by then.
            raise_on_failure: raise the task's exception when the run failed (else return it).
                The worker persists the exception; when it cannot be loaded here (its class
                is not importable, say), a ``RunFailedError`` with the run's message stands in.

        Raises:
            TimeoutError: the run did not end within ``timeout`` seconds.
            ResultNotFoundError: the persisted result is gone from its storage.
        """
        self.wait(timeout)
        if not self.done():
            raise TimeoutError(f"task run {self.task_run_id} did not finish within {timeout} seconds")
        value, exception = self._outcome()
        if exception is None:
            return value  # type: ignore[no-any-return]
        if raise_on_failure:
            raise exception
        return exception  # type: ignore[return-value]

    def _outcome(self) -> tuple[Any, BaseException | None]:
        """The finished run's result, or its exception, loaded once from what the worker persisted."""
        if self._loaded is None:
            from overcast.core.states import RunFailedError
            from overcast.results import is_result_reference, load_result

            state = self.state
            reference = state.data if is_result_reference(state.data) else None
            if state.is_completed():
                self._loaded = (load_result(reference) if reference else state.data, None)
            else:
                exception = None
                if reference:
                    try:
                        exception = load_result(reference)
                    except Exception:  # its class is not importable here, or the blob is gone
                        exception = None
                if not isinstance(exception, BaseException):
                    exception = RunFailedError(
                        state.message or f"task run {self.task_run_id} is {state.name}"
                    )
                self._loaded = (None, exception)
        return self._loaded

    def add_done_callback(self, fn: Callable[[OvercastFuture[R]], None]) -> None:
        """Call ``fn(self)`` once the task run is over (a background thread watches it)."""
        self._future.add_done_callback(lambda _f: fn(self))

    @property
    def _future(self) -> cf.Future[None]:  # type: ignore[override]
        # What ``wait`` and ``as_completed`` (this module's) wait on: a thread that polls.
        if self._watcher is None:
            watcher: cf.Future[None] = cf.Future()
            self._watcher = watcher

            def watch() -> None:
                try:
                    self.wait()
                except BaseException as exc:
                    watcher.set_exception(exc)
                else:
                    watcher.set_result(None)

            threading.Thread(target=watch, name=f"overcast-watch-{self.task_run_id}", daemon=True).start()
        return self._watcher

    def _read(self) -> Any:
        if self._client is None:
            from overcast._runtime import get_runtime

            self._client = get_runtime().client
        return self._client.read_task_run(self._task_run_id)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its task run's id: the process that loads it reads the run from its own client."""
        return {"task_run_id": self._task_run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._task_run_id, self._client = state["task_run_id"], None
        self._final, self._loaded, self._watcher = None, None, None

    def __repr__(self) -> str:
        return f"OvercastDistributedFuture(task_run_id={self.task_run_id})"


_FIRST_POLL_S = 0.01
_LAST_POLL_S = 1.0
