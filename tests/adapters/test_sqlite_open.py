"""Opening the embedded SQLite store from several threads or processes at once."""

from __future__ import annotations

import threading
from pathlib import Path

from overcast.adapters.factory import open_store

ROUNDS, OPENERS = 60, 4


def test_stores_opened_at_once_on_a_new_database_all_open(tmp_path: Path) -> None:
    """The first connections to a new file race to switch it to WAL mode; none may fail.

    (SQLite answers one of two racing switchers "database is locked" without waiting: before
    the switch was retried, about one round in twelve failed here.)
    """
    failures: list[str] = []
    for round_ in range(ROUNDS):
        url = f"sqlite://{tmp_path / f'round-{round_}.db'}"
        barrier = threading.Barrier(OPENERS)

        def open_one(url: str = url, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                store = open_store(url)
                store.put({"pk": "P", "sk": f"{threading.get_ident()}"})
                store.close()  # type: ignore[attr-defined]
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        openers = [threading.Thread(target=open_one) for _ in range(OPENERS)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    assert failures == []
    store = open_store(f"sqlite://{tmp_path / 'round-0.db'}")
    assert len(store.query("P").items) == OPENERS  # every opener wrote
