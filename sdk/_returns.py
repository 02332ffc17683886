"""What a flow's return value says about its final state, as in Prefect 3.

A plain value completes the run. A returned state is the final state; a returned future stands
for its task run's final state; a list, tuple, set or dict of states or futures completes the
run when all of them completed ("All states completed."), else fails it ("1/3 states failed.").
Subflows called with ``wait_for`` learn here whether an upstream run failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from overcast._task_engine import final_state
from overcast.core.states import Cancelled, Completed, Failed, State, StateType
from overcast.futures import OvercastFuture

MAX_INLINE_RESULT = 4096  # bytes of JSON: a larger result is not copied into the final state

DECIDING = (State, OvercastFuture, list, tuple, set, dict)
"""What a flow may return to decide its own final state; any other value completes the run."""


def upstream_failure(wait_for: Iterable[Any]) -> str | None:
    """Wait for the runs in ``wait_for``; say which one did not complete (``None``: all did)."""
    for item in wait_for:
        if isinstance(item, OvercastFuture):
            item.wait()
            state = item.state
            if not state.is_completed():
                return f"upstream task run {item.task_run_id} is {state.name}"
        elif isinstance(item, State) and not item.is_completed():
            return f"an upstream run is {item.name}"
    return None


DECIDING = (State, OvercastFuture, list, tuple, set, dict)
_FAILING = (StateType.FAILED, StateType.CRASHED)


def decided(result: Any) -> tuple[State, Any, BaseException | None]:
    """The final state a flow's return value decides, the flow's result, and its exception.

    As in Prefect 3: a returned state is the run's final state (its type, name and message);
    a returned future stands for its task run's final state, and its result is the flow's. A
    list, tuple, set or dict holding states or futures completes the run when all of them
    completed, with the futures replaced by their results; else the run fails
    ("1/3 states failed.") and raises the first failure's exception.
    """
    if isinstance(result, State | OvercastFuture):
        state, _ = _settled(result)
        if not state.is_final():
            return Failed(f"the flow returned a {state.name} state, which is not final"), None, None
        if state.is_completed():
            value = state.result()
            return Completed(small_json(value), name=state.name, message=state.message), value, None
        exception = state.result(raise_on_failure=False)
        return State(type=state.type, name=state.name, message=state.message), None, exception
    items = result.values() if isinstance(result, dict) else result
    settled = [_settled(item) if isinstance(item, State | OvercastFuture) else (None, item) for item in items]
    states = [state for state, _ in settled if state is not None]
    if not states:
        return Completed(small_json(result)), result, None
    unfinished = [state for state in states if not state.is_completed()]
    if not unfinished:
        value = _rebuilt(result, [value for _, value in settled])
        return Completed(small_json(value), message="All states completed."), value, None
    total = len(states)
    cancelled = sum(state.is_cancelled() for state in states)
    failed = sum(state.type in _FAILING for state in states)
    if cancelled:
        proposed = Cancelled(f"{cancelled}/{total} states cancelled.")
    elif failed:
        proposed = Failed(f"{failed}/{total} states failed.")
    else:
        proposed = Failed(f"{len(unfinished)}/{total} states are not final.")
    first = next((state for state in unfinished if state.is_final()), None)
    return proposed, None, first.result(raise_on_failure=False) if first is not None else None


def _rebuilt(result: Any, resolved: list[Any]) -> Any:
    """``resolved`` in the shape of the collection ``result`` (a list for a list subclass)."""
    if isinstance(result, dict):
        return dict(zip(result, resolved, strict=True))
    if isinstance(result, tuple):
        return tuple(resolved)
    if isinstance(result, set):
        try:
            return set(resolved)
        except TypeError:  # results that cannot be in a set
            return resolved
    return resolved


def _settled(item: State | OvercastFuture[Any]) -> tuple[State, Any]:
    """A returned state as itself; a returned future as its task run's final state and its result."""
    if isinstance(item, State):
        return item, item
    state = final_state(item)  # the runner has finished it: no wait
    return state, state.result(raise_on_failure=False)


def small_json(result: Any) -> Any:
    """The result as JSON when it is small and JSON-able (shown with the run); else ``None``."""
    if result is None or isinstance(result, bool | int | float | str):
        return result if not isinstance(result, str) or len(result) <= MAX_INLINE_RESULT else None
    try:
        text = json.dumps(result)
    except (TypeError, ValueError):
        return None
    return json.loads(text) if len(text) <= MAX_INLINE_RESULT else None
