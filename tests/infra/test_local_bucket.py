"""Local buckets: what lands in a bucket directory is announced once, as S3 announces it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from support import wait_until

from overcast.adapters.queues.local import LocalQueue
from overcast.core.errors import ConditionFailedError, InvalidKeyError, InvalidValueError
from overcast.handlers.storage import read_notification
from overcast.infra.bucket_watcher import BucketWatcher
from overcast.infra.local_bucket import LocalBuckets


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[LocalQueue]:
    events = LocalQueue(tmp_path / "queue.db", "events")
    yield events
    events.close()


@pytest.fixture(params=["observed", "polled"])
def buckets(request: pytest.FixtureRequest, tmp_path: Path, queue: LocalQueue) -> Iterator[LocalBuckets]:
    """Watched buckets, told of changes by the file system (watchdog), then by polling."""
    observe = request.param == "observed"
    with LocalBuckets(tmp_path / "buckets", queue) as local, BucketWatcher(local, observe=observe) as watcher:
        assert watcher.observed is observe
        local.bucket("uploads")
        yield local


def _records(queue: LocalQueue) -> list[dict[str, Any]]:
    """Every notification now in the queue (acknowledged), one record each."""
    records = []
    while messages := queue.receive(10):
        for message in messages:
            (record,) = json.loads(message.body)["Records"]
            records.append(record)
            queue.ack(message.receipt)
    return records


def _next(queue: LocalQueue) -> dict[str, Any]:
    (record,) = wait_until(lambda: _records(queue), timeout=10)
    return record


def _quiet(buckets: LocalBuckets, queue: LocalQueue) -> list[dict[str, Any]]:
    """What another full look at the buckets announces (no waiting on the watcher: scan now)."""
    while buckets.scan():  # until no file is still settling
        pass
    return _records(queue)


def test_a_dropped_file_is_announced_once_as_s3_announces_it(
    buckets: LocalBuckets, queue: LocalQueue
) -> None:
    (buckets.root / "uploads" / "in").mkdir()
    (buckets.root / "uploads" / "in" / "a b+c.csv").write_bytes(b"x,y\n1,2\n")

    record = _next(queue)

    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"] == {
        "name": "uploads",
        "ownerIdentity": {"principalId": "overcast-local"},
        "arn": "arn:aws:s3:::uploads",
    }
    obj = record["s3"]["object"]
    assert obj["key"] == "in/a+b%2Bc.csv" and unquote_plus(obj["key"]) == "in/a b+c.csv"
    assert obj["size"] == 8 and obj["eTag"] == hashlib.md5(b"x,y\n1,2\n").hexdigest()
    int(obj["sequencer"], 16)
    (event,) = read_notification({"Records": [record]})  # the events handler's reading
    assert event.event == "aws.s3.object.created"
    assert event.resource_id == "s3://uploads/in/a b+c.csv"
    assert _quiet(buckets, queue) == []


def test_new_content_is_announced_again_and_a_removal_as_removed(
    buckets: LocalBuckets, queue: LocalQueue
) -> None:
    path = buckets.root / "uploads" / "report.txt"
    path.write_text("v1")
    first = _next(queue)
    path.write_text("version 2")
    second = _next(queue)
    assert second["s3"]["object"]["size"] == 9
    assert int(second["s3"]["object"]["sequencer"], 16) > int(first["s3"]["object"]["sequencer"], 16)

    path.unlink()
    removed = _next(queue)
    assert removed["eventName"] == "ObjectRemoved:Delete"
    assert removed["s3"]["object"]["key"] == "report.txt" and "size" not in removed["s3"]["object"]
    assert _quiet(buckets, queue) == []


def test_put_announces_at_once_and_the_watcher_does_not_repeat_it(
    buckets: LocalBuckets, queue: LocalQueue
) -> None:
    bucket = buckets.bucket("uploads")
    bucket.put("deep/dir/data.json", b'{"n": 1}')
    (record,) = _records(queue)  # already there: no watcher involved
    assert record["s3"]["object"]["key"] == "deep/dir/data.json"
    assert bucket.get("deep/dir/data.json") == b'{"n": 1}'
    assert list(bucket.list("deep/")) == ["deep/dir/data.json"]
    assert _quiet(buckets, queue) == []

    assert bucket.delete("deep/dir/data.json")
    assert [r["eventName"] for r in _records(queue)] == ["ObjectRemoved:Delete"]
    assert not (buckets.root / "uploads" / "deep").exists()
    assert not bucket.delete("deep/dir/data.json")


def test_partial_and_temporary_files_are_not_objects(buckets: LocalBuckets, queue: LocalQueue) -> None:
    directory = buckets.root / "uploads"
    (directory / ".tmp").mkdir(exist_ok=True)
    (directory / ".tmp" / "half-written").write_text("...")
    (directory / "notes.txt.swp").write_text("vim")
    (directory / ".overcast-tmp-123").write_text("ours")
    (directory / "real.txt").write_text("done")

    assert [r["s3"]["object"]["key"] for r in [_next(queue)]] == ["real.txt"]
    assert _quiet(buckets, queue) == []
    with pytest.raises(InvalidKeyError):
        buckets.bucket("uploads").put(".tmp/x", b"")


def test_a_file_still_being_written_waits_until_it_settles(tmp_path: Path, queue: LocalQueue) -> None:
    buckets = LocalBuckets(tmp_path / "buckets", queue, settle_s=3600)  # never settles by time
    path = buckets.root / "uploads" / "big.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"partial")
    assert buckets.scan() is True and _records(queue) == []

    old = time.time() - 7200
    os.utime(path, (old, old))  # as if written long ago (and moved in now)
    assert buckets.scan() is False
    (record,) = _records(queue)
    assert record["s3"]["object"]["size"] == 7


def test_a_restart_announces_only_what_changed_meanwhile(tmp_path: Path, queue: LocalQueue) -> None:
    root = tmp_path / "buckets"
    with LocalBuckets(root, queue) as first, BucketWatcher(first):
        first.bucket("uploads").put("kept.txt", b"1")
        first.bucket("uploads").put("gone.txt", b"2")
    assert len(_records(queue)) == 2
    (root / "uploads" / "gone.txt").unlink()
    (root / "uploads" / "new.txt").write_text("3")
    old = time.time() - 60
    os.utime(root / "uploads" / "new.txt", (old, old))

    second = LocalBuckets(root, queue)
    second.scan()
    announced = {(r["eventName"], r["s3"]["object"]["key"]) for r in _records(queue)}
    assert announced == {("ObjectRemoved:Delete", "gone.txt"), ("ObjectCreated:Put", "new.txt")}


def test_bucket_names_follow_s3_rules_and_keys_the_blob_key_rules(buckets: LocalBuckets) -> None:
    for bad in ("ab", "Uploads", "a..b", "192.168.1.1", "-abc", "xn--abc", "my_bucket"):
        with pytest.raises(InvalidValueError):
            buckets.bucket(bad)
    bucket = buckets.bucket("my.bucket-1")
    for bad_key in ("", "/abs", "a/../b", "a//b", "back\\slash"):
        with pytest.raises(InvalidKeyError):
            bucket.put(bad_key, b"")
    bucket.put("a", b"file")
    with pytest.raises(ConditionFailedError):
        bucket.put("a/b", b"under a file")


# -- the upload route ----------------------------------------------------------------------------


@pytest.fixture
def api(buckets: LocalBuckets) -> Any:
    from fastapi.testclient import TestClient

    from overcast.adapters.factory import open_store
    from overcast.core.services import ControlPlane
    from overcast.core.settings import Settings
    from overcast.handlers.api import create_app

    plane = ControlPlane(open_store("memory://"))
    return TestClient(create_app(plane, settings=Settings(api_key=""), buckets=buckets.bucket))


@pytest.mark.parametrize("buckets", ["observed"], indirect=True)
def test_the_upload_route_stores_the_object_and_announces_it(
    api: Any, buckets: LocalBuckets, queue: LocalQueue
) -> None:
    answer = api.put("/api/storage/uploads/in/a%20b%2Bc.json", content=b'{"n": 1}')

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "bucket": "uploads",
        "key": "in/a b+c.json",
        "size": 8,
        "etag": hashlib.md5(b'{"n": 1}').hexdigest(),
        "url": "s3://uploads/in/a b+c.json",
    }
    assert (buckets.root / "uploads" / "in" / "a b+c.json").read_bytes() == b'{"n": 1}'
    (record,) = _records(queue)  # announced by the upload itself, at once
    assert unquote_plus(record["s3"]["object"]["key"]) == "in/a b+c.json"
    assert _quiet(buckets, queue) == []


@pytest.mark.parametrize("buckets", ["observed"], indirect=True)
@pytest.mark.parametrize(
    "path",
    [
        "/api/storage/Bad_Bucket/k",
        "/api/storage/ab/k",
        "/api/storage/uploads/a/%2E%2E/b",
        "/api/storage/uploads/a//b",
    ],
)
def test_the_upload_route_refuses_bad_bucket_names_and_keys(api: Any, path: str, queue: LocalQueue) -> None:
    answer = api.put(path, content=b"x")
    assert answer.status_code == 422, answer.text
    assert "invalid" in answer.text
    assert _records(queue) == []


def test_the_upload_route_writes_where_the_settings_say_by_default(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from overcast.adapters.factory import open_store
    from overcast.core.services import ControlPlane
    from overcast.core.settings import Settings
    from overcast.handlers.api import create_app

    settings = Settings(api_key="", buckets=f"file://{tmp_path / 'elsewhere'}")
    api = TestClient(create_app(ControlPlane(open_store("memory://")), settings=settings))
    answer = api.put("/api/storage/uploads/x.txt", content=b"hi")
    assert answer.status_code == 200, answer.text
    assert (tmp_path / "elsewhere" / "uploads" / "x.txt").read_bytes() == b"hi"
