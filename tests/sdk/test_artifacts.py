"""Artifacts from flows and tasks, read back, over the in-process client and over HTTP."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from overcast import (
    Artifact,
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    flow,
    get_run_context,
    task,
    update_progress_artifact,
)
from overcast.artifacts import (
    acreate_image_artifact,
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from overcast.core.errors import ConditionFailedError, InvalidValueError, NotFoundError
from overcast.core.schemas import ArtifactFilter
from overcast.testing import Harness

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
GIF = b"GIF89a" + bytes(64)


def test_every_type_round_trips(harness: Harness) -> None:
    @flow
    def publish() -> dict[str, uuid.UUID]:
        return {
            "markdown": create_markdown_artifact("# Report\n\nall *good*", key="report", description="daily"),
            "rows": create_table_artifact([{"city": "Oslo", "temp": 9.5}, {"city": "Lima"}], key="rows"),
            "columns": create_table_artifact({"city": ["Oslo", "Lima"], "temp": [9.5, 19]}, key="columns"),
            "cells": create_table_artifact([["Oslo", 9.5], ["Lima", 19]], key="cells"),
            "link": create_link_artifact("https://example.com/r", "The report", key="link"),
            "progress": create_progress_artifact(12.5, key="progress"),
            "image": create_image_artifact(PNG, key="chart"),
            "image-url": create_image_artifact(image_url="https://example.com/c.png", key="chart-url"),
        }

    ids = publish()
    expected = {
        "report": ("markdown", "# Report\n\nall *good*"),
        "rows": ("table", [{"city": "Oslo", "temp": 9.5}, {"city": "Lima"}]),
        "columns": ("table", {"city": ["Oslo", "Lima"], "temp": [9.5, 19]}),
        "cells": ("table", [["Oslo", 9.5], ["Lima", 19]]),
        "link": ("link", {"url": "https://example.com/r", "text": "The report"}),
        "progress": ("progress", 12.5),
        "chart-url": ("image", {"url": "https://example.com/c.png"}),
    }
    [run] = harness.flow_runs()
    for key, (kind, data) in expected.items():
        artifact = Artifact.get(key)
        assert artifact is not None and (artifact.type, artifact.data) == (kind, data)
        assert artifact.flow_run_id == run.id and artifact.version == 1
    chart = Artifact.get_by_id(ids["image"])
    assert chart.key == "chart" and chart.data["content_type"] == "image/png"  # type: ignore[index,call-overload]
    assert chart.image() == PNG
    assert Artifact.get("report").description == "daily"  # type: ignore[union-attr]
    assert {a.id for a in Artifact.history("report")} == {ids["markdown"]}


def test_artifacts_made_in_a_task_name_the_task_run(harness: Harness) -> None:
    @task
    def step() -> tuple[uuid.UUID, uuid.UUID]:
        return create_markdown_artifact("from a task"), get_run_context().task_run_id  # type: ignore[union-attr]

    @flow
    def pipeline() -> tuple[uuid.UUID, uuid.UUID]:
        return step()

    artifact_id, task_run_id = pipeline()
    artifact = Artifact.get_by_id(artifact_id)
    [run] = harness.flow_runs()
    assert (artifact.flow_run_id, artifact.task_run_id) == (run.id, task_run_id)
    assert [t.id for t in harness.task_runs(run.id)] == [task_run_id]


def test_outside_any_run_an_artifact_stands_alone(harness: Harness) -> None:
    @task
    def loose() -> uuid.UUID:
        return create_markdown_artifact("a task outside a flow")

    alone = Artifact.get_by_id(create_markdown_artifact("no run at all"))
    in_task = Artifact.get_by_id(loose())
    assert (alone.flow_run_id, alone.task_run_id, alone.key, alone.version) == (None, None, None, None)
    assert in_task.flow_run_id is None and in_task.task_run_id == harness.task_runs(None)[0].id


def test_each_creation_under_a_key_is_its_next_version(harness: Harness) -> None:
    @flow
    def nightly(day: int) -> uuid.UUID:
        return create_markdown_artifact(f"day {day}", key="nightly-report")

    ids = [nightly(day) for day in range(1, 4)]
    latest = Artifact.get("nightly-report")
    assert latest is not None and (latest.data, latest.version, latest.id) == ("day 3", 3, ids[-1])
    assert [(a.version, a.data) for a in Artifact.history("nightly-report")] == [
        (3, "day 3"),
        (2, "day 2"),
        (1, "day 1"),
    ]
    assert Artifact.get("nobody-wrote-this") is None


def test_progress_updates_are_seen_in_order_while_the_flow_runs(harness: Harness) -> None:
    seen: list[Any] = []

    def stored(artifact_id: uuid.UUID) -> Any:
        # what any reader of the control plane sees now, not what the engine remembers
        return harness.plane.artifacts.get(artifact_id).data

    @task
    def chunk(i: int) -> int:
        return i

    @flow
    def load(chunks: int) -> None:
        progress = create_progress_artifact(0, key="load-progress")
        seen.append(stored(progress))
        for i in range(1, chunks + 1):
            chunk(i)
            update_progress_artifact(progress, 100 * i / chunks)
            seen.append(stored(progress))
            assert harness.flow_runs()[0].state.type.value == "RUNNING"

    load(4)
    assert seen == [0, 25, 50, 75, 100]


def test_progress_never_goes_back(harness: Harness) -> None:
    progress = create_progress_artifact(10)
    update_progress_artifact(progress, 80, description="most of it")
    update_progress_artifact(progress, 50, description="stale")
    artifact = Artifact.get_by_id(progress)
    assert (artifact.data, artifact.description) == (80, "most of it")
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        update_progress_artifact(progress, 100.5)
    with pytest.raises(ConditionFailedError, match="only a progress artifact"):
        update_progress_artifact(create_markdown_artifact("x"), 10)
    with pytest.raises(NotFoundError):
        update_progress_artifact(uuid.uuid4(), 10)


def test_images_from_bytes_a_path_or_a_url(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "chart.gif"
    path.write_bytes(GIF)
    from_path = Artifact.get_by_id(create_image_artifact(path))
    assert from_path.data["content_type"] == "image/gif" and from_path.image() == GIF  # type: ignore[index,call-overload]
    typed = Artifact.get_by_id(create_image_artifact(b"\x00raw pixels", content_type="image/x-raw"))
    assert typed.image() == b"\x00raw pixels"
    linked = Artifact.get_by_id(create_image_artifact("https://example.com/c.png"))
    assert linked.data == {"url": "https://example.com/c.png"}
    with pytest.raises(NotFoundError, match=re.escape("https://example.com/c.png")):
        linked.image()
    with pytest.raises(InvalidValueError, match="content_type"):
        create_image_artifact(b"not an image")
    with pytest.raises(ValueError, match="over the limit of 4,194,304"):
        create_image_artifact(PNG + bytes(4 * 1024 * 1024))
    with pytest.raises(TypeError):
        create_image_artifact(PNG, image_url="https://example.com/c.png")


def test_tables_lose_their_nans(harness: Harness) -> None:
    table = Artifact.get_by_id(create_table_artifact({"x": [1.0, math.nan], "y": [math.inf, 2]}))
    assert table.data == {"x": [1.0, None], "y": [None, 2]}


@pytest.mark.parametrize(
    "call",
    [
        lambda: create_markdown_artifact("x", key="Not A Key"),
        lambda: create_markdown_artifact("x", key="under_score"),
        lambda: create_link_artifact("not a url"),
        lambda: create_progress_artifact(-5),
        lambda: create_table_artifact("rows"),  # type: ignore[arg-type]
        lambda: create_markdown_artifact("é" * 200_000),
    ],
)
def test_bad_artifacts_are_refused_before_anything_is_stored(harness: Harness, call: Any) -> None:
    with pytest.raises(ValueError):
        call()
    assert harness.plane.artifacts.filter(ArtifactFilter()).items == []


def test_reading_by_an_invalid_key_is_refused(harness: Harness) -> None:
    with pytest.raises(ValueError, match="lowercase letters, digits and dashes"):
        Artifact.get("Not A Key")


def test_async_twins(harness: Harness) -> None:
    async def publish() -> list[uuid.UUID]:
        progress = await acreate_progress_artifact(5, key="async-progress")
        await aupdate_progress_artifact(progress, 60)
        return [
            await acreate_markdown_artifact("# async", key="async-md"),
            await acreate_table_artifact([[1, 2]], key="async-table"),
            await acreate_link_artifact("https://example.com", key="async-link"),
            await acreate_image_artifact(PNG, key="async-image"),
            progress,
        ]

    ids = asyncio.run(publish())
    assert [Artifact.get_by_id(i).type for i in ids] == ["markdown", "table", "link", "image", "progress"]
    assert Artifact.get_by_id(ids[-1]).data == 60
    assert asyncio.run(Artifact.aget("async-md")).data == "# async"  # type: ignore[union-attr]
