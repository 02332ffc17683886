"""Which waiting runs a pool hands out next: by queue priority, then expected start, within limits.

Reads the pool's run index (``keys.pool_runs``: one item per SCHEDULED, PENDING or RUNNING run
of the pool, sorted by expected start, kept by ``FlowRuns`` in the run's own transaction), so
one query gives both the candidates and the counts the concurrency limits need.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from overcast.core import keys
from overcast.core.errors import NotFoundError
from overcast.core.models import FlowRun
from overcast.core.ports import KeyValueStore
from overcast.core.services._pool_items import Snapshot
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.states import StateType
from overcast.core.work_pools import DEFAULT_QUEUE

OCCUPYING = frozenset({StateType.PENDING.value, StateType.RUNNING.value})
"""The states of a run that count against its pool's and queue's concurrency limits."""
UNLIMITED = 1_000_000_000


def select(
    store: KeyValueStore,
    flow_runs: FlowRuns,
    snap: Snapshot,
    queues: Sequence[str] | None,
    *,
    before: datetime,
    now: datetime,
    limit: int,
) -> list[FlowRun]:
    """The SCHEDULED runs of ``snap``'s pool to start next (see ``WorkPools.next_runs``)."""
    if snap.pool.paused or limit <= 0:
        return []
    open_queues = sorted(
        (q for q, _ in snap.queues.values() if not q.paused and (queues is None or q.name in queues)),
        key=lambda q: (q.priority, q.name),
    )
    if not open_queues:
        return []
    # Running runs were (almost always) expected to start by now; counting those expected up to
    # the later of now and ``before`` keeps the read to what is due, not the scheduled future.
    waiting, active = _index(store, snap.pool.name, max(before, now))
    due_by = keys.ts(before) + "#~"
    room = _room(snap.pool.concurrency_limit, sum(active.values()))
    chosen: list[str] = []
    for queue in open_queues:
        take = min(room, _room(queue.concurrency_limit, active[queue.name]), limit - len(chosen))
        picked = [run_id for sort, run_id in waiting.get(queue.name, []) if sort <= due_by][:take]
        chosen += picked
        room -= len(picked)
        if len(chosen) >= limit or room <= 0:
            break
    runs = []
    for run_id in chosen:
        try:
            run = flow_runs.get(uuid.UUID(run_id))
        except NotFoundError:
            continue  # deleted since the index was read
        if run.state.type is StateType.SCHEDULED:
            runs.append(run)
    return runs


def _index(
    store: KeyValueStore, pool: str, until: datetime
) -> tuple[dict[str, list[tuple[str, str]]], Counter[str]]:
    """The pool's SCHEDULED runs by queue (``(sort key, run id)``, earliest first) and its count
    of PENDING or RUNNING runs by queue, among the runs expected to start by ``until``."""
    waiting: dict[str, list[tuple[str, str]]] = {}
    active: Counter[str] = Counter()
    high = keys.ts(until) + "#~"
    for shard in range(keys.SHARDS):
        cursor = None
        while True:
            page = store.query(keys.pool_runs(pool, shard), sk_range=(None, high), cursor=cursor)
            for item in page.items:
                queue = item.get("work_queue_name") or DEFAULT_QUEUE
                if item["state_type"] == StateType.SCHEDULED.value:
                    waiting.setdefault(queue, []).append((item["sk"], item["run_id"]))
                elif item["state_type"] in OCCUPYING:
                    active[queue] += 1
            cursor = page.cursor
            if cursor is None:
                break
    for entries in waiting.values():
        entries.sort()
    return waiting, active


def _room(limit: int | None, used: int) -> int:
    """How many more runs a concurrency limit lets start."""
    return UNLIMITED if limit is None else max(limit - used, 0)
