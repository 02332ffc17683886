"""The local stack: the serverless topology on one machine, for ``overcast dev``, tests and benchmarks.

What runs in the cloud as managed services runs here as threads and processes on 127.0.0.1:

- the control plane over the embedded store (SQLite under the home), and optionally its API
  under uvicorn;
- the local function host (Lambda's Invoke API) running the ``runner`` handler in worker
  processes with a timeout, as Lambda sandboxes would;
- the runs queue (the local SQLite queue, with a dead-letter queue) and an event source
  mapping that feeds it to the ``runner`` function through the Lambda API, as Lambda's SQS
  trigger does;
- the local buckets (``home/buckets/<bucket>/``, see ``local_bucket``) and their watcher:
  uploads and files dropped into them become S3 notifications on the events queue (a second local queue, with
  its dead-letter queue), which another event source mapping feeds to the ``events`` function;
- the tick, every ``tick_s`` seconds, as an EventBridge schedule would invoke it;
- two work pools: ``local-queue`` (type ``queue``: runs go through the queue) and
  ``local-lambda`` (type ``aws-lambda``: runs are invoked on the function host directly).

With an ``AwsEmulator`` the store, blobs, buckets and both queues are DynamoDB, S3 and SQS on
moto's server instead, and S3 itself sends the notifications.

The same handler code runs here and on AWS; only the URLs differ.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overcast.adapters.factory import Adapters, open_invoker, open_queue
from overcast.adapters.invokers.process_pool import LocalProcessInvoker
from overcast.core.errors import NotFoundError, OvercastError
from overcast.core.services import Tick
from overcast.core.settings import BackendURL, Settings
from overcast.core.work_pools import AwsLambdaPoolCreate, QueuePoolCreate, WorkPoolUpdate
from overcast.infra.bucket_watcher import BucketWatcher
from overcast.infra.event_source import EventSourceMapping
from overcast.infra.function_host import FunctionHost
from overcast.infra.local_bucket import LocalBuckets

if TYPE_CHECKING:
    from overcast.core.ports import Queue
    from overcast.infra.aws_emulator import AwsEmulator

logger = logging.getLogger("overcast.stack")

RUNNER = "runner"
RUNNER_HANDLER = "overcast.handlers.aws.runner:handler"
EVENTS = "events"
EVENTS_HANDLER = "overcast.handlers.aws.events:handler"
EVENTS_TIMEOUT_S = 60.0
QUEUE_POOL = "local-queue"
LAMBDA_POOL = "local-lambda"


class LocalStack:
    """The local serverless stack (see the module docstring). Start it, use it, stop it.

    While it runs, the process's environment names its backends (``environment()``), so that
    the function host's worker processes, and any process started meanwhile, use them too.

    Args:
        settings: where the embedded backends live (its ``home``).
        workers: function-host worker processes (concurrent runner and events invocations).
        function_port: the function host's port (0: any free one).
        tick_s: seconds between ticks (0: no tick thread; call ``tick()`` yourself).
        runner_timeout_s: the runner function's timeout.
        reap_after_s: how long a running run that never heartbeat may go before the tick
            reaps it (Crashed, then its retries); a heartbeating run's lease decides otherwise.
        buckets: the local buckets to create (more appear as they are uploaded to or made).
        aws: a started AWS emulator: the backends, buckets and queues are its own.
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
        buckets: Sequence[str] = ("uploads",),
        aws: AwsEmulator | None = None,
    ) -> None:
        self.aws = aws
        self.settings = settings or Settings()
        if aws is not None:
            self.settings = aws.configure(self.settings)
        # boto3 wants credentials even for the local function host, which checks none.
        for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
            os.environ.setdefault(name, value)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.adapters = Adapters(self.settings)
        self.plane = self.adapters.control_plane()
        if reap_after_s is not None:
            self.plane.tick = Tick(self.plane, reap_after=timedelta(seconds=reap_after_s))
        queues = f"local://{Path(self.settings.home) / 'queue.db'}?max_receives=5&name="
        self.queue_url = aws.runs_queue_url if aws else queues + "runs"
        self.events_queue_url = aws.events_queue_url if aws else queues + "events"
        self.queue: Queue = open_queue(self.queue_url)
        self.events_queue: Queue = open_queue(self.events_queue_url)
        self.buckets: LocalBuckets | None = None
        self.watcher: BucketWatcher | None = None
        where = BackendURL(self.settings.buckets_url)
        if where.scheme == "file":  # else S3 (the emulator's) holds them and sends the notifications
            self.buckets = LocalBuckets(where.require_path(), self.events_queue)
            self.watcher = BucketWatcher(self.buckets)
            for name in buckets:
                self.buckets.bucket(name)
        self.invoker = LocalProcessInvoker(max_workers=workers, timeout_s=runner_timeout_s)
        self.host = FunctionHost(self.invoker, port=function_port)
        self.host.register(RUNNER, RUNNER_HANDLER)
        self.host.register(EVENTS, EVENTS_HANDLER, timeout_s=EVENTS_TIMEOUT_S)
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_environment: dict[str, str | None] = {}
        self.mapping: EventSourceMapping | None = None
        self.events_mapping: EventSourceMapping | None = None

    def environment(self) -> dict[str, str]:
        """The variables that make a process use this stack's backends (the workers get them).

        Functions use the store directly, as they do in the cloud, never an API a shell named.
        """
        env = {"OVERCAST_HOME": str(self.settings.home), "OVERCAST_API_URL": ""}
        for name in ("store", "blobs", "queue", "buckets"):
            value = getattr(self.settings, name)
            if value:
                env[f"OVERCAST_{name.upper()}"] = value
        return env | (self.aws.environment() if self.aws else {})

    def start(self) -> LocalStack:
        """Start the function host, the queues' event sources, the bucket watcher and the tick."""
        environment = self.environment()
        self._saved_environment = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)  # read by the worker processes the host spawns
        self.host.start()
        invoker = open_invoker(f"lambda://?region=us-east-1&endpoint={self.host.url}")
        self.mapping = EventSourceMapping(self.queue, invoker, RUNNER, visibility_s=960)
        self.events_mapping = EventSourceMapping(
            self.events_queue,
            invoker,
            EVENTS,
            visibility_s=int(EVENTS_TIMEOUT_S) + 30,
            source_name="overcast-events",
        )
        self._ensure_pools()
        for name, mapping in (("runs", self.mapping), ("events", self.events_mapping)):
            self._spawn(f"overcast-event-source-{name}", lambda m=mapping: m.run(self._stop, wait_s=0.2))
        if self.watcher is not None:
            self.watcher.start()
        if self.tick_s > 0:
            self._spawn("overcast-tick", self._tick_loop)
        return self

    def tick(self) -> dict[str, Any]:
        """Run one tick now; return what it did."""
        return self.plane.tick.run().as_dict()

    def stop(self) -> None:
        """Stop the watcher and the loops, then the function host and its workers."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.buckets is not None:
            self.buckets.close()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        self.host.stop()
        self.invoker.close()
        for queue in (self.queue, self.events_queue):
            close = getattr(queue, "close", None)
            if callable(close):
                close()
        self.adapters.close()
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = {}

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
