"""The scheduler: makes the runs deployments' schedules call for, a window ahead, idempotently.

What the tick function calls (every minute or so, from EventBridge Scheduler, Cloud Scheduler
or ``overcast dev``); nothing runs in between, so runs are made ahead of time: for each active
schedule of each active deployment, the occurrences in ``[now, now + horizon)``, at most
``max_runs`` of them (the schedule's own ``max_scheduled_runs`` when it has one).

Idempotent: a run's idempotency key names the deployment, the schedule and the time
(``scheduled <deployment> <schedule> <time>``), so two ticks racing, or a tick repeated, make
each run once. A run is made only from the version of the deployment it was computed from (a
condition in the run's creating transaction): a deployment paused or changed meanwhile gets
no run from the old settings.

Cheap when nothing is due: each schedulable deployment has a due item (``keys.deployment_due``)
saying when the scheduler must next look at it: when the earliest run it made starts (if it
made as many as it may, the next may be made then), or when the next occurrence enters the
horizon; within a day at the latest. A tick reads only the due items that are due. Changing,
pausing or resuming a deployment makes it due at once. Times missed while no tick ran are not
made up for: a tick schedules from ``now`` on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from overcast.core import keys
from overcast.core.deployments import Deployment, DeploymentSchedule, TickResult
from overcast.core.errors import (
    ConditionFailedError,
    InvalidValueError,
    NotFoundError,
)
from overcast.core.models import FlowRun
from overcast.core.ports import Check, Item, KeyValueStore
from overcast.core.schedules import occurrences
from overcast.core.schemas import FlowRunCreate
from overcast.core.services.deployments import Deployments, due_item, run_request, scheduled_run_key
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.states import utcnow

logger = logging.getLogger("overcast.scheduler")

DEFAULT_HORIZON = timedelta(days=1)
"""How far ahead runs are made by default."""
DEFAULT_MAX_RUNS = 10
"""How many runs of one schedule are kept ahead by default."""
RECHECK = timedelta(days=1)
"""The longest a schedulable deployment goes without being looked at."""
LOOKAHEAD = timedelta(days=3660)


class Scheduler:
    """Makes the runs that deployments' schedules call for.

    Args:
        store: the key-value store.
        deployments: the deployments service.
        flow_runs: where runs are made.
        clock: the current time (injected for tests).
        horizon: how far ahead ``schedule`` makes runs unless told otherwise.
        max_runs: how many runs per schedule it keeps ahead unless told otherwise.
    """

    def __init__(
        self,
        store: KeyValueStore,
        deployments: Deployments,
        flow_runs: FlowRuns,
        *,
        clock: Callable[[], datetime] = utcnow,
        horizon: timedelta = DEFAULT_HORIZON,
        max_runs: int = DEFAULT_MAX_RUNS,
    ) -> None:
        self._store = store
        self._deployments = deployments
        self._flow_runs = flow_runs
        self._clock = clock
        self.horizon = horizon
        self.max_runs = max_runs

    def schedule(
        self,
        now: datetime | None = None,
        *,
        horizon: timedelta | None = None,
        max_runs: int | None = None,
        deployment_ids: Sequence[uuid.UUID] | None = None,
    ) -> TickResult:
        """Make the runs due within ``horizon`` of ``now`` for every deployment that is due.

        Args:
            now: the tick's time (the clock's when omitted).
            horizon: how far ahead to make runs.
            max_runs: the most runs per schedule to keep ahead.
            deployment_ids: look at these deployments now, due or not (after a deploy).

        Returns:
            How many deployments were looked at, the runs made (each run is reported by the
            one tick that made it), and how many deployments were left for a later tick.
        """
        now = now or self._clock()
        horizon = horizon or self.horizon
        max_runs = max_runs or self.max_runs
        if horizon <= timedelta(0) or max_runs < 1:
            raise InvalidValueError("the horizon must be positive and max_runs at least 1")
        ids = list(deployment_ids) if deployment_ids is not None else self._due(now)
        result = TickResult()
        for deployment_id in ids:
            result.deployments += 1
            try:
                result.created += self._schedule_one(deployment_id, now, horizon, max_runs)
            except (ConditionFailedError, NotFoundError):
                result.skipped += 1  # changed or deleted under us: the change made it due again
            except Exception:
                logger.exception("scheduling deployment %s failed; the next tick tries again", deployment_id)
                result.skipped += 1
        return result

    def _due(self, now: datetime) -> list[uuid.UUID]:
        ids: list[uuid.UUID] = []
        high = keys.ts(now) + "#~"
        for shard in range(keys.SHARDS):
            cursor = None
            while True:
                page = self._store.query(
                    keys.due_index(shard), index="gsi1", sk_range=(None, high), cursor=cursor, limit=500
                )
                ids += [uuid.UUID(item["deployment_id"]) for item in page.items]
                if (cursor := page.cursor) is None:
                    break
        return ids

    def _schedule_one(
        self, deployment_id: uuid.UUID, now: datetime, horizon: timedelta, max_runs: int
    ) -> list[FlowRun]:
        meta = self._store.get(*keys.deployment(deployment_id))
        due_key = keys.deployment_due(deployment_id)
        due = self._store.get(*due_key)
        if meta is None:
            if due is not None:
                self._store.delete(*due_key, if_version=int(due["v"]))
            return []
        deployment = Deployment.model_validate(meta["deployment"])
        if not deployment.schedulable:
            if due is not None:
                self._store.delete(*due_key, if_version=int(due["v"]))
            return []
        guard = Check(*keys.deployment(deployment_id), version=int(meta["v"]))
        through: dict[str, str] = dict(due.get("through") or {}) if due else {}
        created: list[FlowRun] = []
        next_look = now + RECHECK
        for schedule in deployment.schedules:
            if not schedule.active:
                continue
            cap = schedule.max_scheduled_runs or max_runs
            times = occurrences(schedule.schedule, now, now + horizon, cap)
            done = through.get(str(schedule.id))
            for moment in times:
                if done is not None and keys.ts(moment) <= done:
                    continue
                run, new = self._flow_runs.create(
                    _request(deployment, schedule, moment), auto_scheduled=True, checks=[guard]
                )
                if new:
                    created.append(run)
            if times:
                through[str(schedule.id)] = max(done or "", keys.ts(times[-1]))
            next_look = min(next_look, _next_look(schedule, times, cap, now, horizon))
        self._save_due(deployment_id, due, next_look, through)
        return created

    def _save_due(
        self, deployment_id: uuid.UUID, due: Item | None, when: datetime, through: dict[str, str]
    ) -> None:
        item = due_item(deployment_id, when, through)
        try:
            if due is None:
                self._store.put(item, if_absent=True)
            else:
                self._store.put(item, if_version=int(due["v"]))
        except ConditionFailedError:
            pass  # changed meanwhile (a deploy made it due, or a racing tick saved it): theirs stands


def _request(deployment: Deployment, schedule: DeploymentSchedule, moment: datetime) -> FlowRunCreate:
    return run_request(
        deployment,
        parameters={**deployment.parameters, **schedule.parameters},
        when=moment,
        idempotency_key=scheduled_run_key(deployment.id, schedule.id, moment),
    )


def _next_look(
    schedule: DeploymentSchedule, times: list[datetime], cap: int, now: datetime, horizon: timedelta
) -> datetime:
    """When this schedule next needs a run made: its first run's start when it made all it may,
    else when its next occurrence past the window enters the horizon."""
    if len(times) >= cap:
        return times[0]
    following = occurrences(schedule.schedule, now + horizon, now + horizon + LOOKAHEAD, 1)
    return following[0] - horizon if following else now + RECHECK
