"""The events store: idempotent ingest by event id, retention through the store's TTL, listings.

This is the store's half of the events system; automations (reactive triggers evaluated at
ingest, proactive ones by the tick) build on ``emit`` and ``transact``, the two ways events
enter it (``emit_documents`` and ``transact_documents`` are their hot-path forms, for events
the control plane builds as JSON: the runs' state events). An event is one item keyed by its
id (see ``keys``), so a repeat is refused by a conditional put and changes nothing:
at-least-once delivery of events becomes one stored event.

Listings read one resource's events from its index (gsi2), or the days of a span from the
day index (gsi1, newest or oldest first) and filter them by name (exact, prefix, ``*``
patterns, exclusions), resource id prefix and labels, and related resource and role: no
index item per related resource is written, as runs' events are written on the engine's hot
path; a span keeps such a listing short.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

from overcast.core import keys
from overcast.core.errors import (
    ConditionFailedError,
    InvalidValueError,
    NotFoundError,
    TransactionConflictError,
)
from overcast.core.events import RESOURCE_ID, Event, EventFilter
from overcast.core.ports import Item, KeyValueStore, Operation, Put
from overcast.core.schemas import Page, decode_cursor, encode_cursor
from overcast.core.services._listing import list_partition
from overcast.core.states import utcnow

DEFAULT_RETENTION = timedelta(days=7)
LOOKAHEAD = timedelta(days=1)
"""How far past now a listing without ``until`` looks (clients' clocks run ahead)."""
_CHUNK = 100  # a transaction's most items

logger = logging.getLogger("overcast.events")

T = TypeVar("T")
Listener = Callable[[list[Event]], None]
"""Called with the events just stored (new ones only, in the order given)."""


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
        self._retention_s = retention.total_seconds()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every batch of newly stored events, after they are stored.

        This is how reactive automations see events: whichever process stores an event
        evaluates the triggers on it, so no service has to stay up to watch the store. A
        repeat of a stored event is not new and reaches no listener. A listener that raises
        is logged; the events stay stored and the other listeners still run.
        """
        self._listeners.append(listener)

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
        stored = self._put_new([(event, self._item(event)) for event in fresh.values()])
        self._notify(stored)
        return stored

    def emit_documents(self, documents: Sequence[dict[str, Any]]) -> int:
        """Store events the control plane built itself as JSON (``Event.model_dump(mode="json")``).

        The hot path's ``emit``: the engine's reports announce task runs this way, without a
        model per event. Documents are not validated; callers build them from validated data
        (see ``_run_events``), and hand them over (``received`` is set on them). Idempotent by
        id, like ``emit``; listeners get them as models.

        Returns:
            How many were new.
        """
        if not documents:
            return 0
        now = self._clock()
        received, epoch = keys.ts(now), now.timestamp()
        fresh: dict[str, tuple[dict[str, Any], Item]] = {}
        for event in documents:
            event["received"] = received
            item = self._document_item(event)
            if item["ttl"] > epoch and event["id"] not in fresh:  # an older one would expire at once
                fresh[event["id"]] = (event, item)
        stored = self._put_new(list(fresh.values()))
        if stored and self._listeners:
            self._notify([_trusted(event) for event in stored])
        return len(stored)

    def _put_new(self, pairs: list[tuple[T, Item]]) -> list[T]:
        """Put items that must be new, a transaction at a time; return the subjects of those stored."""
        stored: list[T] = []
        for start in range(0, len(pairs), _CHUNK):
            chunk = pairs[start : start + _CHUNK]
            if len(chunk) > 1:
                try:
                    self._store.transact([Put(item, if_absent=True) for _, item in chunk])
                except TransactionConflictError:
                    pass  # some were stored before (or a write raced us): one at a time below
                else:
                    stored += [subject for subject, _ in chunk]
                    continue
            for subject, item in chunk:
                try:
                    self._store.put(item, if_absent=True)
                except ConditionFailedError:
                    continue  # a repeat
                stored.append(subject)
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
        self._notify(received)
        return received

    def transact_documents(
        self, operations: Sequence[Operation], documents: Sequence[dict[str, Any]]
    ) -> None:
        """``transact`` for events the control plane built itself as JSON (see ``emit_documents``).

        Raises:
            TransactionConflictError: as ``transact``; nothing was written.
        """
        received = keys.ts(self._clock())
        for event in documents:
            event["received"] = received
        self._store.transact([*operations, *(Put(self._document_item(e), if_absent=True) for e in documents)])
        if self._listeners:
            self._notify([_trusted(event) for event in documents])

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
        names: Sequence[str] | None = None,
        exclude_names: Sequence[str] | None = None,
        name_prefix: str | None = None,
        resource_id: str | None = None,
        resource_id_prefix: str | None = None,
        resource_labels: Mapping[str, str | list[str]] | None = None,
        related_resource_id: str | None = None,
        related_role: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        order: Literal["desc", "asc"] = "desc",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Event]:
        """List events by ``occurred``, newest first by default; every criterion given must hold.

        A listing by ``resource_id`` reads that resource's own index; any other reads the days
        of the span (``since`` to ``until``, within the retention period) and filters them, so
        give a span to keep such a listing short. A page that had to read many events to find
        few may hold fewer than ``limit`` and still have a ``next_cursor``.

        Args:
            names: events whose name is one of these (exact, or with ``*`` wildcards).
            exclude_names: events whose name matches none of these.
            name_prefix: events whose name starts with this (``overcast.worker.``).
            resource_id: events about this resource (``overcast.work-pool.<id>``).
            resource_id_prefix: events about a resource whose id starts with this.
            resource_labels: labels the resource must have (values may hold ``*``; a list:
                any of them).
            related_resource_id: events with a related resource of this id.
            related_role: events with a related resource in this role (the same one as
                ``related_resource_id`` when both are given).
            since, until: bounds on ``occurred``, both inclusive. Listings cover at most the
                retention period, up to a day ahead of now (by resource id: any span).
            order: ``desc`` (newest first) or ``asc`` (oldest first).
            limit: the most events to return.
            cursor: ``next_cursor`` of the previous page.

        Returns:
            A page; its ``next_cursor`` is ``None`` when no event is left.

        Raises:
            InvalidValueError: the cursor was not one this service issued.
        """
        query = EventFilter.model_construct(
            names=list(names) if names else None,
            exclude_names=list(exclude_names) if exclude_names else None,
            name_prefix=name_prefix,
            resource_id=resource_id,
            resource_id_prefix=resource_id_prefix,
            resource_labels=dict(resource_labels) if resource_labels else None,
            related_resource_id=related_resource_id,
            related_role=related_role,
            since=since,
            until=until,
            order=order,
            limit=limit,
            cursor=cursor,
        )
        return self.filter(query)

    def filter(self, query: EventFilter) -> Page[Event]:
        """List events matching ``query`` (see ``EventFilter`` and ``query``)."""
        descending = query.order != "asc"
        since, until, limit, cursor = query.since, query.until, query.limit, query.cursor
        if query.resource_id is not None:
            items, next_cursor = list_partition(
                self._store,
                keys.events_of_resource(query.resource_id),
                index="gsi2",
                sort_attr="gsi2sk",
                low=keys.ts(since) if since else None,
                high=keys.ts(until) + "#~" if until else None,
                descending=descending,
                cursor=cursor,
                limit=limit,
                keep=_on_event(query.matcher(with_resource_id=False)),
            )
            return _page(items, next_cursor)
        now = self._clock()
        low_time = max(since, now - self._retention) if since else now - self._retention
        high_time = min(until, now + LOOKAHEAD) if until else now + LOOKAHEAD
        if low_time > high_time:
            return Page[Event](items=[])
        low, high = keys.ts(low_time), keys.ts(high_time) + "#~"
        after = decode_cursor(cursor) if cursor else None
        if descending:
            first, last = (min(high, after) if after else high), low
        else:
            first, last = (max(low, after) if after else low), high
        try:
            day, last_day = date.fromisoformat(first[:10]), date.fromisoformat(last[:10])
        except ValueError:
            raise InvalidValueError(
                "the cursor is invalid; pass back a next_cursor this API returned"
            ) from None
        step = timedelta(days=-1 if descending else 1)
        keep = _on_event(query.matcher())
        out: list[Item] = []
        while (day >= last_day) if descending else (day <= last_day):
            items, cut = self._day(day, low, high, after, limit - len(out) + 1, keep, descending=descending)
            out += items
            if len(out) > limit:
                return _page(out[:limit], encode_cursor(out[limit - 1]["gsi1sk"]))
            if cut is not None:
                return _page(out, encode_cursor(cut))  # a page cut short by the scan limit
            day += step
        return _page(out, None)

    # -- internals --------------------------------------------------------------------------------

    def _notify(self, stored: list[Event]) -> None:
        if not stored:
            return
        for listener in self._listeners:
            try:
                listener(stored)
            except Exception:  # a listener's failure must not undo or fail the ingest
                logger.exception("an events listener failed on %d events", len(stored))

    def _day(
        self,
        day: date,
        low: str,
        high: str,
        after: str | None,
        need: int,
        keep: Callable[[Item], bool],
        *,
        descending: bool,
    ) -> tuple[list[Item], str | None]:
        """Up to ``need`` matching items of one day, in order, over every shard.

        Returns the items and, when some shard was not read to its end, the sort key up to
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
                descending=descending,
                cursor=encode_cursor(after) if after else None,
                limit=need,
                keep=keep,
            )
            merged += items
            if more is not None:
                reached = decode_cursor(more)
                # complete up to the shard that got least far
                cut = reached if cut is None else (max(cut, reached) if descending else min(cut, reached))
        merged.sort(key=lambda item: str(item["gsi1sk"]), reverse=descending)
        if cut is not None:
            bound = cut
            merged = [i for i in merged if (i["gsi1sk"] >= bound if descending else i["gsi1sk"] <= bound)]
        return merged, cut

    def _item(self, event: Event) -> Item:
        document = event.model_dump(mode="json")
        # Unset fields are left out (defaults fill them in on reading): no null, so the
        # store's codec takes its fast path.
        return self._document_item({k: v for k, v in document.items() if v is not None})

    def _document_item(self, event: dict[str, Any]) -> Item:
        """The store item of an event given as JSON."""
        event_id, occurred = event["id"], event["occurred"]
        when = datetime.fromisoformat(occurred)
        if len(occurred) != 27 or occurred[-1] != "Z":  # not keys.ts()'s form already
            when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
            occurred = keys.ts(when)
        sort = f"{occurred}#{event_id}"  # keys.event_sort
        return {
            "pk": f"EVT#{event_id}",  # keys.event
            "sk": keys.META,
            "gsi1pk": keys.events_of_day(
                occurred[0:4] + occurred[5:7] + occurred[8:10], keys.shard_of(event_id, self._shards)
            ),
            "gsi1sk": sort,
            "gsi2pk": keys.events_of_resource(event["resource"][RESOURCE_ID]),
            "gsi2sk": sort,
            "ttl": int(when.timestamp() + self._retention_s),
            "event": event,
        }


def _trusted(event: dict[str, Any]) -> Event:
    """An event document this service stored, as a model (not validated again)."""
    follows = event.get("follows")
    return Event.model_construct(
        id=uuid.UUID(event["id"]),
        occurred=datetime.fromisoformat(event["occurred"]),
        event=event["event"],
        resource=event["resource"],
        related=event.get("related", []),
        payload=event.get("payload", {}),
        follows=uuid.UUID(follows) if follows else None,
        received=datetime.fromisoformat(event["received"]),
    )


def _on_event(test: Callable[[dict[str, Any]], bool]) -> Callable[[Item], bool]:
    """``test`` applied to a stored item's event."""
    return lambda item: test(item["event"])


def _page(items: list[Item], cursor: str | None) -> Page[Event]:
    return Page[Event](items=[Event.model_validate(i["event"]) for i in items], next_cursor=cursor)
