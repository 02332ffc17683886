"""The tick: the control plane's periodic sweep, with no always-on server to do it otherwise.

In the cloud an EventBridge schedule invokes ``overcast.handlers.aws.tick.handler`` every
minute; on a laptop ``overcast dev`` runs it in a loop. Each tick, in order:

1. schedules due runs of deployments (idempotently: two ticks racing make each run once);
2. marks Late the scheduled runs that missed their start by more than ``late_after``;
3. reaps runs whose runner stopped heartbeating (Crashed, then their retry policy);
4. sweeps work pools, queues and workers, announcing status changes as events;
5. closes the proactive automation windows that ended, firing those that missed their events,
   and runs again the actions of firings whose process died before they finished;
6. pushes due runs of push pools to their queue or function, and resends stale ones.

Every step is safe to run twice at once and to skip: a missed tick delays, never loses.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from overcast.core import keys
from overcast.core.orchestration import Decision
from overcast.core.services._listing import list_partition
from overcast.core.services.leases import DEFAULT_LEASE_S
from overcast.core.states import Late, StateType, utcnow

if TYPE_CHECKING:
    from overcast.core.services import ControlPlane

LATE_AFTER = timedelta(seconds=15)
"""A scheduled run this far past its start time is Late (Prefect's default)."""


@dataclass
class TickReport:
    """What one tick did (run ids as text, for logs and the API)."""

    scheduled: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    firings: list[str] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready counts and ids."""
        return {name: list(value) for name, value in self.__dict__.items()}


class Tick:
    """Runs the sweeps over one control plane.

    Args:
        plane: the control plane.
        clock: the current time (injected for tests).
        late_after: how late a scheduled run may be before it is marked Late.
        reap_after: how long a running run that never heartbeat may go before it is reaped
            (a heartbeating run is reaped when its lease lapses).
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        clock: Callable[[], datetime] = utcnow,
        late_after: timedelta = LATE_AFTER,
        reap_after: timedelta = timedelta(seconds=DEFAULT_LEASE_S),
    ) -> None:
        self._plane = plane
        self._clock = clock
        self._late_after = late_after
        self._reap_after = reap_after

    def run(self, *, horizon: timedelta | None = None, max_runs: int | None = None) -> TickReport:
        """One tick: schedule, mark late, reap, sweep, fire proactive triggers, dispatch (see the module docstring)."""
        plane, now = self._plane, self._clock()
        report = TickReport()
        made = plane.scheduler.schedule(now, horizon=horizon, max_runs=max_runs)
        report.scheduled = [str(run.id) for run in made.created]
        report.late = [str(run_id) for run_id in self.mark_late(now)]
        report.crashed = [
            str(run_id) for run_id in plane.leases.reap(grace_s=self._reap_after.total_seconds())
        ]
        report.events = [event.event for event in plane.work_pools.sweep(now)]
        fired = plane.automations.evaluate_proactive(now) + plane.automations.resume_unfinished(now)
        report.firings = [str(firing.id) for firing in fired]
        pushed = plane.dispatcher.dispatch_due()
        report.dispatched = [str(run_id) for run_id in pushed.sent]
        report.resent = [str(run_id) for run_id in pushed.resent]
        return report

    def mark_late(self, now: datetime, *, limit: int = 500) -> list[uuid.UUID]:
        """Mark Late every scheduled run more than ``late_after`` past its start; return their ids."""
        items, _ = list_partition(
            self._plane.store,
            keys.flow_runs_by_state(StateType.SCHEDULED),
            index="gsi1",
            sort_attr="gsi1sk",
            high=keys.ts(now - self._late_after) + "#~",
            limit=limit,
            keep=lambda item: item["run"]["state"].get("name") not in ("Late", "AwaitingRetry"),
        )
        marked = []
        for item in items:
            run = item["run"]
            scheduled = run["state"].get("details", {}).get("scheduled_time") or run["expected_start_time"]
            run_id = uuid.UUID(run["id"])
            late = Late(datetime.fromisoformat(scheduled), message="the run missed its start time")
            if self._plane.flow_runs.set_state(run_id, late).status is Decision.ACCEPT:
                marked.append(run_id)
        return marked
