"""Global concurrency limits and rate limits in your code, as Prefect 3's ``prefect.concurrency``.

::

    from overcast.concurrency import concurrency, rate_limit

    with concurrency("database", occupy=1):      # waits for a slot, gives it back after
        write_rows()

    rate_limit("openai-api")                     # waits for a slot that then decays
    call_the_api()

Prefect keeps the sync and async versions in two modules with the same names
(``prefect.concurrency.sync`` and ``prefect.concurrency.asyncio``); here both live in this
module, the async ones prefixed with ``a``: ``async with aconcurrency(...)`` and
``await arate_limit(...)``.

Create limits first (``overcast concurrency-limit create database 5``, or
``client.create_concurrency_limit``). A limit that does not exist lets everything through
unless ``strict=True``; an inactive limit always does. Slots are held under a lease that is
renewed in the background while the block runs, so a process that dies holding them frees them
when the lease lapses (``lease_duration`` seconds at most). Waiting polls the control plane
with the delay it suggests, so it works the same in process and over HTTP, inside and outside
flows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

from overcast._renewer import Renewer
from overcast.core.concurrency import (
    DEFAULT_LEASE_S,
    ConcurrencyLimitExistsError,
    Mode,
    NotARateLimitError,
    SlotAcquisition,
    SlotRequest,
)
from overcast.core.errors import OvercastError

if TYPE_CHECKING:
    from overcast.client import Client

__all__ = [
    "AcquireConcurrencySlotTimeoutError",
    "ConcurrencyLimitExistsError",
    "NotARateLimitError",
    "aconcurrency",
    "arate_limit",
    "concurrency",
    "rate_limit",
]

logger = logging.getLogger("overcast.concurrency")
DEFAULT_RETRY_S = 0.1  # should an answer to wait ever come without a suggested delay


class AcquireConcurrencySlotTimeoutError(OvercastError, TimeoutError):
    """Raised when the slots were not granted within ``timeout_seconds``.

    Attributes:
        names: the limits asked for.
        timeout_seconds: how long the caller waited.
        reason: why the last request had to wait (which limit was full), if known.
    """

    def __init__(self, names: list[str], timeout_seconds: float, reason: str | None) -> None:
        self.names, self.timeout_seconds, self.reason = names, timeout_seconds, reason
        why = f": {reason}" if reason else ""
        super().__init__(f"no concurrency slots in {names} within {timeout_seconds:g} s{why}")


@contextmanager
def concurrency(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    lease_duration: float = DEFAULT_LEASE_S,
    strict: bool = False,
    holder: str | None = None,
) -> Iterator[None]:
    """Hold ``occupy`` slots of each limit in ``names`` while the block runs.

    Waits until every limit has the slots free and takes them all at once (never some without
    the others). They are given back when the block exits, also when it raises. A rate limit's
    slots are not given back: they decay.

    Args:
        names: the limit's name, or several.
        occupy: how many slots to take in each.
        timeout_seconds: how long to wait for them (``None``: as long as it takes).
        lease_duration: how long the slots stay held if this process stops renewing them
            (it renews them every third of that while the block runs).
        strict: raise when a limit does not exist (otherwise it counts as no limit).
        holder: who holds them, as shown with the lease (default: this run, or this process).

    Raises:
        AcquireConcurrencySlotTimeoutError: the slots were not free within ``timeout_seconds``
            (a ``TimeoutError``).
        NotFoundError: ``strict`` and a limit does not exist.
        ValueError: invalid names or numbers.
    """
    client = _client()
    request = _request(names, occupy, "concurrency", lease_duration, strict, holder)
    answer = _acquire(client, request, timeout_seconds)
    if answer.lease_id is None:
        yield
        return
    renewer = _renewer(client, answer.lease_id, lease_duration)
    try:
        yield
    finally:
        renewer.stop()
        _release(client, answer.lease_id)


@asynccontextmanager
async def aconcurrency(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    lease_duration: float = DEFAULT_LEASE_S,
    strict: bool = False,
    holder: str | None = None,
) -> AsyncIterator[None]:
    """``concurrency`` for async code: ``async with aconcurrency("database"): ...``.

    Waiting does not block the event loop; the client's calls run on a worker thread.
    Arguments and errors as for ``concurrency``.
    """
    client = _client()
    request = _request(names, occupy, "concurrency", lease_duration, strict, holder)
    answer = await _aacquire(client, request, timeout_seconds)
    if answer.lease_id is None:
        yield
        return
    renewer = _renewer(client, answer.lease_id, lease_duration)
    try:
        yield
    finally:
        await asyncio.to_thread(renewer.stop)
        await asyncio.to_thread(_release, client, answer.lease_id)


def rate_limit(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    holder: str | None = None,
) -> None:
    """Wait until each rate limit in ``names`` has ``occupy`` slots free, and take them for good.

    The slots are never given back: they free themselves at each limit's
    ``slot_decay_per_second``. Call it before each use of the rate-limited resource.

    Args:
        names: the limit's name, or several; each must have a slot decay.
        occupy: how many slots to take in each.
        timeout_seconds: how long to wait for them (``None``: as long as it takes).
        strict: raise when a limit does not exist (otherwise it counts as no limit).
        holder: who takes them (default: this run, or this process).

    Raises:
        AcquireConcurrencySlotTimeoutError: the slots were not free within ``timeout_seconds``.
        NotARateLimitError: a limit named has no slot decay (its slots would never free).
        NotFoundError: ``strict`` and a limit does not exist.
        ValueError: invalid names or numbers.
    """
    client = _client()
    request = _request(names, occupy, "rate_limit", DEFAULT_LEASE_S, strict, holder)
    _acquire(client, request, timeout_seconds)


async def arate_limit(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    holder: str | None = None,
) -> None:
    """``rate_limit`` for async code: ``await arate_limit("openai-api")`` (arguments and errors alike)."""
    client = _client()
    request = _request(names, occupy, "rate_limit", DEFAULT_LEASE_S, strict, holder)
    await _aacquire(client, request, timeout_seconds)


# -- internals -------------------------------------------------------------------------------------


def _acquire(client: Client, request: SlotRequest, timeout_seconds: float | None) -> SlotAcquisition:
    """Ask for the slots until they are granted, waiting as the control plane suggests."""
    waiting = _Waiting(request, timeout_seconds)
    answer = client.acquire_concurrency_slots(request)
    while (delay := waiting.delay(answer)) is not None:
        time.sleep(delay)
        answer = client.acquire_concurrency_slots(request)
    return answer


async def _aacquire(client: Client, request: SlotRequest, timeout_seconds: float | None) -> SlotAcquisition:
    """``_acquire`` in an event loop: the client's calls run in a thread."""
    waiting = _Waiting(request, timeout_seconds)
    answer = await asyncio.to_thread(client.acquire_concurrency_slots, request)
    while (delay := waiting.delay(answer)) is not None:
        await asyncio.sleep(delay)
        answer = await asyncio.to_thread(client.acquire_concurrency_slots, request)
    return answer


