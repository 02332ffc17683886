"""Capped, fully jittered exponential backoff for throttled backend calls.

One policy for every adapter: a call the backend refuses for load is retried after a random
pause in ``[0, min(cap, base * 2**attempt)]`` (AWS's "full jitter"), and surfaces as
``ThrottledError`` when the attempts run out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from overcast.core.errors import ThrottledError

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """A retry policy: ``attempts`` tries in all, pauses jittered up to ``min(cap_s, base_s * 2**n)``."""

    attempts: int = 8
    base_s: float = 0.05
    cap_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep

    def pause(self, attempt: int) -> float:
        """Return the (random) pause before retry number ``attempt`` (0-based)."""
        return random.uniform(0, min(self.cap_s, self.base_s * (2**attempt)))  # noqa: S311

    def run(self, call: Callable[[], T], *, is_throttle: Callable[[BaseException], bool], what: str) -> T:
        """Run ``call``, retrying while it raises an error ``is_throttle`` accepts.

        Raises:
            ThrottledError: still throttled after ``attempts`` tries (chained to the last error).
        """
        for attempt in range(self.attempts):
            try:
                return call()
            except Exception as exc:
                if not is_throttle(exc):
                    raise
                if attempt == self.attempts - 1:
                    raise ThrottledError(f"{what} was throttled", attempts=self.attempts) from exc
                self.sleep(self.pause(attempt))
        raise AssertionError("unreachable")  # pragma: no cover


DEFAULT_BACKOFF = Backoff()
