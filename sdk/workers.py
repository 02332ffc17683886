"""The pull worker: for work pools of type ``process``, on machines you run yourself.

``overcast worker start --pool NAME`` heartbeats (so the pool is READY while it lives), asks
the control plane for the pool's due runs, claims each with a version-guarded transition to
PENDING (two workers never both take a run), and executes it in a subprocess
(``overcast flow-run execute ID``), at most ``limit`` at once. A run whose subprocess dies is
left RUNNING for the tick to reap (Crashed, then its retry policy).

Each poll also reads the state of every run it started that is still in progress. A run found
CANCELLING is usually stopped by its own engine (which ends it Cancelled and runs its hooks);
if its subprocess is still alive ``CANCEL_GRACE_S`` later, the worker terminates it (then kills
it), and ends the run Cancelled itself if the subprocess could not.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from overcast.core.errors import OvercastError
from overcast.core.orchestration import Decision
from overcast.core.states import Cancelled, Pending, StateType

if TYPE_CHECKING:
    from overcast.client import Client

logger = logging.getLogger("overcast.worker")

CANCEL_GRACE_S = 10.0
"""Seconds a cancelled run's subprocess has to stop by itself before the worker terminates it."""
KILL_AFTER_S = 10.0
"""Seconds a terminated subprocess has to exit before the worker kills it."""
_CANCELLING = (StateType.CANCELLING, StateType.CANCELLED)


class Worker:
    """Polls one pool and runs its flow runs in subprocesses.

    Args:
        client: the control plane.
        pool: the work pool's name.
        name: this worker's name (default: host and process id).
        queues: the pool's queues to take runs from (default: all).
        limit: the most runs at once.
        poll_s: seconds between polls (and heartbeats).
    """

    def __init__(
        self,
        client: Client,
        pool: str,
        *,
        name: str | None = None,
        queues: list[str] | None = None,
        limit: int = 4,
        poll_s: float = 2.0,
    ) -> None:
        self.client, self.pool, self.queues = client, pool, queues
        self.name = name or f"{socket.gethostname().lower()}-{os.getpid()}"[:100].replace(".", "-")
        self.limit, self.poll_s = limit, poll_s
        self.running: dict[uuid.UUID, subprocess.Popen[bytes]] = {}
        self._cancelling: dict[uuid.UUID, float] = {}  # run -> when it was found cancelled (monotonic)

    def poll(self) -> list[uuid.UUID]:
        """One round: heartbeat, stop cancelled runs, reap finished subprocesses, claim and start due runs.

        Returns:
            The runs started.
        """
        self.client.send_worker_heartbeat(self.pool, self.name, queues=self.queues)
        self._stop_cancelled()
        for run_id, process in list(self.running.items()):
            if process.poll() is not None:
                del self.running[run_id]
                if self._cancelling.pop(run_id, None) is not None:
                    self._end_cancelled(run_id)
        room = self.limit - len(self.running)
        if room <= 0:
            return []
        started = []
        due = self.client.get_scheduled_flow_runs(
            self.pool, work_queue_names=self.queues, scheduled_before=datetime.now(UTC), limit=room
        )
        for run in due:
            answer = self.client.set_flow_run_state(run.id, Pending(message=f"claimed by worker {self.name}"))
            if answer.status is not Decision.ACCEPT:
                continue  # another worker took it, or a concurrency limit holds it back
            self.running[run.id] = subprocess.Popen(
                [sys.executable, "-m", "overcast.infra.cli", "flow-run", "execute", str(run.id)]
            )
            started.append(run.id)
        return started

    def _stop_cancelled(self) -> None:
        """Read each run in progress (one read a run a poll); stop the subprocesses of cancelled ones."""
        now = time.monotonic()
        for run_id, process in self.running.items():
            if run_id not in self._cancelling:
                try:
                    state = self.client.read_flow_run(run_id).state
                except OvercastError:
                    logger.warning("worker %s could not read flow run %s", self.name, run_id, exc_info=True)
                    continue
                if state.type not in _CANCELLING:
                    continue
                logger.info("flow run %s is %s: its process stops", run_id, state.name)
                self._cancelling[run_id] = now
            if process.poll() is not None:
                continue  # reaped next
            waited = now - self._cancelling[run_id]
            if waited >= CANCEL_GRACE_S + KILL_AFTER_S:
                process.kill()
            elif waited >= CANCEL_GRACE_S:
                process.terminate()

    def _end_cancelled(self, run_id: uuid.UUID) -> None:
        """End a cancelled run whose subprocess is gone Cancelled, unless its engine did."""
        try:
            if self.client.read_flow_run(run_id).state.type is StateType.CANCELLING:
                self.client.set_flow_run_state(
                    run_id, Cancelled(f"worker {self.name} stopped the run's process")
                )
        except OvercastError:
            logger.exception("worker %s could not end cancelled flow run %s", self.name, run_id)

    def run(self, stop: threading.Event, *, before_poll: Callable[[], object] | None = None) -> None:
        """Poll until ``stop`` is set; then wait for the runs in progress to end.

        Args:
            stop: set it to stop.
            before_poll: called before each poll (``serve`` schedules its deployments there).
        """
        while not stop.is_set():
            if before_poll is not None:
                before_poll()
            try:
                for run_id in self.poll():
                    logger.info("worker %s started flow run %s", self.name, run_id)
            except OvercastError:
                logger.exception("worker %s could not poll pool %s; trying again", self.name, self.pool)
            stop.wait(self.poll_s)
        for process in self.running.values():
            process.wait()
