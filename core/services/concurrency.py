"""Global concurrency limits and rate limits over the key-value store.

One item per limit (``keys.concurrency_limit``) holds its settings and its occupancy::

    holders   lease id -> {"slots": n, "expires": epoch seconds}: the leases holding slots
    decaying  slots taken from a rate limit that had not decayed at ``decay_at``
    decay_at  when ``decaying`` was computed (epoch seconds)
    denied    slots refused since the limit last granted any

The protocol, every change one write under the item's version:

- **acquire**: read the item of every limit named. Leases that have lapsed are dropped and a
  rate limit's slots are decayed to now (both in memory: nothing is written for them alone).
  When every active limit has the slots free, write them all back in one transaction, each
  ``if_version`` of what was read, with the new lease's item (``keys.concurrency_lease``: the
  limits it holds slots in) ``if_absent``: all limits give their slots or none does, and two
  takers racing for the last slot cannot both win (the loser re-reads). When a limit is full,
  nothing is taken: the answer is WAIT with a suggested delay, and the full limit's ``denied``
  count goes up (a best-effort write; losing that race changes nothing else).
- **release**: read the lease's item, drop the lease from each of its limits and delete the
  lease item, in one transaction under every version read. Releasing twice is harmless.
- **renew**: push the lease's end back in each of its limits and in its own item, in one
  transaction. A lease that lapsed is renewed too, unless a taker dropped it meanwhile (its
  slots went to others): then it is gone, and the holder must take slots again.

A rate limit's slots are never held by a lease: taking one adds to ``decaying``, which falls at
``slot_decay_per_second``, so the wait for a free slot is known exactly and is what WAIT
suggests. A holder that dies holding a concurrency limit's slots loses them when its lease
lapses: the next taker that reads the limit drops it.

Clocks: whether a lease has lapsed is decided by the taker's clock against the end the holder's
clock wrote (as for ``locks``): hosts must agree to well within a lease.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from overcast.core import keys
from overcast.core.concurrency import (
    MAX_LEASE_S,
    ConcurrencyLease,
    ConcurrencyLimit,
    ConcurrencyLimitCreate,
    ConcurrencyLimitExistsError,
    ConcurrencyLimitFilter,
    ConcurrencyLimitUpdate,
    NotARateLimitError,
    SlotAcquisition,
    SlotRequest,
    limit_name,
)
from overcast.core.errors import (
    ConditionFailedError,
    InvalidValueError,
    NotFoundError,
    TransactionConflictError,
)
from overcast.core.ports import Delete, Item, KeyValueStore, Operation, Put
from overcast.core.schemas import Page
from overcast.core.services._listing import list_by_name
from overcast.core.states import utcnow

MAX_ATTEMPTS = 25
MAX_HOLDERS = 1_000
"""The most leases one limit holds at once: each is kept in the limit's item (DynamoDB's 400 KB)."""
LEASE_RETENTION_S = 3_600
"""How long the store keeps a lease's item past its end (then its ttl hides it)."""
BASE_RETRY_S = 0.1
"""The shortest suggested wait for a full concurrency limit; more waiting demand lengthens it."""
MAX_RETRY_S = 1.0
"""The longest suggested wait for a full concurrency limit."""
BLOCKED_RETRY_S = 5.0
"""The suggested wait for a request no limit of its size can grant (until the limit is raised)."""
_EPSILON = 1e-9  # decayed occupancy is a float: a slot that has all but decayed counts as free


