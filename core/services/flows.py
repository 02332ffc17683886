"""Flows: registered by name, the first time a run of them is created."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from overcast.core import keys
from overcast.core.errors import ConditionFailedError, NotFoundError
from overcast.core.models import Flow, flow_id_for
from overcast.core.ports import Item, KeyValueStore
from overcast.core.schemas import Page
from overcast.core.services._listing import list_partition
from overcast.core.states import utcnow


class Flows:
    """Registers and reads flows.

    Args:
        store: the key-value store.
        clock: the current time (injected for tests).
    """

    def __init__(self, store: KeyValueStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._clock = clock

    def ensure(self, name: str, tags: list[str] | None = None) -> tuple[Flow, bool]:
        """Register the flow called ``name`` unless it exists; return it and whether it is new."""
        flow = Flow(id=flow_id_for(name), name=name, created=self._clock(), tags=tags or [])
        try:
            self._store.put(_item(flow), if_absent=True)
        except ConditionFailedError:
            return self.get(flow.id), False
        return flow, True

    def get(self, flow_id: uuid.UUID) -> Flow:
        """Return the flow. Raises ``NotFoundError`` when it is not registered."""
        pk, sk = keys.flow(flow_id)
        item = self._store.get(pk, sk)
        if item is None:
            raise NotFoundError("flow", str(flow_id))
        return Flow.model_validate(item["flow"])

    def get_by_name(self, name: str) -> Flow:
        """Return the flow called ``name``. Raises ``NotFoundError`` when it is not registered."""
        try:
            return self.get(flow_id_for(name))
        except NotFoundError:
            raise NotFoundError("flow", name) from None

    def list(self, *, limit: int = 100, cursor: str | None = None) -> Page[Flow]:
        """List flows by name."""
        items, next_cursor = list_partition(
            self._store, keys.flows_index(), index="gsi2", sort_attr="gsi2sk", limit=limit, cursor=cursor
        )
        return Page[Flow](items=[Flow.model_validate(i["flow"]) for i in items], next_cursor=next_cursor)


def _item(flow: Flow) -> Item:
    pk, sk = keys.flow(flow.id)
    return {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.flows_index(keys.shard_of(flow.id)),
        "gsi2sk": f"{flow.name}#{flow.id}",
        "flow": flow.model_dump(mode="json"),
    }
