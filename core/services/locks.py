"""Locks for SERIALIZABLE transactions: leases with fencing tokens, over conditional writes.

One item per key, ``TXN#<key>`` / ``LOCK`` (see ``keys``), holds the lock's state::

    holder   who holds it (``None`` once released)
    token    the fencing token of the current (or last) lease
    expires  when the lease ends unless renewed (epoch seconds, float)
    lease_s  the lease's length in seconds
    ttl      an hour past ``expires``: the store forgets an idle lock after that

The protocol, every step a single conditional write on that item:

- **acquire**: read the item. No item: create it (``if_absent``). Released, or its lease has
  ended (``expires <= now``): take it over (``if_version`` of what was read), with a new token.
  Held by someone else: wait (poll, jittered, never past the lease's end or the deadline) or
  raise ``LockTimeoutError``. A lost write means another writer got there first: read again.
  Acquiring again with the holder that holds it (an HTTP retry whose answer was lost) renews
  that lease and returns the same token.
- **renew** / **release**: only while the lease's token is still the item's token and the lock
  is not released; written ``if_version``, so a takeover between the read and the write wins
  and the holder gets ``LockLostError``. A release keeps the item (holder ``None``, same
  token) so the next token still counts up from it; releasing twice is harmless.
- **fencing**: each new lease's token is ``max(previous + 1, now in milliseconds)``, so tokens
  strictly increase per key across releases and takeovers, and still do after an idle lock's
  item has expired from the store (the clock has moved on by more than an hour of tokens).
  A holder that was paused past its lease can be fenced out: ``check`` tells it, and
  ``fence`` gives a store ``Check`` that makes any write conditional on the token still being
  current (``Records.commit(fencing_token=…)`` uses it). A lease that has ended but that no
  one has taken over is still current: its holder may renew it or commit under it.

Clocks: whether a lease has ended is decided by the acquirer's clock against the ``expires``
the holder's clock wrote, so hosts' clocks must agree to well within a lease (NTP-synchronized
hosts and cloud functions agree to milliseconds). The store's ``ttl`` never decides a
takeover; it only garbage-collects idle locks.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from overcast.core import keys
from overcast.core.errors import ConditionFailedError, InvalidValueError, LockLostError, LockTimeoutError
from overcast.core.ports import Check, Item, KeyValueStore
from overcast.core.states import utcnow
from overcast.core.types import Float, UtcDateTime, _number

MAX_LEASE_S = 86_400.0
"""The longest lease: a day (renew a longer hold)."""
MAX_HOLDER_CHARS = 200
LOCK_RETENTION_S = 3_600
"""How long the store keeps an idle lock's item past its last lease (then its ttl hides it)."""
DEFAULT_POLL_S = 0.1
MAX_ATTEMPTS = 25

TransactionKey = Annotated[str, StringConstraints(min_length=1, max_length=keys.MAX_TXN_KEY_CHARS)]
"""A transaction (cache) key: any text of 1-500 characters."""
Holder = Annotated[str, StringConstraints(min_length=1, max_length=MAX_HOLDER_CHARS)]
"""Who holds a lock: any text of 1-200 characters, unique per would-be holder."""
# The bound goes before the validator so that it stays in the JSON schema inside ``… | None``.
FencingToken = Annotated[int, Field(ge=1), BeforeValidator(_number)]
"""A fencing token: a positive JSON integer (not a bool or a numeric string)."""


