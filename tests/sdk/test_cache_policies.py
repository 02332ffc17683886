"""Cache policies: keys that are stable across processes, change when inputs, source or run
change, combine with ``+``, leave arguments out with ``-``, and name the input they cannot hash."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from overcast.cache_policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    KEY_LENGTH,
    NO_CACHE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyContext,
    CacheKeyError,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    Inputs,
    task_input_hash,
)

RUN = uuid.UUID("0192f0c4-5a1e-7c3b-9d2e-4f5a6b7c8d9e")


def add(x: int, y: int = 0) -> int:
    return x + y


def add_differently(x: int, y: int = 0) -> int:
    return y + x


def context(
    fn: Callable[..., Any] = add, flow_run_id: uuid.UUID | None = RUN, **extra: Any
) -> CacheKeyContext:
    return CacheKeyContext(
        task_key=f"{fn}-1", task_name=getattr(fn, "__name__", "task"), fn=fn, flow_run_id=flow_run_id, **extra
    )


def key(
    policy: CachePolicy, inputs: dict[str, Any], ctx: CacheKeyContext | None = None, **flow: Any
) -> str | None:
    return policy.compute_key(ctx or context(), inputs, flow)


class Customer(BaseModel):
    id: uuid.UUID
    since: datetime
    tags: set[str]


# What a task module might hold: the same file is imported here and in a fresh interpreter
# with another string-hash salt, and the keys must agree.
KEY_MODULE = textwrap.dedent(
    """
    import uuid
    from datetime import UTC, datetime

    from overcast.cache_policies import DEFAULT, FLOW_PARAMETERS, INPUTS, CacheKeyContext


    def enrich(customer, regions, when):
        return {"customer": customer, "regions": sorted(regions), "when": when}


    def keys():
        ctx = CacheKeyContext(
            task_key="enrich-1",
            task_name="enrich",
            fn=enrich,
            flow_run_id=uuid.UUID("0192f0c4-5a1e-7c3b-9d2e-4f5a6b7c8d9e"),
        )
        inputs = {
            "customer": {"name": "Ada", "id": uuid.UUID(int=7), "scores": [1, 2.5, None]},
            "regions": {"eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"},
            "when": datetime(2026, 5, 1, 9, 30, tzinfo=UTC),
            "big": 2**80,
            "pairs": {(1, 2): "a"},
        }
        flow = {"limit": 10, "labels": frozenset({"x", "y", "z"})}
        return [
            DEFAULT.compute_key(ctx, inputs, flow),
            INPUTS.compute_key(ctx, inputs, flow),
            FLOW_PARAMETERS.compute_key(ctx, inputs, flow),
        ]
    """
)


def test_keys_are_the_same_in_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keymod.py").write_text(KEY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import keymod  # type: ignore[import-not-found]

    here = keymod.keys()
    assert all(isinstance(k, str) and len(k) == KEY_LENGTH for k in here)
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", "import json, keymod; print(json.dumps(keymod.keys()))"],
            env={**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == here


def test_same_inputs_same_key_whatever_the_order() -> None:
    assert key(DEFAULT, {"x": 1, "y": {"b": 2, "a": 1}}) == key(DEFAULT, {"y": {"a": 1, "b": 2}, "x": 1})
    assert key(INPUTS, {"s": {"b", "a", "c"}}) == key(INPUTS, {"s": {"c", "b", "a"}})


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"x": 1}, {"x": 2}),
        ({"x": 1}, {"x": "1"}),
        ({"x": 1}, {"x": 1.0}),
        ({"x": 1}, {"x": True}),
        ({"x": None}, {"y": None}),
        ({"x": [1, 2]}, {"x": [2, 1]}),
        ({"x": {"a", "b"}}, {"x": ["a", "b"]}),
        ({"x": b"ab"}, {"x": "6162"}),
        ({"x": 2**80}, {"x": 2**80 + 1}),
    ],
)
def test_different_inputs_different_keys(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert key(INPUTS, first) != key(INPUTS, second)
    assert key(DEFAULT, first) != key(DEFAULT, second)


def test_pydantic_models_and_datetimes_hash_by_value() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    one = Customer(id=uuid.UUID(int=1), since=since, tags={"a", "b"})
    same = Customer(id=uuid.UUID(int=1), since=since, tags={"b", "a"})
    other = Customer(id=uuid.UUID(int=2), since=since, tags={"a", "b"})
    assert key(INPUTS, {"c": one}) == key(INPUTS, {"c": same})
    assert key(INPUTS, {"c": one}) != key(INPUTS, {"c": other})
    assert key(INPUTS, {"at": since}) != key(INPUTS, {"at": datetime(2026, 1, 2, tzinfo=UTC)})


class Box:
    """A plain class: neither JSON nor pydantic knows it, so its pickle is hashed."""

    def __init__(self, contents: Any) -> None:
        self.contents = contents


def test_values_json_cannot_take_are_hashed_by_their_pickle() -> None:
    assert key(INPUTS, {"box": Box([1, 2])}) == key(INPUTS, {"box": Box([1, 2])})
    assert key(INPUTS, {"box": Box([1, 2])}) != key(INPUTS, {"box": Box([1, 3])})


def test_the_task_source_is_part_of_the_default_key() -> None:
    inputs = {"x": 1, "y": 2}
    assert key(TASK_SOURCE, {}) == key(TASK_SOURCE, {}, context(add))
    assert key(DEFAULT, inputs, context(add)) != key(DEFAULT, inputs, context(add_differently))
    assert key(INPUTS, inputs, context(add)) == key(INPUTS, inputs, context(add_differently))


def test_task_source_without_source_text_uses_the_code() -> None:
    namespace: dict[str, Any] = {}
    exec("def double(x):\n    return x * 2\n\ndef triple(x):\n    return x * 3\n", namespace)  # no file
    double, triple = namespace["double"], namespace["triple"]
    assert key(TASK_SOURCE, {}, context(double)) != key(TASK_SOURCE, {}, context(triple))
    assert key(TASK_SOURCE, {}, context(double)) == key(TASK_SOURCE, {}, context(double))


def test_task_source_of_builtins_and_callable_objects() -> None:
    class Scaler:
        def __call__(self, x: int) -> int:
            return x * 3

    assert key(TASK_SOURCE, {}, context(len)) == key(TASK_SOURCE, {}, context(len))
    assert key(TASK_SOURCE, {}, context(Scaler())) != key(TASK_SOURCE, {}, context(len))


def test_the_run_id_scopes_the_default_key_to_one_flow_run() -> None:
    inputs = {"x": 1}
    other_run = uuid.UUID(int=99)
    assert key(DEFAULT, inputs, context(flow_run_id=RUN)) == key(DEFAULT, inputs, context(flow_run_id=RUN))
    assert key(DEFAULT, inputs, context(flow_run_id=RUN)) != key(
        DEFAULT, inputs, context(flow_run_id=other_run)
    )
    assert key(RUN_ID, {}, context(flow_run_id=RUN)) == RUN.hex


def test_outside_a_flow_run_the_default_policy_does_not_cache() -> None:
    assert key(RUN_ID, {"x": 1}, context(flow_run_id=None)) is None
    assert key(DEFAULT, {"x": 1}, context(flow_run_id=None)) is None
    assert key(INPUTS + TASK_SOURCE, {"x": 1}, context(flow_run_id=None)) is not None


def test_flow_parameters() -> None:
    assert key(FLOW_PARAMETERS, {"x": 1}, limit=1) == key(FLOW_PARAMETERS, {"x": 2}, limit=1)
    assert key(FLOW_PARAMETERS, {"x": 1}, limit=1) != key(FLOW_PARAMETERS, {"x": 1}, limit=2)


def test_minus_leaves_an_argument_out() -> None:
    policy = INPUTS - "client"
    assert policy == Inputs(exclude=("client",))
    assert key(policy, {"x": 1, "client": object()}) == key(policy, {"x": 1, "client": "another"})
    assert key(policy, {"x": 1, "client": None}) != key(policy, {"x": 2, "client": None})
    assert key(policy, {"x": 1, "client": None}) == key(INPUTS, {"x": 1})
    assert key(INPUTS - "a" - "b", {"a": 1, "b": 2, "c": 3}) == key(INPUTS - "b" - "a", {"c": 3})


def test_minus_on_a_compound_applies_to_its_inputs_part() -> None:
    policy = DEFAULT - "client"
    assert isinstance(policy, CompoundCachePolicy)
    assert Inputs(exclude=("client",)) in policy.policies
    assert key(policy, {"x": 1, "client": threading.Lock()}) == key(policy, {"x": 1, "client": None})
    assert (TASK_SOURCE + RUN_ID) - "x" == TASK_SOURCE + RUN_ID
    assert TASK_SOURCE - "x" is TASK_SOURCE


def test_plus_combines_in_any_order() -> None:
    assert isinstance(DEFAULT, CompoundCachePolicy)
    assert DEFAULT == INPUTS + TASK_SOURCE + RUN_ID
    assert key(INPUTS + TASK_SOURCE, {"x": 1}) == key(TASK_SOURCE + INPUTS, {"x": 1})
    assert INPUTS + INPUTS == INPUTS
    with pytest.raises(TypeError):
        INPUTS + "x"  # type: ignore[operator]


def test_no_cache_anywhere_means_no_key() -> None:
    assert key(NO_CACHE, {"x": 1}) is None
    assert INPUTS + NO_CACHE == NO_CACHE
    assert key(NO_CACHE + DEFAULT, {"x": 1}) is None
    assert key(CompoundCachePolicy((INPUTS, NO_CACHE)), {"x": 1}) is None


def test_cache_key_fn_receives_the_context_and_parameters() -> None:
    seen: list[tuple[CacheKeyContext, dict[str, Any]]] = []

    def by_customer(ctx: CacheKeyContext, parameters: dict[str, Any]) -> str | None:
        seen.append((ctx, parameters))
        return None if parameters["customer"] is None else f"{ctx.task_name}:{parameters['customer']}"

    policy = CacheKeyFnPolicy(by_customer)
    ctx = context(task_run_id=uuid.UUID(int=3), parameters={"customer": "ada"})
    assert policy.compute_key(ctx, {"customer": "ada"}, {}) == "add:ada"
    assert seen == [(ctx, {"customer": "ada"})]
    assert seen[0][0].parameters == {"customer": "ada"}
    assert policy.compute_key(ctx, {"customer": None}, {}) is None


def test_cache_key_fn_must_return_text_or_none() -> None:
    with pytest.raises(TypeError, match="str or None"):
        CacheKeyFnPolicy(lambda ctx, params: 42).compute_key(context(), {}, {})
    with pytest.raises(ValueError, match="empty"):
        CacheKeyFnPolicy(lambda ctx, params: "").compute_key(context(), {}, {})


def test_task_input_hash_is_prefects_ready_made_key_fn() -> None:
    assert task_input_hash(context(), {"x": 1}) == task_input_hash(context(), {"x": 1})
    assert task_input_hash(context(), {"x": 1}) != task_input_hash(context(), {"x": 2})
    assert task_input_hash(context(), {"x": threading.Lock()}) is None


def test_an_unhashable_input_names_the_argument_and_the_way_out() -> None:
    with pytest.raises(CacheKeyError) as info:
        key(DEFAULT, {"x": 1, "config": {"retries": 3, "guard": threading.Lock()}})
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.argument, error.type_name, error.culprit) == ("config", "dict", "_thread.lock")
    message = str(error)
    assert "'config'" in message
    assert "dict" in message
    assert "_thread.lock" in message
    assert 'INPUTS - "config"' in message
    assert "cache_key_fn" in message


def test_an_open_socket_cannot_be_hashed() -> None:
    with socket.socket() as conn, pytest.raises(CacheKeyError) as info:
        key(INPUTS, {"conn": conn, "n": 1})
    assert info.value.argument == "conn"
    assert "socket" in str(info.value)
    assert 'INPUTS - "conn"' in str(info.value)


def test_an_unhashable_flow_parameter_is_named_as_such() -> None:
    with pytest.raises(CacheKeyError, match="flow parameter 'lock'"):
        key(FLOW_PARAMETERS, {}, lock=threading.Lock())


def test_hashing_does_not_drain_a_generator_argument() -> None:
    numbers = (n for n in range(3))
    with pytest.raises(CacheKeyError, match="'numbers'"):
        key(INPUTS, {"numbers": numbers})
    assert list(numbers) == [0, 1, 2]
