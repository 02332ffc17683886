"""Paging through one partition with a filter the store cannot apply, behind an opaque cursor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from overcast.core import keys
from overcast.core.ports import Item, KeyValueStore
from overcast.core.schemas import decode_cursor, encode_cursor

MAX_SCAN = 5_000
"""The most items one listing request reads; past it the page is cut short, with a cursor."""


def list_partition(
    store: KeyValueStore,
    pk: str,
    *,
    sort_attr: str,
    index: str | None = None,
    low: str | None = None,
    high: str | None = None,
    descending: bool = False,
    cursor: str | None = None,
    limit: int,
    keep: Callable[[Item], bool] = lambda _item: True,
) -> tuple[list[Item], str | None]:
    """Return up to ``limit`` items of a partition that ``keep`` accepts, and the next cursor.

    Args:
        store: the key-value store.
        pk: the partition (of the table, or of ``index``).
        sort_attr: the attribute the partition sorts by (``sk``, ``gsi1sk`` …); it must be
            unique within the partition, as Overcast's ``<time>#<id>`` sort keys are.
        index: the index to query, if any.
        low, high: inclusive bounds on the sort attribute.
        descending: newest first.
        cursor: a cursor this function returned, to continue after it.
        limit: the most items to return.
        keep: the filter the store cannot apply.

    Returns:
        The items, and a cursor when more may follow. A page cut short by ``MAX_SCAN`` holds
        fewer than ``limit`` items and still has a cursor.
    """
    after = decode_cursor(cursor) if cursor else None
    if after is not None:
        if descending:
            high = after if high is None else min(high, after)
        else:
            low = after if low is None else max(low, after)
    bounds = (low, high) if (low is not None or high is not None) else None
    if bounds and low is not None and high is not None and low > high:
        return [], None
    out: list[Item] = []
    scanned = 0
    page_cursor: str | None = None
    batch = min(max(limit * 2, 50), 500)
    while True:
        page = store.query(
            pk, index=index, sk_range=bounds, limit=batch, cursor=page_cursor, descending=descending
        )
        for item in page.items:
            key = item[sort_attr]
            if key == after:
                continue  # the cursor names the last item already returned
            scanned += 1
            if keep(item):
                out.append(item)
                if len(out) > limit:
                    return out[:limit], encode_cursor(out[limit - 1][sort_attr])
            if scanned >= MAX_SCAN:
                return out, encode_cursor(key)
        page_cursor = page.cursor
        if page_cursor is None:
            return out, None


def due_items(
    store: KeyValueStore, partitions: Iterable[str], *, index: str, now: datetime, limit: int
) -> Iterator[Item]:
    """The items of each partition of ``index`` whose ``<time>#…`` sort key is at or before ``now``.

    For the tick's sweeps (proactive windows that ended, firings whose lease lapsed): oldest
    first, up to ``limit`` per partition; the next tick takes the rest.
    """
    for pk in partitions:
        items, _ = list_partition(
            store, pk, index=index, sort_attr=f"{index}sk", high=keys.ts(now) + "#~", limit=limit
        )
        yield from items


def list_by_name(
    store: KeyValueStore,
    pk: str,
    *,
    prefix: str | None,
    cursor: str | None,
    limit: int,
    keep: Callable[[Item], bool] = lambda _item: True,
) -> tuple[list[Item], str | None]:
    """A page of a gsi2 partition sorted by name (``gsi2sk``), the names starting with ``prefix``."""
    return list_partition(
        store,
        pk,
        index="gsi2",
        sort_attr="gsi2sk",
        low=prefix,
        high=prefix + "~" if prefix else None,  # "~" sorts after every character a name may hold
        cursor=cursor,
        limit=limit,
        keep=keep,
    )