@dataclass
class _Book:
    """A limit's item as read at ``now``: its live leases and the rate-limit slots not yet decayed."""

    item: Item
    now: float
    holders: dict[str, dict[str, Any]]
    decaying: float

    @classmethod
    def of(cls, item: Item, now: float) -> _Book:
        holders = {
            lease: held for lease, held in (item.get("holders") or {}).items() if float(held["expires"]) > now
        }
        elapsed = max(0.0, now - float(item["decay_at"]))
        decaying = max(0.0, float(item["decaying"]) - float(item["decay"]) * elapsed)
        return cls(item, now, holders, decaying)

    @property
    def name(self) -> str:
        return str(self.item["name"])

    @property
    def limit(self) -> int:
        return int(self.item["limit"])

    @property
    def rate(self) -> float:
        return float(self.item["decay"])

    @property
    def held(self) -> int:
        return sum(int(held["slots"]) for held in self.holders.values())

    def why_blocked(self, slots: int) -> str | None:
        """Why ``slots`` more cannot be taken now (``None``: they can)."""
        if slots > self.limit:
            return f"{slots} slots asked, and limit {self.name!r} has {self.limit}"
        if self.rate == 0 and len(self.holders) >= MAX_HOLDERS:
            return f"limit {self.name!r} has {MAX_HOLDERS} leases, the most one limit holds"
        occupied = self.held + self.decaying
        if occupied + slots > self.limit + _EPSILON:
            free = max(0, self.limit - math.ceil(occupied - _EPSILON))
            return f"limit {self.name!r} has {free} of {self.limit} slots free, {slots} asked"
        return None

    def retry_after(self, slots: int) -> float:
        """How long to wait before asking again for ``slots`` (exact when only decay frees them)."""
        if slots > self.limit:
            return BLOCKED_RETRY_S
        needed = self.held + self.decaying + slots - self.limit
        if self.rate > 0 and needed <= self.decaying + _EPSILON:
            return max(needed / self.rate, 0.001)
        # Every refusal since the last grant lengthens the wait, so a crowd of waiters thins out.
        backoff = BASE_RETRY_S * (1 + int(self.item.get("denied", 0)) / max(self.limit, 1))
        soonest_lapse = min((float(h["expires"]) for h in self.holders.values()), default=math.inf)
        return max(0.001, min(backoff, MAX_RETRY_S, soonest_lapse - self.now))

    def as_of_now(self, **changes: Any) -> Item:
        """The item as it stands now (lapsed leases dropped, decay applied), with ``changes``."""
        item = {k: v for k, v in self.item.items() if k != "v"}
        return {**item, "holders": self.holders, "decaying": self.decaying, "decay_at": self.now, **changes}

    def granted(self, lease_id: str, slots: int, expires: float) -> Item:
        if self.rate > 0:
            return self.as_of_now(decaying=self.decaying + slots, denied=0)
        holders = {**self.holders, lease_id: {"slots": slots, "expires": expires}}
        return self.as_of_now(holders=holders, denied=0)

    def denied(self, slots: int) -> Item:
        return self.as_of_now(denied=int(self.item.get("denied", 0)) + slots)

    def without(self, lease_id: str) -> Item:
        return self.as_of_now(holders={k: h for k, h in self.holders.items() if k != lease_id})

    def renewed(self, lease_id: str, expires: float) -> Item:
        slots = int(self.item["holders"][lease_id]["slots"])
        return self.as_of_now(holders={**self.holders, lease_id: {"slots": slots, "expires": expires}})

    def model(self) -> ConcurrencyLimit:
        return ConcurrencyLimit(
            id=self.item["id"],
            name=self.name,
            limit=self.limit,
            active=bool(self.item["active"]),
            slot_decay_per_second=self.rate,
            active_slots=self.held + math.ceil(self.decaying - _EPSILON),
            denied_slots=int(self.item.get("denied", 0)),
            created=self.item["created"],
            updated=self.item["updated"],
        )


