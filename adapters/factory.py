"""From settings (or backend URLs) to adapters: the one place that picks a backend.

Each backend module is imported only when its scheme is asked for, so a process that uses
the embedded backends never imports boto3, s3fs or botocore (cold starts pay for every import).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from overcast.core.errors import ConfigurationError, InvalidValueError
from overcast.core.ports import BlobStore, Invoker, KeyValueStore, Queue
from overcast.core.settings import BackendURL, Settings

if TYPE_CHECKING:
    from overcast.core.services import ControlPlane

Clock = Callable[[], float]

# memory:// backends are shared by name within a process, so that components built from the
# same settings (an API and an engine in one test, say) see one store.
_MEMORY: dict[tuple[str, str], Any] = {}
_MEMORY_LOCK = threading.Lock()


def _memory(kind: str, name: str, build: Callable[[], Any]) -> Any:
    if not name:
        return build()  # memory:// with no name: a fresh store of the caller's own
    with _MEMORY_LOCK:
        key = (kind, name)
        if key not in _MEMORY:
            _MEMORY[key] = build()
        return _MEMORY[key]


def open_store(url: str, *, clock: Clock = time.time) -> KeyValueStore:
    """Return the key-value store a URL names (``sqlite:///PATH``, ``memory://NAME``, ``dynamodb://TABLE``).

    ``memory://NAME`` stores are shared by name within the process; ``memory://`` is a fresh one.

    Raises:
        ConfigurationError: an unknown scheme or a malformed URL.
    """
    parsed = BackendURL(url)
    if parsed.scheme == "sqlite":
        from overcast.adapters.kv.sqlite import SqliteKeyValueStore

        return SqliteKeyValueStore(parsed.require_path(), clock=clock)
    if parsed.scheme == "memory":
        from overcast.adapters.kv.memory import MemoryKeyValueStore

        store: KeyValueStore = _memory("store", parsed.netloc, lambda: MemoryKeyValueStore(clock=clock))
        return store
    if parsed.scheme == "dynamodb":
        from overcast.adapters.kv.dynamodb import DynamoDBKeyValueStore

        return DynamoDBKeyValueStore.from_url(parsed, clock=clock)
    raise ConfigurationError(
        f"unknown store backend {parsed.scheme!r} in {url!r}; use sqlite, memory or dynamodb"
    )


def open_blobs(url: str) -> BlobStore:
    """Return the blob store a URL names (``file:///PATH``, ``memory://NAME``, ``s3://BUCKET/PREFIX``).

    Raises:
        ConfigurationError: an unknown scheme or a malformed URL.
    """
    parsed = BackendURL(url)
    if parsed.scheme == "file":
        from overcast.adapters.blobs.local import LocalBlobStore

        return LocalBlobStore(parsed.require_path())
    if parsed.scheme == "memory":
        from overcast.adapters.blobs.memory import MemoryBlobStore

        blobs: BlobStore = _memory(
            "blobs", parsed.netloc, lambda: MemoryBlobStore(parsed.netloc or "default")
        )
        return blobs
    if parsed.scheme == "s3":
        from overcast.adapters.blobs.s3 import S3BlobStore

        return S3BlobStore.from_url(parsed)
    raise ConfigurationError(f"unknown blob backend {parsed.scheme!r} in {url!r}; use file, memory or s3")


_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def validate_bucket_name(name: str) -> str:
    """Return ``name`` when it follows S3's naming rules for general purpose buckets.

    3-63 characters of lowercase letters, digits, ``.`` and ``-``; a letter or digit at each
    end; no ``..``; not an IP address; none of S3's reserved prefixes and suffixes. Local
    buckets follow the same rules, so a name that works on a laptop works on S3.

    Raises:
        InvalidValueError: the name breaks a rule; the message says which.
    """
    problem = ""
    if not _BUCKET_NAME.match(name):
        problem = "3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
    elif ".." in name:
        problem = "no two adjacent periods"
    elif name.startswith(_BUCKET_PREFIXES) or name.endswith(_BUCKET_SUFFIXES):
        problem = "none of S3's reserved prefixes (xn--, sthree-, …) or suffixes (-s3alias, …)"
    else:
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return name
        problem = "not an IP address"
    raise InvalidValueError(f"invalid bucket name {name!r}: a bucket name must have {problem}")


def open_bucket(url: str, bucket: str) -> BlobStore:
    """Return bucket ``bucket`` of the buckets a URL names, as a blob store of its objects.

    ``file:///ROOT`` holds one directory per bucket (``ROOT/BUCKET``, created on first use; the
    watcher of ``overcast dev`` turns what lands there into S3 notifications);
    ``s3://?region=R&endpoint=URL`` is S3 itself, whose bucket must exist; ``memory://NAME``
    keeps them in this process (tests).

    Raises:
        InvalidValueError: the bucket name breaks S3's rules.
        ConfigurationError: an unknown scheme or a malformed URL.
    """
    validate_bucket_name(bucket)
    parsed = BackendURL(url)
    if parsed.scheme == "file":
        from overcast.adapters.blobs.local import LocalBlobStore

        return LocalBlobStore(parsed.require_path() / bucket)
    if parsed.scheme == "memory":
        from overcast.adapters.blobs.memory import MemoryBlobStore

        name = f"{parsed.netloc}/{bucket}"
        blobs: BlobStore = _memory("bucket", name, lambda: MemoryBlobStore(name))
        return blobs
    if parsed.scheme == "s3":
        from overcast.adapters.blobs.s3 import S3BlobStore

        query = url.partition("?")[2]
        return S3BlobStore.from_url(BackendURL(f"s3://{bucket}?{query}"))
    raise ConfigurationError(f"unknown buckets backend {parsed.scheme!r} in {url!r}; use file, s3 or memory")


def open_queue(url: str) -> Queue:
    """Return the queue a URL names (``local:///PATH?name=Q``, ``memory://NAME``, ``sqs://NAME``).

    Raises:
        ConfigurationError: an unknown scheme or a malformed URL.
    """
    parsed = BackendURL(url)
    if parsed.scheme in ("local", "memory"):
        from overcast.adapters.queues.local import LocalQueue

        max_receives = parsed.param("max_receives", 5, int)
        if parsed.scheme == "memory":
            queue: Queue = _memory(
                "queue", parsed.netloc, lambda: LocalQueue.in_memory(parsed.netloc or "default")
            )
            return queue
        return LocalQueue(parsed.require_path(), parsed.param("name", "default"), max_receives=max_receives)
    if parsed.scheme == "sqs":
        from overcast.adapters.queues.sqs import SqsQueue

        return SqsQueue.from_url(parsed)
    raise ConfigurationError(f"unknown queue backend {parsed.scheme!r} in {url!r}; use local, memory or sqs")


def open_invoker(url: str, functions: Mapping[str, str] | None = None) -> Invoker:
    """Return the invoker a URL names (``inline://``, ``local://?workers=N&timeout=S``, ``lambda://``,
    ``gcf://?audience=A``: Cloud Functions called by URL).

    Args:
        functions: function name to handler path, for the local invokers.

    Raises:
        ConfigurationError: an unknown scheme or a malformed URL.
    """
    parsed = BackendURL(url)
    if parsed.scheme == "inline":
        from overcast.adapters.invokers.inline import InlineInvoker

        return InlineInvoker(functions, timeout_s=parsed.param("timeout", 900.0, float))
    if parsed.scheme == "local":
        from overcast.adapters.invokers.process_pool import LocalProcessInvoker

        return LocalProcessInvoker(
            functions,
            max_workers=parsed.param("workers", 4, int),
            timeout_s=parsed.param("timeout", 900.0, float),
        )
    if parsed.scheme == "gcf":
        from overcast.adapters.invokers.cloud_functions import CloudFunctionsInvoker

        return CloudFunctionsInvoker(audience=parsed.param("audience"))
    if parsed.scheme == "lambda":
        from overcast.adapters.invokers.aws_lambda import LambdaInvoker

        return LambdaInvoker.from_url(parsed)
    raise ConfigurationError(
        f"unknown invoker backend {parsed.scheme!r} in {url!r}; use inline, local, lambda or gcf"
    )


@dataclass
class Adapters:
    """The four adapters of one settings object, each built on first use and then reused.

    Built once per process (per cold start in a function) and passed down.
    """

    settings: Settings = field(default_factory=Settings)
    clock: Clock = time.time
    _built: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _get(self, name: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    @property
    def store(self) -> KeyValueStore:
        """The key-value store."""
        store: KeyValueStore = self._get(
            "store", lambda: open_store(self.settings.store_url, clock=self.clock)
        )
        return store

    @property
    def blobs(self) -> BlobStore:
        """The blob store."""
        blobs: BlobStore = self._get("blobs", lambda: open_blobs(self.settings.blobs_url))
        return blobs

    def control_plane(self) -> ControlPlane:
        """The control plane over these adapters: the store, the blobs (opened when the first image
        artifact arrives, not at every cold start), the queues and functions of push pools, and
        the sender of automations' webhooks (its HTTP client made on the first webhook)."""
        from overcast.adapters.webhooks import HttpxWebhookSender
        from overcast.core.services import ControlPlane

        return ControlPlane(
            self.store,
            blobs=lambda: self.blobs,
            open_queue=self.queue_at,
            open_invoker=self.invoker_at,
            webhooks=self._get("webhooks", HttpxWebhookSender),
            task_run_events=self.settings.task_run_events,
        )

    def queue_at(self, url: str) -> Queue:
        """The queue ``url`` names (a work pool's), opened once per URL."""
        queue: Queue = self._get(f"queue:{url}", lambda: open_queue(url))
        return queue

    def invoker_at(self, url: str) -> Invoker:
        """The invoker ``url`` names (a work pool's functions), opened once per URL."""
        invoker: Invoker = self._get(f"invoker:{url}", lambda: open_invoker(url, self.settings.functions))
        return invoker

    @property
    def queue(self) -> Queue:
        """The queue."""
        queue: Queue = self._get("queue", lambda: open_queue(self.settings.queue_url))
        return queue

    @property
    def invoker(self) -> Invoker:
        """The invoker."""
        invoker: Invoker = self._get(
            "invoker", lambda: open_invoker(self.settings.invoker_url, self.settings.functions)
        )
        return invoker

    def close(self) -> None:
        """Close every adapter built so far (memory backends stay, shared by name)."""
        with self._lock:
            built, self._built = self._built, {}
        for adapter in built.values():
            close = getattr(adapter, "close", None)
            if callable(close) and not _is_shared(adapter):
                close()


def _is_shared(adapter: Any) -> bool:
    return any(adapter is shared for shared in _MEMORY.values())
