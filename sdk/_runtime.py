"""The process's engine runtime: its client and its write-behind reporter, built once.

Built lazily from settings on first use (so ``import overcast`` stays light), or installed by
the test harness. Task-run states and log lines go through the reporter's buffer; a function
handler calls ``flush()`` before it returns, and the buffer flushes itself at interpreter exit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from overcast._records import TaskRunRecord
from overcast._writebehind import WriteBehind
from overcast.client import Client
from overcast.core.settings import Settings


class Reporter:
    """Sends task-run documents, log lines and events to the client in the background, in batches.

    A task run reported several times within one batch (Pending, Running, Completed in a few
    microseconds) is sent once, with all its states.
    """

    def __init__(self, client: Client, *, batch_size: int = 500, max_age_s: float = 0.25) -> None:
        self._client = client
        self._buffer: WriteBehind[Any] = WriteBehind(
            self._sink, batch_size=batch_size, max_age_s=max_age_s, name="overcast-reporter"
        )

    def task_run(self, record: TaskRunRecord) -> None:
        """Report ``record`` as it stands now (and as it will stand when the batch is sent).

        A record already waiting in the buffer is not queued again: the sink clears its
        ``queued`` flag before it reads the record, so a state added before that clear is sent
        with it, and one added after finds the flag clear and queues the record anew.
        """
        if record.queued:
            return
        record.queued = True
        self._buffer.put(record)

    def log(self, line: dict[str, Any]) -> None:
        """Report a log line (``LogLine`` as JSON)."""
        self._buffer.put(line)

    def event(self, event: Any) -> None:
        """Report an event (an ``Event``; ``emit_event`` builds it)."""
        self._buffer.put(_Emitted(event))

    def document(self, document: dict[str, Any]) -> None:
        """Report a task run whose document was built elsewhere (a process-pool worker)."""
        self._buffer.put(_Prebuilt(document))

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Send everything reported so far; return whether it was sent within ``timeout``."""
        return self._buffer.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the background thread."""
        return self._buffer.close(timeout)

    def _sink(self, batch: list[Any]) -> None:
        records: dict[Any, TaskRunRecord | _Prebuilt] = {}
        lines = []
        events = []
        for item in batch:
            if type(item) is TaskRunRecord:
                item.queued = False  # before its document is built: see task_run()
                records[item] = item
            elif type(item) is _Prebuilt:
                records[item.id] = item
            elif type(item) is _Emitted:
                events.append(item.event)
            else:
                lines.append(item)
        if records:
            self._client.report_task_runs([record.document() for record in records.values()])
        if lines:
            self._client.write_logs(lines)
        if events:  # a batch sent again after a failure stores them once (idempotent by id)
            self._client.emit_events(events)


class _Prebuilt:
    """A task-run document built elsewhere, waiting in the buffer like a record."""

    __slots__ = ("_document", "id")

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document
        self.id = document["task_run"]["id"]

    def document(self) -> dict[str, Any]:
        return self._document


class _Emitted:
    """An event waiting in the buffer."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event


class RecordCache:
    """The transaction records this process read or committed, newest kept (an LRU).

    Committed records do not change, so a cache hit needs no store round trip; as in Prefect
    (whose result stores keep results in memory), a process answers from what it has seen. A
    record past its ``expires_at`` is dropped on lookup; refreshing (``overwrite``) replaces
    it; SERIALIZABLE transactions always read the store. A record another process deletes is
    still answered here until it expires or this process ends.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The live record of ``key``, or ``None``."""
        with self._lock:
            record = self._items.get(key)
            if record is None:
                return None
            if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return record

    def put(self, record: Any) -> None:
        """Remember ``record`` (a ``TransactionRecord``) under its key."""
        with self._lock:
            self._items[record.key] = record
            self._items.move_to_end(record.key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)


class Runtime:
    """A client and its reporter.

    Args:
        client: the control plane.
        settings: the settings it was built from.
        reporter: what receives bookkeeping (default: a write-behind ``Reporter`` to ``client``).
        portable: whether another process reaches the same control plane from ``settings``
            (true when the runtime was built from them; false for an in-memory test harness).
    """

    def __init__(
        self,
        client: Client,
        settings: Settings | None = None,
        reporter: Any = None,
        *,
        portable: bool = False,
    ) -> None:
        self.client = client
        self.settings = settings or Settings()
        self.portable = portable  # another process reaches the same control plane from ``settings``
        self.reporter: Reporter = reporter or Reporter(client)
        self.records = RecordCache()

    def close(self) -> None:
        """Flush and stop the reporter."""
        self.reporter.close()


_lock = threading.Lock()
_current: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime, built from settings on first use."""
    global _current  # noqa: PLW0603 - one runtime per process is the point
    with _lock:
        if _current is None:
            _current = _build(Settings())
        return _current


def _build(settings: Settings) -> Runtime:
    if settings.api_url:
        from overcast.http_client import HttpClient

        return Runtime(HttpClient(settings.api_url, api_key=settings.api_key), settings, portable=True)
    from overcast.adapters.factory import Adapters
    from overcast.client import DirectClient

    plane = Adapters(settings).control_plane()
    portable = not settings.store_url.startswith("memory:")  # a memory store lives in one process
    return Runtime(DirectClient(plane), settings, portable=portable)


def client_for(settings: Settings) -> Client:
    """A client to the control plane ``settings`` name (built once per process and settings)."""
    key = settings.model_dump_json()
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _build(settings).client
        return client


_clients: dict[str, Client] = {}


@contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Run the block with ``runtime`` as the process's runtime (the test harness uses this)."""
    global _current  # noqa: PLW0603
    with _lock:
        previous, _current = _current, runtime
    try:
        yield runtime
    finally:
        runtime.reporter.flush()
        with _lock:
            _current = previous


def flush(timeout: float | None = 30.0) -> bool:
    """Send all buffered bookkeeping now. Call it before a function handler returns.

    Returns:
        Whether everything was sent within ``timeout`` seconds.
    """
    with _lock:
        runtime = _current
    return True if runtime is None else runtime.reporter.flush(timeout)
