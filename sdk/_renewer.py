"""Keeping a lease alive while a block runs: one daemon thread renewing it at a steady pace."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from overcast.core.errors import OvercastError

logger = logging.getLogger("overcast.leases")


class Renewer:
    """Calls ``renew`` every ``every_s`` seconds on a daemon thread until ``stop()``.

    A renewal that fails (an ``OvercastError``: the lease was lost, or the control plane did
    not answer) is logged, naming ``what``, and ends the renewing: the lease then lapses.

    Args:
        renew: renews the lease once.
        every_s: the pause between renewals (a third of the lease, so one miss is survived).
        what: the lease, as the warning names it.
        name: the thread's name.
    """

    def __init__(self, renew: Callable[[], object], every_s: float, what: str, *, name: str) -> None:
        self._renew = renew
        self._every_s = every_s
        self._what = what
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._every_s):
            try:
                self._renew()
            except OvercastError:
                logger.warning("could not renew %s: it will lapse", self._what, exc_info=True)
                return

    def stop(self) -> None:
        """Stop renewing (the lease is left as it is) and wait for the thread."""
        self._stopped.set()
        self._thread.join()
