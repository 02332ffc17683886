"""Results: small ones inline in the reference, large ones in the blob store (local and S3 on
moto's server), loadable from the reference alone in another process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overcast.adapters.factory import open_blobs
from overcast.core.errors import InvalidKeyError, NotFoundError
from overcast.core.settings import Settings
from overcast.results import (
    ResultNotFoundError,
    ResultStore,
    is_result_reference,
    load_result,
    result_blob_key,
)
from overcast.serializers import serializer_named

BIG = list(range(5000))  # tens of KB pickled: far over the inline limit


def load_in_another_process(reference: dict[str, Any], expression: str = "value") -> Any:
    """Load ``reference`` in a fresh interpreter and return ``expression`` of the value (as JSON)."""
    script = (
        "import json, sys\n"
        "from overcast.results import load_result\n"
        "value = load_result(json.loads(sys.stdin.read()))\n"
        f"print(json.dumps({expression}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(reference),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(f"file://{tmp_path / 'blobs'}")


def test_small_results_are_inlined_and_write_no_blob(store: ResultStore) -> None:
    reference = store.persist("k1", 42)
    assert reference.keys() == {"serializer", "inline"}
    assert reference["serializer"] == "pickle"
    assert json.loads(json.dumps(reference)) == reference  # fits in a JSON store item
    assert list(store.blobs.list()) == []
    assert load_result(reference) == 42
    assert store.load(reference) == 42


def test_large_results_go_to_the_blob_store_under_their_key(store: ResultStore, tmp_path: Path) -> None:
    reference = store.persist("0123abcd", BIG)
    assert reference == {
        "serializer": "pickle",
        "storage": f"file://{tmp_path / 'blobs'}",
        "key": "results/0123abcd",
        "size": len(serializer_named("pickle").dumps(BIG)),
    }
    assert (tmp_path / "blobs" / "results" / "0123abcd").stat().st_size == reference["size"]
    assert load_result(reference) == BIG


def test_the_inline_limit_is_in_payload_bytes(tmp_path: Path) -> None:
    size = len(serializer_named("pickle").dumps("x" * 100))
    at_limit = ResultStore(str(tmp_path), inline_limit=size)
    assert "inline" in at_limit.persist("a", "x" * 100)
    below = ResultStore(str(tmp_path), inline_limit=size - 1)
    assert "storage" in below.persist("a", "x" * 100)
    never = ResultStore(str(tmp_path), inline_limit=0)
    assert never.persist("b", None)["key"] == "results/b"


def test_the_default_limit_inlines_typical_small_results(store: ResultStore) -> None:
    for value in (None, 3.5, "done", {"rows": 12, "status": "ok"}, list(range(100))):
        assert "inline" in store.persist("k", value)
    assert "storage" in store.persist("k", "x" * 2000)


def test_persisting_the_same_key_again_replaces_the_blob(store: ResultStore) -> None:
    store.persist("same", BIG)
    reference = store.persist("same", [*BIG, "again"])
    assert list(store.blobs.list()) == ["results/same"]
    assert load_result(reference)[-1] == "again"


def test_a_reference_loads_in_another_process(store: ResultStore) -> None:
    offset = 7
    value = {"rows": BIG, "shift": lambda x: x + offset}  # a closure: pickled by value
    reference = store.persist("cross-process", value)
    assert "storage" in reference
    assert load_in_another_process(reference, "[len(value['rows']), value['shift'](1)]") == [5000, 8]
    inline = store.persist("small", {"answer": 42})
    assert load_in_another_process(inline) == {"answer": 42}


def test_json_results_are_readable_blobs(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "json"), "json")
    rows = [{"id": i, "name": f"row {i}"} for i in range(200)]
    reference = store.persist("report", rows)
    assert reference["serializer"] == "json"
    assert json.loads((tmp_path / "json" / "results" / "report").read_text("utf-8")) == rows
    assert load_in_another_process(reference) == rows


def test_compressed_results_are_smaller_blobs(tmp_path: Path) -> None:
    rows = [{"id": i, "status": "shipped", "carrier": "overcast-express"} for i in range(2000)]
    plain = ResultStore(str(tmp_path / "plain"), inline_limit=0).persist("k", rows)
    packed = ResultStore(str(tmp_path / "packed"), "compressed/pickle", inline_limit=0).persist("k", rows)
    assert packed["serializer"] == "compressed/pickle"
    assert packed["size"] < plain["size"] / 2
    assert load_result(packed) == rows


def test_a_missing_blob_is_a_clear_not_found_error(store: ResultStore) -> None:
    reference = store.persist("gone", BIG)
    store.blobs.delete(reference["key"])
    with pytest.raises(ResultNotFoundError) as info:
        load_result(reference)
    assert isinstance(info.value, NotFoundError)
    assert info.value.key == "results/gone"
    assert info.value.storage == reference["storage"]
    assert "results/gone" in str(info.value)
    assert reference["storage"] in str(info.value)


@pytest.mark.parametrize(
    "key", ["../../etc/passwd", "a/b", "..", ".", "with space", "ünïcode", "x" * 400, "%41", "A"]
)
def test_any_cache_key_becomes_one_safe_blob_under_results(store: ResultStore, key: str) -> None:
    reference = store.persist(key, BIG)
    blob_key = reference["key"]
    assert blob_key.startswith("results/")
    assert "/" not in blob_key.removeprefix("results/")
    assert len(blob_key) < 250
    assert list(store.blobs.list()) == [blob_key]
    assert load_result(reference) == BIG


def test_distinct_keys_stay_distinct_blobs() -> None:
    keys = ["a/b", "a%2Fb", "a b", "a%20b", "..", "%2E%2E", "x" * 400, "x" * 401, "x" * 300 + "y"]
    assert len({result_blob_key(k) for k in keys}) == len(keys)
    assert result_blob_key("9f86d081884c7d659a2feaa0c55ad015") == "results/9f86d081884c7d659a2feaa0c55ad015"


@pytest.mark.parametrize("key", ["", None, 5])
def test_empty_or_non_string_keys_are_refused(store: ResultStore, key: Any) -> None:
    with pytest.raises(InvalidKeyError):
        store.persist(key, 1)


def test_storage_defaults_to_the_settings_blob_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = ResultStore(settings=Settings(blobs=f"file://{tmp_path / 'explicit'}"))
    assert explicit.persist("k", BIG)["storage"] == f"file://{tmp_path / 'explicit'}"
    assert (tmp_path / "explicit" / "results" / "k").exists()

    monkeypatch.setenv("OVERCAST_BLOBS", f"file://{tmp_path / 'from-env'}")
    reference = ResultStore().persist("k", BIG)
    assert reference["storage"] == f"file://{tmp_path / 'from-env'}"
    assert (tmp_path / "from-env" / "results" / "k").exists()


def test_a_plain_path_is_a_local_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    reference = ResultStore("relative/results").persist("k", BIG)
    assert reference["storage"] == f"file://{tmp_path / 'relative' / 'results'}"
    assert load_in_another_process(reference, "len(value)") == len(BIG)


def test_a_blob_store_instance_can_be_the_storage(unique: Any) -> None:
    name = unique("results")
    store = ResultStore(open_blobs(f"memory://{name}"))
    reference = store.persist("k", BIG)
    assert reference["storage"] == f"memory://{name}"
    assert load_result(reference) == BIG


def test_stores_are_opened_once_per_url(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'shared'}"
    assert ResultStore(url).blobs is ResultStore(url).blobs


def test_is_result_reference(store: ResultStore) -> None:
    assert is_result_reference(store.persist("a", 1))
    assert is_result_reference(store.persist("b", BIG))
    for other in (
        {},
        {"serializer": "pickle"},
        {"inline": "AA=="},
        [],
        "results/a",
        1,
        {"serializer": 1, "inline": ""},
    ):
        assert not is_result_reference(other)
    with pytest.raises(ValueError, match="not a result reference"):
        load_result({"value": 1})


def test_a_reference_naming_an_unknown_serializer_says_so(store: ResultStore) -> None:
    reference = {**store.persist("a", 1), "serializer": "yaml"}
    with pytest.raises(ValueError, match="'pickle'"):
        load_result(reference)


@pytest.fixture
def bucket(aws: Any, unique: Any) -> Iterator[str]:
    name = unique("overcast-results")
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.mark.aws
def test_results_on_s3(aws: Any, bucket: str) -> None:
    url = f"s3://{bucket}/flows?{aws.query()}"
    store = ResultStore(url)
    small = store.persist("tiny", {"ok": True})
    assert "inline" in small
    reference = store.persist("c0ffee", BIG)
    assert reference["storage"] == url
    assert reference["key"] == "results/c0ffee"
    listed = aws.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("flows/results/c0ffee", reference["size"])]
    assert load_result(reference) == BIG
    assert load_in_another_process(reference, "len(value)") == len(BIG)

    aws.client("s3").delete_object(Bucket=bucket, Key="flows/results/c0ffee")
    with pytest.raises(ResultNotFoundError):
        load_result(reference)
