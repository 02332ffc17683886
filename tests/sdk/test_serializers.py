"""Result serializers: round trips by name, JSON's tagged objects, clear errors, compression."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from overcast.serializers import (
    CompressedSerializer,
    JSONSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
    resolve_serializer,
    serializer_named,
)

NAMES = ["pickle", "json", "compressed/pickle", "compressed/json"]


class Order(BaseModel):
    id: uuid.UUID
    placed: datetime
    items: list[str]
    tags: set[str]
    total: Decimal


@dataclasses.dataclass
class Point:
    x: int
    y: int
    when: date


def an_order() -> Order:
    return Order(
        id=uuid.uuid4(),
        placed=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
        items=["tea", "scones"],
        tags={"express", "gift"},
        total=Decimal("12.50"),
    )


@pytest.mark.parametrize("name", NAMES)
def test_json_friendly_values_round_trip_under_every_name(name: str) -> None:
    serializer = serializer_named(name)
    value = {"n": 3, "pi": 3.25, "text": "héllo ☁", "none": None, "ok": True, "rows": [[1, 2], {"a": []}]}
    data = serializer.dumps(value)
    assert isinstance(data, bytes)
    assert serializer.loads(data) == value
    assert serializer.name == name


def test_pickle_round_trips_lambdas_and_closures() -> None:
    offset = 10
    pickle = PickleSerializer()
    add = pickle.loads(pickle.dumps(lambda x: x + offset))
    assert add(5) == 15
    assert pickle.loads(pickle.dumps({"fn": len, "order": an_order()}))["fn"]("abc") == 3


def test_json_rebuilds_pydantic_models_datetimes_uuids_and_dataclasses() -> None:
    json = JSONSerializer()
    order = an_order()
    value = {
        "order": order,
        "point": Point(1, 2, date(2026, 1, 2)),
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "id": order.id,
        "wait": timedelta(seconds=90),
        "blob": b"\x00\xff",
        "unique": {3, 1, 2},
    }
    loaded = json.loads(json.dumps(value))
    assert loaded == value
    assert isinstance(loaded["order"], Order)
    assert loaded["order"].tags == {"express", "gift"}
    assert isinstance(loaded["point"], Point)


def test_json_output_is_plain_readable_json() -> None:
    import json

    data = JSONSerializer().dumps({"when": datetime(2026, 1, 2, tzinfo=UTC), "n": 1})
    assert json.loads(data.decode("utf-8")) == {
        "when": {"__class__": "datetime.datetime", "data": "2026-01-02T00:00:00Z"},
        "n": 1,
    }


def test_json_turns_tuples_into_lists_as_json_does() -> None:
    json = JSONSerializer()
    assert json.loads(json.dumps({"pair": (1, 2)})) == {"pair": [1, 2]}


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (threading.Lock(), "_thread.lock"),
        ({"config": {"guard": threading.Lock()}}, "_thread.lock"),
        (lambda: 1, "function"),
        (object(), "object"),
    ],
)
def test_json_refuses_what_it_cannot_hold_and_suggests_pickle(value: Any, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        JSONSerializer().dumps(value)
    assert isinstance(info.value, TypeError)
    assert info.value.type_name == type_name
    assert type_name in str(info.value)
    assert "pickle" in str(info.value)


def test_json_does_not_drain_a_generator_it_refuses() -> None:
    numbers = (n for n in range(3))
    with pytest.raises(SerializationError, match="generator"):
        JSONSerializer().dumps({"numbers": numbers})
    assert list(numbers) == [0, 1, 2]


def test_json_refuses_non_string_keys_it_cannot_convert() -> None:
    with pytest.raises(SerializationError, match="pickle"):
        JSONSerializer().dumps({(1, 2): "pair"})


def test_pickle_refuses_unpicklable_values_clearly() -> None:
    with pytest.raises(SerializationError) as info:
        PickleSerializer().dumps({"guard": threading.Lock()})
    assert info.value.serializer == "pickle"
    assert "dict" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_damaged_data_is_a_serialization_error(name: str) -> None:
    with pytest.raises(SerializationError):
        serializer_named(name).loads(b"\x00not what was written")


def test_compression_shrinks_repetitive_results_and_round_trips() -> None:
    rows = [{"id": i, "status": "shipped", "carrier": "overcast-express"} for i in range(2000)]
    for inner in ("pickle", "json"):
        plain = serializer_named(inner).dumps(rows)
        compressed = serializer_named(f"compressed/{inner}")
        data = compressed.dumps(rows)
        assert len(data) < len(plain) / 5
        assert compressed.loads(data) == rows


def test_compressed_serializer_wraps_any_serializer_and_level() -> None:
    fast = CompressedSerializer(JSONSerializer(), level=1)
    assert fast.name == "compressed/json"
    assert fast.loads(fast.dumps([1, 2, 3])) == [1, 2, 3]
    # any level reads back with the registered "compressed/json"
    assert serializer_named("compressed/json").loads(fast.dumps({"a": 1})) == {"a": 1}
    with pytest.raises(ValueError, match="1-9"):
        CompressedSerializer("pickle", level=0)


def test_resolve_serializer() -> None:
    assert resolve_serializer(None).name == "pickle"
    for name in NAMES:
        assert resolve_serializer(name).name == name
    custom = JSONSerializer()
    assert resolve_serializer(custom) is custom
    with pytest.raises(TypeError, match="Serializer"):
        resolve_serializer(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["yaml", "compressed/yaml", "Pickle", ""])
def test_unknown_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_serializer(name)
    for valid in NAMES:
        assert repr(valid) in str(info.value)


class Upper(Serializer):
    """A custom serializer: UTF-8 text, stored upper-cased."""

    name = "test-upper"

    def dumps(self, value: Any) -> bytes:
        return str(value).upper().encode()

    def loads(self, data: bytes) -> Any:
        return data.decode()


def test_a_custom_serializer_becomes_loadable_by_its_name() -> None:
    upper = resolve_serializer(Upper())
    assert serializer_named("test-upper") is upper
    assert serializer_named("test-upper").loads(upper.dumps("abc")) == "ABC"
