"""The control plane's services over the key-value port; ``ControlPlane`` bundles them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from overcast.core.ports import BlobStore, KeyValueStore
from overcast.core.services.artifacts import Artifacts
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.services.flows import Flows
from overcast.core.services.locks import Lease, Locks
from overcast.core.services.logs import Logs
from overcast.core.services.records import CommitResult, Records, TransactionRecord
from overcast.core.services.task_runs import TaskRuns
from overcast.core.services.variables import Variables
from overcast.core.states import utcnow

__all__ = [
    "Artifacts",
    "CommitResult",
    "ControlPlane",
    "FlowRuns",
    "Flows",
    "Lease",
    "Locks",
    "Logs",
    "Records",
    "TaskRuns",
    "TransactionRecord",
    "Variables",
]

BlobSource = BlobStore | Callable[[], BlobStore]
"""A blob store, or a function that opens one when it is first needed."""


class ControlPlane:
    """Every service of the control plane over one store, built once per process.

    Args:
        store: the key-value store.
        blobs: where image artifacts keep their bytes: a blob store, or a function that opens
            one on first use (so that a cold start that never stores an image never opens it).
            Without one, image artifacts can only link to a URL.
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        blobs: BlobSource | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self._blob_source = blobs
        self._blob_store: BlobStore | None = None
        self._blob_lock = threading.Lock()
        self.flows = Flows(store, clock=clock)
        self.flow_runs = FlowRuns(store, self.flows, clock=clock)
        self.task_runs = TaskRuns(store, clock=clock)
        self.logs = Logs(store, clock=clock)
        self.locks = Locks(store, clock=clock)
        self.records = Records(store, self.locks, clock=clock)
        self.artifacts = Artifacts(store, self.flow_runs, blobs=self._blobs, clock=clock)
        self.variables = Variables(store, clock=clock)

    @property
    def has_blobs(self) -> bool:
        """Whether a blob store was given (it may not be open yet)."""
        return self._blob_source is not None

    def provide_blobs(self, blobs: BlobSource) -> None:
        """Give a control plane built without a blob store one (a store, or a function that opens one)."""
        with self._blob_lock:
            if self._blob_source is None:
                self._blob_source = blobs

    def _blobs(self) -> BlobStore | None:
        with self._blob_lock:
            if self._blob_store is None and self._blob_source is not None:
                source = self._blob_source
                self._blob_store = source if isinstance(source, BlobStore) else source()
            return self._blob_store
