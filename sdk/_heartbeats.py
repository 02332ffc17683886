"""The heartbeat thread: vouching for the flow runs this process runs, and noticing their cancellation.

One daemon thread per process renews the lease of each top-level flow run in progress (the
reaper judges a run by it) and reads each run's state every ``CANCEL_CHECK_S``: a run found
CANCELLING is stopped through the callback its engine registered.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from overcast.core.orchestration import RUN_LEASE_S
from overcast.core.states import StateType

if TYPE_CHECKING:
    from overcast.client import Client

logger = logging.getLogger("overcast.engine")

CANCEL_CHECK_S = 3.0
"""How often a running flow run's state is read to notice its cancellation (seconds)."""


@dataclass(slots=True)
class _Watch:
    client: Client
    on_cancel: Callable[[], None] | None
    beat_at: float  # time.monotonic() of the next heartbeat
    check_at: float  # ... and of the next state read


class _Heartbeats:
    """One thread per process vouching for the top-level flow runs it is running, and watching them.

    The first heartbeat goes a third of a lease after a run starts, so a short run writes
    none (the reaper judges a run without one by its start time); then one every third of a
    lease while the run goes on. Every ``CANCEL_CHECK_S`` the thread reads each run's state, and
    calls the run's ``on_cancel`` once when it finds it CANCELLING (or already CANCELLED). A run
    shorter than that costs no read; with no run in progress the thread sleeps.
    """

    def __init__(self, lease_s: float = RUN_LEASE_S) -> None:
        self.lease_s = lease_s
        self._runs: dict[uuid.UUID, _Watch] = {}
        self._cond = threading.Condition(threading.Lock())
        self._wake_at = math.inf  # when the thread wakes next (inf: it waits for a run)
        self._thread: threading.Thread | None = None

    def add(self, run_id: uuid.UUID, client: Client, on_cancel: Callable[[], None] | None = None) -> None:
        now = time.monotonic()
        watch = _Watch(
            client, on_cancel, now + self.lease_s / 3, now + CANCEL_CHECK_S if on_cancel else math.inf
        )
        with self._cond:
            self._runs[run_id] = watch
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="overcast-heartbeat", daemon=True)
                self._thread.start()
            elif min(watch.beat_at, watch.check_at) < self._wake_at:
                self._cond.notify()

    def discard(self, run_id: uuid.UUID) -> None:
        with self._cond:
            self._runs.pop(run_id, None)

    def _run(self) -> None:
        while True:
            for run_id, watch, beat, check in self._due():
                if beat:
                    try:
                        watch.client.heartbeat_flow_run(run_id, self.lease_s)
                    except Exception:  # the next beat tries again; the lease covers two misses
                        logger.warning("could not heartbeat flow run %s", run_id, exc_info=True)
                if check and watch.on_cancel is not None:
                    self._check(run_id, watch)

    def _due(self) -> list[tuple[uuid.UUID, _Watch, bool, bool]]:
        """Wait until a run's heartbeat or state read is due; return those due, rescheduled."""
        with self._cond:
            while True:
                now = time.monotonic()
                self._wake_at = min(
                    (min(w.beat_at, w.check_at) for w in self._runs.values()), default=math.inf
                )
                if self._wake_at > now:
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
                due = []
                for run_id, watch in self._runs.items():
                    beat, check = watch.beat_at <= now, watch.check_at <= now
                    if beat:
                        watch.beat_at = now + self.lease_s / 3
                    if check:
                        watch.check_at = now + CANCEL_CHECK_S
                    if beat or check:
                        due.append((run_id, watch, beat, check))
                return due

    def _check(self, run_id: uuid.UUID, watch: _Watch) -> None:
        try:
            state = watch.client.read_flow_run(run_id).state
        except Exception:  # the next check tries again
            logger.warning("could not read the state of flow run %s", run_id, exc_info=True)
            return
        if state.type in (StateType.CANCELLING, StateType.CANCELLED) and watch.on_cancel is not None:
            logger.info("flow run %s is %s: stopping it", run_id, state.name)
            watch.check_at = math.inf
            on_cancel, watch.on_cancel = watch.on_cancel, None
            on_cancel()


_heartbeats = _Heartbeats()
