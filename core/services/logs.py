"""Log lines of runs: written in batches, kept for a retention period, read back in order."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from overcast.core import keys
from overcast.core.models import LogLine
from overcast.core.ports import KeyValueStore
from overcast.core.schemas import Page
from overcast.core.services._listing import list_partition
from overcast.core.states import utcnow

DEFAULT_RETENTION = timedelta(days=30)


class Logs:
    """Writes and reads log lines.

    Args:
        store: the key-value store.
        retention: how long lines are kept (they expire through the store's TTL).
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._retention = retention
        self._clock = clock

    def write(self, lines: list[LogLine]) -> int:
        """Store the lines; a replayed line (same id) is written again, not twice. Return the count."""
        expires = int((self._clock() + self._retention).timestamp())
        items = []
        for line in lines:
            run_id = line.flow_run_id or line.task_run_id
            pk, sk = keys.log_line(run_id or uuid.UUID(int=0), line.timestamp, line.id)
            items.append({"pk": pk, "sk": sk, "ttl": expires, "line": line.model_dump(mode="json")})
        self._store.batch_put(items)
        return len(items)

    def read(self, run_id: uuid.UUID, *, limit: int = 200, cursor: str | None = None) -> Page[LogLine]:
        """Return a run's lines (flow run, or task run outside a flow), oldest first."""
        items, next_cursor = list_partition(
            self._store, keys.logs_of(run_id), sort_attr="sk", limit=limit, cursor=cursor
        )
        return Page[LogLine](
            items=[LogLine.model_validate(i["line"]) for i in items], next_cursor=next_cursor
        )