class ConcurrencyLimits:
    """Creates, reads, lists, updates and deletes limits; takes, gives back and renews their slots.

    Safe across threads, processes and hosts: every change is a write under the versions of
    the items it read (see the module docstring).

    Args:
        store: the key-value store.
        clock: the current time (injected for tests).
    """

    def __init__(self, store: KeyValueStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._clock = clock

    # -- the limits --------------------------------------------------------------------------------

    def create(self, request: ConcurrencyLimitCreate) -> ConcurrencyLimit:
        """Create a limit, with no slot taken.

        Raises:
            ConcurrencyLimitExistsError: a limit of that name exists.
        """
        now = self._clock()
        pk, sk = keys.concurrency_limit(request.name)
        item: Item = {
            "pk": pk,
            "sk": sk,
            "gsi2pk": keys.concurrency_limits_index(keys.shard_of(request.name)),
            "gsi2sk": request.name,
            "id": str(uuid.uuid4()),
            "name": request.name,
            "limit": request.limit,
            "active": request.active,
            "decay": float(request.slot_decay_per_second),
            "created": now.isoformat(),
            "updated": now.isoformat(),
            "holders": {},
            "decaying": 0.0,
            "decay_at": now.timestamp(),
            "denied": 0,
        }
        try:
            self._store.put(item, if_absent=True)
        except ConditionFailedError:
            raise ConcurrencyLimitExistsError(request.name) from None
        return _Book.of(item, now.timestamp()).model()

    def get(self, name: str) -> ConcurrencyLimit:
        """Return the limit called ``name``, with its occupancy as of now.

        Raises:
            InvalidValueError: ``name`` is not a valid limit name.
            NotFoundError: there is no such limit.
        """
        return _Book.of(self._read(name), self._clock().timestamp()).model()

    def filter(self, query: ConcurrencyLimitFilter) -> Page[ConcurrencyLimit]:
        """List limits by name (see ``ConcurrencyLimitFilter``), each with its occupancy as of now."""
        items, cursor = list_by_name(
            self._store,
            keys.concurrency_limits_index(),
            prefix=query.name_prefix,
            cursor=query.cursor,
            limit=query.limit,
        )
        now = self._clock().timestamp()
        return Page[ConcurrencyLimit](items=[_Book.of(i, now).model() for i in items], next_cursor=cursor)

    def update(self, name: str, update: ConcurrencyLimitUpdate) -> ConcurrencyLimit:
        """Change a limit's slots, whether it is enforced, or its decay (the fields ``update`` sets).

        Slots held stay held: a limit lowered below its occupancy lets nothing through until
        enough are given back. Setting the decay to 0 frees the slots still decaying.

        Raises:
            InvalidValueError: ``name`` is not a valid limit name.
            NotFoundError: there is no such limit.
        """
        changes: dict[str, Any] = {}
        if update.limit is not None:
            changes["limit"] = update.limit
        if update.active is not None:
            changes["active"] = update.active
        if update.slot_decay_per_second is not None:
            changes["decay"] = float(update.slot_decay_per_second)
            if changes["decay"] == 0:
                changes["decaying"] = 0.0
        for _ in range(MAX_ATTEMPTS):
            item = self._read(name)
            now = self._clock()
            book = _Book.of(item, now.timestamp())
            if not changes:
                return book.model()
            written = book.as_of_now(**changes, updated=now.isoformat())
            try:
                self._store.put(written, if_version=int(item["v"]))
            except ConditionFailedError:
                continue  # slots were taken or given back since we read it: read again
            return _Book.of(written, now.timestamp()).model()
        raise ConditionFailedError(
            *keys.concurrency_limit(name), f"the limit kept changing; gave up after {MAX_ATTEMPTS} tries"
        )

    def delete(self, name: str) -> bool:
        """Delete a limit (its leases then hold nothing there); return whether there was one.

        Raises:
            InvalidValueError: ``name`` is not a valid limit name.
        """
        return self._store.delete(*keys.concurrency_limit(limit_name(name)))

    # -- slots -------------------------------------------------------------------------------------

    def acquire(self, request: SlotRequest) -> SlotAcquisition:
        """Take ``request.slots`` slots in every active limit named, all or none; never waits.

        Names given twice count once. Inactive limits give no slot and block nothing; limits
        that do not exist count as no limit unless ``request.strict``.

        Returns:
            ACQUIRED, with the lease that holds the slots taken from concurrency limits (none
            when only rate limits, inactive or missing limits were named); or WAIT, with the
            full limits and how long to wait before asking again (nothing was taken).

        Raises:
            NotFoundError: ``request.strict`` and a limit named does not exist.
            NotARateLimitError: ``request.mode`` is ``rate_limit`` and an active limit named
                has no slot decay.
        """
        names = list(dict.fromkeys(request.names))
        slots = request.slots
        missing: list[str] = []
        for _ in range(MAX_ATTEMPTS):
            now = self._clock().timestamp()
            items = {name: self._store.get(*keys.concurrency_limit(name)) for name in names}
            missing = [name for name, item in items.items() if item is None]
            if missing and request.strict:
                raise NotFoundError(
                    "concurrency limit",
                    ", ".join(missing),
                    f"concurrency limits {missing} do not exist: create them before taking their slots "
                    "(or take them with strict=False, which lets a missing limit through)",
                )
            books = [_Book.of(item, now) for item in items.values() if item is not None and item["active"]]
            if request.mode == "rate_limit":
                steady = [book.name for book in books if book.rate == 0]
                if steady:
                    raise NotARateLimitError(steady)
            blocked = [(book, why) for book in books if (why := book.why_blocked(slots)) is not None]
            if blocked:
                for book, _why in blocked:
                    self._deny(book, slots)
                return SlotAcquisition(
                    status="WAIT",
                    missing=missing,
                    blocked_by=[book.name for book, _ in blocked],
                    retry_after_seconds=max(book.retry_after(slots) for book, _ in blocked),
                    reason="; ".join(why for _, why in blocked),
                )
            if not books:
                return SlotAcquisition(status="ACQUIRED", missing=missing)
            leased = [book.name for book in books if book.rate == 0]
            lease_id = uuid.uuid4() if leased else None
            expires = now + request.lease_seconds
            operations: list[Operation] = [
                Put(book.granted(str(lease_id), slots, expires), if_version=int(book.item["v"]))
                for book in books
            ]
            if lease_id is not None:
                operations.append(Put(_lease_item(lease_id, leased, request, expires), if_absent=True))
            try:
                self._store.transact(operations)
            except TransactionConflictError:
                continue  # another taker or giver wrote a limit since we read it: read again
            return SlotAcquisition(
                status="ACQUIRED",
                lease_id=lease_id,
                expires_at=datetime.fromtimestamp(expires, UTC) if lease_id is not None else None,
                limits=[book.name for book in books],
                missing=missing,
            )
        return SlotAcquisition(
            status="WAIT",
            missing=missing,
            retry_after_seconds=BASE_RETRY_S,
            reason=f"the limits kept changing while they were read ({MAX_ATTEMPTS} tries); ask again",
        )

    def release(self, lease_id: uuid.UUID) -> bool:
        """Give back the slots a lease holds; return whether there was such a lease.

        Releasing a lease that was released already (or forgotten, an hour after it lapsed)
        does nothing and returns ``False``.

        Raises:
            ConditionFailedError: its limits kept changing through every attempt (the lease
                still lapses at its end).
        """
        pk, sk = keys.concurrency_lease(lease_id)
        for _ in range(MAX_ATTEMPTS):
            lease = self._store.get(pk, sk)
            if lease is None:
                return False
            now = self._clock().timestamp()
            operations: list[Operation] = []
            for name in lease["limits"]:
                item = self._store.get(*keys.concurrency_limit(name))
                if item is None or str(lease_id) not in (item.get("holders") or {}):
                    continue  # the limit was deleted, or a taker dropped the lapsed lease
                operations.append(Put(_Book.of(item, now).without(str(lease_id)), if_version=int(item["v"])))
            operations.append(Delete(pk, sk, if_version=int(lease["v"])))
            try:
                self._store.transact(operations)
            except TransactionConflictError:
                continue
            return True
        raise ConditionFailedError(pk, sk, f"the limits kept changing; gave up after {MAX_ATTEMPTS} tries")

    def renew(self, lease_id: uuid.UUID, *, lease_seconds: float | None = None) -> ConcurrencyLease:
        """Push a lease's end back to ``lease_seconds`` (default: its own length) from now.

        Returns:
            The renewed lease.

        Raises:
            NotFoundError: no such lease (released, or forgotten), or it lapsed and a taker
                gave its slots to others: take them again.
            InvalidValueError: a malformed ``lease_seconds``.
            ConditionFailedError: its limits kept changing through every attempt.
        """
        if lease_seconds is not None and not (
            isinstance(lease_seconds, int | float)
            and not isinstance(lease_seconds, bool)
            and 0 < lease_seconds <= MAX_LEASE_S
        ):
            raise InvalidValueError(
                f"lease_seconds must be a number of seconds in (0, {MAX_LEASE_S:g}], not {lease_seconds!r}"
            )
        pk, sk = keys.concurrency_lease(lease_id)
        for _ in range(MAX_ATTEMPTS):
            lease = self._store.get(pk, sk)
            if lease is None:
                raise NotFoundError(
                    "concurrency lease",
                    str(lease_id),
                    f"concurrency lease {lease_id} was released or has lapsed",
                )
            length = float(lease["lease_s"]) if lease_seconds is None else float(lease_seconds)
            now = self._clock().timestamp()
            expires = now + length
            operations: list[Operation] = []
            for name in lease["limits"]:
                item = self._store.get(*keys.concurrency_limit(name))
                if item is None:
                    continue  # the limit was deleted: there is nothing to hold there
                if str(lease_id) not in (item.get("holders") or {}):
                    raise NotFoundError(
                        "concurrency lease",
                        str(lease_id),
                        f"concurrency lease {lease_id} lapsed and its slots in limit {name!r} "
                        "were given to others: take them again",
                    )
                book = _Book.of(item, now)
                operations.append(Put(book.renewed(str(lease_id), expires), if_version=int(item["v"])))
            renewed = {k: v for k, v in lease.items() if k != "v"}
            renewed.update(expires=expires, lease_s=length, ttl=math.ceil(expires) + LEASE_RETENTION_S)
            operations.append(Put(renewed, if_version=int(lease["v"])))
            try:
                self._store.transact(operations)
            except TransactionConflictError:
                continue
            return _lease(lease_id, renewed)
        raise ConditionFailedError(pk, sk, f"the limits kept changing; gave up after {MAX_ATTEMPTS} tries")

    def read_lease(self, lease_id: uuid.UUID) -> ConcurrencyLease:
        """Return a lease as stored (its ``expires_at`` tells whether it has lapsed).

        Raises:
            NotFoundError: no such lease (released, or forgotten an hour after it lapsed).
        """
        lease = self._store.get(*keys.concurrency_lease(lease_id))
        if lease is None:
            raise NotFoundError("concurrency lease", str(lease_id))
        return _lease(lease_id, lease)

    # -- internals ---------------------------------------------------------------------------------

    def _read(self, name: str) -> Item:
        item = self._store.get(*keys.concurrency_limit(limit_name(name)))
        if item is None:
            raise NotFoundError("concurrency limit", name)
        return item

    def _deny(self, book: _Book, slots: int) -> None:
        """Count a refusal on a full limit: best effort, as a gauge of the demand waiting."""
        # Losing the race (the limit changed since we read it) leaves the refusal uncounted.
        with contextlib.suppress(ConditionFailedError):
            self._store.put(book.denied(slots), if_version=int(book.item["v"]))


def _lease_item(lease_id: uuid.UUID, limits: list[str], request: SlotRequest, expires: float) -> Item:
    pk, sk = keys.concurrency_lease(lease_id)
    return {
        "pk": pk,
        "sk": sk,
        "limits": limits,
        "slots": request.slots,
        "holder": request.holder,
        "expires": expires,
        "lease_s": float(request.lease_seconds),
        "ttl": math.ceil(expires) + LEASE_RETENTION_S,
    }


def _lease(lease_id: uuid.UUID, item: Item) -> ConcurrencyLease:
    return ConcurrencyLease(
        id=lease_id,
        limits=list(item["limits"]),
        slots=int(item["slots"]),
        holder=item.get("holder"),
        expires_at=datetime.fromtimestamp(float(item["expires"]), UTC),
        lease_seconds=float(item["lease_s"]),
    )
