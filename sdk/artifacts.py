"""Artifacts: what a run publishes for people to read, as in Prefect 3's ``prefect.artifacts``.

::

    from overcast import flow
    from overcast.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

    @flow
    def nightly() -> None:
        progress = create_progress_artifact(0, key="nightly-progress")
        ...
        update_progress_artifact(progress, 50)
        create_markdown_artifact("# All good", key="nightly-report")

Every ``create_*`` function returns the new artifact's id. Prefect's classes do the same:
``MarkdownArtifact(markdown="# All good", key="nightly-report").create()`` (or ``await
….acreate()``) is ``create_markdown_artifact("# All good", key="nightly-report")``. Inside a flow or a task, the
artifact is linked to the flow run and the task run; outside any run it stands alone. With a
``key`` (lowercase letters, digits and dashes) it becomes that key's next version. Every call
is a synchronous write: once it returns, ``overcast artifact ls`` and the API show it, while the
run is still going. Each function has an async twin (``acreate_markdown_artifact`` …).
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import uuid
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overcast.core import models
from overcast.core.schemas import (
    MAX_IMAGE_BYTES,
    ArtifactFilter,
    ArtifactRequest,
    ArtifactUpdate,
    ImageArtifactCreate,
    ImageLink,
    ImageUpload,
    LinkArtifactCreate,
    LinkData,
    MarkdownArtifactCreate,
    ProgressArtifactCreate,
    TableArtifactCreate,
)

if TYPE_CHECKING:
    from overcast.client import Client

Table = list[dict[str, Any]] | dict[str, list[Any]] | list[list[Any]]
"""A table: a list of row dicts, a dict of column lists, or a list of row lists."""

__all__ = [
    "Artifact",
    "ImageArtifact",
    "LinkArtifact",
    "MarkdownArtifact",
    "ProgressArtifact",
    "TableArtifact",
    "acreate_image_artifact",
    "acreate_link_artifact",
    "acreate_markdown_artifact",
    "acreate_progress_artifact",
    "acreate_table_artifact",
    "aupdate_progress_artifact",
    "create_image_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_progress_artifact",
    "create_table_artifact",
    "update_progress_artifact",
]


def create_markdown_artifact(
    markdown: str, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """Publish a markdown report.

    Args:
        markdown: the text.
        key: files it as the next version of this key (lowercase letters, digits, dashes).
        description: markdown describing it.

    Returns:
        The artifact's id.

    Raises:
        ValueError: an invalid key, or text over the size limit (256 KiB as JSON).
    """
    return _create(MarkdownArtifactCreate, type="markdown", data=markdown, key=key, description=description)


def create_table_artifact(table: Table, key: str | None = None, description: str | None = None) -> uuid.UUID:
    """Publish a table.

    Args:
        table: a list of row dicts, a dict of column lists (all of one length), or a list of
            row lists. NaN and infinite numbers become ``None`` (JSON has no such numbers).
        key: files it as the next version of this key.
        description: markdown describing it.

    Returns:
        The artifact's id.

    Raises:
        ValueError: an invalid key, a malformed table, or one over the size limit.
    """
    return _create(TableArtifactCreate, type="table", data=_finite(table), key=key, description=description)


def create_link_artifact(
    link: str, link_text: str | None = None, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """Publish a link.

    Args:
        link: an absolute URL (``https://…``, ``s3://…``).
        link_text: the text to show for it.
        key: files it as the next version of this key.
        description: markdown describing it.

    Returns:
        The artifact's id.

    Raises:
        ValueError: an invalid key or URL.
    """
    return _create(
        LinkArtifactCreate,
        type="link",
        data=LinkData(url=link, text=link_text),
        key=key,
        description=description,
    )


def create_progress_artifact(
    progress: float, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """Publish a progress bar; move it with ``update_progress_artifact``.

    Args:
        progress: a percentage from 0 to 100.
        key: files it as the next version of this key.
        description: markdown describing it.

    Returns:
        The artifact's id (what ``update_progress_artifact`` takes).

    Raises:
        ValueError: an invalid key, or a progress outside 0-100.
    """
    return _create(ProgressArtifactCreate, type="progress", data=progress, key=key, description=description)


def update_progress_artifact(
    artifact_id: uuid.UUID, progress: float, description: str | None = None
) -> uuid.UUID:
    """Move a progress artifact forward; readers see the new value as soon as this returns.

    Progress never goes back: a value below the stored one is ignored (the description too),
    so updates from concurrent tasks converge on the highest.

    Args:
        artifact_id: the id ``create_progress_artifact`` returned.
        progress: a percentage from 0 to 100.
        description: a new description.

    Returns:
        The artifact's id.

    Raises:
        ValueError: a progress outside 0-100.
        NotFoundError: no such artifact.
        ConditionFailedError: the artifact is not a progress artifact.
    """
    update = ArtifactUpdate(data=progress, description=description)
    return _client()[0].update_artifact(artifact_id, update).id


def create_image_artifact(
    image: bytes | str | os.PathLike[str] | None = None,
    key: str | None = None,
    description: str | None = None,
    *,
    image_url: str | None = None,
    content_type: str | None = None,
) -> uuid.UUID:
    """Publish an image: its bytes (kept in the blob store) or a link to it.

    Args:
        image: the image's bytes, a path to an image file (read and uploaded), or its URL.
        key: files it as the next version of this key.
        description: markdown describing it.
        image_url: the image's URL (Prefect's name for this argument); instead of ``image``.
        content_type: the bytes' media type (``image/png``); recognised from PNG, JPEG, GIF,
            WebP and SVG bytes when omitted.

    Returns:
        The artifact's id.

    Raises:
        ValueError: an invalid key or URL, an image over 4 MiB, or bytes of an unknown type
            without ``content_type``.
    """
    if (image is None) == (image_url is None):
        raise TypeError(
            "create_image_artifact takes an image (bytes, a path or a URL) or image_url, not both"
        )
    source = image if image is not None else image_url
    if isinstance(source, os.PathLike):
        source = Path(source).read_bytes()
    if isinstance(source, bytes | bytearray | memoryview):
        content = bytes(source)
        if len(content) > MAX_IMAGE_BYTES:
            raise ValueError(
                f"the image is {len(content):,} bytes, over the limit of {MAX_IMAGE_BYTES:,}; "
                "upload it elsewhere and pass its URL"
            )
        data: ImageLink | ImageUpload = ImageUpload(
            content_base64=base64.b64encode(content).decode(), content_type=content_type
        )
    elif isinstance(source, str):
        if content_type is not None:
            raise TypeError("content_type goes with an image's bytes; a linked image has none")
        data = ImageLink(url=source)
    else:
        raise TypeError(f"an image is bytes, a path or a URL, not {type(source).__name__}")
    return _create(ImageArtifactCreate, type="image", data=data, key=key, description=description)


# -- async twins ------------------------------------------------------------------------------------


async def acreate_markdown_artifact(
    markdown: str, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """``create_markdown_artifact`` for async code (the write runs on a worker thread)."""
    return await asyncio.to_thread(create_markdown_artifact, markdown, key, description)


async def acreate_table_artifact(
    table: Table, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """``create_table_artifact`` for async code."""
    return await asyncio.to_thread(create_table_artifact, table, key, description)


async def acreate_link_artifact(
    link: str, link_text: str | None = None, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """``create_link_artifact`` for async code."""
    return await asyncio.to_thread(create_link_artifact, link, link_text, key, description)


async def acreate_progress_artifact(
    progress: float, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """``create_progress_artifact`` for async code."""
    return await asyncio.to_thread(create_progress_artifact, progress, key, description)


async def aupdate_progress_artifact(
    artifact_id: uuid.UUID, progress: float, description: str | None = None
) -> uuid.UUID:
    """``update_progress_artifact`` for async code."""
    return await asyncio.to_thread(update_progress_artifact, artifact_id, progress, description)


async def acreate_image_artifact(
    image: bytes | str | os.PathLike[str] | None = None,
    key: str | None = None,
    description: str | None = None,
    *,
    image_url: str | None = None,
    content_type: str | None = None,
) -> uuid.UUID:
    """``create_image_artifact`` for async code."""
    return await asyncio.to_thread(
        create_image_artifact, image, key, description, image_url=image_url, content_type=content_type
    )


# -- as classes -------------------------------------------------------------------------------------


class _NewArtifact:
    """An artifact to publish: its fields are the matching ``create_*`` function's arguments."""

    def create(self) -> uuid.UUID:
        """Publish it (see the matching ``create_*`` function) and return its id."""
        raise NotImplementedError

    async def acreate(self) -> uuid.UUID:
        """``create`` for async code (the write runs on a worker thread)."""
        return await asyncio.to_thread(self.create)


