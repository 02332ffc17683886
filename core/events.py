"""Events: what happened, to which resource, with which others involved (Prefect 3's shape).

An event is named (``overcast.work-pool.not-ready``, ``overcast.flow-run.Completed``), happened
at ``occurred``, is about one *resource* (a dict of labels whose ``overcast.resource.id`` names
it, such as ``overcast.work-pool.<id>``), may involve *related* resources (each with an
``overcast.resource.role``), and carries a JSON ``payload``. Its ``id`` makes ingest
idempotent: an event sent twice is stored once.

Resource ids follow ``overcast.<kind>.<id or name>``: ``overcast.flow-run.<id>``,
``overcast.deployment.<id>``, ``overcast.work-pool.<id>``, ``overcast.work-queue.<id>``,
``overcast.worker.<id>``. Every resource Overcast describes also carries
``overcast.resource.name``.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from overcast.core.schemas import Cursor, json_bytes
from overcast.core.states import utcnow
from overcast.core.types import Int, UtcDateTime

RESOURCE_ID = "overcast.resource.id"
RESOURCE_NAME = "overcast.resource.name"
RESOURCE_ROLE = "overcast.resource.role"
MAX_LABELS = 500
MAX_RELATED = 100
MAX_RESOURCE_ID = 500
MAX_EVENT_BYTES = 256 * 1024
"""The most an event may take as JSON (UTF-8), so that it fits one store item."""

EventName = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00-\x20\x7f]+$")]
"""An event's name: 1-1024 characters, no spaces or control characters (``overcast.worker.offline``)."""
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
LabelValue = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00-\x1f]*$")]


_VERSION_7 = (0x7 << 76) | (0b10 << 62)  # RFC 9562: version 7, variant 0b10
_last_id = 0
_id_lock = threading.Lock()


