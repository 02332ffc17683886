"""Automations: stored triggers and actions, evaluated on the events as they are stored.

No service stays up to watch events: whichever process stores a batch of events evaluates the
reactive triggers on it (``ingest``, subscribed to the events store), and the tick closes the
proactive windows that ended (``evaluate_proactive``). Both may run in many processes at once:

- each trigger's state is a *bucket* item per value of its ``for_each`` labels (see
  ``_buckets``), changed under its version, and a lost race is evaluated again;
- a firing's id is derived from what fired (the bucket and the triggering event, or the
  window), and its record is written only when absent: a firing is recorded, announced
  (``overcast.automation.triggered`` / ``.resolved``) and acted on once;
- a compound or sequence trigger collects its children's firings in one item, under its
  version, and fires when enough of them (in order, for a sequence) fired within its window
  (see ``_firings``).

An update that changes the trigger, and a pause or resume, start its state afresh.

The enabled automations are cached in each process, indexed by the event names they react
to; one read of the ``keys.enabled_automations`` item per batch tells whether the cache is
current, so a batch costs that one read when no trigger concerns its events.

Limits: an event's ``follows`` is not used to reorder events (events are evaluated in the
order they are stored, and one older than its bucket's window is ignored); a firing is acted
on at most once (a process that dies between recording a firing and running its actions
loses those actions); resolutions are tracked for proactive event triggers at the root of
an automation's trigger, not for children of compound or sequence triggers.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from overcast.core import keys
from overcast.core.automations import (
    Automation,
    AutomationCore,
    AutomationCreate,
    AutomationUpdate,
    EventTrigger,
    Firing,
    FiringRecord,
    Posture,
    event_triggers,
)
from overcast.core.errors import (
    ConditionFailedError,
    NotFoundError,
    OvercastError,
    TransactionConflictError,
)
from overcast.core.events import Event
from overcast.core.ports import Delete, Item, KeyValueStore, Operation, Put
from overcast.core.schemas import Page
from overcast.core.services._buckets import (
    REACTIVE_GRACE,
    Bucket,
    Intent,
    Where,
    close,
    key_hash,
    on_event,
    window,
)
from overcast.core.services._firings import Act, Firings
from overcast.core.services._listing import due_items, list_partition
from overcast.core.services._trigger_index import (
    Entry,
    TriggerIndex,
    generation,
)
from overcast.core.services.events import Events
from overcast.core.states import utcnow

logger = logging.getLogger("overcast.automations")

MAX_ATTEMPTS = 25
MAX_DEPTH = 4
"""How deep automations may fire on the events of other firings before evaluation stops (a loop)."""
MAX_DUE = 500
"""The most proactive windows one evaluation closes (the next tick closes the rest)."""


class AutomationConflictError(ConditionFailedError):
    """Raised when an automation or one of its triggers' state kept changing under a write."""


class _StaleError(Exception):
    """The automation changed since it was read (internal: the caller reads it again)."""


@dataclass(frozen=True)
class _Cache:
    marker: int  # the version of the enabled-automations item it was built from; 0: none
    index: TriggerIndex = field(default_factory=TriggerIndex)