class _Waiting:
    """Decides, after each answer, whether to ask again and after how long (or to give up)."""

    def __init__(self, request: SlotRequest, timeout_seconds: float | None) -> None:
        if timeout_seconds is not None and (
            isinstance(timeout_seconds, bool)
            or not isinstance(timeout_seconds, int | float)
            or not timeout_seconds >= 0
        ):
            raise ValueError(f"timeout_seconds must be a number >= 0 or None, not {timeout_seconds!r}")
        self._request = request
        self._timeout = timeout_seconds
        self._deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        self._told = False

    def delay(self, answer: SlotAcquisition) -> float | None:
        """How long to sleep before asking again; ``None`` once the slots were granted.

        Raises:
            AcquireConcurrencySlotTimeoutError: the deadline has passed.
        """
        if answer.acquired:
            if answer.missing:
                logger.debug("concurrency limits %s do not exist: no slots taken there", answer.missing)
            return None
        if not self._told:
            self._told = True
            logger.debug("waiting for concurrency slots: %s", answer.reason)
        # Jittered upwards: the suggestion is the soonest a slot may free, and waiters spread out.
        pause = (answer.retry_after_seconds or DEFAULT_RETRY_S) * random.uniform(1.0, 1.2)  # noqa: S311
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                assert self._timeout is not None
                raise AcquireConcurrencySlotTimeoutError(
                    list(self._request.names), self._timeout, answer.reason
                )
            pause = min(pause, left)  # one last try at the deadline
        return pause


def _renewer(client: Client, lease_id: uuid.UUID, lease_s: float) -> Renewer:
    """Renew a concurrency lease every third of its length while the block runs."""
    return Renewer(
        lambda: client.renew_concurrency_lease(lease_id),
        lease_s / 3,
        f"concurrency lease {lease_id} (its slots may go to others)",
        name="overcast-concurrency-lease",
    )


def _release(client: Client, lease_id: uuid.UUID) -> None:
    try:
        client.release_concurrency_slots(lease_id)
    except OvercastError:
        # The slots free themselves when the lease lapses; the block's own outcome stands.
        logger.warning(
            "could not give back concurrency lease %s; it frees at its end", lease_id, exc_info=True
        )


def _request(
    names: str | list[str], occupy: int, mode: Mode, lease_s: float, strict: bool, holder: str | None
) -> SlotRequest:
    return SlotRequest.model_validate(
        {
            "names": [names] if isinstance(names, str) else list(names),
            "slots": occupy,
            "mode": mode,
            "lease_seconds": lease_s,
            "strict": strict,
            "holder": holder or _holder(),
        }
    )


def _holder() -> str:
    from overcast.context import flow_run_context, task_run_context

    task_ctx = task_run_context.get()
    if task_ctx is not None:
        return f"task-run {task_ctx.task_run_id}"
    flow_ctx = flow_run_context.get()
    if flow_ctx is not None:
        return f"flow-run {flow_ctx.flow_run.id}"
    return f"process {os.getpid()} thread {threading.get_ident()}"


def _client() -> Client:
    from overcast._runtime import get_runtime
    from overcast.context import flow_run_context

    flow_ctx = flow_run_context.get()
    return flow_ctx.runtime.client if flow_ctx is not None else get_runtime().client
