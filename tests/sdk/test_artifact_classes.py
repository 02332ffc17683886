"""Prefect's artifact classes (``MarkdownArtifact(...).create()`` …) make what the functions make."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from overcast import flow
from overcast.artifacts import (
    Artifact,
    ImageArtifact,
    LinkArtifact,
    MarkdownArtifact,
    ProgressArtifact,
    TableArtifact,
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
)
from overcast.core.schemas import ArtifactFilter
from overcast.testing import Harness

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))

PAIRS: list[tuple[Any, Callable[[], uuid.UUID]]] = [
    (
        MarkdownArtifact("# Report", key="report", description="daily"),
        lambda: create_markdown_artifact("# Report", key="report", description="daily"),
    ),
    (
        TableArtifact({"city": ["Oslo", "Lima"], "temp": [9.5, float("nan")]}, key="temps"),
        lambda: create_table_artifact({"city": ["Oslo", "Lima"], "temp": [9.5, float("nan")]}, key="temps"),
    ),
    (
        LinkArtifact("https://example.com/r", "The report", key="link", description="where"),
        lambda: create_link_artifact("https://example.com/r", "The report", key="link", description="where"),
    ),
    (ProgressArtifact(12.5, key="progress"), lambda: create_progress_artifact(12.5, key="progress")),
    (
        ImageArtifact(image_url="https://example.com/c.png", key="chart"),
        lambda: create_image_artifact(image_url="https://example.com/c.png", key="chart"),
    ),
    (ImageArtifact(PNG, key="upload"), lambda: create_image_artifact(PNG, key="upload")),
]


def published(artifact_id: uuid.UUID) -> dict[str, Any]:
    """What a reader sees of an artifact, but for what differs between any two (id, version, times)."""
    found = Artifact.get_by_id(artifact_id)
    seen = found.model_dump(exclude={"id", "version", "created", "updated"})
    if found.type == "image" and "blob_key" in found.data:  # type: ignore[operator]
        seen["data"] = {**found.data, "blob_key": None, "bytes": found.image()}  # type: ignore[dict-item]
    return seen


@pytest.mark.parametrize(("made", "function"), PAIRS, ids=lambda p: type(p).__name__)
def test_each_class_creates_what_its_function_creates(harness: Harness, made: Any, function: Any) -> None:
    @flow
    def publish() -> tuple[uuid.UUID, uuid.UUID]:
        return made.create(), function()

    by_class, by_function = publish()
    [run] = harness.flow_runs()
    assert published(by_class) == published(by_function)
    assert published(by_class)["flow_run_id"] == run.id
    latest = Artifact.get(made.key)
    assert latest is not None and latest.id == by_function and latest.version == 2


def test_acreate_publishes_too(harness: Harness) -> None:
    artifact_id = asyncio.run(MarkdownArtifact("# async", key="async-md").acreate())
    assert Artifact.get("async-md") == Artifact.get_by_id(artifact_id)
    assert Artifact.get_by_id(artifact_id).data == "# async"


def test_a_bad_artifact_is_refused_as_the_function_refuses_it(harness: Harness) -> None:
    with pytest.raises(ValueError):
        ProgressArtifact(150).create()
    with pytest.raises(TypeError):
        ImageArtifact(PNG, image_url="https://example.com/c.png").create()
    assert harness.plane.artifacts.filter(ArtifactFilter()).items == []