class Automations:
    """Creates, changes and lists automations, evaluates their triggers and records firings.

    Args:
        store: the key-value store.
        events: the events store (``triggered`` and ``resolved`` events are emitted to it,
            and firings read the events they list from it).
        act: runs a firing's actions (``Actions.run``); without it firings are only recorded
            and announced.
        clock: the current time (injected for tests).
        shards: how many partitions the index of running proactive windows is spread over.
    """

    def __init__(
        self,
        store: KeyValueStore,
        events: Events,
        *,
        act: Act | None = None,
        clock: Callable[[], datetime] = utcnow,
        shards: int = keys.SHARDS,
    ) -> None:
        self._store = store
        self._firings = Firings(store, events, act=act, clock=clock, shards=shards)
        self._clock = clock
        self._shards = shards
        self._cache = _Cache(0)
        self._cache_lock = threading.Lock()
        self._local = threading.local()

    # -- create, read, change, delete --------------------------------------------------------------

    def create(self, request: AutomationCreate) -> Automation:
        """Store a new automation; a proactive trigger's first window starts now.

        Raises:
            ItemTooLargeError: the automation does not fit an item (400 KB).
        """
        now = self._clock()
        automation = Automation.model_validate(
            {**request.model_dump(), "id": uuid.uuid4(), "created": now, "updated": now, "version": 1}
        )
        self._write(automation, None)
        self._start(automation)
        return automation

    def get(self, automation_id: uuid.UUID) -> Automation:
        """Return the automation. Raises ``NotFoundError`` when there is none."""
        return self._read(automation_id)[0]

    def list(
        self, *, limit: int = 200, cursor: str | None = None, owner_resource: str | None = None
    ) -> Page[Automation]:
        """List automations in creation order (those a resource owns, when ``owner_resource`` is given)."""
        if owner_resource is None:
            pk, index, sort_attr = keys.automations_index(), "gsi2", "gsi2sk"
        else:
            pk, index, sort_attr = keys.automations_of_owner(owner_resource), "gsi1", "gsi1sk"
        items, next_cursor = list_partition(
            self._store, pk, index=index, sort_attr=sort_attr, limit=limit, cursor=cursor
        )
        return Page[Automation](
            items=[Automation.model_validate(i["automation"]) for i in items], next_cursor=next_cursor
        )

    def update(self, automation_id: uuid.UUID, update: AutomationUpdate) -> Automation:
        """Change the fields ``update`` gives; a changed trigger starts afresh (its counts are dropped).

        Raises:
            NotFoundError: there is no such automation.
            AutomationConflictError: it kept changing under us.
        """
        given = {name for name in update.model_fields_set if getattr(update, name) is not None}
        return self._change(automation_id, update.model_dump(include=given))

    def set_enabled(self, automation_id: uuid.UUID, enabled: bool) -> Automation:
        """Pause (``False``) or resume (``True``) an automation.

        A paused automation ignores events and its proactive windows; resumed, it starts
        afresh (a proactive trigger's window starts then).

        Raises:
            NotFoundError: there is no such automation.
        """
        return self._change(automation_id, {"enabled": enabled})

    def delete(self, automation_id: uuid.UUID) -> None:
        """Delete the automation, its triggers' state and its firing records.

        Raises:
            NotFoundError: there is no such automation.
        """
        for _ in range(MAX_ATTEMPTS):
            current, version = self._read(automation_id)
            try:
                self._write(current, version, delete=True)
            except _StaleError:
                continue
            self._purge(automation_id, keys.BUCKET_PREFIX, keys.CHILDREN_PREFIX, keys.FIRING_PREFIX)
            return
        raise AutomationConflictError(*keys.automation(automation_id), "it kept changing")

    def delete_owned_by(self, resource_id: str) -> int:
        """Delete the automations a resource owns (a deployment's triggers); return how many."""
        deleted = 0
        for automation in self._owned(resource_id):
            try:
                self.delete(automation.id)
            except NotFoundError:
                continue
            deleted += 1
        return deleted

    def replace_owned_by(
        self, resource_id: str, requests: Sequence[AutomationCreate]
    ) -> builtins.list[Automation]:
        """Make the automations a resource owns the ones requested (a deployment's triggers).

        An owned automation equal to a request is kept as it is (its id and its triggers'
        state with it); one of the same name as a request is changed into it (keeping its
        id); the other requests are created and the other owned automations deleted.

        Returns:
            The automations, in the order of ``requests`` (each owned by ``resource_id``).
        """
        wanted = [r.model_copy(update={"owner_resource": resource_id}) for r in requests]
        remaining = self._owned(resource_id)
        out: builtins.list[Automation | None] = [None] * len(wanted)
        for position, request in enumerate(wanted):
            same = next((a for a in remaining if _core(a) == request.model_dump()), None)
            if same is not None:
                remaining.remove(same)
                out[position] = same
        for position, request in enumerate(wanted):
            if out[position] is not None:
                continue
            named = next((a for a in remaining if a.name == request.name), None)
            if named is None:
                out[position] = self.create(request)
                continue
            remaining.remove(named)
            out[position] = self._change(named.id, request.model_dump())
        for automation in remaining:
            try:
                self.delete(automation.id)
            except NotFoundError:
                continue
        return [a for a in out if a is not None]

    def firings(self, automation_id: uuid.UUID, *, limit: int = 50) -> builtins.list[FiringRecord]:
        """The automation's latest firings with their actions' outcomes, newest first.

        Raises:
            NotFoundError: there is no such automation.
        """
        self.get(automation_id)
        page = self._store.query(
            keys.automation_firings(automation_id), index="gsi1", descending=True, limit=limit
        )
        return [
            FiringRecord(firing=i["firing"], outcomes=i["outcomes"], finished=i["finished"])
            for i in page.items
        ]

    # -- evaluation --------------------------------------------------------------------------------

    def ingest(self, events: builtins.list[Event]) -> builtins.list[Firing]:
        """Evaluate the enabled automations' triggers on newly stored events.

        Subscribed to the events store, so it sees every stored batch once. Reactive triggers
        fire here (and a proactive window that the tick has not closed yet, when an event
        arrives after its end). A trigger whose state cannot be written is logged and
        skipped; the other triggers are still evaluated.

        Returns:
            The firings this call recorded (and acted on), triggered and resolved.
        """
        depth = getattr(self._local, "depth", 0)
        if depth >= MAX_DEPTH:
            logger.warning(
                "automations fired on each other's events %d deep; %d events not evaluated",
                depth,
                len(events),
            )
            return []
        index = self._index()
        if not index:
            return []
        self._local.depth = depth + 1
        try:
            known = {e.id: e for e in events}
            fired: builtins.list[Firing] = []
            for event in events:
                for entry in index.matching(event):
                    try:
                        fired += self._evaluate(entry, event, known)
                    except OvercastError:
                        logger.exception(
                            "automation %s: could not evaluate event %s", entry.automation.id, event.id
                        )
            return fired
        finally:
            self._local.depth = depth

    def evaluate_proactive(self, now: datetime | None = None) -> builtins.list[Firing]:
        """Close the proactive windows that ended by ``now`` (default: the clock's now).

        Called by the tick. A window that closes with fewer than its threshold's events fires;
        two evaluations racing close each window once.

        Returns:
            The firings this call recorded (and acted on).
        """
        moment = now if now is not None else self._clock()
        index = self._index()
        fired: builtins.list[Firing] = []
        partitions = map(keys.automations_due, range(self._shards))
        for item in due_items(self._store, partitions, index="gsi1", now=moment, limit=MAX_DUE):
            try:
                fired += self._close(item, index, moment)
            except OvercastError:
                logger.exception("could not close the proactive window %s", item["sk"])
        return fired

    def resume_unfinished(self, now: datetime | None = None) -> builtins.list[Firing]:
        """Run again the actions of firings whose evaluating process died before they finished.

        Called by the tick; see ``_firings``: actions run at least once.

        Returns:
            The firings whose actions this call ran.
        """

        def read(automation_id: uuid.UUID) -> Automation | None:
            try:
                return self._read(automation_id)[0]
            except NotFoundError:
                return None

        return self._firings.resume(now if now is not None else self._clock(), read)

    # -- internals: the automation items -----------------------------------------------------------

    def _read(self, automation_id: uuid.UUID) -> tuple[Automation, int]:
        item = self._store.get(*keys.automation(automation_id))
        if item is None:
            raise NotFoundError("automation", str(automation_id))
        return Automation.model_validate(item["automation"]), int(item["v"])

    def _owned(self, resource_id: str) -> builtins.list[Automation]:
        owned: builtins.list[Automation] = []
        cursor: str | None = None
        while True:
            page = self.list(owner_resource=resource_id, cursor=cursor, limit=200)
            owned += page.items
            if (cursor := page.next_cursor) is None:
                return owned

    def _change(self, automation_id: uuid.UUID, changes: dict[str, Any]) -> Automation:
        for _ in range(MAX_ATTEMPTS):
            current, version = self._read(automation_id)
            merged = Automation.model_validate(
                {
                    **current.model_dump(),
                    **changes,
                    "version": current.version + 1,
                    "updated": self._clock(),
                }
            )
            if _core(merged) == _core(current):
                return current  # nothing changes
            try:
                self._write(merged, version)
            except _StaleError:
                continue
            if merged.enabled != current.enabled or generation(merged) != generation(current):
                self._purge(automation_id, keys.BUCKET_PREFIX, keys.CHILDREN_PREFIX)
                self._start(merged)
            return merged
        raise AutomationConflictError(*keys.automation(automation_id), "it kept changing")

    def _write(self, automation: Automation, version: int | None, *, delete: bool = False) -> None:
        """Write (or delete) the automation's item, and the enabled map when its entry changes,
        in one transaction (so a cache never misses a change).

        Raises:
            _StaleError: the item's version is no longer ``version``.
        """
        pk, sk = keys.automation(automation.id)
        ident = str(automation.id)
        for _ in range(MAX_ATTEMPTS):
            marker = self._store.get(*keys.enabled_automations())
            enabled: dict[str, int] = dict(marker["automations"]) if marker else {}
            wanted = dict(enabled)
            if automation.enabled and not delete:
                wanted[ident] = automation.version
            else:
                wanted.pop(ident, None)
            own: Operation = (
                Delete(pk, sk, if_version=version)
                if delete
                else Put(_item(automation), if_absent=version is None, if_version=version)
            )
            operations = [own]
            if marker is None or wanted != enabled:
                marker_pk, marker_sk = keys.enabled_automations()
                operations.append(
                    Put(
                        {"pk": marker_pk, "sk": marker_sk, "automations": wanted},
                        if_absent=marker is None,
                        if_version=int(marker["v"]) if marker else None,
                    )
                )
            try:
                self._store.transact(operations)
            except TransactionConflictError as exc:
                if exc.index == 0:
                    raise _StaleError from exc
                continue  # the enabled map changed (or contention): read it again
            return
        raise AutomationConflictError(*keys.enabled_automations(), "the enabled automations kept changing")

    def _start(self, automation: Automation) -> None:
        """Open the first window of each proactive trigger that has neither ``after`` nor ``for_each``."""
        if not automation.enabled:
            return
        made, now = generation(automation), self._clock()
        for path, trigger in event_triggers(automation.trigger):
            if trigger.posture is not Posture.PROACTIVE or trigger.after or trigger.for_each:
                continue
            where = Where(automation.id, made, path, {}, key_hash({}))
            try:
                self._store.put(
                    self._bucket_item(where, trigger, window(trigger, now, where)), if_absent=True
                )
            except ConditionFailedError:
                continue  # opened already

    def _purge(self, automation_id: uuid.UUID, *prefixes: str) -> None:
        partition = keys.automation_partition(automation_id)
        for prefix in prefixes:
            cursor: str | None = None
            while True:
                page = self._store.query(partition, sk_prefix=prefix, cursor=cursor, limit=500)
                for item in page.items:
                    self._store.delete(item["pk"], item["sk"])
                if (cursor := page.cursor) is None:
                    break

    @contextlib.contextmanager
    def listening(self, prefix: str) -> Iterator[bool]:
        """Whether an enabled automation's trigger may react to events named ``prefix…``.

        The task-run service asks before it announces task runs (``task_run_events="auto"``)
        and stores the announcements inside the block. The block's ingest evaluates the same
        triggers, so the enabled-automations marker is read once for both.
        """
        index = self._index()
        self._local.pinned = index
        try:
            yield index.listens_for(prefix)
        finally:
            self._local.pinned = None

    def _index(self) -> TriggerIndex:
        """The enabled automations' triggers, read again when the enabled map changed."""
        pinned: TriggerIndex | None = getattr(self._local, "pinned", None)
        if pinned is not None:  # inside ``listening``: read for this batch already
            return pinned
        marker = self._store.get(*keys.enabled_automations())
        version = int(marker["v"]) if marker else 0
        cache = self._cache
        if cache.marker == version:
            return cache.index
        with self._cache_lock:
            cache = self._cache
            if cache.marker == version:
                return cache.index
            wanted: dict[str, int] = marker["automations"] if marker else {}
            automations = []
            for ident, automation_version in wanted.items():
                have = cache.index.automations.get(uuid.UUID(ident))
                if have is not None and have.version == automation_version:
                    automations.append(have)
                    continue
                item = self._store.get(*keys.automation(uuid.UUID(ident)))
                if item is not None and (found := Automation.model_validate(item["automation"])).enabled:
                    automations.append(found)
            self._cache = _Cache(version, TriggerIndex(automations))
            return self._cache.index

    # -- internals: buckets ------------------------------------------------------------------------

    def _evaluate(self, entry: Entry, event: Event, known: dict[uuid.UUID, Event]) -> builtins.list[Firing]:
        trigger = entry.trigger
        labels = trigger.bucket_labels(event)
        where = Where(entry.automation.id, entry.generation, entry.path, labels, key_hash(labels))
        if trigger.posture is Posture.REACTIVE and not trigger.after and trigger.threshold == 1:
            _, intents = on_event(trigger, where, None, event)  # each event fires: no state to keep
        else:
            intents = self._step(where, trigger, lambda bucket: on_event(trigger, where, bucket, event))
        return self._firings.deliver(entry.automation, entry.generation, entry.path, intents, known)

    def _close(self, item: Item, index: TriggerIndex, now: datetime) -> builtins.list[Firing]:
        automation_id, path = uuid.UUID(item["automation_id"]), str(item["path"])
        entry = index.entry(automation_id, path)
        stored = Bucket.from_json(item["bucket"])
        if entry is None or entry.generation != stored.generation:
            with contextlib.suppress(ConditionFailedError):  # the automation is gone, paused or changed
                self._store.delete(item["pk"], item["sk"], if_version=int(item["v"]))
            return []
        trigger = entry.trigger
        where = Where(automation_id, entry.generation, path, dict(item["labels"]), str(item["key"]))

        def closing(bucket: Bucket | None) -> tuple[Bucket | None, builtins.list[Intent]]:
            if bucket is None or bucket.end is None or bucket.end > now:
                return bucket, []  # closed by another evaluation (or not due after all)
            return close(trigger, where, bucket, now)

        intents = self._step(where, trigger, closing)
        return self._firings.deliver(entry.automation, entry.generation, path, intents, {}, now)

    def _step(
        self,
        where: Where,
        trigger: EventTrigger,
        transition: Callable[[Bucket | None], tuple[Bucket | None, builtins.list[Intent]]],
    ) -> builtins.list[Intent]:
        """Apply ``transition`` to the bucket under its version; return the firings it made."""
        pk, sk = keys.automation_bucket(where.automation_id, where.path, where.key)
        for _ in range(MAX_ATTEMPTS):
            item = self._store.get(pk, sk)
            current = Bucket.from_json(item["bucket"]) if item is not None and item["bucket"] else None
            if current is not None and current.generation != where.generation:
                current = None  # the state of a trigger the automation no longer has
            after, intents = transition(current)
            try:
                if after != current:
                    # A bucket that resets is emptied, not deleted: its version keeps growing, so
                    # a process that read it before cannot mistake a new bucket for the old one.
                    self._store.put(
                        self._bucket_item(where, trigger, after),
                        if_absent=item is None,
                        if_version=int(item["v"]) if item is not None else None,
                    )
            except ConditionFailedError:
                continue  # another process changed it: evaluate again on what it wrote
            return intents
        raise AutomationConflictError(pk, sk, "the trigger's bucket kept changing")

    def _bucket_item(self, where: Where, trigger: EventTrigger, bucket: Bucket | None) -> Item:
        """The bucket's item; ``None``: an emptied bucket, kept a while (see ``_step``)."""
        pk, sk = keys.automation_bucket(where.automation_id, where.path, where.key)
        item: Item = {
            "pk": pk,
            "sk": sk,
            "automation_id": str(where.automation_id),
            "path": where.path,
            "key": where.key,
            "labels": where.labels,
            "bucket": bucket.as_json() if bucket is not None else None,
        }
        if bucket is None:
            item["ttl"] = int((self._clock() + REACTIVE_GRACE).timestamp())
            return item
        if trigger.posture is Posture.PROACTIVE and bucket.end is not None:
            item["gsi1pk"] = keys.automations_due(keys.shard_of(where.automation_id, self._shards))
            item["gsi1sk"] = keys.automation_due_sort(bucket.end, where.automation_id, where.path, where.key)
        if (expires := bucket.expires()) is not None:
            item["ttl"] = int(expires.timestamp())
        return item


def _core(automation: Automation) -> dict[str, Any]:
    """What an automation is, as created (no id, times or version): what makes two the same."""
    return automation.model_dump(include=set(AutomationCore.model_fields))


def _item(automation: Automation) -> Item:
    pk, sk = keys.automation(automation.id)
    sort = keys.automation_sort(automation.created, automation.id)
    item: Item = {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.automations_index(keys.shard_of(automation.id)),
        "gsi2sk": sort,
        "automation": automation.model_dump(mode="json"),
    }
    if automation.owner_resource:
        item["gsi1pk"] = keys.automations_of_owner(automation.owner_resource)
        item["gsi1sk"] = sort
    return item
