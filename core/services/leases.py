"""Run leases: a running flow run proves its runner is alive; the tick reaps those that stop.

The engine heartbeats each flow run it runs (at start, then every third of the lease). A
heartbeat writes one small item beside the run (``RUN#<id>`` / ``LEASE``: the lease's end and
a ttl), never the run's own item, so it never races the run's version-guarded transitions. A
RUNNING run whose lease has lapsed — its process was killed, its function timed out, its
machine vanished — is proposed Crashed by ``reap``: the orchestration rules then apply its
retry policy (retries left: AwaitingRetry, so it is dispatched again; none: Crashed). A run
with no lease item (its runner crashed before its first heartbeat) is judged by its start time.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from overcast.core import keys
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.orchestration import RUN_LEASE_S
from overcast.core.ports import KeyValueStore
from overcast.core.services._listing import list_partition
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.states import Crashed, StateType, utcnow

DEFAULT_LEASE_S = RUN_LEASE_S
"""How long a heartbeat vouches for its run."""
MAX_LEASE_S = 3600.0
KEEP_S = 86_400  # a lease item outlives its lease by a day, then the store drops it
REAP_PAGE = 200


class RunLeases:
    """Heartbeats of running flow runs, and the reaping of those that stopped.

    Args:
        store: the key-value store.
        flow_runs: the flow runs (reaping proposes their Crashed states).
        clock: the current time (injected for tests).
    """

    def __init__(
        self, store: KeyValueStore, flow_runs: FlowRuns, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self._flow_runs = flow_runs
        self._clock = clock

    def heartbeat(self, run_id: uuid.UUID, lease_s: float = DEFAULT_LEASE_S) -> datetime:
        """Extend the run's lease to ``lease_s`` seconds from now; return its new end.

        Raises:
            InvalidValueError: a lease that is not in (0, 3600] seconds.
        """
        if (
            not isinstance(lease_s, int | float)
            or isinstance(lease_s, bool)
            or not 0 < lease_s <= MAX_LEASE_S
        ):
            raise InvalidValueError(
                f"lease_s must be a number of seconds in (0, {MAX_LEASE_S:g}], not {lease_s!r}"
            )
        expires = self._clock() + timedelta(seconds=lease_s)
        pk, sk = keys.flow_run_lease(run_id)
        self._store.put(
            {
                "pk": pk,
                "sk": sk,
                "expires": expires.isoformat(),
                "ttl": math.ceil(expires.timestamp()) + KEEP_S,
            }
        )
        return expires

    def expires(self, run_id: uuid.UUID) -> datetime | None:
        """When the run's lease ends (``None``: it never heartbeat)."""
        item = self._store.get(*keys.flow_run_lease(run_id))
        return datetime.fromisoformat(item["expires"]) if item is not None else None

    def reap(self, *, grace_s: float = DEFAULT_LEASE_S, limit: int = 1000) -> list[uuid.UUID]:
        """Propose Crashed for every RUNNING run whose lease lapsed; return the runs crashed.

        A run that never heartbeat counts from its start time plus ``grace_s``. Two reapers
        racing crash each run once (the transition is version-guarded).
        """
        now = self._clock()
        reaped: list[uuid.UUID] = []
        cursor: str | None = None
        seen = 0
        while seen < limit:
            items, cursor = list_partition(
                self._store,
                keys.flow_runs_by_state(StateType.RUNNING),
                index="gsi1",
                sort_attr="gsi1sk",
                cursor=cursor,
                limit=min(REAP_PAGE, limit - seen),
            )
            seen += len(items)
            for item in items:
                run_id = uuid.UUID(item["run"]["id"])
                if self._lapsed(run_id, item["run"].get("start_time"), now, grace_s):
                    message = (
                        "the run's runner stopped heartbeating: its process, function or machine is gone"
                    )
                    try:
                        answer = self._flow_runs.set_state(run_id, Crashed(message))
                    except NotFoundError:
                        continue
                    if (
                        answer.status.value in ("ACCEPT", "REJECT")
                        and answer.state.type is not StateType.RUNNING
                    ):
                        reaped.append(run_id)
            if cursor is None:
                break
        return reaped

    def _lapsed(self, run_id: uuid.UUID, start_time: str | None, now: datetime, grace_s: float) -> bool:
        expires = self.expires(run_id)
        if expires is None:
            if start_time is None:
                return False
            expires = datetime.fromisoformat(start_time) + timedelta(seconds=grace_s)
        return expires <= now
