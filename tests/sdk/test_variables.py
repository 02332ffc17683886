"""``Variable`` as a Prefect 3 user calls it, over the in-process client and over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from overcast import Variable, flow, task
from overcast.core.errors import InvalidValueError
from overcast.core.schemas import VariableFilter
from overcast.testing import Harness
from overcast.variables import VariableExistsError

VALUES: list[Any] = [
    {"bucket": "s3://reports", "nested": {"retries": 3, "ok": True, "none": None}},
    [1, "two", 3.5, False, None],
    42,
    -0.5,
    True,
    False,
    None,
    "héllo 😀",
    "",
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_any_json_value_round_trips(harness: Harness, value: Any) -> None:
    stored = Variable.set("setting", value, tags=["ops"])
    assert (stored.name, stored.value, stored.tags) == ("setting", value, ["ops"])
    read = Variable.get("setting", default="absent")
    assert read == value and type(read) is type(value)


def test_get_falls_back_to_the_default_and_unset_says_whether_it_was_there(harness: Harness) -> None:
    assert Variable.get("missing") is None
    assert Variable.get("missing", default={"n": 1}) == {"n": 1}
    Variable.set("present", 1)
    assert Variable.unset("present") is True
    assert Variable.unset("present") is False
    assert Variable.get("present", default=0) == 0


def test_set_refuses_to_overwrite_unless_asked(harness: Harness) -> None:
    first = Variable.set("threshold", 10, tags=["etl"])
    with pytest.raises(VariableExistsError, match="overwrite=True") as refused:
        Variable.set("threshold", 11)
    assert isinstance(refused.value, ValueError)  # as Prefect raises
    kept_tags = Variable.set("threshold", 12, overwrite=True)
    assert (kept_tags.value, kept_tags.tags, kept_tags.id) == (12, ["etl"], first.id)
    retagged = Variable.set("threshold", 13, tags=["ops"], overwrite=True)
    assert (retagged.value, retagged.tags) == (13, ["ops"])
    assert Variable.get("threshold") == 13


def test_a_value_over_the_limit_is_refused_with_the_limit_named(harness: Harness) -> None:
    with pytest.raises(ValueError, match="over the limit of 5,000"):
        Variable.set("big", "x" * 5_000)
    with pytest.raises(ValueError, match="NaN"):
        Variable.set("not_json", [float("nan")])
    assert Variable.get("big") is None


@pytest.mark.parametrize("name", ["Threshold", "my var", "a/b", "a.b", "naïve"])
def test_invalid_names_are_refused_by_every_call(harness: Harness, name: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters, digits, underscores and dashes"):
        Variable.set(name, 1)
    with pytest.raises(InvalidValueError, match="lowercase letters, digits, underscores and dashes"):
        Variable.get(name)
    with pytest.raises(InvalidValueError, match="lowercase letters, digits, underscores and dashes"):
        Variable.unset(name)


def test_flows_and_tasks_read_variables(harness: Harness) -> None:
    Variable.set("threshold", 25)

    @task
    def hot(temps: list[float]) -> list[float]:
        return [t for t in temps if t >= Variable.get("threshold", default=100)]

    @flow
    def report(temps: list[float]) -> tuple[Any, list[float]]:
        return Variable.get("threshold"), hot(temps)

    assert report([10.0, 25.0, 30.5]) == (25, [25.0, 30.5])


def test_async_twins(harness: Harness) -> None:
    async def roundtrip() -> tuple[Any, Any, bool, Any]:
        stored = await Variable.aset("async_var", {"a": [1, 2]})
        value = await Variable.aget("async_var")
        removed = await Variable.aunset("async_var")
        return stored.value, value, removed, await Variable.aget("async_var", default="gone")

    assert asyncio.run(roundtrip()) == ({"a": [1, 2]}, {"a": [1, 2]}, True, "gone")


def test_the_client_lists_variables_by_name(harness: Harness) -> None:
    for name in ("b_var", "a_var", "c_var"):
        Variable.set(name, name.upper())
    page = harness.runtime.client.filter_variables(VariableFilter(name_prefix="a"))
    assert [(v.name, v.value) for v in page.items] == [("a_var", "A_VAR")]
    everything = harness.runtime.client.filter_variables(VariableFilter())
    assert [v.name for v in everything.items] == ["a_var", "b_var", "c_var"]