def new_event_id() -> uuid.UUID:
    """A version-7 UUID (RFC 9562) that sorts after every id this process made before.

    Events made in one step share their ``occurred`` time; these ids keep them, in listings,
    in the order they were made (a worker going offline before its pool goes not-ready).
    """
    global _last_id  # noqa: PLW0603 - the last id handed out, to stay monotonic
    fresh = ((time.time_ns() // 1_000_000) << 74) | (int.from_bytes(os.urandom(10), "big") >> 6)
    with _id_lock:
        value = _last_id = max(fresh, _last_id + 1)
    millis, rand_a, rand_b = value >> 74, (value >> 62) & 0xFFF, value & ((1 << 62) - 1)
    return uuid.UUID(int=(millis << 80) | _VERSION_7 | (rand_a << 64) | rand_b)


def _check_resource(labels: dict[str, str]) -> dict[str, str]:
    resource_id = labels.get(RESOURCE_ID)
    if not resource_id:
        raise ValueError(f"a resource needs a non-empty {RESOURCE_ID!r} label")
    if len(resource_id) > MAX_RESOURCE_ID:
        raise ValueError(f"{RESOURCE_ID!r} is longer than {MAX_RESOURCE_ID} characters")
    return labels


def _check_related(labels: dict[str, str]) -> dict[str, str]:
    _check_resource(labels)
    if not labels.get(RESOURCE_ROLE):
        raise ValueError(f"a related resource needs a non-empty {RESOURCE_ROLE!r} label")
    return labels


def _labels_schema(*required: str) -> WithJsonSchema:
    text = r"^[^\x00-\x1f]*$"
    required_label = {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": text}
    properties = {name: required_label for name in required}
    properties[RESOURCE_ID] = {**required_label, "maxLength": MAX_RESOURCE_ID}
    return WithJsonSchema(
        {
            "type": "object",
            "properties": properties,
            "required": list(required),
            "additionalProperties": {"type": "string", "maxLength": 1000, "pattern": text},
            "propertyNames": {"minLength": 1, "maxLength": 200, "pattern": r"^[^\x00-\x1f]+$"},
            "maxProperties": MAX_LABELS,
        }
    )


Resource = Annotated[
    dict[LabelName, LabelValue],
    Field(max_length=MAX_LABELS),
    AfterValidator(_check_resource),
    _labels_schema(RESOURCE_ID),
]
"""The labels of an event's resource; ``overcast.resource.id`` is required."""
RelatedResource = Annotated[
    dict[LabelName, LabelValue],
    Field(max_length=MAX_LABELS),
    AfterValidator(_check_related),
    _labels_schema(RESOURCE_ID, RESOURCE_ROLE),
]
"""The labels of a resource involved in an event; ``overcast.resource.id`` and ``overcast.resource.role`` are required."""


class Event(BaseModel):
    """Something that happened to a resource.

    Attributes:
        id: the event's id; ingest is idempotent by it (a repeat is ignored). Made here, it
            is time-ordered (``new_event_id``).
        occurred: when it happened.
        event: its name.
        resource: the resource it is about (labels; ``overcast.resource.id`` names it).
        related: other resources involved, each with an ``overcast.resource.role``.
        payload: details (JSON).
        follows: the id of an event this one comes after (ordering hint for automations).
        received: when the control plane stored it (set on ingest; ignored when sent).
    """

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=new_event_id)
    occurred: UtcDateTime = Field(default_factory=utcnow)
    event: EventName
    resource: Resource
    related: list[RelatedResource] = Field(default_factory=list, max_length=MAX_RELATED)
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    follows: uuid.UUID | None = None
    received: UtcDateTime | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        size = json_bytes(self.model_dump(mode="json"))
        if size > MAX_EVENT_BYTES:
            raise ValueError(
                f"the event is {size:,} bytes as JSON, over the limit of {MAX_EVENT_BYTES:,}; "
                "keep large data in an artifact or the blob store and reference it"
            )
        return self

    @property
    def resource_id(self) -> str:
        """The ``overcast.resource.id`` of the event's resource."""
        return self.resource[RESOURCE_ID]

    def related_in_role(self, role: str) -> list[dict[str, str]]:
        """The related resources that play ``role`` (``work-pool``, ``flow-run`` …)."""
        return [r for r in self.related if r.get(RESOURCE_ROLE) == role]


def resource(resource_id: str, name: str | None = None, **labels: Any) -> dict[str, str]:
    """The labels of a resource: its id, its name when given, and ``labels`` (values as text).

    Label names with dots cannot be keyword arguments; pass them in a ``**{"a.b": v}`` mapping.
    """
    out = {RESOURCE_ID: resource_id}
    if name is not None:
        out[RESOURCE_NAME] = name
    out.update({key: str(value) for key, value in labels.items()})
    return out


def related(resource_id: str, role: str, name: str | None = None, **labels: Any) -> dict[str, str]:
    """The labels of a related resource playing ``role`` (see ``resource``)."""
    return {**resource(resource_id, name, **labels), RESOURCE_ROLE: role}


class EventBatch(BaseModel):
    """Events sent together (``POST /events``)."""

    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=500)


ResourceId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_RESOURCE_ID)]
LabelPattern = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00-\x1f]*$")]
MAX_PATTERNS = 50
_PATTERN_SCHEMA = {"type": "string", "maxLength": 1000, "pattern": r"^[^\x00-\x1f]*$"}
LabelPatterns = Annotated[
    dict[LabelName, LabelPattern | Annotated[list[LabelPattern], Field(max_length=MAX_PATTERNS)]],
    Field(max_length=MAX_PATTERNS),
    # pydantic writes the names' pattern as ``patternProperties``, which leaves other names
    # free in JSON Schema; the API's schema must refuse what validation refuses.
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {
                "anyOf": [
                    _PATTERN_SCHEMA,
                    {"type": "array", "items": _PATTERN_SCHEMA, "maxItems": MAX_PATTERNS},
                ]
            },
            "propertyNames": {"minLength": 1, "maxLength": 200, "pattern": r"^[^\x00-\x1f]+$"},
            "maxProperties": MAX_PATTERNS,
        }
    ),
]
"""Label names to a value pattern, or a list of them (any may match)."""


def name_pattern(pattern: str) -> Callable[[str], bool]:
    """A test of text against ``pattern``: exact, or with ``*`` standing for any run of characters.

    ``overcast.flow-run.*`` matches every flow-run event, ``*.Failed`` every failure,
    ``aws.s3.*.created`` an upload. Label value patterns in ``EventFilter`` work the same way.
    """
    if "*" not in pattern:
        return lambda text: text == pattern
    if pattern.count("*") == 1 and pattern.endswith("*"):
        prefix = pattern[:-1]
        return lambda text: text.startswith(prefix)
    parts = re.split(r"(\*)", pattern)
    regex = re.compile("".join(".*" if part == "*" else re.escape(part) for part in parts), re.DOTALL)
    return lambda text: regex.fullmatch(text) is not None


