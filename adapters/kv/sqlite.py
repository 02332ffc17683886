"""The embedded key-value store: one SQLite file in WAL mode, shared by threads and processes.

Every conditional write is a single statement (or, for transactions, one ``BEGIN IMMEDIATE``
block), so SQLite's write lock is what serializes competing writers: several processes on one
file never lose or corrupt a write. ``synchronous=NORMAL`` in WAL mode survives a crash of the
process (not of the machine's power) at a fraction of FULL's cost (see ``overcast.adapters._sqlite``).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from overcast.adapters._sqlite import ThreadConnections, connect, immediate
from overcast.adapters.kv._base import (
    BaseKeyValueStore,
    Clock,
    Condition,
    EncodedOp,
    QuerySpec,
    prefix_successor,
)
from overcast.adapters.kv._codec import Record
from overcast.core.errors import BackendError, ConditionFailedError, TransactionConflictError
from overcast.core.ports import INDEXES

_COLUMNS = "pk, sk, v, data, ttl, gsi1pk, gsi1sk, gsi2pk, gsi2sk"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL, sk TEXT NOT NULL, v INTEGER NOT NULL, data TEXT NOT NULL, ttl INTEGER,
    gsi1pk TEXT, gsi1sk TEXT, gsi2pk TEXT, gsi2sk TEXT,
    UNIQUE (pk, sk)
);
CREATE INDEX IF NOT EXISTS items_gsi1 ON items (gsi1pk, gsi1sk, pk, sk) WHERE gsi1pk IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_gsi2 ON items (gsi2pk, gsi2sk, pk, sk) WHERE gsi2pk IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_ttl ON items (ttl) WHERE ttl IS NOT NULL;
"""
# A rowid table, not WITHOUT ROWID: items carry kilobytes of JSON, and SQLite stores large rows
# far better in a rowid table (inserts measured twice as fast); (pk, sk) is a unique index.
_LIVE = "(ttl IS NULL OR ttl > :now)"
_POSITIONAL = ", ".join("?" * len(_COLUMNS.split(", ")))  # binds a Record (a tuple in column order)
_VALUES = ":pk, :sk, :v, :data, :ttl, :gsi1pk, :gsi1sk, :gsi2pk, :gsi2sk"
_SET_ALL = "data = :data, ttl = :ttl, gsi1pk = :gsi1pk, gsi1sk = :gsi1sk, gsi2pk = :gsi2pk, gsi2sk = :gsi2sk"


