"""The bucket watcher: looks at the local buckets whenever their directories change.

Woken by the file system (``watchdog``'s inotify/FSEvents/ReadDirectoryChangesW observer, when
installed: ``overcast[api]`` brings it) or, without it, every ``poll_s`` seconds, it calls
``LocalBuckets.scan``, which announces what changed. While a file is still being written it
looks again ``settle_s`` later; an observed tree also gets a slow safety look, for changes the
observer may have missed (a full inotify queue, say).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from overcast.core.errors import OvercastError
from overcast.infra.local_bucket import LocalBuckets

logger = logging.getLogger("overcast.local_bucket")

SAFETY_LOOK_S = 5.0
"""Seconds between looks when the file system reports changes."""
# Reads (opened, closed without writing) are the watcher's own: they must not wake it again.
_WAKING_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})


class BucketWatcher:
    """Announces what other programs do to local buckets, on a background thread.

    Args:
        buckets: the buckets to watch (their root directory).
        poll_s: seconds between looks without a file-system observer.
        observe: have the file system tell of changes (when ``watchdog`` is installed); else poll.
    """

    def __init__(self, buckets: LocalBuckets, *, poll_s: float = 0.25, observe: bool = True) -> None:
        self.buckets, self.poll_s, self._observing = buckets, poll_s, observe
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None

    @property
    def observed(self) -> bool:
        """Whether the file system tells the watcher of changes (else it polls)."""
        return self._observer is not None

    def start(self) -> BucketWatcher:
        """Announce what changed while nobody watched, then watch until ``stop``."""
        if self._thread is None:
            self._stop.clear()
            self._observer = self._observe() if self._observing else None
            self._thread = threading.Thread(target=self._watch, name="overcast-bucket-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (a look under way finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> BucketWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        wait = 0.0  # the first look at once: announce what changed while nobody watched
        while True:
            if wait:
                self._wake.wait(wait)
            if self._stop.is_set():
                return
            self._wake.clear()  # a change from now on wakes the next look
            try:
                settling = self.buckets.scan()
            except (OSError, OvercastError):
                logger.exception("looking at the buckets in %s failed; looking again", self.buckets.root)
                wait = max(self.poll_s, 1.0)
                continue
            if settling:
                wait = self.buckets.settle_s
            else:
                wait = SAFETY_LOOK_S if self.observed else self.poll_s

    def _observe(self) -> Any:
        """Start a file-system observer that wakes the watcher; ``None`` when there is none."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return None
        wake, concerns = self._wake, self.buckets.concerns

        class _Waker(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in _WAKING_EVENTS and (
                    concerns(event.src_path) or concerns(getattr(event, "dest_path", ""))
                ):
                    wake.set()

        observer = Observer()
        try:
            observer.schedule(_Waker(), os.fspath(self.buckets.root), recursive=True)
            observer.start()
        except OSError as exc:  # e.g. out of inotify watches: polling still works
            logger.warning("cannot watch %s (%s); polling it instead", self.buckets.root, exc)
            return None
        return observer
