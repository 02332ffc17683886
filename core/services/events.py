"""The events store: idempotent ingest by event id, retention through the store's TTL, listings.

This is the store's half of the events system; automations (reactive triggers evaluated at
ingest, proactive ones by the tick) build on ``emit`` and ``transact``, the two ways events
enter it. An event is one item keyed by its id (see ``keys``), so a repeat is refused by a
conditional put and changes nothing: at-least-once delivery of events becomes one stored event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta

from overcast.core import keys
from overcast.core.errors import (
    ConditionFailedError,
    InvalidValueError,
    NotFoundError,
    TransactionConflictError,
)
from overcast.core.events import Event, EventFilter
from overcast.core.ports import Item, KeyValueStore, Operation, Put
from overcast.core.schemas import Page, decode_cursor, encode_cursor
from overcast.core.services._listing import list_partition
from overcast.core.states import utcnow

DEFAULT_RETENTION = timedelta(days=7)
LOOKAHEAD = timedelta(days=1)
"""How far past now a listing without ``until`` looks (clients' clocks run ahead)."""
_CHUNK = 100  # a transaction's most items


class Events:
    """Stores and lists events.

    Args:
        store: the key-value store.
        retention: how long an event is kept after it occurred (it then expires through the
            store's TTL, and listings no longer look that far back).
        clock: the current time (injected for tests).
        shards: how many gsi1 partitions a day's events are spread over (see ``keys``).
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = utcnow,
        shards: int = keys.SHARDS,
    ) -> None:
        self._store = store
        self._retention = retention
        self._clock = clock
        self._shards = shards

    @property
    def retention(self) -> timedelta:
        """How long events are kept after they occurred."""
        return self._retention

    # -- ingest -----------------------------------------------------------------------------------

    def emit(self, events: Sequence[Event]) -> list[Event]:
        """Store events; an event whose id is already stored is ignored (ingest is idempotent).

        Args:
            events: the events, in any number (written up to 100 per transaction). A repeated
                id within the batch counts once; an event that occurred longer ago than the
                retention period is not stored.

        Returns:
            The events that were new, in the order given, with ``received`` set.
        """
        now = self._clock()
        oldest = now - self._retention
        fresh: dict[uuid.UUID, Event] = {}
        for event in events:
            if event.occurred > oldest:  # an older one would expire at once
                fresh.setdefault(event.id, event.model_copy(update={"received": now}))
        batch = list(fresh.values())
        stored: list[Event] = []
        for start in range(0, len(batch), _CHUNK):
            chunk = batch[start : start + _CHUNK]
            if len(chunk) > 1:
                try:
                    self._store.transact([Put(self._item(e), if_absent=True) for e in chunk])
                except TransactionConflictError:
                    pass  # some were stored before (or a write raced us): one at a time below
                else:
                    stored += chunk
                    continue
            for event in chunk:
                try:
                    self._store.put(self._item(event), if_absent=True)
                except ConditionFailedError:
                    continue  # a repeat
                stored.append(event)
        return stored

    def transact(self, operations: Sequence[Operation], events: Sequence[Event]) -> list[Event]:
        """Apply store ``operations`` and store ``events`` in one all-or-nothing transaction.

        A service records a change and the events that announce it together, so an event is
        stored exactly when its change is (a status change guarded by the item's version is
        announced once, however many writers race to make it).

        Args:
            operations: the store operations (at most ``100 - len(events)``).
            events: the events; their ids must be new.

        Returns:
            The events as stored (``received`` set).

        Raises:
            TransactionConflictError: a condition failed; ``index`` counts ``operations`` first,
                then the events. Nothing was written.
        """
        now = self._clock()
        received = [e.model_copy(update={"received": now}) for e in events]
        self._store.transact([*operations, *(Put(self._item(e), if_absent=True) for e in received)])
        return received

    # -- reads ------------------------------------------------------------------------------------

    def get(self, event_id: uuid.UUID) -> Event:
        """Return the event. Raises ``NotFoundError`` when there is none (or it expired)."""
        item = self._store.get(*keys.event(event_id))
        if item is None:
            raise NotFoundError("event", str(event_id))
        return Event.model_validate(item["event"])

    def query(
        self,
        *,
        name_prefix: str | None = None,
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Event]:
        """List events newest first (by ``occurred``); every criterion given must hold.

        Args:
            name_prefix: events whose name starts with this (``overcast.worker.``).
            resource_id: events about this resource (``overcast.work-pool.<id>``).
            since, until: bounds on ``occurred``, both inclusive. Listings cover at most the
                retention period, up to a day ahead of now (by resource id: any span).
            limit: the most events to return.
            cursor: ``next_cursor`` of the previous page.

        Returns:
            A page; its ``next_cursor`` is ``None`` when no event is left.

        Raises:
            InvalidValueError: the cursor was not one this service issued.
        """
        now = self._clock()
        earliest = now - self._retention
        latest = now + LOOKAHEAD
        keep: Callable[[Item], bool] = (
            (lambda item: str(item["event"]["event"]).startswith(name_prefix))
            if name_prefix
            else (lambda _item: True)
        )
        if resource_id is not None:
            items, next_cursor = list_partition(
                self._store,
                keys.events_of_resource(resource_id),
                index="gsi2",
                sort_attr="gsi2sk",
                low=keys.ts(since) if since else None,
                high=keys.ts(until) + "#~" if until else None,
                descending=True,
                cursor=cursor,
                limit=limit,
                keep=keep,
            )
            return _page(items, next_cursor)
        low_time = max(since, earliest) if since else earliest
        high_time = min(until, latest) if until else latest
        if low_time > high_time:
            return Page[Event](items=[])
        low, high = keys.ts(low_time), keys.ts(high_time) + "#~"
        after = decode_cursor(cursor) if cursor else None
        top = min(high, after) if after else high
        out: list[Item] = []
        try:
            day, last_day = date.fromisoformat(top[:10]), date.fromisoformat(low[:10])
        except ValueError:
            raise InvalidValueError(
                "the cursor is invalid; pass back a next_cursor this API returned"
            ) from None
        while day >= last_day:
            items, cut = self._day(day, low, high, after, limit - len(out) + 1, keep)
            out += items
            if len(out) > limit:
                return _page(out[:limit], encode_cursor(out[limit - 1]["gsi1sk"]))
            if cut is not None:
                return _page(out, encode_cursor(cut))  # a page cut short by the scan limit
            day -= timedelta(days=1)
        return _page(out, None)

    def filter(self, query: EventFilter) -> Page[Event]:
        """List events matching ``query`` (see ``EventFilter`` and ``query``)."""
        return self.query(
            name_prefix=query.name_prefix,
            resource_id=query.resource_id,
            since=query.since,
            until=query.until,
            limit=query.limit,
            cursor=query.cursor,
        )

    # -- internals --------------------------------------------------------------------------------

    def _day(
        self,
        day: date,
        low: str,
        high: str,
        after: str | None,
        need: int,
        keep: Callable[[Item], bool],
    ) -> tuple[list[Item], str | None]:
        """Up to ``need`` matching items of one day, newest first, over every shard.

        Returns the items and, when some shard was not read to its end, the sort key down to
        which the merged items are complete (the caller continues after it).
        """
        merged: list[Item] = []
        cut: str | None = None
        for shard in range(self._shards):
            items, more = list_partition(
                self._store,
                keys.events_of_day(day.strftime("%Y%m%d"), shard),
                index="gsi1",
                sort_attr="gsi1sk",
                low=low,
                high=high,
                descending=True,
                cursor=encode_cursor(after) if after else None,
                limit=need,
                keep=keep,
            )
            merged += items
            if more is not None:
                reached = decode_cursor(more)
                cut = reached if cut is None else max(cut, reached)
        merged.sort(key=lambda item: str(item["gsi1sk"]), reverse=True)
        if cut is not None:
            merged = [item for item in merged if item["gsi1sk"] >= cut]
        return merged, cut

    def _item(self, event: Event) -> Item:
        pk, sk = keys.event(event.id)
        sort = keys.event_sort(event.occurred, event.id)
        return {
            "pk": pk,
            "sk": sk,
            "gsi1pk": keys.events_of_day(
                keys.event_day(event.occurred), keys.shard_of(event.id, self._shards)
            ),
            "gsi1sk": sort,
            "gsi2pk": keys.events_of_resource(event.resource_id),
            "gsi2sk": sort,
            "ttl": int(event.occurred.timestamp() + self._retention.total_seconds()),
            "event": event.model_dump(mode="json"),
        }


def _page(items: list[Item], cursor: str | None) -> Page[Event]:
    return Page[Event](items=[Event.model_validate(i["event"]) for i in items], next_cursor=cursor)