@dataclass
class MarkdownArtifact(_NewArtifact):
    """A markdown report; ``create()`` is ``create_markdown_artifact``."""

    markdown: str
    key: str | None = None
    description: str | None = None

    def create(self) -> uuid.UUID:
        return create_markdown_artifact(self.markdown, self.key, self.description)


@dataclass
class TableArtifact(_NewArtifact):
    """A table; ``create()`` is ``create_table_artifact``."""

    table: Table
    key: str | None = None
    description: str | None = None

    def create(self) -> uuid.UUID:
        return create_table_artifact(self.table, self.key, self.description)


@dataclass
class LinkArtifact(_NewArtifact):
    """A link; ``create()`` is ``create_link_artifact``."""

    link: str
    link_text: str | None = None
    key: str | None = None
    description: str | None = None

    def create(self) -> uuid.UUID:
        return create_link_artifact(self.link, self.link_text, self.key, self.description)


@dataclass
class ProgressArtifact(_NewArtifact):
    """A progress bar; ``create()`` is ``create_progress_artifact`` (move it with ``update_progress_artifact``)."""

    progress: float
    key: str | None = None
    description: str | None = None

    def create(self) -> uuid.UUID:
        return create_progress_artifact(self.progress, self.key, self.description)


@dataclass
class ImageArtifact(_NewArtifact):
    """An image, its bytes or a link to it; ``create()`` is ``create_image_artifact``."""

    image: bytes | str | os.PathLike[str] | None = None
    key: str | None = None
    description: str | None = None
    _: KW_ONLY
    image_url: str | None = None
    content_type: str | None = None

    def create(self) -> uuid.UUID:
        return create_image_artifact(
            self.image, self.key, self.description, image_url=self.image_url, content_type=self.content_type
        )


