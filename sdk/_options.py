"""What flows and tasks share: state-hook decorators and ``with_options``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self


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
