"""What flows and tasks share: state-hook decorators, running an async hook, and ``with_options``."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

R = TypeVar("R")


def call_hook(hook: Callable[..., Any], *args: Any) -> None:
    """Call a hook with ``args``; an ``async`` one runs to completion before this returns."""
    returned = hook(*args)
    if returned is not None and inspect.isawaitable(returned):
        run_to_completion(returned)


def run_to_completion(awaitable: Awaitable[R]) -> R:
    """Run an awaitable (an async hook's) to completion from sync code; return its result.

    With no event loop running on this thread, it runs in a new one here. Inside a running loop
    (the hooks of an async task), that loop cannot be re-entered: it runs in a new loop on a
    short-lived thread, in a copy of this context, and this thread waits for it, as it would
    for a sync hook.
    """

    async def main() -> R:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="overcast-hook") as pool:
        return pool.submit(context.run, asyncio.run, main()).result()


class HookedCallable:
    """The base of ``Flow`` and ``Task``: hook registration and option copies.

    A subclass keeps its hooks in ``on_<kind>_hooks`` lists and says, in ``options()``, which
    keyword arguments rebuild it.
    """

    fn: Callable[..., Any]
    on_completion_hooks: list[Callable[..., Any]]
    on_failure_hooks: list[Callable[..., Any]]
    on_running_hooks: list[Callable[..., Any]]

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this object from its function."""
        raise NotImplementedError

    def with_options(self, **changes: Any) -> Self:
        """A copy with some options changed (any keyword the constructor takes).

        Raises:
            TypeError: an option this kind of object does not have.
        """
        options = self.options()
        unknown = set(changes) - set(options)
        if unknown:
            raise TypeError(f"with_options() got unknown options: {sorted(unknown)}")
        return type(self)(self.fn, **{**options, **changes})

    def _add_hook(self, kind: str, hook: Callable[..., Any]) -> Callable[..., Any]:
        getattr(self, f"on_{kind}_hooks").append(hook)
        return hook

    def on_completion(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: add a completion hook."""
        return self._add_hook("completion", hook)

    def on_failure(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: add a failure hook."""
        return self._add_hook("failure", hook)

    def on_running(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: add a running hook."""
        return self._add_hook("running", hook)
