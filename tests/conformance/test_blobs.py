"""One contract for every BlobStore: local directory, memory, and S3 through s3fs (moto's server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overcast.adapters.blobs.local import LocalBlobStore
from overcast.adapters.factory import open_blobs
from overcast.core.errors import InvalidKeyError, NotFoundError
from overcast.core.ports import BlobStore

BACKENDS = ["local", "memory", pytest.param("s3", marks=pytest.mark.aws)]


@pytest.fixture(params=BACKENDS)
def blobs(request: pytest.FixtureRequest, tmp_path: Path, unique: Any) -> Iterator[BlobStore]:
    if request.param == "local":
        yield open_blobs(f"file://{tmp_path / 'blobs'}")
    elif request.param == "memory":
        yield open_blobs(f"memory://{unique('blobs')}")
    else:
        aws = request.getfixturevalue("aws")
        bucket = unique("overcast-blobs")
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=bucket)
        yield open_blobs(f"s3://{bucket}/results?{aws.query()}")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)


def test_put_get_overwrite(blobs: BlobStore) -> None:
    blobs.put("runs/1/result.pkl", b"\x00\x01binary\xff")
    assert blobs.get("runs/1/result.pkl") == b"\x00\x01binary\xff"
    blobs.put("runs/1/result.pkl", b"second")
    assert blobs.get("runs/1/result.pkl") == b"second"
    blobs.put("empty", b"")
    assert blobs.get("empty") == b""
    assert blobs.exists("empty")


def test_large_blobs_round_trip(blobs: BlobStore) -> None:
    data = bytes(range(256)) * (7 * 1024 * 1024 // 256)  # 7 MiB: past S3's multipart threshold
    blobs.put("big/blob.bin", data)
    assert blobs.get("big/blob.bin") == data


def test_missing_blobs(blobs: BlobStore) -> None:
    with pytest.raises(NotFoundError) as info:
        blobs.get("nope/missing.txt")
    assert info.value.key == "nope/missing.txt"
    assert blobs.exists("nope/missing.txt") is False
    assert blobs.delete("nope/missing.txt") is False


def test_delete(blobs: BlobStore) -> None:
    blobs.put("a/b/c.txt", b"x")
    assert blobs.delete("a/b/c.txt") is True
    assert blobs.exists("a/b/c.txt") is False
    assert list(blobs.list("a/")) == []


def test_list_is_a_sorted_string_prefix_match(blobs: BlobStore) -> None:
    keys = ["runs/1/a", "runs/1/b/c", "runs/10/a", "runs/2", "other/x", "runsheet"]
    for key in keys:
        blobs.put(key, key.encode())
    assert list(blobs.list("runs/1")) == ["runs/1/a", "runs/1/b/c", "runs/10/a"]
    assert list(blobs.list("runs/1/")) == ["runs/1/a", "runs/1/b/c"]
    assert list(blobs.list("runs")) == ["runs/1/a", "runs/1/b/c", "runs/10/a", "runs/2", "runsheet"]
    assert list(blobs.list()) == sorted(keys)
    assert list(blobs.list("zzz")) == []


def test_unicode_keys(blobs: BlobStore) -> None:
    blobs.put("données/été 2026/report (final).json", b"{}")
    assert list(blobs.list("données/")) == ["données/été 2026/report (final).json"]


def test_urls_name_the_blob(blobs: BlobStore) -> None:
    blobs.put("x/y.txt", b"1")
    url = blobs.url("x/y.txt")
    assert url.split("://")[0] in {"file", "memory", "s3"} and url.endswith("x/y.txt")


BAD_KEYS = [
    "",
    "../etc/passwd",
    "a/../../b",
    "a/./b",
    "/abs/path",
    "a//b",
    "trailing/",
    "nul\x00byte",
    "back\\slash",
    "..\\..\\windows",
    "C:/drive",
    "tab\there",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_everywhere(blobs: BlobStore, key: str) -> None:
    for call in (
        lambda: blobs.put(key, b"x"),
        lambda: blobs.get(key),
        lambda: blobs.exists(key),
        lambda: blobs.delete(key),
    ):
        with pytest.raises(InvalidKeyError) as info:
            call()
        assert info.value.reason
    assert list(blobs.list()) == []


def test_local_writes_are_atomic_for_concurrent_readers(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    a, b = b"a" * 2_000_000, b"b" * 3_000_000
    store.put("k", a)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            store.put("k", b)
            store.put("k", a)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reads = [store.get("k") for _ in range(200)]
    finally:
        stop.set()
        thread.join()
    assert all(r in (a, b) for r in reads)
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # no temp files left behind


def test_local_store_refuses_symlinks_out_of_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    store = LocalBlobStore(root)
    with pytest.raises(InvalidKeyError):
        store.put("link/escape.txt", b"x")
    assert list(outside.iterdir()) == []