class EventFilter(BaseModel):
    """Which events to list, and in which order: every criterion given must hold.

    Attributes:
        names: events whose name is one of these; each is an exact name or a pattern where
            ``*`` stands for any characters (``overcast.flow-run.*``, ``*.Failed``).
        exclude_names: events whose name matches none of these (same patterns).
        name_prefix: events whose name starts with this (``overcast.work-pool.``).
        resource_id: events about this resource (its ``overcast.resource.id``); the fastest
            criterion, read from the resource's own index.
        resource_id_prefix: events about a resource whose id starts with this
            (``overcast.flow-run.``).
        resource_labels: labels the event's resource must have: label name to a value, or a
            list of values (any may match); a value may hold ``*`` wildcards (``"*"``: the
            label must be there).
        related_resource_id: events with a related resource of this id (``overcast.flow-run.<id>``
            lists the flow run's task-run events and the events emitted inside it).
        related_role: events with a related resource in this role (``deployment``); with
            ``related_resource_id``, the same related resource must have both.
        since, until: the span of ``occurred`` (both inclusive); by default the whole
            retention period up to a day ahead of now.
        order: ``desc`` (newest first, the default) or ``asc`` (oldest first).
        limit: the most events to return.
        cursor: ``next_cursor`` of the previous page (of the same filter).
    """

    model_config = ConfigDict(extra="forbid")

    names: list[EventName] | None = Field(default=None, max_length=MAX_PATTERNS)
    exclude_names: list[EventName] | None = Field(default=None, max_length=MAX_PATTERNS)
    name_prefix: EventName | None = None
    resource_id: ResourceId | None = None
    resource_id_prefix: ResourceId | None = None
    resource_labels: LabelPatterns | None = None
    related_resource_id: ResourceId | None = None
    related_role: LabelValue | None = None
    since: UtcDateTime | None = None
    until: UtcDateTime | None = None
    order: Literal["desc", "asc"] = "desc"
    limit: Int = Field(default=50, ge=1, le=500)
    cursor: Cursor | None = None

    def matcher(self, *, with_resource_id: bool = True) -> Callable[[dict[str, Any]], bool]:
        """A test of an event in its JSON form (``Event.model_dump(mode="json")``) against the
        filter's criteria, except the time span (the store's index bounds it).

        Args:
            with_resource_id: also test ``resource_id`` (``False`` when the index read only
                that resource's events).
        """
        return _matcher(self, with_resource_id=with_resource_id)

    def matches(self, event: Event) -> bool:
        """Whether ``event`` meets every criterion, its time span included."""
        if self.since is not None and event.occurred < self.since:
            return False
        if self.until is not None and event.occurred > self.until:
            return False
        return self.matcher()(event.model_dump(mode="json"))


def _matcher(query: EventFilter, *, with_resource_id: bool) -> Callable[[dict[str, Any]], bool]:
    tests: list[Callable[[dict[str, Any]], bool]] = []
    if query.names:
        wanted = [name_pattern(p) for p in query.names]
        tests.append(lambda e: any(test(e["event"]) for test in wanted))
    if query.exclude_names:
        unwanted = [name_pattern(p) for p in query.exclude_names]
        tests.append(lambda e: not any(test(e["event"]) for test in unwanted))
    if query.name_prefix:
        prefix = query.name_prefix
        tests.append(lambda e: str(e["event"]).startswith(prefix))
    if with_resource_id and query.resource_id is not None:
        resource_id = query.resource_id
        tests.append(lambda e: e["resource"].get(RESOURCE_ID) == resource_id)
    if query.resource_id_prefix is not None:
        id_prefix = query.resource_id_prefix
        tests.append(lambda e: str(e["resource"].get(RESOURCE_ID, "")).startswith(id_prefix))
    if query.resource_labels:
        labels = [
            (label, [name_pattern(v) for v in ([values] if isinstance(values, str) else values)])
            for label, values in query.resource_labels.items()
        ]
        tests.append(lambda e: all(_label_matches(e["resource"].get(label), ors) for label, ors in labels))
    if query.related_resource_id is not None or query.related_role is not None:
        related_id, role = query.related_resource_id, query.related_role
        tests.append(
            lambda e: any(
                (related_id is None or r.get(RESOURCE_ID) == related_id)
                and (role is None or r.get(RESOURCE_ROLE) == role)
                for r in e.get("related", ())
            )
        )
    if not tests:
        return lambda _e: True
    if len(tests) == 1:
        return tests[0]
    return lambda e: all(test(e) for test in tests)


def _label_matches(value: str | None, patterns: list[Callable[[str], bool]]) -> bool:
    return value is not None and (not patterns or any(test(value) for test in patterns))


class Emitted(BaseModel):
    """What became of a batch of events: how many were new, how many were repeats."""

    stored: int
    duplicates: int
