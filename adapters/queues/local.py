"""The embedded queue: at-least-once delivery from an SQLite file or a shared in-memory database.

Several named queues share one database; each row carries its queue's name, the time it becomes
visible, how often it was delivered and the receipt of its current delivery. Every
read-modify-write runs under ``BEGIN IMMEDIATE``, which takes SQLite's write lock *before* the
first read, so two threads or processes can never both see a row as visible and deliver it
twice. WAL mode lets readers proceed meanwhile; ``synchronous=NORMAL`` survives a crash of the
process (not of the machine's power) at a fraction of FULL's cost.

Arguments are checked against SQS's limits (``_limits``), so code tested locally behaves the same
in the cloud.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote

from overcast.adapters._sqlite import ThreadConnections, connect, immediate
from overcast.adapters.queues._limits import (
    DEDUP_WINDOW_S,
    check_max_receives,
    check_receive,
    check_send,
    check_visibility,
)
from overcast.core.errors import BackendError, ConfigurationError, InvalidValueError
from overcast.core.ports import Message
from overcast.core.settings import BackendURL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, id TEXT NOT NULL,
    body TEXT NOT NULL, grp TEXT, visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT
);
CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, visible_at);
CREATE INDEX IF NOT EXISTS queue_messages_group ON queue_messages (queue, grp, seq) WHERE grp IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_messages_receipt ON queue_messages (receipt) WHERE receipt IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue_dedup (
    queue TEXT NOT NULL, dedup_id TEXT NOT NULL, message_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
"""
# A grouped message is a candidate only as the head of its group: nothing sent before it in
# its group is still in the queue (in flight, delayed or waiting).
_CANDIDATES = """
SELECT seq, id, body, grp, receive_count FROM queue_messages AS m
WHERE queue = ? AND visible_at <= ? AND (grp IS NULL OR NOT EXISTS (
    SELECT 1 FROM queue_messages AS e WHERE e.queue = m.queue AND e.grp = m.grp AND e.seq < m.seq))
ORDER BY seq LIMIT ?
"""

# A shared-cache memory database reports contention as SQLITE_LOCKED, which busy_timeout does
# not retry, so its users in one process take turns on a lock per database instead.
_MEMORY_LOCKS: dict[str, threading.Lock] = {}
_MEMORY_LOCKS_GUARD = threading.Lock()


