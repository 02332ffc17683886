"""The control plane's services over the key-value port; ``ControlPlane`` bundles them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from overcast.core.ports import KeyValueStore
from overcast.core.services.flow_runs import FlowRuns
from overcast.core.services.flows import Flows
from overcast.core.services.logs import Logs
from overcast.core.services.task_runs import TaskRuns
from overcast.core.states import utcnow

__all__ = ["ControlPlane", "FlowRuns", "Flows", "Logs", "TaskRuns"]


class ControlPlane:
    """Every service of the control plane over one store, built once per process.

    Args:
        store: the key-value store.
        clock: the current time (injected for tests).
    """

    def __init__(self, store: KeyValueStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.flows = Flows(store, clock=clock)
        self.flow_runs = FlowRuns(store, self.flows, clock=clock)
        self.task_runs = TaskRuns(store, clock=clock)
        self.logs = Logs(store, clock=clock)
