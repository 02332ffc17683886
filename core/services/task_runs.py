"""Task runs: reported in batches by the client-side engine, upserted idempotently.

The engine decides task-run states itself (that is what makes tasks cost microseconds) and
reports them behind the fact. The server keeps, per task run, the newest state it has seen by
timestamp, and every state in the run's history: a replayed batch changes nothing, and a late
batch carrying an older state never overwrites a newer one (a terminal one included).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from overcast.core import keys
from overcast.core.errors import ConditionFailedError, NotFoundError
from overcast.core.models import TaskRun
from overcast.core.ports import Item, KeyValueStore
from overcast.core.schemas import Page, TaskRunFilter, TaskRunUpdate, TaskRunUpsert
from overcast.core.services._listing import list_partition
from overcast.core.states import State, utcnow

MAX_ATTEMPTS = 25


class TaskRuns:
    """Upserts, reads and lists task runs.

    Args:
        store: the key-value store.
        clock: the current time (injected for tests).
    """

    def __init__(self, store: KeyValueStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._clock = clock

    def upsert(self, updates: list[TaskRunUpdate]) -> list[TaskRunUpsert]:
        """Apply a batch of updates; return what became of each, in order.

        An update whose flow run does not exist is ``rejected``; the others are unaffected.
        """
        known_runs: dict[uuid.UUID, bool] = {}
        results = []
        for update in updates:
            flow_run_id = update.task_run.flow_run_id
            if flow_run_id is not None:
                if flow_run_id not in known_runs:
                    known_runs[flow_run_id] = self._store.get(*keys.flow_run(flow_run_id)) is not None
                if not known_runs[flow_run_id]:
                    reason = f"flow run {flow_run_id} does not exist"
                    results.append(TaskRunUpsert(id=update.task_run.id, status="rejected", reason=reason))
                    continue
            results.append(self._upsert_one(update))
        return results

    def get(self, task_run_id: uuid.UUID) -> TaskRun:
        """Return the task run. Raises ``NotFoundError`` when there is none."""
        item = self._store.get(*keys.task_run(task_run_id))
        if item is None:
            raise NotFoundError("task run", str(task_run_id))
        return TaskRun.model_validate(item["task_run"])

    def states(self, task_run_id: uuid.UUID) -> list[State]:
        """Return the task run's state history, oldest first."""
        self.get(task_run_id)
        pk, _ = keys.task_run(task_run_id)
        return [
            State.model_validate(i["state"]) for i in self._store.query(pk, sk_prefix=keys.STATE_PREFIX).items
        ]

    def filter(self, query: TaskRunFilter) -> Page[TaskRun]:
        """List the task runs of one flow run (or of none), oldest first."""
        items, cursor = list_partition(
            self._store,
            keys.task_runs_of(query.flow_run_id),
            index="gsi2",
            sort_attr="gsi2sk",
            cursor=query.cursor,
            limit=query.limit,
        )
        return Page[TaskRun](items=[TaskRun.model_validate(i["task_run"]) for i in items], next_cursor=cursor)

    def _upsert_one(self, update: TaskRunUpdate) -> TaskRunUpsert:
        incoming = update.task_run
        states = sorted({s.id: s for s in [*update.states, incoming.state]}.values(), key=_order)
        newest = states[-1]
        incoming = incoming.model_copy(update={"state": newest, "updated": self._clock()})
        # History entries are keyed by the state's own time and id: a replay rewrites the same items.
        self._store.batch_put([_history_item(incoming.id, s) for s in states])
        for _ in range(MAX_ATTEMPTS):
            item = self._store.get(*keys.task_run(incoming.id))
            try:
                if item is None:
                    self._store.put(_item(incoming), if_absent=True)
                    return TaskRunUpsert(id=incoming.id, status="applied")
                current = TaskRun.model_validate(item["task_run"])
                if _order(newest) <= _order(current.state):
                    reason = "same state" if newest.id == current.state.id else "older than the stored state"
                    return TaskRunUpsert(id=incoming.id, status="ignored", reason=reason)
                merged = incoming.model_copy(
                    update={
                        "created": current.created,
                        "start_time": current.start_time or incoming.start_time,
                        "run_count": max(current.run_count, incoming.run_count),
                    }
                )
                self._store.put(_item(merged), if_version=int(item["v"]))
                return TaskRunUpsert(id=incoming.id, status="applied")
            except ConditionFailedError:
                continue  # another batch wrote it first: compare again
        return TaskRunUpsert(id=incoming.id, status="rejected", reason="the task run kept changing; retry")


def _order(state: State) -> tuple[datetime, bool, str]:
    # Newest wins; at the same instant a terminal state wins; then the id breaks the tie.
    return (state.timestamp, state.is_terminal, str(state.id))


def _item(task_run: TaskRun) -> Item:
    pk, sk = keys.task_run(task_run.id)
    return {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.task_runs_of(task_run.flow_run_id, keys.shard_of(task_run.id)),
        "gsi2sk": keys.task_run_sort(task_run.created, task_run.id),
        "task_run": task_run.model_dump(mode="json"),
    }


def _history_item(task_run_id: uuid.UUID, state: State) -> Item:
    pk, sk = keys.task_run_state(task_run_id, state.timestamp, state.id)
    return {"pk": pk, "sk": sk, "state": state.model_dump(mode="json")}
