"""The local stack: the serverless topology on one machine, for ``overcast dev``, tests and benchmarks.

What runs in the cloud as managed services runs here as threads and processes on 127.0.0.1:

- the control plane over the embedded store (SQLite under the home), and optionally its API
  under uvicorn;
- the local function host (Lambda's Invoke API) running the ``runner`` handler in worker
  processes with a timeout, as Lambda sandboxes would;
- the runs queue (the local SQLite queue, with a dead-letter queue) and an event source
  mapping that feeds it to the ``runner`` function through the Lambda API, as Lambda's SQS
  trigger does;
- the tick, every ``tick_s`` seconds, as an EventBridge schedule would invoke it;
- two work pools: ``local-queue`` (type ``queue``: runs go through the queue) and
  ``local-lambda`` (type ``aws-lambda``: runs are invoked on the function host directly).

The same handler code runs here and on AWS; only the URLs differ.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from overcast.adapters.factory import Adapters, open_invoker, open_queue
from overcast.adapters.invokers.process_pool import LocalProcessInvoker
from overcast.core.errors import NotFoundError, OvercastError
from overcast.core.services import Tick
from overcast.core.settings import Settings
from overcast.core.work_pools import AwsLambdaPoolCreate, QueuePoolCreate, WorkPoolUpdate
from overcast.infra.event_source import EventSourceMapping
from overcast.infra.function_host import FunctionHost

logger = logging.getLogger("overcast.stack")

RUNNER = "runner"
RUNNER_HANDLER = "overcast.handlers.aws.runner:handler"
QUEUE_POOL = "local-queue"
LAMBDA_POOL = "local-lambda"


class LocalStack:
    """The local serverless stack (see the module docstring). Start it, use it, stop it.

    Args:
        settings: where the embedded backends live (its ``home``).
        workers: function-host worker processes (concurrent runner invocations).
        function_port: the function host's port (0: any free one).
        tick_s: seconds between ticks (0: no tick thread; call ``tick()`` yourself).
        runner_timeout_s: the runner function's timeout.
        reap_after_s: how long a running run that never heartbeat may go before the tick
            reaps it (Crashed, then its retries); a heartbeating run's lease decides otherwise.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        workers: int = 2,
        function_port: int = 0,
        tick_s: float = 5.0,
        runner_timeout_s: float = 900,
        reap_after_s: float | None = None,
    ) -> None:
        self.settings = settings or Settings()
        # boto3 wants credentials even for the local function host, which checks none.
        for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
            os.environ.setdefault(name, value)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.adapters = Adapters(self.settings)
        self.plane = self.adapters.control_plane()
        if reap_after_s is not None:
            self.plane.tick = Tick(self.plane, reap_after=timedelta(seconds=reap_after_s))
        self.queue_url = f"local://{Path(self.settings.home) / 'queue.db'}?name=runs&max_receives=5"
        self.queue = open_queue(self.queue_url)
        self.invoker = LocalProcessInvoker(max_workers=workers, timeout_s=runner_timeout_s)
        self.host = FunctionHost(self.invoker, port=function_port)
        self.host.register(RUNNER, RUNNER_HANDLER)
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.mapping: EventSourceMapping | None = None

    def start(self) -> LocalStack:
        """Start the function host, the queue's event source and the tick; create the pools."""
        self.host.start()
        lambda_url = f"lambda://?region=us-east-1&endpoint={self.host.url}"
        self.mapping = EventSourceMapping(self.queue, open_invoker(lambda_url), RUNNER, visibility_s=960)
        self._ensure_pools()
        self._spawn(
            "overcast-event-source",
            lambda: self.mapping.run(self._stop, wait_s=0.2) if self.mapping else None,
        )
        if self.tick_s > 0:
            self._spawn("overcast-tick", self._tick_loop)
        return self

    def tick(self) -> dict[str, Any]:
        """Run one tick now; return what it did."""
        return self.plane.tick.run().as_dict()

    def stop(self) -> None:
        """Stop the loops, then the function host and its workers."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.host.stop()
        self.invoker.close()
        self.adapters.close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _ensure_pools(self) -> None:
        pools = self.plane.work_pools
        wanted: dict[str, Any] = {
            QUEUE_POOL: QueuePoolCreate.model_validate(
                {"name": QUEUE_POOL, "config": {"url": self.queue_url}}
            ),
            LAMBDA_POOL: AwsLambdaPoolCreate.model_validate(
                {
                    "name": LAMBDA_POOL,
                    "config": {"function": RUNNER, "region": "us-east-1", "endpoint": self.host.url},
                }
            ),
        }
        for name, request in wanted.items():
            try:
                pools.get_pool(name)
            except NotFoundError:
                pools.create_pool(request)
            else:  # the function host's port may differ from the last start
                pools.update_pool(
                    name, WorkPoolUpdate.model_validate({"config": request.config.model_dump(mode="json")})
                )

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                report = self.tick()
            except OvercastError:
                logger.exception("the tick failed; the next one tries again")
                continue
            done = {k: len(v) for k, v in report.items() if v}
            if done:
                logger.info("tick: %s", done)