class SqliteKeyValueStore(BaseKeyValueStore):
    """A ``KeyValueStore`` in an SQLite file (``sqlite:///path``).

    Args:
        path: the database file; its directory is created.
        clock: epoch seconds, for TTL.
        busy_timeout_s: how long a writer waits for another's lock before failing.
    """

    def __init__(self, path: str | Path, *, clock: Clock = time.time, busy_timeout_s: float = 30.0) -> None:
        super().__init__(clock=clock)
        file = Path(path).expanduser()
        file.parent.mkdir(parents=True, exist_ok=True)
        self._path = str(file)
        self._connections = ThreadConnections(lambda: connect(self._path, busy_timeout_s=busy_timeout_s))
        self._conn().executescript(_SCHEMA)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def close(self) -> None:
        """Close every connection this store opened."""
        self._connections.close()

    def purge_expired(self) -> int:
        """Delete items whose ttl has passed (reads ignore them anyway); return how many."""
        cur = self._execute("DELETE FROM items WHERE ttl IS NOT NULL AND ttl <= :now", {"now": self._clock()})
        return cur.rowcount

    # -- hooks --------------------------------------------------------------------------------

    def _get(self, pk: str, sk: str) -> Record | None:
        row = self._execute(f"SELECT {_COLUMNS} FROM items WHERE pk = :pk AND sk = :sk", {"pk": pk, "sk": sk})
        found = row.fetchall()
        return Record(*found[0]) if found else None

    def _put(self, record: Record, condition: Condition, now: float) -> int:
        sql, params = _put_statement(record, condition, now)
        # fetchall steps the statement to its end, which is what commits it in autocommit mode.
        rows = self._execute(sql, params).fetchall()
        if not rows:
            raise ConditionFailedError(record.pk, record.sk, condition.describe())
        return int(rows[0][0])

    def _delete(self, pk: str, sk: str, condition: Condition, now: float) -> bool:
        rows = self._execute(*_delete_statement(pk, sk, condition, now)).fetchall()
        if not rows:
            if condition.version is not None:
                raise ConditionFailedError(pk, sk, condition.describe())
            return False
        return rows[0][0] is None or rows[0][0] > now

    def _query(self, spec: QuerySpec, want: int | None, now: float) -> list[Record]:
        if spec.index is None:
            part_col, sort_col, order = "pk", "sk", ["sk"]
        else:
            part_col, sort_col = INDEXES[spec.index]
            order = [sort_col, "pk", "sk"]
        where = [f"{part_col} = :pk", _LIVE]
        params: dict[str, object] = {"pk": spec.pk, "now": now}
        low, high, high_inclusive = spec.low, spec.high, True
        if spec.prefix is not None:
            low, high, high_inclusive = spec.prefix, prefix_successor(spec.prefix), False
        if low is not None:
            where.append(f"{sort_col} >= :low")
            params["low"] = low
        if high is not None:
            where.append(f"{sort_col} {'<=' if high_inclusive else '<'} :high")
            params["high"] = high
        after = spec.after_sort_key()
        if after is not None:
            cols = ", ".join(order)
            marks = ", ".join(f":a{i}" for i in range(len(after)))
            where.append(f"({cols}) {'<' if spec.descending else '>'} ({marks})")
            params.update({f"a{i}": part for i, part in enumerate(after)})
        direction = " DESC" if spec.descending else ""
        sql = f"SELECT {_COLUMNS} FROM items WHERE {' AND '.join(where)} ORDER BY " + ", ".join(
            col + direction for col in order
        )
        if want is not None:
            sql += f" LIMIT {int(want)}"
        return [Record(*row) for row in self._execute(sql, params)]

    def _transact(self, operations: list[EncodedOp], now: float) -> None:
        if all(op.kind == "put" and op.condition.absent for op in operations) and self._insert_all(
            operations
        ):
            return
        try:
            with immediate(self._conn()) as conn:
                for index, op in enumerate(operations):
                    if op.kind == "put" and op.record is not None:
                        held = bool(conn.execute(*_put_statement(op.record, op.condition, now)).fetchall())
                    elif op.kind == "delete":
                        held = bool(
                            conn.execute(*_delete_statement(op.pk, op.sk, op.condition, now)).fetchall()
                        )
                        held = held or op.condition.version is None  # an unconditional delete always holds
                    else:
                        row = conn.execute(
                            f"SELECT {_COLUMNS} FROM items WHERE pk = ? AND sk = ?", (op.pk, op.sk)
                        )
                        found = row.fetchall()
                        held = op.condition.holds(Record(*found[0]) if found else None, now)
                    if not held:
                        raise TransactionConflictError(op.pk, op.sk, op.condition.describe(), index=index)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite transaction failed: {exc}") from exc

    def _insert_all(self, operations: list[EncodedOp]) -> bool:
        """Insert every record of an all-new transaction in one statement; False if one key exists.

        Creating many items at once (task runs, reported a batch at a time) is the common
        transaction, and one ``executemany`` does it several times faster than a conditional
        statement per item. A key that exists (even as an expired item) rolls it all back, and
        the caller's general path then decides item by item.
        """
        try:
            with immediate(self._conn()) as conn:
                conn.executemany(
                    f"INSERT INTO items ({_COLUMNS}) VALUES ({_POSITIONAL})",
                    [op.record.with_version(1) for op in operations if op.record is not None],
                )
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite transaction failed: {exc}") from exc
        return True

    def _batch_put(self, records: list[Record]) -> None:
        try:
            with immediate(self._conn()) as conn:
                conn.executemany(
                    f"INSERT OR REPLACE INTO items ({_COLUMNS}) VALUES ({_VALUES})",
                    [_params(r) for r in records],
                )
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite batch write failed: {exc}") from exc

    def _execute(self, sql: str, params: dict[str, object]) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, params)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite statement failed: {exc}") from exc


def _put_statement(record: Record, condition: Condition, now: float) -> tuple[str, dict[str, object]]:
    """One statement that writes ``record`` under ``condition`` and returns the new version.

    It returns no row when the condition does not hold (and then changes nothing).
    """
    params = _params(record) | {"now": now}
    if condition.absent:
        # Insert, or replace an expired item; a live one makes the statement change nothing.
        sql = (
            f"INSERT INTO items ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT (pk, sk) DO UPDATE SET "
            f"v = 1, {_SET_ALL} WHERE items.ttl IS NOT NULL AND items.ttl <= :now RETURNING v"
        )
        params["v"] = 1
    elif condition.version is not None:
        sql = f"UPDATE items SET v = v + 1, {_SET_ALL} WHERE pk = :pk AND sk = :sk AND v = :expected AND {_LIVE} RETURNING v"
        params["expected"] = condition.version
    else:
        sql = (
            f"INSERT INTO items ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT (pk, sk) DO UPDATE SET "
            f"v = items.v + 1, {_SET_ALL} RETURNING v"
        )
        params["v"] = 1
    return sql, params


def _delete_statement(pk: str, sk: str, condition: Condition, now: float) -> tuple[str, dict[str, object]]:
    """One statement that deletes under ``condition`` and returns the deleted row's ttl."""
    params = {"pk": pk, "sk": sk, "now": now, "expected": condition.version}
    guard = f" AND v = :expected AND {_LIVE}" if condition.version is not None else ""
    return f"DELETE FROM items WHERE pk = :pk AND sk = :sk{guard} RETURNING ttl", params


def _params(record: Record) -> dict[str, object]:
    return {
        "pk": record.pk,
        "sk": record.sk,
        "v": record.v,
        "data": record.data,
        "ttl": record.ttl,
        "gsi1pk": record.gsi1pk,
        "gsi1sk": record.gsi1sk,
        "gsi2pk": record.gsi2pk,
        "gsi2sk": record.gsi2sk,
    }