# -- reading ----------------------------------------------------------------------------------------


class Artifact(models.Artifact):
    """An artifact as stored, with ways to read artifacts back.

    ``Artifact.get("daily-report")`` is the key's latest version; ``Artifact.history(key)`` all
    of them, newest first; ``artifact.image()`` the bytes of an uploaded image.
    """

    @classmethod
    def get(cls, key: str) -> Artifact | None:
        """Return the latest version of ``key``, or ``None`` when no artifact has it.

        Raises:
            ValueError: ``key`` is not a valid artifact key.
        """
        from overcast.core.errors import NotFoundError
        from overcast.core.services.artifacts import check_key

        try:
            return cls._of(_client()[0].read_latest_artifact(check_key(key)))
        except NotFoundError:
            return None

    @classmethod
    async def aget(cls, key: str) -> Artifact | None:
        """``Artifact.get`` for async code."""
        return await asyncio.to_thread(cls.get, key)

    @classmethod
    def get_by_id(cls, artifact_id: uuid.UUID) -> Artifact:
        """Return the artifact with this id. Raises ``NotFoundError`` when there is none."""
        return cls._of(_client()[0].read_artifact(artifact_id))

    @classmethod
    def history(cls, key: str, limit: int = 50) -> list[Artifact]:
        """Return the versions of ``key``, newest first (at most ``limit``, up to 200)."""
        from overcast.core.services.artifacts import check_key

        page = _client()[0].filter_artifacts(ArtifactFilter(key=check_key(key), limit=limit))
        return [cls._of(artifact) for artifact in page.items]

    def image(self) -> bytes:
        """Return the bytes of this image artifact (one uploaded, not linked by URL).

        Raises:
            NotFoundError: it is not an image kept in the blob store.
        """
        return _client()[0].read_artifact_image(self.id)

    @classmethod
    def _of(cls, artifact: models.Artifact) -> Artifact:
        return cls.model_validate(artifact.model_dump())


# -- internals --------------------------------------------------------------------------------------


def _client() -> tuple[Client, uuid.UUID | None, uuid.UUID | None]:
    """The client of the current run (or the process's), and the flow run and task run to link."""
    from overcast._runtime import get_runtime
    from overcast.context import flow_run_context, task_run_context

    flow_ctx, task_ctx = flow_run_context.get(), task_run_context.get()
    if flow_ctx is not None:
        flow_run_id = flow_ctx.flow_run.id
        # a subflow called inside a task has the parent's task run in context, not its own
        inside = task_ctx is not None and task_ctx.task_run.flow_run_id == flow_run_id
        return flow_ctx.runtime.client, flow_run_id, task_ctx.task_run_id if inside and task_ctx else None
    if task_ctx is not None:
        return get_runtime().client, task_ctx.task_run.flow_run_id, task_ctx.task_run_id
    return get_runtime().client, None, None


def _create(model: type[ArtifactRequest], **fields: Any) -> uuid.UUID:
    client, flow_run_id, task_run_id = _client()
    # the id is chosen here, so that a retried request cannot create the artifact twice
    request = model(id=uuid.uuid4(), flow_run_id=flow_run_id, task_run_id=task_run_id, **fields)
    return client.create_artifact(request).id


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
