"""Deployment concurrency slots: who holds one, and the write that takes or frees one.

A deployment with a ``concurrency_limit`` has a slots item (``keys.deployment_slots``): the
limit, the collision strategy, and the runs holding a slot (run id -> when it took it). A run
takes a slot on its way to PENDING or RUNNING and frees it when it leaves the states that hold
one (``orchestration.holds_slot``). The change to the slots item is written in the same
transaction as the run's new state, under both items' versions: two runs racing for the last
slot cannot both win (the loser's transaction fails, it re-reads and is told to wait or is
cancelled), and a slot is never taken by a transition that was not written, nor kept by a run
whose end was.

A run that died without an end state written keeps its slot until the reaper marks it crashed.
As a safety net, a run finding every slot taken first checks the holders: one whose run is gone,
or no longer in a state that holds a slot, loses its slot (in the same guarded write) — if it
took the slot more than ``STALE_AFTER`` ago. The grace matters: DynamoDB commits a
transaction's items one by one as far as single reads can tell (read-committed), so a reader
may see a slot just taken while the taker's run item still shows its previous state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from overcast.core import keys
from overcast.core.models import FlowRun
from overcast.core.orchestration import CollisionStrategy, DeploymentSlots, holds_slot
from overcast.core.ports import Item, KeyValueStore, Operation, Put
from overcast.core.states import State

MAX_HOLDERS_CHECKED = 25
"""The most holders a run finding every slot taken checks for staleness per proposal."""
STALE_AFTER = timedelta(seconds=60)
"""How long a slot must have been held before its holder may be found stale."""


@dataclass
class SlotBook:
    """The slots item of a run's deployment as read before a transition."""

    item: Item
    holders: dict[str, str]
    stale: frozenset[str] = frozenset()

    @property
    def view(self) -> DeploymentSlots:
        """The limit as orchestration sees it (stale holders left out)."""
        return DeploymentSlots(
            limit=int(self.item["limit"]),
            strategy=CollisionStrategy(self.item["strategy"]),
            holders=frozenset(h for h in self.holders if h not in self.stale),
        )

    def operations(self, run: FlowRun, written: State, now: datetime) -> list[Operation]:
        """The write that records ``run`` entering ``written`` (none when the holders stay the same)."""
        holders = {h: at for h, at in self.holders.items() if h not in self.stale}
        rid = str(run.id)
        if holds_slot(written):
            holders.setdefault(rid, keys.ts(now))
        else:
            holders.pop(rid, None)
        if holders == self.holders:
            return []
        item = {k: v for k, v in self.item.items() if k != "v"}
        return [Put({**item, "holders": holders}, if_version=int(self.item["v"]))]


def slots_item(
    deployment_id: uuid.UUID, limit: int, strategy: CollisionStrategy, holders: dict[str, str]
) -> Item:
    """A deployment's slots item."""
    pk, sk = keys.deployment_slots(deployment_id)
    return {"pk": pk, "sk": sk, "limit": limit, "strategy": strategy.value, "holders": holders}


def read(store: KeyValueStore, run: FlowRun, proposed: State, now: datetime) -> SlotBook | None:
    """The slots of ``run``'s deployment, when the proposed transition may take or free one."""
    if run.deployment_id is None or not (holds_slot(proposed) or holds_slot(run.state)):
        return None
    item = store.get(*keys.deployment_slots(run.deployment_id))
    if item is None:
        return None
    book = SlotBook(item, dict(item.get("holders") or {}))
    rid = str(run.id)
    if holds_slot(proposed) and rid not in book.holders and len(book.holders) >= int(item["limit"]):
        settled = keys.ts(now - STALE_AFTER)
        oldest_first = sorted(book.holders, key=book.holders.__getitem__)
        book.stale = _stale(store, [h for h in oldest_first if h != rid and book.holders[h] <= settled])
    return book


def _stale(store: KeyValueStore, holders: list[str]) -> frozenset[str]:
    stale = set()
    for holder in holders[:MAX_HOLDERS_CHECKED]:
        try:
            run_id = uuid.UUID(holder)
        except ValueError:
            stale.add(holder)
            continue
        item = store.get(*keys.flow_run(run_id))
        if item is None or not holds_slot(State.model_validate(item["run"]["state"])):
            stale.add(holder)
    return frozenset(stale)
