"""Index items of a flow run that a deployment or a work pool lists, kept in step with the run.

A run item's two index slots are taken (by state, and in time order), so a deployment's
scheduled runs and a pool's waiting runs are listed through items of their own: one per run,
present only while the run waits (``keys.deployment_runs``: SCHEDULED; ``keys.pool_runs``:
SCHEDULED or PENDING, and RUNNING so that a pool's concurrency limits count its running runs
from the same partition), sorted by expected start. ``changes`` gives the operations that move
them along with a run; ``FlowRuns`` adds them to the transaction that writes the run, under the
run's version, so they never disagree with it.
"""

from __future__ import annotations

from overcast.core import keys
from overcast.core.models import FlowRun
from overcast.core.ports import Delete, Item, Operation, Put
from overcast.core.states import StateType

POOL_WAITING = (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING)


def items(run: FlowRun) -> list[Item]:
    """The index items ``run`` has in its current state (none for a run outside deployments and pools)."""
    if run.deployment_id is None and run.work_pool_name is None:
        return []
    state = run.state.type
    sort = keys.flow_run_sort(run.expected_start_time, run.id)
    summary = {
        "run_id": str(run.id),
        "state_type": state.value,
        "state_name": run.state.name,
        "expected_start_time": keys.ts(run.expected_start_time),
        "deployment_id": str(run.deployment_id) if run.deployment_id else None,
        "work_queue_name": run.work_queue_name,
        "auto_scheduled": run.auto_scheduled,
        "run_count": run.run_count,
    }
    out: list[Item] = []
    if run.deployment_id is not None and state is StateType.SCHEDULED:
        out.append({"pk": keys.deployment_runs(run.deployment_id), "sk": sort, **summary})
    if run.work_pool_name is not None and state in POOL_WAITING:
        pk = keys.pool_runs(run.work_pool_name, keys.shard_of(run.id))
        out.append({"pk": pk, "sk": sort, **summary})
    return out


def changes(before: FlowRun | None, after: FlowRun) -> list[Operation]:
    """The puts and deletes that take the index items of ``before`` to those of ``after``."""
    new = items(after)
    operations: list[Operation] = [Put(item) for item in new]
    if before is not None:
        kept = {(item["pk"], item["sk"]) for item in new}
        operations += [
            Delete(item["pk"], item["sk"]) for item in items(before) if (item["pk"], item["sk"]) not in kept
        ]
    return operations
