"""SQLite plumbing shared by the embedded key-value store and the embedded queue.

- ``connect``: autocommit connections with a busy timeout, WAL and ``synchronous=NORMAL`` for
  files (survives a crash of the process, not of the machine's power, at a fraction of FULL's
  cost).
- ``immediate``: one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock *before*
  its first read, so a read-modify-write never races another writer, thread or process.
- ``ThreadConnections``: a connection per thread (sqlite3 objects are not shared across
  threads) and per process: after fork an inherited connection is never used, nor closed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Connections inherited through fork are parked here, never closed: closing them in the child
# could release locks or roll back work that belongs to the parent.
_INHERITED: list[sqlite3.Connection] = []


def connect(database: str, *, uri: bool = False, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open an autocommit connection; file databases get WAL and ``synchronous=NORMAL``."""
    conn = sqlite3.connect(
        database, uri=uri, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    if not uri:
        _use_wal(conn, busy_timeout_s)
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _use_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Put the database in WAL mode (a property of the file: the first connection sets it).

    Connections opening a new database at once (two processes, or threads) may all try to
    switch it; the switch needs an exclusive lock, and SQLite answers one of two racing
    switchers "database is locked" at once rather than through the busy handler. So the
    switch is retried, with backoff, within the busy timeout; a database already in WAL mode is
    left as it is.
    """
    deadline = time.monotonic() + busy_timeout_s
    pause = 0.002
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # another connection is switching it: try again after it
        pause = min(pause * 2, 0.1)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class _Handle:
    """A thread's connection; weakly tracked so ``close()`` reaches it and a dead thread's goes."""

    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.pid = conn, os.getpid()


class ThreadConnections:
    """Hands each thread of each process its own connection, opened by ``open``."""

    def __init__(self, open_connection: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_connection
        self._local = threading.local()
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use (and again after fork)."""
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is not None and handle.pid == os.getpid():
            return handle.conn
        if handle is not None:
            _INHERITED.append(handle.conn)
        handle = self._local.handle = _Handle(self._open())
        with self._lock:
            self._handles.add(handle)
        return handle.conn

    def close(self) -> None:
        """Close every connection this process opened through this object."""
        with self._lock:
            handles = list(self._handles)
            self._handles = weakref.WeakSet()
        for handle in handles:
            if handle.pid == os.getpid():
                handle.conn.close()
        self._local = threading.local()