class LocalQueue:
    """A ``Queue`` in SQLite (``local:///PATH?name=Q&max_receives=N`` or ``memory://NAME``).

    Messages of one ``group`` are delivered in send order, one in flight at a time; a
    ``dedup_id`` seen in the last five minutes makes ``send`` return the first message's id.
    ``ack`` and ``extend`` with a receipt from an earlier delivery (or an unknown one) do
    nothing: only the current delivery's receipt acts on a message.

    Args:
        path: the database file (its directory is created); several queues may share it.
        name: the queue's name within the database.
        max_receives: deliveries after which a message moves to ``dead_letter`` instead of
            being delivered again; ``None`` keeps it forever (and there is no dead-letter queue).
        clock: epoch seconds, for visibility, delays and the dedup window.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str = "default",
        *,
        max_receives: int | None = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        file = Path(path).expanduser()
        file.parent.mkdir(parents=True, exist_ok=True)
        self._setup(str(file), False, name, max_receives, clock)

    @classmethod
    def in_memory(
        cls, name: str = "default", *, max_receives: int | None = 5, clock: Callable[[], float] = time.time
    ) -> LocalQueue:
        """Return a queue in a shared in-memory database, alive while a queue object on it is.

        Every ``in_memory(name)`` in one process sees the same messages; nothing is persisted.
        """
        queue = cls.__new__(cls)
        database = f"file:overcast-queue-{quote(name, safe='')}?mode=memory&cache=shared"
        queue._setup(database, True, name, max_receives, clock)
        return queue

    @classmethod
    def from_url(cls, url: BackendURL) -> LocalQueue:
        """Build a queue from ``local:///PATH?name=Q&max_receives=N`` or ``memory://NAME``.

        Raises:
            ConfigurationError: another scheme, or a missing path.
        """
        max_receives = url.param("max_receives", 5, int)
        if url.scheme == "memory":
            return cls.in_memory(url.netloc or "default", max_receives=max_receives)
        if url.scheme != "local":
            raise ConfigurationError(f"{url.url!r} is not a local:// or memory:// queue URL")
        return cls(url.require_path(), url.param("name", "default"), max_receives=max_receives)

    def _setup(
        self, database: str, uri: bool, name: str, max_receives: int | None, clock: Callable[[], float]
    ) -> None:
        if not name:
            raise InvalidValueError("a queue needs a non-empty name")
        if max_receives is not None:
            check_max_receives(max_receives)
        self.name, self.max_receives = name, max_receives
        self._database, self._uri, self._clock = database, uri, clock
        self._connections = ThreadConnections(lambda: connect(database, uri=uri))
        self._closed = False
        self._dead_letter: LocalQueue | None = None
        self._lock: AbstractContextManager[Any] = nullcontext()
        self._keeper: sqlite3.Connection | None = None
        if uri:
            with _MEMORY_LOCKS_GUARD:
                self._lock = _MEMORY_LOCKS.setdefault(database, threading.Lock())
            self._keeper = connect(database, uri=True)  # the database lives as long as one connection does
        with self._lock:
            self._connection().executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise BackendError(f"queue {self.name!r} is closed")
        return self._connections.get()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block in one ``BEGIN IMMEDIATE`` transaction; SQLite errors become ``BackendError``."""
        try:
            with self._lock, immediate(self._connection()) as conn:
                yield conn
        except sqlite3.Error as exc:
            raise BackendError(f"queue {self.name!r} in {self._database}: {exc}") from exc

    @property
    def dead_letter(self) -> LocalQueue | None:
        """The dead-letter queue (``<name>-dlq``, same database), or ``None`` when there is none."""
        if self.max_receives is None:
            return None
        if self._dead_letter is None:
            dlq = LocalQueue.__new__(LocalQueue)
            dlq._setup(self._database, self._uri, f"{self.name}-dlq", None, self._clock)
            self._dead_letter = dlq
        return self._dead_letter

    def send(
        self, body: str, *, delay_s: int = 0, group: str | None = None, dedup_id: str | None = None
    ) -> str:
        """Enqueue ``body`` and return the message id.

        Args:
            body: the text, up to 1 MiB in UTF-8, of the characters SQS accepts.
            delay_s: seconds (0-900) before the message can be received.
            group: ordering group: its messages are delivered in order, one in flight at a time.
            dedup_id: a repeat within five minutes is dropped and the first message's id returned.

        Raises:
            InvalidValueError: an argument is out of range or malformed.
        """
        check_send(body, delay_s, group, dedup_id)
        message_id = str(uuid.uuid4())
        with self._transaction() as conn:
            now = self._clock()
            if dedup_id is not None:
                conn.execute("DELETE FROM queue_dedup WHERE queue = ? AND expires_at <= ?", (self.name, now))
                row = conn.execute(
                    "SELECT message_id FROM queue_dedup WHERE queue = ? AND dedup_id = ?",
                    (self.name, dedup_id),
                ).fetchone()
                if row is not None:
                    return str(row[0])
                conn.execute(
                    "INSERT INTO queue_dedup VALUES (?, ?, ?, ?)",
                    (self.name, dedup_id, message_id, now + DEDUP_WINDOW_S),
                )
            conn.execute(
                "INSERT INTO queue_messages (queue, id, body, grp, visible_at) VALUES (?, ?, ?, ?, ?)",
                (self.name, message_id, body, group, now + delay_s),
            )
        return message_id

    def receive(self, max_messages: int = 1, *, visibility_s: int = 30, wait_s: float = 0) -> list[Message]:
        """Receive up to ``max_messages`` (1-10), hiding them for ``visibility_s`` seconds.

        Args:
            max_messages: the most messages to return.
            visibility_s: seconds (0-43200) before an unacknowledged message is delivered again.
            wait_s: seconds (0-20) to wait for a first message when none is ready.

        Returns:
            The messages, oldest first; empty when none was ready within ``wait_s``.

        Raises:
            InvalidValueError: an argument is out of range.
        """
        check_receive(max_messages, visibility_s, wait_s)
        deadline = time.monotonic() + wait_s
        pause = 0.01
        while True:
            messages = self._receive_now(max_messages, visibility_s)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)

    def _receive_now(self, max_messages: int, visibility_s: int) -> list[Message]:
        delivered: dict[int, Message] = {}
        with self._transaction() as conn:
            now = self._clock()
            while len(delivered) < max_messages:
                # A message delivered with visibility 0 is a candidate again: fetch enough to skip it.
                limit = max_messages + len(delivered)
                rows = conn.execute(_CANDIDATES, (self.name, now, limit)).fetchall()
                rows = [row for row in rows if row[0] not in delivered][: max_messages - len(delivered)]
                moved = False
                for seq, message_id, body, group, count in rows:
                    if self.max_receives is not None and count >= self.max_receives:
                        conn.execute(
                            "UPDATE queue_messages SET queue = ?, receipt = NULL, visible_at = ? "
                            "WHERE seq = ?",
                            (f"{self.name}-dlq", now, seq),
                        )
                        moved = True
                        continue
                    receipt = uuid.uuid4().hex
                    conn.execute(
                        "UPDATE queue_messages SET receive_count = receive_count + 1, receipt = ?, "
                        "visible_at = ? WHERE seq = ?",
                        (receipt, now + visibility_s, seq),
                    )
                    delivered[seq] = Message(message_id, body, receipt, count + 1, group)
                if not moved:  # a dead-lettered head may have unblocked its group's next message
                    break
        return [delivered[seq] for seq in sorted(delivered)]

    def ack(self, receipt: str) -> None:
        """Delete the delivered message; a stale or unknown receipt does nothing (idempotent)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM queue_messages WHERE queue = ? AND receipt = ?", (self.name, receipt))

    def extend(self, receipt: str, visibility_s: int) -> None:
        """Make the delivered message visible again ``visibility_s`` (0-43200) seconds from now.

        A stale or unknown receipt does nothing: it must not move another delivery's deadline.

        Raises:
            InvalidValueError: ``visibility_s`` is out of range.
        """
        check_visibility(visibility_s)
        with self._transaction() as conn:
            conn.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
                (self._clock() + visibility_s, self.name, receipt),
            )

    def approximate_count(self) -> int:
        """Return how many messages are visible now (not in flight, not delayed)."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM queue_messages WHERE queue = ? AND visible_at <= ?",
                (self.name, self._clock()),
            ).fetchone()
        return int(row[0])

    def purge(self) -> None:
        """Delete every message of this queue (not of its dead-letter queue) and its dedup records."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM queue_messages WHERE queue = ?", (self.name,))
            conn.execute("DELETE FROM queue_dedup WHERE queue = ?", (self.name,))

    def close(self) -> None:
        """Close this object's connections (and its dead-letter queue's); it is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._dead_letter is not None:
            self._dead_letter.close()
        self._connections.close()
        if self._keeper is not None:
            self._keeper.close()

    def __enter__(self) -> LocalQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalQueue({self._database!r}, {self.name!r})"