class Lease(BaseModel):
    """A holder's lease on a lock, as ``Locks.acquire`` and ``Locks.renew`` return it.

    Pass it back as it is to ``renew``, ``release`` and ``check`` (over HTTP: post it back).

    Attributes:
        key: the lock's (transaction) key.
        holder: who holds it.
        token: the fencing token: larger than every earlier lease's on this key.
        expires_at: when the lease ends unless renewed; after it another holder may take over.
        lease_s: the lease's length in seconds (``renew`` extends by this much by default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: TransactionKey
    holder: Holder
    token: FencingToken
    expires_at: UtcDateTime
    lease_s: Float = Field(gt=0, le=MAX_LEASE_S)


class Locks:
    """Acquires, renews, checks and releases leased locks with fencing tokens.

    Safe across threads, processes and hosts: every change is one conditional write to the
    lock's item (see the module docstring for the protocol and its clock assumption).

    Args:
        store: the key-value store.
        clock: the current time (injected for tests).
        sleep: how to wait between polls (injected for tests, e.g. a fake clock's ``advance``).
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sleep = sleep

    def acquire(
        self,
        key: str,
        holder: str,
        lease_s: float,
        *,
        wait_s: float | None = 0.0,
        poll_s: float = DEFAULT_POLL_S,
    ) -> Lease:
        """Take the lock on ``key`` for ``lease_s`` seconds, waiting up to ``wait_s`` for it.

        A lock whose lease has ended is taken over. Acquiring a lock this holder already holds
        renews that lease (same token), so a retried request never waits on itself.

        Args:
            key: the transaction key (1-500 characters).
            holder: who asks (1-200 characters); unique per process and transaction.
            lease_s: how long the lease lasts unless renewed (0 < lease_s <= 86,400).
            wait_s: how long to wait for another holder to let go: 0 tries once, ``None``
                waits as long as it takes.
            poll_s: the longest pause between looks while waiting (jittered).

        Returns:
            A new lease, with a fencing token larger than any earlier one on this key (or,
            when this holder already held the lock, that lease renewed, same token).

        Raises:
            LockTimeoutError: another holder kept the lock for the whole wait.
            InvalidKeyError: a malformed key.
            InvalidValueError: a malformed holder, lease, wait or poll interval.
        """
        pk, sk = keys.transaction_lock(key)
        _check_holder(holder)
        _check_lease(lease_s)
        if wait_s is not None and not (isinstance(wait_s, int | float) and wait_s >= 0):
            raise InvalidValueError(f"wait_s must be a number >= 0 or None, not {wait_s!r}")
        if not (isinstance(poll_s, int | float) and poll_s > 0):
            raise InvalidValueError(f"poll_s must be a number > 0, not {poll_s!r}")
        start = self._now()
        deadline = None if wait_s is None else start + wait_s
        while True:
            now = self._now()
            item = self._store.get(pk, sk)
            if item is not None and _held(item, now) and item["holder"] != holder:
                if deadline is not None and now >= deadline:
                    raise LockTimeoutError(key, holder, item["holder"], item["expires"], now - start)
                pause = min(poll_s * random.uniform(0.5, 1.0), item["expires"] - now)  # noqa: S311
                if deadline is not None:
                    pause = min(pause, deadline - now)
                self._sleep(max(pause, 0.0))
                continue
            if item is not None and _held(item, now):
                token = int(item["token"])  # ours already: an idempotent retry renews it
            else:
                token = _next_token(int(item["token"]) if item is not None else 0, now)
            lease = self._write(pk, sk, key, holder, token, now + lease_s, lease_s, item)
            if lease is not None:
                return lease
            # another writer changed the lock between our read and our write: look again

    def renew(self, lease: Lease, *, lease_s: float | None = None) -> Lease:
        """Extend a lease to ``lease_s`` (default: its own length) seconds from now.

        A lease that has ended is renewed too, as long as no one has taken the lock over.

        Returns:
            The renewed lease (same token, later ``expires_at``).

        Raises:
            LockLostError: the lease was released, or another holder took the lock over.
            InvalidValueError: a malformed ``lease_s``.
        """
        pk, sk = keys.transaction_lock(lease.key)
        length = lease.lease_s if lease_s is None else lease_s
        _check_lease(length)
        for _ in range(MAX_ATTEMPTS):
            item = self._store.get(pk, sk)
            _require_current(lease, item)
            assert item is not None
            now = self._now()
            renewed = self._write(pk, sk, lease.key, lease.holder, lease.token, now + length, length, item)
            if renewed is not None:
                return renewed
        raise ConditionFailedError(pk, sk, f"the lock kept changing; gave up after {MAX_ATTEMPTS} tries")

    def release(self, lease: Lease) -> None:
        """Let go of the lock, so the next acquirer takes it at once.

        Releasing a lease that is already released does nothing (a retried request).

        Raises:
            LockLostError: another holder took the lock over (the lease had ended); the
                current holder's lease is left alone.
        """
        pk, sk = keys.transaction_lock(lease.key)
        for _ in range(MAX_ATTEMPTS):
            item = self._store.get(pk, sk)
            if item is not None and item["holder"] is None and item["token"] == lease.token:
                return
            _require_current(lease, item)
            assert item is not None
            now = self._now()
            released = _item(pk, sk, None, lease.token, now, lease.lease_s)
            try:
                self._store.put(released, if_version=item["v"])
            except ConditionFailedError:
                continue
            return
        raise ConditionFailedError(pk, sk, f"the lock kept changing; gave up after {MAX_ATTEMPTS} tries")

    def check(self, lease: Lease) -> Lease:
        """Say whether ``lease`` is still its key's current lease; return it as stored now.

        The returned lease's ``expires_at`` shows whether it has ended (a lease that ended is
        still current until another holder takes the lock over; renew it to keep it).

        Raises:
            LockLostError: the lease was released, or another holder took the lock over.
        """
        pk, sk = keys.transaction_lock(lease.key)
        item = self._store.get(pk, sk)
        _require_current(lease, item)
        assert item is not None
        return _lease(lease.key, item)

    def read(self, key: str) -> Lease | None:
        """Return the lease that holds ``key`` now, or ``None`` when the lock is free.

        Free means: never taken, released, or its lease has ended.
        """
        pk, sk = keys.transaction_lock(key)
        item = self._store.get(pk, sk)
        if item is None or not _held(item, self._now()):
            return None
        return _lease(key, item)

    def fence(self, key: str, token: int) -> Check:
        """A store condition that holds only while ``token`` is ``key``'s current lease.

        Put it first in a ``KeyValueStore.transact`` to make writes there conditional on the
        lease (a ``TransactionConflictError`` at index 0 means the lock changed: call again).

        Raises:
            LockLostError: the token is not current now.
        """
        pk, sk = keys.transaction_lock(key)
        item = self._store.get(pk, sk)
        if item is None:
            raise LockLostError(key, None, token, "no lock is held on the key")
        if item["token"] != token:
            raise LockLostError(
                key, None, token, f"another lease (token {item['token']}) has taken the lock since"
            )
        if item["holder"] is None:
            raise LockLostError(key, None, token, "the lease was released")
        return Check(pk, sk, version=int(item["v"]))

    # -- internals ----------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock().timestamp()

    def _write(
        self,
        pk: str,
        sk: str,
        key: str,
        holder: str,
        token: int,
        expires: float,
        lease_s: float,
        current: Item | None,
    ) -> Lease | None:
        """Write a held lock over ``current`` (as read); ``None`` when another writer came first."""
        item = _item(pk, sk, holder, token, expires, lease_s)
        try:
            if current is None:
                self._store.put(item, if_absent=True)
            else:
                self._store.put(item, if_version=current["v"])
        except ConditionFailedError:
            return None
        return _lease(key, item)


def _item(pk: str, sk: str, holder: str | None, token: int, expires: float, lease_s: float) -> Item:
    return {
        "pk": pk,
        "sk": sk,
        "holder": holder,
        "token": token,
        "expires": expires,
        "lease_s": lease_s,
        "ttl": math.ceil(expires) + LOCK_RETENTION_S,
    }


def _lease(key: str, item: Item) -> Lease:
    return Lease(
        key=key,
        holder=item["holder"],
        token=item["token"],
        expires_at=datetime.fromtimestamp(item["expires"], UTC),
        lease_s=item["lease_s"],
    )


def _held(item: Item, now: float) -> bool:
    """Whether the lock's item shows a lease that has not ended."""
    return item["holder"] is not None and float(item["expires"]) > now


def _next_token(previous: int, now: float) -> int:
    # Counting up from the previous token keeps tokens strictly increasing while the item
    # lives; the time floor keeps them increasing after an idle item has expired away.
    return max(previous + 1, int(now * 1000))


def _require_current(lease: Lease, item: Any) -> None:
    if item is None:
        raise LockLostError(lease.key, lease.holder, lease.token, "no lock is held on the key")
    if item["token"] != lease.token:
        raise LockLostError(
            lease.key,
            lease.holder,
            lease.token,
            f"another lease (token {item['token']}) has taken the lock since",
        )
    if item["holder"] is None:
        raise LockLostError(lease.key, lease.holder, lease.token, "the lease was released")
    if item["holder"] != lease.holder:
        raise LockLostError(lease.key, lease.holder, lease.token, f"the lock is held by {item['holder']!r}")


def _check_holder(holder: object) -> None:
    if not isinstance(holder, str) or not 1 <= len(holder) <= MAX_HOLDER_CHARS:
        raise InvalidValueError(f"a lock holder must be a string of 1-{MAX_HOLDER_CHARS} characters")


def _check_lease(lease_s: object) -> None:
    if (
        isinstance(lease_s, bool)
        or not isinstance(lease_s, int | float)
        or not math.isfinite(lease_s)
        or not 0 < lease_s <= MAX_LEASE_S
    ):
        raise InvalidValueError(
            f"lease_s must be a number of seconds in (0, {MAX_LEASE_S:g}], not {lease_s!r}"
        )
