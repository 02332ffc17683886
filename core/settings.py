"""Overcast's settings: one object, built once at the edge and passed down.

Every setting reads from an ``OVERCAST_``-prefixed environment variable; an explicit argument
wins over the environment, which wins over the default. With nothing set, everything is
embedded under ``~/.overcast`` (or ``OVERCAST_HOME``): SQLite for the store, a directory for
blobs, an SQLite-backed queue and a local process pool for functions.

Backend URLs:

==========  ====================================================================
store       ``sqlite:///PATH`` · ``memory://[NAME]`` ·
            ``dynamodb://TABLE?region=R&endpoint=URL``
blobs       ``file:///PATH`` · ``memory://[NAME]`` · ``s3://BUCKET/PREFIX?region=R&endpoint=URL``
queue       ``local:///PATH?name=Q&max_receives=N`` · ``memory://[NAME]`` ·
            ``sqs://QUEUE_NAME?region=R&endpoint=URL``
invoker     ``inline://`` · ``local://?workers=N&timeout=S`` ·
            ``lambda://?region=R&endpoint=URL``
buckets     ``file:///PATH`` (one directory per bucket) · ``memory://[NAME]`` ·
            ``s3://?region=R&endpoint=URL``
==========  ====================================================================

This module reads ``os.environ`` (through pydantic-settings) and nothing else in Overcast does.
"""

from __future__ import annotations

import uuid
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from overcast.core.errors import ConfigurationError


class Settings(BaseSettings):
    """Overcast's settings (environment prefix ``OVERCAST_``).

    Attributes:
        home: where the embedded backends keep their files (``OVERCAST_HOME``).
        store: the key-value store URL; empty means SQLite under ``home``.
        blobs: the blob store URL; empty means a directory under ``home``.
        queue: the queue URL; empty means an SQLite-backed queue under ``home``.
        invoker: the invoker URL; empty means a local process pool.
        functions: function name to handler path (``module:attr``) for local invokers.
        buckets: where uploads go (``overcast upload``, ``PUT /api/storage/BUCKET/KEY``): a
            directory holding one directory per bucket, or S3; empty means ``home/buckets``,
            the local buckets ``overcast dev`` watches and turns into S3 notifications.
        api_url: the control plane's URL for the HTTP client; empty means in-process.
        api_key: the bearer token the API requires and the HTTP client sends.
        flow_run_id: an existing flow run for the process's first top-level flow call to
            execute instead of creating one (what a worker or a function handler sets to run,
            or rerun, a flow run; tasks whose records were committed are not redone).
        task_run_events: which task-run states the control plane announces as
            ``overcast.task-run.<State>`` events: ``auto`` (the default: as ``final`` while an
            enabled automation listens for task-run events, else none, so that task runs pay
            for no event writes nobody reads), ``final`` (the state each task run reached by
            each report: one event per short task), ``all`` (every state, about three per task
            run) or ``off``.
    """

    model_config = SettingsConfigDict(env_prefix="OVERCAST_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=lambda: Path("~/.overcast"))
    store: str = ""
    blobs: str = ""
    queue: str = ""
    invoker: str = ""
    functions: dict[str, str] = Field(default_factory=dict)
    buckets: str = ""
    api_url: str = ""
    api_key: str = ""
    flow_run_id: uuid.UUID | None = None
    task_run_events: Literal["auto", "all", "final", "off"] = "auto"

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @cached_property
    def store_url(self) -> str:
        """The key-value store URL, with the embedded default filled in."""
        return self.store or f"sqlite://{self.home / 'overcast.db'}"

    @cached_property
    def blobs_url(self) -> str:
        """The blob store URL, with the embedded default filled in."""
        return self.blobs or f"file://{self.home / 'blobs'}"

    @cached_property
    def queue_url(self) -> str:
        """The queue URL, with the embedded default filled in."""
        return self.queue or f"local://{self.home / 'queue.db'}"

    @cached_property
    def invoker_url(self) -> str:
        """The invoker URL, with the embedded default filled in."""
        return self.invoker or "local://"

    @cached_property
    def buckets_url(self) -> str:
        """The buckets' URL, with the embedded default (local buckets under ``home``) filled in."""
        return self.buckets or f"file://{self.home / 'buckets'}"


class BackendURL:
    """A parsed backend URL: ``scheme://netloc/path?query``.

    Attributes:
        scheme: the backend's name.
        netloc: the part after ``//`` up to the path (a table, bucket or queue name).
        path: the path, with a leading ``~`` expanded.
        params: the query parameters.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.scheme:
            raise ConfigurationError(f"backend URL {url!r} has no scheme (expected e.g. sqlite:///path)")
        self.url = url
        self.scheme = parts.scheme
        self.netloc = parts.netloc
        path = parts.path
        if path.startswith("/~"):
            path = str(Path(path[1:]).expanduser())
        self.path = path
        self.params: dict[str, str] = dict(parse_qsl(parts.query))

    def param(self, name: str, default: Any = None, cast: type = str) -> Any:
        """Return query parameter ``name`` cast to ``cast``, or ``default`` when absent."""
        if name not in self.params:
            return default
        raw = self.params[name]
        try:
            if cast is bool:
                return raw.lower() in ("1", "true", "yes", "on")
            return cast(raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"{self.url!r}: parameter {name}={raw!r} is not a {cast.__name__}"
            ) from exc

    def require_path(self) -> Path:
        """Return the path as a ``Path``; raise ``ConfigurationError`` when there is none."""
        if not self.path or self.path == "/":
            raise ConfigurationError(
                f"backend URL {self.url!r} needs a path, e.g. {self.scheme}:///absolute/path"
            )
        return Path(self.path)

    def require_netloc(self, what: str) -> str:
        """Return the netloc; raise ``ConfigurationError`` naming ``what`` when it is empty."""
        if not self.netloc:
            raise ConfigurationError(
                f"backend URL {self.url!r} needs a {what}: {self.scheme}://{what.upper()}"
            )
        return self.netloc

    def __repr__(self) -> str:
        return f"BackendURL({self.url!r})"
