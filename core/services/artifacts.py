"""Artifacts: created (versioned per key, race-safe), read, listed, and progress updated in place.

An artifact is one item keyed by its id. A keyed artifact is also copied into its key's
partition as version ``n``: creating one reads the key's newest version and claims the next with
a conditional put, retried when another writer claimed it first, so racing writers get distinct,
gapless versions. The creator may choose the id, which makes a retried creation idempotent.

Progress never goes back: an update below the stored progress changes nothing and returns the
artifact as stored (concurrent updaters converge on the highest value; none of them fails).
Updates are synchronous writes, so a reader sees each one as soon as its call returns.

Image bytes go to the blob store under ``artifacts/<id>/image``; the item keeps the blob key,
the media type and the size.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from overcast.core import keys
from overcast.core.errors import (
    ConditionFailedError,
    ConfigurationError,
    InvalidValueError,
    NotFoundError,
    TransactionConflictError,
)
from overcast.core.models import ARTIFACT_KEY_PATTERN, Artifact
from overcast.core.ports import BlobStore, Item, KeyValueStore, Put
from overcast.core.schemas import (
    MAX_IMAGE_BYTES,
    ArtifactFilter,
    ArtifactRequest,
    ArtifactUpdate,
    ImageArtifactCreate,
    ImageLink,
    LinkArtifactCreate,
    Page,
    ProgressArtifactCreate,
    TableArtifactCreate,
)
from overcast.core.services._listing import list_partition
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.states import utcnow

MAX_ATTEMPTS = 25
_KEY = re.compile(ARTIFACT_KEY_PATTERN)


_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
]


class ArtifactConflictError(ConditionFailedError):
    """Raised when a creation or update kept losing races to other writers (extreme contention)."""


class NotProgressError(ConditionFailedError):
    """Raised when progress is set on an artifact of another type (the API answers 409).

    Attributes:
        artifact_id: the artifact.
        artifact_type: its type.
    """

    def __init__(self, artifact_id: uuid.UUID, artifact_type: str) -> None:
        self.artifact_id, self.artifact_type = artifact_id, artifact_type
        super().__init__(*keys.artifact(artifact_id), "a progress artifact")
        self.args = (
            f"artifact {artifact_id} is a {artifact_type} artifact; only a progress artifact's data changes "
            "in place (create a new version under its key instead)",
        )


def image_type(data: bytes) -> str | None:
    """The media type of an image, recognised from its first bytes (PNG, JPEG, GIF, WebP, SVG)."""
    for signature, offset, media_type in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return media_type
    head = data[:1024].lstrip()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return None


class Artifacts:
    """Creates, reads, lists and updates artifacts.

    Args:
        store: the key-value store.
        flow_runs: the flow runs an artifact may name (it must name one that exists).
        blobs: returns the blob store for image bytes (``None`` when there is none).
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        flow_runs: FlowRuns,
        *,
        blobs: Callable[[], BlobStore | None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._flow_runs = flow_runs
        self._blobs = blobs
        self._clock = clock

    # -- create -------------------------------------------------------------------------------

    def create(self, request: ArtifactRequest) -> tuple[Artifact, bool]:
        """Store a new artifact (the next version of its key, if it has one); return it and whether it is new.

        A request whose ``id`` names an existing artifact returns that artifact (a retry).

        Raises:
            NotFoundError: the flow run it names does not exist.
            InvalidValueError: the image cannot be used.
            ConfigurationError: image bytes were sent and the control plane has no blob store.
            ArtifactConflictError: the key's versions kept racing (extreme contention).
        """
        artifact_id = request.id or uuid.uuid4()
        if request.id is not None:
            existing = self._find(request.id)
            if existing is not None:
                return existing, False
        if request.flow_run_id is not None:
            self._flow_runs.get(request.flow_run_id)  # an artifact names an existing run (else 404)
        now = self._clock()
        artifact = Artifact(
            id=artifact_id,
            key=request.key,
            type=request.type,
            description=request.description,
            data=self._data(request, artifact_id),
            flow_run_id=request.flow_run_id,
            task_run_id=request.task_run_id,
            created=now,
            updated=now,
        )
        if artifact.key is None:
            try:
                self._store.put(_item(artifact), if_absent=True)
            except ConditionFailedError:
                return self.get(artifact_id), False
            return artifact, True
        for _ in range(MAX_ATTEMPTS):
            versioned = artifact.model_copy(update={"version": self._newest_version(artifact.key) + 1})
            try:
                self._store.transact(
                    [Put(_item(versioned), if_absent=True), Put(_version_item(versioned), if_absent=True)]
                )
            except TransactionConflictError as exc:
                if exc.index == 0:  # the id exists: a retry that raced its first attempt
                    return self.get(artifact_id), False
                continue  # another writer claimed this version: claim the next
            return versioned, True
        raise ArtifactConflictError(
            keys.artifact_versions(artifact.key),
            keys.VERSION_PREFIX,
            f"the key's versions kept changing; gave up after {MAX_ATTEMPTS} tries",
        )

    def _data(self, request: ArtifactRequest, artifact_id: uuid.UUID) -> Any:
        if isinstance(request, ProgressArtifactCreate):
            return float(request.data)
        if isinstance(request, LinkArtifactCreate):
            return {"url": request.data.url, "text": request.data.text}
        if isinstance(request, ImageArtifactCreate):
            image = request.data
            if isinstance(image, ImageLink):
                return {"url": image.url}
            return self._store_image(artifact_id, image.content_base64, image.content_type)
        if isinstance(request, TableArtifactCreate):
            return request.model_dump(mode="json", include={"data"})["data"]
        return request.data

    def _store_image(self, artifact_id: uuid.UUID, encoded: str, content_type: str | None) -> dict[str, Any]:
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValueError("the image's content_base64 is not valid base64") from None
        if len(content) > MAX_IMAGE_BYTES:
            raise InvalidValueError(
                f"the image is {len(content):,} bytes, over the limit of {MAX_IMAGE_BYTES:,}; "
                "upload it elsewhere and create the artifact with its URL"
            )
        media_type = content_type or image_type(content)
        if media_type is None:
            raise InvalidValueError(
                "the image's type cannot be told from its bytes (PNG, JPEG, GIF, WebP and SVG are "
                "recognised); give its content_type"
            )
        blobs = self._blob_store()
        blob_key = f"artifacts/{artifact_id}/image"
        blobs.put(blob_key, content)
        return {"blob_key": blob_key, "content_type": media_type, "size": len(content)}

    # -- read ---------------------------------------------------------------------------------

    def get(self, artifact_id: uuid.UUID) -> Artifact:
        """Return the artifact. Raises ``NotFoundError`` when there is none."""
        return self._read(artifact_id)[0]

    def latest(self, key: str) -> Artifact:
        """Return the newest version of ``key``.

        Raises:
            InvalidValueError: ``key`` is not a valid artifact key.
            NotFoundError: no artifact has this key.
        """
        check_key(key)
        page = self._store.query(
            keys.artifact_versions(key), sk_prefix=keys.VERSION_PREFIX, descending=True, limit=1
        )
        if not page.items:
            raise NotFoundError("artifact", key, f"no artifact has the key {key!r}")
        return Artifact.model_validate(page.items[0]["artifact"])

    def image(self, artifact_id: uuid.UUID) -> tuple[bytes, str]:
        """Return a stored image's bytes and media type.

        Raises:
            NotFoundError: no such artifact, or it is not an image kept in the blob store.
            ConfigurationError: the control plane has no blob store.
        """
        artifact = self.get(artifact_id)
        data = artifact.data
        if (
            artifact.type != "image"
            or not isinstance(data, dict)
            or not isinstance(data.get("blob_key"), str)
        ):
            where = f"; its image is at {data['url']}" if isinstance(data, dict) and data.get("url") else ""
            raise NotFoundError(
                "image", str(artifact_id), f"artifact {artifact_id} holds no stored image{where}"
            )
        return self._blob_store().get(str(data["blob_key"])), str(data.get("content_type"))

    def filter(self, query: ArtifactFilter) -> Page[Artifact]:
        """List artifacts matching ``query`` (see ``ArtifactFilter``)."""
        low = high = None
        if query.key is not None:
            partition, index, sort_attr = keys.artifact_versions(query.key), None, "sk"
            low, high = keys.VERSION_PREFIX, keys.VERSION_PREFIX + "~"
        elif query.flow_run_id is not None:
            partition, index, sort_attr = keys.artifacts_of(query.flow_run_id), "gsi1", "gsi1sk"
        else:
            partition, index, sort_attr = keys.artifacts_all(), "gsi2", "gsi2sk"
        items, cursor = list_partition(
            self._store,
            partition,
            index=index,
            sort_attr=sort_attr,
            low=low,
            high=high,
            descending=query.sort == "CREATED_DESC",
            cursor=query.cursor,
            limit=query.limit,
            keep=lambda item: _matches(item["artifact"], query),
        )
        return Page[Artifact](
            items=[Artifact.model_validate(i["artifact"]) for i in items], next_cursor=cursor
        )

    # -- update -------------------------------------------------------------------------------

    def update(self, artifact_id: uuid.UUID, update: ArtifactUpdate) -> Artifact:
        """Move a progress artifact forward and/or change a description; return the artifact as stored.

        A progress below the stored one is ignored, description included: the answer is the
        artifact unchanged. Progress is only ever raised, so concurrent updaters converge on
        the highest value.

        Raises:
            NotFoundError: no such artifact.
            NotProgressError: ``data`` was given for an artifact that is not a progress artifact.
            ArtifactConflictError: the artifact kept changing under us (extreme contention).
        """
        for _ in range(MAX_ATTEMPTS):
            artifact, version = self._read(artifact_id)
            changes: dict[str, Any] = {}
            if update.data is not None:
                if artifact.type != "progress" or not isinstance(artifact.data, int | float):
                    raise NotProgressError(artifact_id, artifact.type)
                if update.data < artifact.data:
                    return artifact  # progress never goes back
                if update.data != artifact.data:
                    changes["data"] = float(update.data)
            if update.description is not None and update.description != artifact.description:
                changes["description"] = update.description
            if not changes:
                return artifact
            updated = artifact.model_copy(update={**changes, "updated": self._clock()})
            operations = [Put(_item(updated), if_version=version)]
            if updated.key is not None:
                operations.append(Put(_version_item(updated)))
            try:
                self._store.transact(operations)
            except TransactionConflictError:
                continue  # someone updated it first: apply ours to what they wrote
            return updated
        raise ArtifactConflictError(
            *keys.artifact(artifact_id), f"the artifact kept changing; gave up after {MAX_ATTEMPTS} tries"
        )

    # -- internals ----------------------------------------------------------------------------

    def _find(self, artifact_id: uuid.UUID) -> Artifact | None:
        item = self._store.get(*keys.artifact(artifact_id))
        return None if item is None else Artifact.model_validate(item["artifact"])

    def _read(self, artifact_id: uuid.UUID) -> tuple[Artifact, int]:
        item = self._store.get(*keys.artifact(artifact_id))
        if item is None:
            raise NotFoundError("artifact", str(artifact_id))
        return Artifact.model_validate(item["artifact"]), int(item["v"])

    def _newest_version(self, key: str) -> int:
        page = self._store.query(
            keys.artifact_versions(key), sk_prefix=keys.VERSION_PREFIX, descending=True, limit=1
        )
        return int(page.items[0]["sk"].removeprefix(keys.VERSION_PREFIX)) if page.items else 0

    def _blob_store(self) -> BlobStore:
        blobs = self._blobs()
        if blobs is None:
            raise ConfigurationError(
                "this control plane has no blob store, so it cannot keep image bytes; "
                "configure one (OVERCAST_BLOBS) or create the image artifact from a URL"
            )
        return blobs


def check_key(key: str) -> str:
    """Return ``key`` when it is a valid artifact key.

    Raises:
        InvalidValueError: it is empty, longer than 200 characters, or holds other characters
            than lowercase letters, digits and dashes.
    """
    if not (0 < len(key) <= 200 and _KEY.fullmatch(key)):
        raise InvalidValueError(
            f"artifact key {key!r} is invalid: use 1-200 lowercase letters, digits and dashes"
        )
    return key


def _item(artifact: Artifact) -> Item:
    pk, sk = keys.artifact(artifact.id)
    sort = keys.artifact_sort(artifact.created, artifact.id)
    item: Item = {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.artifacts_all(keys.shard_of(artifact.id)),
        "gsi2sk": sort,
        "artifact": artifact.model_dump(mode="json"),
    }
    run_id = artifact.flow_run_id or artifact.task_run_id
    if run_id is not None:
        item["gsi1pk"], item["gsi1sk"] = keys.artifacts_of(run_id), sort
    return item


def _version_item(artifact: Artifact) -> Item:
    assert artifact.key is not None and artifact.version is not None
    pk, sk = keys.artifact_version(artifact.key, artifact.version)
    return {"pk": pk, "sk": sk, "artifact": artifact.model_dump(mode="json")}


def _matches(artifact: dict[str, Any], query: ArtifactFilter) -> bool:
    if query.type and artifact["type"] not in query.type:
        return False
    if query.flow_run_id and artifact["flow_run_id"] != str(query.flow_run_id):
        return False
    return not (query.task_run_id and artifact["task_run_id"] != str(query.task_run_id))
