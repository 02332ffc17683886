"""Flow runs: creation (idempotent by key), reads, listings, and every state change.

A state change reads the run, lets ``orchestration.decide`` rule on it, and writes the run, its
history entry and the event announcing it (``overcast.flow-run.<State>``) in one transaction
guarded by the run's version. A proposer that loses a race
re-reads and is ruled on again, against the state that beat it: at-least-once delivery of
"start this run" becomes exactly one start.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from overcast.core import keys
from overcast.core.errors import (
    ConditionFailedError,
    InvalidValueError,
    NotFoundError,
    TransactionConflictError,
)
from overcast.core.models import FlowRun
from overcast.core.orchestration import apply, decide
from overcast.core.ports import Check, Delete, Item, KeyValueStore, Operation, Put
from overcast.core.schemas import FlowRunCreate, FlowRunFilter, OrchestrationResult, Page
from overcast.core.services import _run_index, _slots
from overcast.core.services._listing import list_partition
from overcast.core.services._run_events import flow_run_event
from overcast.core.services.events import Events
from overcast.core.services.flows import Flows
from overcast.core.states import Cancelling, Pending, Running, Scheduled, State, StateType, utcnow

MAX_ATTEMPTS = 25
_INITIAL_TYPES = (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING)
_ADJECTIVES = [
    "amber",
    "brisk",
    "calm",
    "daring",
    "eager",
    "fuzzy",
    "gentle",
    "hidden",
    "icy",
    "jolly",
    "keen",
    "lucid",
    "mellow",
    "nimble",
]
_NOUNS = [
    "albatross",
    "badger",
    "cheetah",
    "dolphin",
    "egret",
    "falcon",
    "gecko",
    "heron",
    "ibis",
    "jaguar",
    "kestrel",
    "lynx",
    "marten",
]


class FlowRunConflictError(ConditionFailedError):
    """Raised when a state change kept losing races to other writers (heavy contention)."""


class FlowRuns:
    """Creates, reads, lists and orchestrates flow runs.

    Args:
        store: the key-value store.
        flows: the flow registry (runs register their flow on creation).
        events: where every creation and accepted transition is announced
            (``overcast.flow-run.<State>``), in the same transaction as the change.
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        flows: Flows,
        *,
        events: Events | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._flows = flows
        self._events = events
        self._clock = clock

    # -- create and read ----------------------------------------------------------------------

    def create(
        self, request: FlowRunCreate, *, auto_scheduled: bool = False, checks: Sequence[Check] = ()
    ) -> tuple[FlowRun, bool]:
        """Create a run; return it and whether it is new.

        With an ``idempotency_key``, a second creation for the same flow returns the first run.

        Args:
            request: the run to create.
            auto_scheduled: the scheduler creates it from a deployment's schedule.
            checks: conditions on other items that the creation requires (the scheduler's: the
                deployment is still the version it computed the run from).

        Raises:
            InvalidValueError: the initial state is not SCHEDULED, PENDING or RUNNING.
            TransactionConflictError: one of ``checks`` failed.
        """
        now = self._clock()
        state = (request.state or Pending()).model_copy(update={"timestamp": now})
        if state.type not in _INITIAL_TYPES:
            raise InvalidValueError(f"a new run starts SCHEDULED, PENDING or RUNNING, not {state.type.value}")
        flow, _ = self._flows.ensure(request.flow_name)
        if request.idempotency_key:
            existing = self._by_idempotency_key(flow.id, request.idempotency_key)
            if existing is not None:
                return existing, False
        expected = state.details.scheduled_time if state.type is StateType.SCHEDULED else None
        run = FlowRun(
            name=request.name or _generated_name(),
            flow_id=flow.id,
            flow_name=flow.name,
            deployment_id=request.deployment_id,
            work_pool_name=request.work_pool_name,
            work_queue_name=request.work_queue_name,
            job_variables=request.job_variables,
            auto_scheduled=auto_scheduled,
            parent_task_run_id=request.parent_task_run_id,
            parameters=request.parameters,
            tags=request.tags,
            idempotency_key=request.idempotency_key,
            state=state,
            retry_policy=request.retry_policy,
            expected_start_time=expected or now,
            created=now,
            updated=now,
        )
        if state.type is StateType.RUNNING:
            run = run.model_copy(update={"run_count": 1, "start_time": now})
        operations: list[Operation] = [
            Put(_item(run), if_absent=True),
            Put(_history_item(run.id, state), if_absent=True),
        ]
        if request.idempotency_key:
            pk, sk = keys.idempotency(flow.id, request.idempotency_key)
            operations.append(Put({"pk": pk, "sk": sk, "run_id": str(run.id)}, if_absent=True))
        operations += checks
        operations += _run_index.changes(None, run)
        try:
            self._write(operations, run, None)
        except TransactionConflictError as exc:
            if request.idempotency_key and exc.index == 2:
                existing = self._by_idempotency_key(flow.id, request.idempotency_key)
                if existing is not None:
                    return existing, False
            raise
        return run, True

    def get(self, run_id: uuid.UUID) -> FlowRun:
        """Return the run. Raises ``NotFoundError`` when there is none."""
        return self._read(run_id)[0]

    def states(self, run_id: uuid.UUID) -> list[State]:
        """Return the run's state history, oldest first. Raises ``NotFoundError`` for an unknown run."""
        self._read(run_id)
        pk, _ = keys.flow_run(run_id)
        page = self._store.query(pk, sk_prefix=keys.STATE_PREFIX)
        return [State.model_validate(item["state"]) for item in page.items]

    def filter(self, query: FlowRunFilter) -> Page[FlowRun]:
        """List runs matching ``query`` (see ``FlowRunFilter``)."""
        single_type = query.state_type[0] if query.state_type and len(query.state_type) == 1 else None
        if single_type is not None:
            partition, index, sort_attr = keys.flow_runs_by_state(single_type), "gsi1", "gsi1sk"
        else:
            partition, index, sort_attr = keys.flow_runs_all(), "gsi2", "gsi2sk"
        low = keys.ts(query.expected_start_after) if query.expected_start_after else None
        high = keys.ts(query.expected_start_before) + "#~" if query.expected_start_before else None
        items, cursor = list_partition(
            self._store,
            partition,
            index=index,
            sort_attr=sort_attr,
            low=low,
            high=high,
            descending=query.sort == "EXPECTED_START_TIME_DESC",
            cursor=query.cursor,
            limit=query.limit,
            keep=lambda item: _matches(item["run"], query),
        )
        return Page[FlowRun](items=[FlowRun.model_validate(i["run"]) for i in items], next_cursor=cursor)

    # -- orchestration ------------------------------------------------------------------------

    def set_state(self, run_id: uuid.UUID, proposed: State, *, force: bool = False) -> OrchestrationResult:
        """Propose ``proposed`` for the run and return the decision (see ``orchestration``).

        A run of a deployment with a concurrency limit takes a slot on its way to PENDING or
        RUNNING and frees it when it leaves them, in the same guarded write (see ``_slots``);
        the run's index items (a deployment's scheduled runs, a pool's waiting runs) move with
        it likewise.

        Raises:
            NotFoundError: no such run.
            FlowRunConflictError: the run kept changing under us (extreme contention).
        """
        for _ in range(MAX_ATTEMPTS):
            run, version = self._read(run_id)
            now = self._clock()
            slots = _slots.read(self._store, run, proposed, now)
            verdict = decide(run, proposed, now=now, force=force, slots=slots.view if slots else None)
            if verdict.write is None:
                return OrchestrationResult(
                    status=verdict.decision,
                    state=run.state,
                    reason=verdict.reason,
                    wait_seconds=verdict.wait_s,
                )
            updated = apply(run, verdict.write, now)
            operations: list[Operation] = [
                Put(_item(updated), if_version=version),
                Put(_history_item(run_id, verdict.write), if_absent=True),
                *_run_index.changes(run, updated),
            ]
            if slots is not None:
                operations += slots.operations(run, verdict.write, now)
            try:
                self._write(operations, updated, run.state)
            except TransactionConflictError:
                continue  # someone changed the run first: decide again against what they wrote
            return OrchestrationResult(status=verdict.decision, state=verdict.write, reason=verdict.reason)
        raise FlowRunConflictError(
            *keys.flow_run(run_id), f"the run kept changing; gave up after {MAX_ATTEMPTS} tries"
        )

    def cancel(self, run_id: uuid.UUID) -> OrchestrationResult:
        """Ask for the run's cancellation: CANCELLING (CANCELLED at once when no process runs it)."""
        return self.set_state(run_id, Cancelling("cancellation requested"))

    def resume(self, run_id: uuid.UUID) -> OrchestrationResult:
        """Resume a PAUSED run: RUNNING again, or SCHEDULED when it was suspended.

        Raises:
            NotFoundError: no such run.
            InvalidValueError: the run is not paused.
        """
        run = self.get(run_id)
        if run.state.type is not StateType.PAUSED:
            raise InvalidValueError(f"only a paused run can be resumed; this one is {run.state.name}")
        proposed = (
            Scheduled(message="resumed") if run.state.details.pause_reschedule else Running(message="resumed")
        )
        return self.set_state(run_id, proposed)

    # -- runs waiting in deployments and work pools --------------------------------------------

    def waiting_in_pool(
        self,
        pool: str,
        *,
        work_queue_names: Sequence[str] | None = None,
        states: Sequence[StateType] = (StateType.SCHEDULED, StateType.PENDING),
        before: datetime | None = None,
        limit: int = 100,
    ) -> list[FlowRun]:
        """The runs of work pool ``pool`` waiting for a worker, earliest expected start first.

        Args:
            pool: the pool's name.
            work_queue_names: only runs of these queues.
            states: only runs in these state types (SCHEDULED, PENDING and RUNNING are indexed).
            before: only runs expected to start at or before this time.
            limit: the most runs to return.
        """
        high = keys.ts(before) + "#~" if before is not None else None
        wanted = {s.value for s in states}
        queues = set(work_queue_names) if work_queue_names else None
        found: list[Item] = []
        for shard in range(keys.SHARDS):
            cursor = None
            while True:
                page = self._store.query(
                    keys.pool_runs(pool, shard),
                    sk_range=(None, high) if high else None,
                    cursor=cursor,
                    limit=500,
                )
                found += [
                    i
                    for i in page.items
                    if i["state_type"] in wanted and (queues is None or i.get("work_queue_name") in queues)
                ]
                cursor = page.cursor
                if cursor is None or len(found) >= limit * keys.SHARDS:
                    break
        found.sort(key=lambda i: i["sk"])
        return self._runs_of(found[:limit])

    def scheduled_of_deployment(self, deployment_id: uuid.UUID, *, limit: int = 1000) -> list[FlowRun]:
        """The runs of a deployment in a SCHEDULED state (Scheduled, Late, AwaitingRetry …), earliest first."""
        page = self._store.query(keys.deployment_runs(deployment_id), limit=limit)
        return self._runs_of(page.items)

    def delete_unstarted(self, run_id: uuid.UUID) -> bool:
        """Delete a run that never started (SCHEDULED, never RUNNING) with its history and keys.

        What pausing or changing a deployment does to the runs its schedules made, so that the
        scheduler may create them again (their idempotency keys are freed too).

        Returns:
            Whether the run was deleted; ``False`` when it is gone, or has started meanwhile.
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                run, version = self._read(run_id)
            except NotFoundError:
                return False
            if run.state.type is not StateType.SCHEDULED or run.run_count:
                return False
            pk, sk = keys.flow_run(run_id)
            operations: list[Operation] = [Delete(pk, sk, if_version=version)]
            operations += [Delete(i["pk"], i["sk"]) for i in self._store.query(pk).items if i["sk"] != sk]
            if run.idempotency_key:
                operations.append(Delete(*keys.idempotency(run.flow_id, run.idempotency_key)))
            operations += [Delete(i["pk"], i["sk"]) for i in _run_index.items(run)]
            try:
                self._store.transact(operations[:100])
            except TransactionConflictError:
                continue
            return True
        raise FlowRunConflictError(pk, sk, f"the run kept changing; gave up after {MAX_ATTEMPTS} tries")

    def _runs_of(self, index_items: list[Item]) -> list[FlowRun]:
        runs = []
        for entry in index_items:
            try:
                runs.append(self.get(uuid.UUID(entry["run_id"])))
            except NotFoundError:
                continue  # deleted since the index was read
        return runs

    # -- internals ----------------------------------------------------------------------------

    def _write(self, operations: list[Operation], run: FlowRun, previous: State | None) -> None:
        """Apply ``operations``, which make ``run`` enter its state, with the event announcing it."""
        if self._events is None:
            self._store.transact(operations)
            return
        pool = None
        if run.work_pool_name is not None:
            pool_item = self._store.get(*keys.work_pool(run.work_pool_name))
            pool = pool_item["pool"] if pool_item is not None else None
        self._events.transact_documents(operations, [flow_run_event(run, previous, pool)])

    def _read(self, run_id: uuid.UUID) -> tuple[FlowRun, int]:
        pk, sk = keys.flow_run(run_id)
        item = self._store.get(pk, sk)
        if item is None:
            raise NotFoundError("flow run", str(run_id))
        return FlowRun.model_validate(item["run"]), int(item["v"])

    def _by_idempotency_key(self, flow_id: uuid.UUID, key: str) -> FlowRun | None:
        pk, sk = keys.idempotency(flow_id, key)
        claim = self._store.get(pk, sk)
        if claim is None:
            return None
        return self.get(uuid.UUID(claim["run_id"]))


def _item(run: FlowRun) -> Item:
    pk, sk = keys.flow_run(run.id)
    sort = keys.flow_run_sort(run.expected_start_time, run.id)
    shard = keys.shard_of(run.id)
    return {
        "pk": pk,
        "sk": sk,
        "gsi1pk": keys.flow_runs_by_state(run.state.type, shard),
        "gsi1sk": sort,
        "gsi2pk": keys.flow_runs_all(shard),
        "gsi2sk": sort,
        "run": run.model_dump(mode="json"),
    }


def _history_item(run_id: uuid.UUID, state: State) -> Item:
    pk, sk = keys.flow_run_state(run_id, state.timestamp, state.id)
    return {"pk": pk, "sk": sk, "state": state.model_dump(mode="json")}


def _matches(run: dict[str, object], query: FlowRunFilter) -> bool:
    state = run["state"]
    assert isinstance(state, dict)
    if query.state_type and state["type"] not in query.state_type:
        return False
    if query.state_name and state["name"] not in query.state_name:
        return False
    if query.flow_name and run["flow_name"] not in query.flow_name:
        return False
    if query.deployment_id and run["deployment_id"] not in {str(d) for d in query.deployment_id}:
        return False
    tags = run["tags"]
    assert isinstance(tags, list)
    return not (query.tags_all and not set(query.tags_all) <= set(tags))


def _generated_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{uuid.uuid4().hex[:4]}"  # noqa: S311
