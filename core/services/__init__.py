"""The control plane's services over the key-value port; ``ControlPlane`` bundles them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime

from overcast.core.automations import ActionOutcome, Automation, Firing
from overcast.core.deployments import DeploymentFlowRunCreate
from overcast.core.events import Event
from overcast.core.models import FlowRun
from overcast.core.ports import BlobStore, Invoker, KeyValueStore, Queue, WebhookSender
from overcast.core.services.actions import Actions
from overcast.core.services.artifacts import Artifacts
from overcast.core.services.automations import Automations
from overcast.core.services.concurrency import ConcurrencyLimits
from overcast.core.services.deployments import Deployments
from overcast.core.services.dispatch import Dispatcher
from overcast.core.services.events import Events
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.services.flows import Flows
from overcast.core.services.leases import RunLeases
from overcast.core.services.locks import Lease, Locks
from overcast.core.services.logs import Logs
from overcast.core.services.records import CommitResult, Records, TransactionRecord
from overcast.core.services.scheduler import Scheduler
from overcast.core.services.task_runs import RunEvents, TaskRuns
from overcast.core.services.tick import Tick, TickReport
from overcast.core.services.variables import Variables
from overcast.core.services.work_pools import WorkPools
from overcast.core.states import utcnow

__all__ = [
    "Actions",
    "Artifacts",
    "Automations",
    "CommitResult",
    "ConcurrencyLimits",
    "ControlPlane",
    "Deployments",
    "Events",
    "FlowRuns",
    "Flows",
    "Lease",
    "Locks",
    "Logs",
    "Dispatcher",
    "Tick",
    "TickReport",
    "Records",
    "RunLeases",
    "Scheduler",
    "TaskRuns",
    "TransactionRecord",
    "Variables",
    "WorkPools",
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
        open_queue: opens a queue by URL, for pushing runs of ``queue`` work pools.
        open_invoker: opens an invoker by URL, for pushing runs of ``aws-lambda`` work pools.
            Without them the control plane only serves pull workers.
        webhooks: sends automations' webhook and notification requests; without one those
            actions fail (and say why).
        act: runs an automation firing's actions instead of ``actions.run`` (tests record
            firings with it).
        task_run_events: which task-run states become events (``Settings.task_run_events``).
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        blobs: BlobSource | None = None,
        open_queue: Callable[[str], Queue] | None = None,
        open_invoker: Callable[[str], Invoker] | None = None,
        webhooks: WebhookSender | None = None,
        task_run_events: RunEvents = "auto",
        act: Callable[[Automation, Firing], list[ActionOutcome]] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self._blob_source = blobs
        self._blob_store: BlobStore | None = None
        self._blob_lock = threading.Lock()
        self.flows = Flows(store, clock=clock)
        self.events = Events(store, clock=clock)
        self.flow_runs = FlowRuns(store, self.flows, events=self.events, clock=clock)
        self.leases = RunLeases(store, self.flow_runs, clock=clock)
        self.task_runs = TaskRuns(
            store,
            events=self.events,
            run_events=task_run_events,
            listening=lambda prefix: self.automations.listening(prefix),  # noqa: PLW0108 - built below
            clock=clock,
        )
        self.logs = Logs(store, clock=clock)
        self.locks = Locks(store, clock=clock)
        self.records = Records(store, self.locks, clock=clock)
        self.artifacts = Artifacts(store, self.flow_runs, blobs=self._blobs, clock=clock)
        self.variables = Variables(store, clock=clock)
        self.concurrency_limits = ConcurrencyLimits(store, clock=clock)
        self.deployments = Deployments(store, self.flows, self.flow_runs, events=self.events, clock=clock)
        self.scheduler = Scheduler(store, self.deployments, self.flow_runs, clock=clock)
        self.work_pools = WorkPools(store, self.events, self.flow_runs, clock=clock)
        self.dispatcher = Dispatcher(
            store,
            self.flow_runs,
            self.work_pools,
            open_queue=open_queue,
            open_invoker=open_invoker,
            clock=clock,
        )
        self.tick = Tick(self, clock=clock)
        self.actions = Actions(self, webhooks=webhooks, clock=clock)
        self.automations = Automations(store, self.events, act=act or self.actions.run, clock=clock)
        self.events.subscribe(self._evaluate_automations)
        self.deployments.on_delete(self._delete_deployment_automations)

    def _evaluate_automations(self, events: list[Event]) -> None:
        """Evaluate reactive triggers on each batch of newly stored events (an events listener)."""
        self.automations.ingest(events)

    def _delete_deployment_automations(self, deployment_id: uuid.UUID) -> None:
        """A deployment's triggers are automations it owns: they go when it goes."""
        self.automations.delete_owned_by(f"overcast.deployment.{deployment_id}")

    def run_deployment(
        self, deployment_id: uuid.UUID, request: DeploymentFlowRunCreate | None = None
    ) -> tuple[FlowRun, bool]:
        """Make a run of a deployment and, when it is due and its pool pushes, send it at once.

        Returns:
            The run (as it stands after dispatch), and whether it was created (``False``: the
            idempotency key named an existing run, which is not sent again).
        """
        run, created = self.deployments.create_flow_run(deployment_id, request)
        if created and self.dispatcher.dispatch(run):
            run = self.flow_runs.get(run.id)
        return run, created

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
