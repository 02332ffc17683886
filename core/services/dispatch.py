"""Push dispatch: a due flow run of a push pool becomes a queue message or a function invocation.

Prefect's deployments wait for a worker that polls; Overcast pushes. When a run of a push
pool is due (created for now by ``run_deployment``, or come due on its schedule, seen by the
tick), the dispatcher claims it — a version-guarded transition to PENDING, so two dispatchers
racing for one run send it once — and hands ``{"flow_run_id": …}`` to where the pool runs:

- ``queue`` pools: a message on the pool's queue (SQS or the local queue), deduplicated by the
  run's id where the queue supports it; the runner function consumes it;
- ``aws-lambda`` pools: an asynchronous invocation (``Event``) of the pool's function, through
  the Lambda Invoke API (AWS, or the local function host);
- ``gcp-functions`` pools: a CloudEvent (shaped as a Pub/Sub push) POSTed to the pool's function
  URL, from a background thread (the function answers when its run is over);
- ``process`` pools are pulled by their workers.

Delivery is at least once: a run left PENDING longer than ``stale_after`` (a lost message, a
failed invocation) is sent again by the tick; the runner's claim makes repeats harmless. The
concurrency limits of the deployment (ENQUEUE: the PENDING proposal waits) hold here too.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from overcast.core import keys
from overcast.core.errors import NotFoundError, OvercastError
from overcast.core.models import FlowRun
from overcast.core.orchestration import Decision
from overcast.core.ports import Invoker, KeyValueStore, Queue
from overcast.core.services._listing import list_partition
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.services.work_pools import WorkPools
from overcast.core.states import Pending, StateType, utcnow
from overcast.core.work_pools import (
    PUSH_TYPES,
    AwsLambdaConfig,
    GcpFunctionsConfig,
    QueueConfig,
    WorkPool,
    WorkPoolType,
)

logger = logging.getLogger("overcast.dispatch")

STALE_AFTER = timedelta(minutes=15)
"""A run PENDING this long after its dispatch is sent again (past Lambda's 15-minute limit)."""


@dataclass
class DispatchReport:
    """What one ``dispatch_due`` did."""

    sent: list[uuid.UUID] = field(default_factory=list)
    resent: list[uuid.UUID] = field(default_factory=list)  # PENDING too long: sent again


class Dispatcher:
    """Sends due runs of push pools to their queue or function.

    Args:
        store: the key-value store (for the PENDING runs to resend).
        flow_runs: the flow runs (claims are their transitions).
        work_pools: the pools (type, config, due runs).
        open_queue: opens the queue a URL names (``sqs://…``, ``local:///…``, ``memory://…``).
        open_invoker: opens the invoker a URL names (``lambda://?region=R&endpoint=URL``).
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        flow_runs: FlowRuns,
        work_pools: WorkPools,
        *,
        open_queue: Callable[[str], Queue] | None = None,
        open_invoker: Callable[[str], Invoker] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._flow_runs = flow_runs
        self._pools = work_pools
        self._open_queue = open_queue
        self._open_invoker = open_invoker
        self._clock = clock

    @property
    def can_push(self) -> bool:
        """Whether queues or functions were given (a control plane without them only pulls)."""
        return self._open_queue is not None or self._open_invoker is not None

    def dispatch(self, run: FlowRun) -> bool:
        """Claim ``run`` (PENDING) and send it, if its pool pushes and it is due; say whether it was sent.

        A run another dispatcher claimed, one that is not due, or one of a pull pool is left
        alone (``False``).
        """
        pool = self._pool_of(run)
        return pool is not None and self._claim_and_send(run, pool)

    def dispatch_due(self, *, limit: int = 100) -> DispatchReport:
        """Send every due run of every push pool, and resend runs PENDING too long (the tick calls it)."""
        report = DispatchReport()
        if not self.can_push:
            return report
        now = self._clock()
        pools = {pool.name: pool for pool in self._all_push_pools() if self._pushes(pool)}
        for pool in pools.values():
            for run in self._pools.next_runs(pool.name, before=now, limit=limit):
                if run.state.type is StateType.SCHEDULED and self._claim_and_send(run, pool):
                    report.sent.append(run.id)
        for run in self._stale_pending(now, limit):
            target = pools.get(run.work_pool_name or "")
            if target is not None and self._send(target, run.id, again=now):
                report.resent.append(run.id)
        return report

    # -- internals ----------------------------------------------------------------------------

    def _claim_and_send(self, run: FlowRun, pool: WorkPool) -> bool:
        if run.state.type is StateType.SCHEDULED:
            scheduled = run.state.details.scheduled_time
            if scheduled is not None and scheduled > self._clock():
                return False
            answer = self._flow_runs.set_state(
                run.id, Pending(message=f"dispatched to work pool {pool.name}")
            )
            if answer.status is not Decision.ACCEPT:
                return False  # claimed elsewhere, or told to wait (a concurrency limit)
        elif run.state.type is not StateType.PENDING:
            return False
        return self._send(pool, run.id)

    def _pool_of(self, run: FlowRun) -> WorkPool | None:
        """The push pool that sends ``run``, or ``None`` (no pool, a pull pool, paused, unconfigured)."""
        if run.work_pool_name is None or not self.can_push:
            return None
        try:
            pool = self._pools.get_pool(run.work_pool_name)
        except NotFoundError:
            logger.warning("flow run %s names work pool %r, which does not exist", run.id, run.work_pool_name)
            return None
        return pool if self._pushes(pool) else None

    def _pushes(self, pool: WorkPool) -> bool:
        """Whether this dispatcher can send ``pool``'s runs now."""
        if pool.paused or pool.config is None:
            return False
        if pool.type is WorkPoolType.QUEUE:
            return self._open_queue is not None
        return (
            pool.type in (WorkPoolType.AWS_LAMBDA, WorkPoolType.GCP_FUNCTIONS)
            and self._open_invoker is not None
        )

    def _send(self, pool: WorkPool, run_id: uuid.UUID, *, again: datetime | None = None) -> bool:
        payload = {"flow_run_id": str(run_id)}
        # A FIFO queue drops a repeated deduplication id for five minutes: a resend needs its own.
        dedup_id = str(run_id) if again is None else f"{run_id}:{int(again.timestamp())}"
        try:
            if isinstance(pool.config, QueueConfig):
                assert self._open_queue is not None
                queue = self._open_queue(str(pool.config.url))
                queue.send(json.dumps(payload), dedup_id=dedup_id)
            elif isinstance(pool.config, AwsLambdaConfig):
                assert self._open_invoker is not None
                query = {
                    k: str(v)
                    for k, v in (("region", pool.config.region), ("endpoint", pool.config.endpoint))
                    if v is not None
                }
                invoker = self._open_invoker("lambda://" + (f"?{urlencode(query)}" if query else ""))
                invoker.invoke(str(pool.config.function), payload, wait=False)
            elif isinstance(pool.config, GcpFunctionsConfig):
                assert self._open_invoker is not None
                audience = pool.config.audience
                invoker = self._open_invoker(
                    "gcf://" + (f"?{urlencode({'audience': audience})}" if audience else "")
                )
                invoker.invoke(str(pool.config.url), payload, wait=False)
            else:
                return False
        except OvercastError:
            logger.exception(
                "could not send flow run %s to work pool %s; the tick will retry", run_id, pool.name
            )
            return False
        return True

    def _all_push_pools(self) -> list[WorkPool]:
        from overcast.core.work_pools import WorkPoolFilter

        pools: list[WorkPool] = []
        cursor: str | None = None
        while True:
            page = self._pools.filter_pools(WorkPoolFilter(limit=200, cursor=cursor))
            pools.extend(p for p in page.items if p.type in PUSH_TYPES)
            cursor = page.next_cursor
            if cursor is None:
                return pools

    def _stale_pending(self, now: datetime, limit: int) -> list[FlowRun]:
        items, _ = list_partition(
            self._store,
            keys.flow_runs_by_state(StateType.PENDING),
            index="gsi1",
            sort_attr="gsi1sk",
            limit=limit,
            keep=lambda item: _pending_since(item) <= now - STALE_AFTER,
        )
        return [FlowRun.model_validate(item["run"]) for item in items]


def _pending_since(item: dict[str, object]) -> datetime:
    run = item["run"]
    assert isinstance(run, dict)
    state = run["state"]
    assert isinstance(state, dict)
    return datetime.fromisoformat(str(state["timestamp"]))
