"""One contract for every KeyValueStore: memory, SQLite and DynamoDB (on moto's server)."""

from __future__ import annotations

import enum
import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from support import FakeClock, increment_counter, kv_increment_worker

from overcast.adapters.factory import open_store
from overcast.adapters.kv._base import prefix_successor
from overcast.adapters.kv.dynamodb import DynamoDBKeyValueStore, create_table
from overcast.adapters.kv.memory import MemoryKeyValueStore
from overcast.core.errors import (
    ConditionFailedError,
    InvalidKeyError,
    InvalidValueError,
    ItemTooLargeError,
    TransactionConflictError,
)
from overcast.core.ports import Check, Delete, KeyValueStore, Put

BACKENDS = ["memory", "sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any, unique: Any) -> Iterator[dict[str, Any]]:
    """A store URL for the backend; DynamoDB tables are created on the AWS target and dropped after."""
    name = request.param
    if name == "memory":
        yield {"name": name, "url": None}
    elif name == "sqlite":
        yield {"name": name, "url": f"sqlite://{tmp_path / 'kv.db'}"}
    else:
        aws = request.getfixturevalue("aws")
        table = unique("overcast-kv")
        client = aws.client("dynamodb")
        create_table(client, table)
        try:
            yield {"name": name, "url": f"dynamodb://{table}?{aws.query()}", "client": client, "table": table}
        finally:
            client.delete_table(TableName=table)


@pytest.fixture
def store(backend: dict[str, Any], clock: FakeClock) -> Iterator[KeyValueStore]:
    if backend["name"] == "memory":
        kv: Any = MemoryKeyValueStore(clock=clock)
    elif backend["name"] == "sqlite":
        kv = open_store(backend["url"], clock=clock)
    else:
        kv = DynamoDBKeyValueStore(backend["table"], client=backend["client"], clock=clock)
    yield kv
    kv.close()


def strict_equal(a: Any, b: Any) -> bool:
    """Equal in value *and* type, all the way down (1 == 1.0 == True would hide codec bugs)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b) or (a != a and b != b)


# -- items and values -------------------------------------------------------------------------


def test_put_get_and_versions(store: KeyValueStore) -> None:
    assert store.get("P", "S") is None
    assert store.put({"pk": "P", "sk": "S", "n": 1}) == 1
    assert store.put({"pk": "P", "sk": "S", "n": 2, "v": 99}) == 2  # a given v is ignored
    item = store.get("P", "S")
    assert item == {"pk": "P", "sk": "S", "v": 2, "n": 2}


def test_a_put_replaces_the_whole_item(store: KeyValueStore) -> None:
    store.put({"pk": "P", "sk": "S", "a": 1, "b": 2, "ttl": 1_900_000_000, "gsi1pk": "G", "gsi1sk": "1"})
    store.put({"pk": "P", "sk": "S", "a": 3})
    assert store.get("P", "S") == {"pk": "P", "sk": "S", "v": 2, "a": 3}
    assert store.query("G", index="gsi1").items == []


VALUES: dict[str, Any] = {
    "float": 0.1,
    "tiny": 1e-7,
    "huge": 1.5e300,
    "negzero": -0.0,
    "decimal": Decimal("3.14159265358979323846264338327950288419716939937510"),
    "decimal_trailing_zero": Decimal("1.10"),
    "int": 42,
    "beyond_2_53": 2**53 + 1,
    "bigint": 10**40 + 7,
    "negbig": -(10**40),
    "true": True,
    "false": False,
    "none": None,
    "unicode": "héllo wörld — 日本語 😀 \u0000 nul",
    "empty_string": "",
    "empty_map": {},
    "empty_list": [],
    "bytes": b"\x00\xff\x10binary",
    "empty_bytes": b"",
    "nested": {"a": [1, 2.5, {"b": [Decimal("0.5"), b"x", None, {"c": ""}]}], "d": {"e": {}}},
    "tag_like": {"__overcast__": "bytes", "v": "not really", "__overcast__x": 1},
}


def test_values_round_trip_identically(store: KeyValueStore) -> None:
    store.put({"pk": "P", "sk": "S", **VALUES})
    item = store.get("P", "S")
    assert item is not None
    for name, value in VALUES.items():
        assert strict_equal(item[name], value), (name, item[name], value)


FAST_VALUES = {k: v for k, v in VALUES.items() if k not in ("none", "bigint", "negbig")}


def test_values_without_nulls_or_huge_ints_round_trip_identically(store: KeyValueStore) -> None:
    # the encoder's fast path (it hands nulls and ints past 64 bits to a careful one)
    store.put({"pk": "P", "sk": "S", **FAST_VALUES, "text": "null and NaN, as words"})
    item = store.get("P", "S")
    assert item is not None and item["text"] == "null and NaN, as words"
    for name, value in FAST_VALUES.items():
        assert strict_equal(item[name], value), (name, item[name], value)


@pytest.mark.parametrize("number", [10**30 + 1, -(2**64), 2**64 - 1, -(2**63), 12345678901234567890])
def test_big_ints_read_back_as_ints_in_items_with_nothing_tagged(store: KeyValueStore, number: int) -> None:
    store.put({"pk": "P", "sk": "S", "n": number, "text": "plain"})
    item = store.get("P", "S")
    assert item is not None and strict_equal(item["n"], number)


@pytest.mark.parametrize("with_null", [False, True])
def test_uuids_and_enums_are_stored_as_their_json_form(store: KeyValueStore, with_null: bool) -> None:
    run_id = uuid.uuid4()
    extra = {"nothing": None} if with_null else {}
    store.put({"pk": "P", "sk": "S", "id": run_id, "color": _Color.RED, "n": _Level.HIGH, **extra})
    item = store.get("P", "S")
    assert item is not None
    assert (item["id"], item["color"], item["n"]) == (str(run_id), "red", 3)


class _Color(enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


def test_scalar_map_keys_read_back_as_strings_as_in_json(store: KeyValueStore) -> None:
    store.put({"pk": "P", "sk": "S", "m": {7: "a", 2.5: "b", True: "c", None: "d"}})
    item = store.get("P", "S")
    assert item is not None and item["m"] == {"7": "a", "2.5": "b", "true": "c", "null": "d"}


def test_tuples_read_back_as_lists(store: KeyValueStore) -> None:
    store.put({"pk": "P", "sk": "S", "t": (1, "a")})
    item = store.get("P", "S")
    assert item is not None and item["t"] == [1, "a"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({1, 2}, "set"),
        (float("nan"), "nan"),
        (float("-inf"), "inf"),
        ({(1, 2): "a"}, "tuple key"),
        (object(), "object"),
        (datetime.now(UTC), "datetime"),
        ("half a pair \ud800 of surrogates", "surrogate"),
    ],
)
def test_unsupported_values_are_refused(store: KeyValueStore, value: Any, words: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        store.put({"pk": "P", "sk": "S", "x": {"deep": value}})
    assert "x.deep" in str(info.value)
    assert store.get("P", "S") is None


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"sk": "S"}, InvalidKeyError),
        ({"pk": "", "sk": "S"}, InvalidKeyError),
        ({"pk": "P", "sk": 3}, InvalidKeyError),
        ({"pk": "P", "sk": "S", "ttl": "soon"}, InvalidValueError),
        ({"pk": "P", "sk": "S", "gsi1pk": "G"}, InvalidValueError),
        ({"pk": "P", "sk": "S", "gsi2pk": "G", "gsi2sk": 5}, InvalidValueError),
    ],
)
def test_malformed_items_are_refused(store: KeyValueStore, item: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        store.put(item)


def test_an_item_over_400_kb_is_refused_on_every_backend(store: KeyValueStore) -> None:
    store.put({"pk": "P", "sk": "ok", "blob": "x" * 390_000})
    with pytest.raises(ItemTooLargeError) as info:
        store.put({"pk": "P", "sk": "big", "blob": "x" * 410_000})
    assert info.value.limit == 400 * 1024
    assert store.get("P", "big") is None


# -- conditions ---------------------------------------------------------------------------------


def test_if_absent_and_if_version(store: KeyValueStore) -> None:
    assert store.put({"pk": "P", "sk": "S", "n": 0}, if_absent=True) == 1
    with pytest.raises(ConditionFailedError):
        store.put({"pk": "P", "sk": "S", "n": 9}, if_absent=True)
    assert store.put({"pk": "P", "sk": "S", "n": 1}, if_version=1) == 2
    with pytest.raises(ConditionFailedError) as info:
        store.put({"pk": "P", "sk": "S", "n": 9}, if_version=1)
    assert (info.value.pk, info.value.sk) == ("P", "S")
    with pytest.raises(ConditionFailedError):
        store.put({"pk": "P", "sk": "missing"}, if_version=1)
    item = store.get("P", "S")
    assert item is not None and (item["n"], item["v"]) == (1, 2)


def test_delete(store: KeyValueStore) -> None:
    assert store.delete("P", "S") is False
    store.put({"pk": "P", "sk": "S"})
    with pytest.raises(ConditionFailedError):
        store.delete("P", "S", if_version=7)
    assert store.get("P", "S") is not None
    assert store.delete("P", "S", if_version=1) is True
    assert store.get("P", "S") is None
    with pytest.raises(ConditionFailedError):
        store.delete("P", "S", if_version=1)


def test_ttl_hides_expired_items_from_reads_and_conditions(store: KeyValueStore, clock: FakeClock) -> None:
    now = int(clock())
    store.put({"pk": "P", "sk": "old", "ttl": now - 1})
    store.put({"pk": "P", "sk": "new", "ttl": now + 60})
    store.put({"pk": "P", "sk": "forever"})
    assert store.get("P", "old") is None
    assert [i["sk"] for i in store.query("P").items] == ["forever", "new"]
    # An expired item counts as absent for if_absent, and as missing for if_version.
    with pytest.raises(ConditionFailedError):
        store.put({"pk": "P", "sk": "old"}, if_version=1)
    store.put({"pk": "P", "sk": "old", "fresh": True}, if_absent=True)
    assert store.get("P", "old") == {"pk": "P", "sk": "old", "v": 1, "fresh": True}
    clock.advance(61)
    assert store.get("P", "new") is None
    assert store.delete("P", "new") is False
    assert [i["sk"] for i in store.query("P").items] == ["forever", "old"]


# -- queries ------------------------------------------------------------------------------------


def _fill(store: KeyValueStore, n: int, pk: str = "P") -> list[str]:
    keys = [f"item#{i:03d}" for i in range(n)]
    store.batch_put([{"pk": pk, "sk": k, "i": i} for i, k in enumerate(keys)])
    return keys


def test_query_orders_filters_and_pages(store: KeyValueStore) -> None:
    keys = _fill(store, 23)
    store.put({"pk": "P", "sk": "other#1"})
    store.put({"pk": "Q", "sk": "item#000"})
    page = store.query("P", sk_prefix="item#")
    assert [i["sk"] for i in page.items] == keys and page.cursor is None
    seen, cursor = [], None
    while True:
        page = store.query("P", sk_prefix="item#", limit=5, cursor=cursor)
        seen += [i["sk"] for i in page.items]
        cursor = page.cursor
        if cursor is None:
            break
        assert len(page.items) == 5
    assert seen == keys
    # A page that ends exactly at the last item says so: no cursor, no empty page after it.
    assert store.query("P", sk_prefix="item#", limit=23).cursor is None
    down = store.query("P", sk_prefix="item#", limit=4, descending=True)
    assert [i["sk"] for i in down.items] == keys[::-1][:4]
    rest = store.query("P", sk_prefix="item#", descending=True, cursor=down.cursor)
    assert [i["sk"] for i in rest.items] == keys[::-1][4:]


def test_query_ranges_are_inclusive_and_may_be_open(store: KeyValueStore) -> None:
    keys = _fill(store, 10)
    assert [i["sk"] for i in store.query("P", sk_range=(keys[2], keys[5])).items] == keys[2:6]
    assert [i["sk"] for i in store.query("P", sk_range=(keys[7], None)).items] == keys[7:]
    assert [i["sk"] for i in store.query("P", sk_range=(None, keys[1])).items] == keys[:2]


def test_prefix_is_exact_at_unicode_edges(store: KeyValueStore) -> None:
    sks = ["a\U0010ffff", "a\U0010ffffz", "a\ud7ffz", "a\ue000", "b", "a"]
    store.batch_put([{"pk": "P", "sk": sk} for sk in sks])
    assert [i["sk"] for i in store.query("P", sk_prefix="a\U0010ffff").items] == [
        "a\U0010ffff",
        "a\U0010ffffz",
    ]
    assert [i["sk"] for i in store.query("P", sk_prefix="a\ud7ff").items] == ["a\ud7ffz"]
    assert len(store.query("P", sk_prefix="a").items) == 5
    assert prefix_successor("\U0010ffff") is None


def test_secondary_indexes(store: KeyValueStore) -> None:
    for i in range(12):
        item = {"pk": f"RUN#{i}", "sk": "META", "gsi1pk": "STATE#RUNNING" if i % 2 else "STATE#DONE"}
        store.put({**item, "gsi1sk": f"2026-11-24T00:{i:02d}", "gsi2pk": "ALL", "gsi2sk": f"{i:02d}"})
    store.put({"pk": "RUN#x", "sk": "META"})  # in no index
    running = store.query("STATE#RUNNING", index="gsi1")
    assert [i["pk"] for i in running.items] == [f"RUN#{i}" for i in range(1, 12, 2)]
    seen, cursor = [], None
    while True:
        page = store.query("ALL", index="gsi2", limit=5, cursor=cursor, sk_range=("03", None))
        seen += [i["pk"] for i in page.items]
        if (cursor := page.cursor) is None:
            break
    assert seen == [f"RUN#{i}" for i in range(3, 12)]
    latest = store.query("STATE#DONE", index="gsi1", descending=True, limit=1)
    assert latest.items[0]["pk"] == "RUN#10"


def test_bad_query_arguments_are_refused(store: KeyValueStore) -> None:
    _fill(store, 3)
    other = store.query("P", limit=1).cursor
    with pytest.raises(InvalidValueError):
        store.query("P", index="gsi9")
    with pytest.raises(InvalidValueError):
        store.query("P", limit=0)
    with pytest.raises(InvalidValueError):
        store.query("P", sk_prefix="a", sk_range=("a", "b"))
    with pytest.raises(InvalidValueError):
        store.query("P", cursor="not-a-cursor")
    with pytest.raises(InvalidValueError):
        store.query("Q", cursor=other)


# -- transactions and batches -----------------------------------------------------------------


def test_transactions_are_all_or_nothing(store: KeyValueStore) -> None:
    store.put({"pk": "A", "sk": "1", "n": 1})
    store.put({"pk": "B", "sk": "1", "n": 1})
    ops = [
        Put({"pk": "C", "sk": "1", "new": True}, if_absent=True),
        Delete("A", "1"),
        Check("B", "1", version=5),  # fails: B is at version 1
    ]
    with pytest.raises(TransactionConflictError) as info:
        store.transact(ops)
    assert (info.value.index, info.value.pk, info.value.sk) == (2, "B", "1")
    assert isinstance(info.value, ConditionFailedError)
    assert store.get("C", "1") is None and store.get("A", "1") is not None
    store.transact(
        [
            Put({"pk": "C", "sk": "1", "new": True}, if_absent=True),
            Delete("A", "1", if_version=1),
            Put({"pk": "B", "sk": "1", "n": 2}, if_version=1),
            Put({"pk": "D", "sk": "1"}),
            Check("E", "1", exists=False),
        ]
    )
    assert store.get("A", "1") is None
    assert store.get("B", "1") == {"pk": "B", "sk": "1", "v": 2, "n": 2}
    assert store.get("C", "1") == {"pk": "C", "sk": "1", "v": 1, "new": True}
    assert store.get("D", "1") == {"pk": "D", "sk": "1", "v": 1}


def test_transaction_limits(store: KeyValueStore) -> None:
    with pytest.raises(InvalidValueError, match="at most 100"):
        store.transact([Put({"pk": "P", "sk": str(i)}) for i in range(101)])
    with pytest.raises(InvalidValueError, match="once"):
        store.transact([Put({"pk": "P", "sk": "1"}), Delete("P", "1")])
    with pytest.raises(InvalidValueError):
        store.transact([Check("P", "1")])
    assert store.query("P").items == []


def test_batch_put_writes_everything_last_write_wins(store: KeyValueStore) -> None:
    items = [{"pk": "LOG#1", "sk": f"{i:05d}", "line": f"line {i}"} for i in range(120)]
    items.append({"pk": "LOG#1", "sk": "00000", "line": "rewritten"})
    store.batch_put(items)
    page = store.query("LOG#1")
    assert len(page.items) == 120
    assert page.items[0]["line"] == "rewritten"
    assert {i["v"] for i in page.items} == {1}


# -- concurrency --------------------------------------------------------------------------------


def test_threads_racing_version_guarded_updates_get_one_winner_per_version(store: KeyValueStore) -> None:
    store.put({"pk": "C", "sk": "counter", "n": 0, "by": []})
    workers, rounds = 6, 8
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda w: increment_counter(store, w, rounds), range(workers)))
    wins = [v for result in results for v in result]
    final = store.get("C", "counter")
    assert final is not None
    assert final["n"] == workers * rounds == len(final["by"])
    assert sorted(wins) == list(range(1, workers * rounds + 1))  # each version won exactly once
    assert final["v"] == workers * rounds + 1


def test_processes_racing_version_guarded_updates_get_one_winner_per_version(
    backend: dict[str, Any], store: KeyValueStore
) -> None:
    if backend["name"] == "memory":
        pytest.skip("a memory store lives in one process; there is nothing for another process to share")
    store.put({"pk": "C", "sk": "counter", "n": 0, "by": []})
    workers, rounds = 4, 6
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.starmap(kv_increment_worker, [(backend["url"], w, rounds) for w in range(workers)])
    wins = sorted(v for result in results for v in result)
    final = store.get("C", "counter")
    assert final is not None
    assert final["n"] == workers * rounds == len(final["by"])
    assert sorted(final["by"]) == sorted(w for w in range(workers) for _ in range(rounds))
    assert wins == list(range(1, workers * rounds + 1))
