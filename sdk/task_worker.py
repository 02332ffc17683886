"""Background tasks: ``task.delay()`` queues a task run, a task worker anywhere runs it.

::

    from overcast import task
    from overcast.task_worker import serve

    @task
    def resize(path: str, width: int) -> str: ...

    future = resize.delay("cat.png", 200)   # returns at once: the run is Scheduled
    serve(resize)                           # elsewhere: ``overcast task-worker shop:resize``
    future.result(timeout=60)               # the caller reads the result the worker persisted

How a run travels (Prefect 3's background tasks, over the queue port instead of a websocket):

1. ``delay`` persists the call's arguments like a result (pickled; inline in the reference
   when small, else a blob), reports the task run as Scheduled and flushes that report, then
   sends ``{"task_key", "task_run_id", "parameters": <reference>}`` to the tasks queue
   (``task_queue_url``: the settings' queue under the name ``tasks``).
2. A ``TaskWorker`` receives it, finds the task by its key, loads the arguments and runs the
   task through the normal engine *as that task run* (same id: Scheduled, then Pending,
   Running, Completed), persisting its result (``persist_result=True``) — or, when it fails,
   its exception — so that the caller's future can load it.
3. The message is acknowledged once the run is over and its states are reported. Delivery is
   at least once: a worker that dies mid-run leaves its message to be delivered again (the
   run is run again), and a message for a run that is already over is acknowledged and
   skipped. While a run lasts, its worker keeps the message hidden (extends its visibility).

A worker that receives a run of a task it does not serve passes the message on (sends a
copy, delayed by a backoff, and acknowledges the original), so that a run waiting for the
right worker is neither lost nor moved to the dead-letter queue by workers that cannot run it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from overcast import _task_engine as engine
from overcast._background import futures_in, parameter_store, queue_at, task_queue_url
from overcast._records import TaskRunRecord
from overcast._runtime import Runtime, get_runtime
from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.settings import Settings
from overcast.futures import (
    contains_future,
    resolve,
    upstream_futures,
)

if TYPE_CHECKING:
    from overcast.core.models import TaskRun
    from overcast.core.ports import Message, Queue
    from overcast.results import ResultReference
    from overcast.tasks import Task

__all__ = ["TaskWorker", "serve", "task_queue_url"]

logger = logging.getLogger("overcast.task_worker")

PASS_ON_MAX_DELAY_S = 30
"""The longest a message passed on (a task this worker does not serve, an upstream run not
over yet) waits before a worker sees it again; the delay doubles from 1 s up to this."""
_UNSUCCESSFUL = frozenset({"FAILED", "CRASHED", "CANCELLED"})
_MAX_RESUMED_STATES = 1000  # past this, a stored state's position is not trusted (see _resumed_record)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _WorkerReporter:
    """The reporter of a worker's background runs.

    Each report snapshots the run's document at once (so a state added later is never sent
    early), and a run that ends unsuccessfully is not reported here: the worker reports it
    itself, its exception persisted in the final state's data, so that the first report of the
    final state already carries it (the control plane ignores a state id it has seen).
    """

    def __init__(self, reporter: Any) -> None:
        self._reporter = reporter

    def task_run(self, record: TaskRunRecord) -> None:
        if record.state_type not in _UNSUCCESSFUL:
            self._reporter.document(record.document())

    def __getattr__(self, name: str) -> Any:  # log, event, document, flush, close
        return getattr(self._reporter, name)


@dataclass(slots=True)
class _Delivery:
    """A message being handled, and when its visibility was last extended (monotonic)."""

    message: Message
    receipt: str
    extended: float


class TaskWorker:
    """Runs background task runs (``task.delay()``) of the tasks it serves.

    It receives messages from the tasks queue of its runtime's settings (``task_queue_url``),
    runs up to ``limit`` task runs at once on a thread pool, each through the normal engine
    as the task run the caller created, with its result persisted, and acknowledges each
    message once its run is over.

    Args:
        *tasks: the tasks to serve (found by their ``task_key``).
        limit: the most task runs at once.
        visibility_s: how long a received message stays hidden; a run that lasts longer
            keeps its message hidden by extending it every third of this.
        wait_s: how long one receive waits for a message (a long poll; ``stop()`` takes
            effect within it).

    Raises:
        ValueError: no task, or a ``limit`` below 1.
        TypeError: a generator task (its runs cannot be deferred).
    """

    def __init__(
        self, *tasks: Task[..., Any], limit: int = 10, visibility_s: int = 30, wait_s: float = 2.0
    ) -> None:
        if not tasks:
            raise ValueError("a task worker needs at least one task to serve")
        if limit < 1:
            raise ValueError(f"limit must be 1 or more, not {limit}")
        for task in tasks:
            if task.is_generator or task.is_async_generator:
                raise TypeError(f"generator task {task.name!r} cannot be served")
        # Results are persisted so that the caller, in another process, can read them.
        self._tasks = {task.task_key: task.with_options(persist_result=True) for task in tasks}
        self.limit, self.visibility_s, self.wait_s = limit, visibility_s, wait_s
        self._tend_s = max(visibility_s / 3, 0.1)  # how often the messages of runs in progress are extended
        self._runtime: Runtime | None = None
        self._runs_runtime: Runtime | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._in_flight: dict[str, _Delivery] = {}  # message id -> its delivery
        self._running: set[uuid.UUID] = set()
        self._unserved: set[str] = set()

    @property
    def task_keys(self) -> set[str]:
        """The keys of the tasks this worker serves."""
        return set(self._tasks)

    @property
    def runtime(self) -> Runtime:
        """The runtime whose control plane and settings the worker uses (the process's)."""
        if self._runtime is None:
            self._runtime = get_runtime()
        return self._runtime

    @property
    def queue(self) -> Queue:
        """The tasks queue it receives from."""
        return queue_at(task_queue_url(self.runtime.settings))

    def start(self, timeout: float | None = None) -> None:
        """Serve until ``stop()``, Ctrl-C, or ``timeout`` seconds; then wait for the runs in progress.

        A run cut short (the process killed) is run again: its message, not acknowledged,
        is delivered again once its visibility timeout passes.
        """
        self._stop.clear()
        deadline = None if timeout is None else time.monotonic() + timeout
        names = ", ".join(sorted(task.name for task in self._tasks.values()))
        logger.info(
            "task worker serving %s from %s (Ctrl-C stops it)", names, task_queue_url(self.runtime.settings)
        )
        with ThreadPoolExecutor(self.limit, thread_name_prefix="overcast-task-worker") as pool:
            try:
                while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    self._tend()
                    room = self.limit - len(self._in_flight)
                    if room <= 0:
                        with self._changed:
                            self._changed.wait(self._tend_s)
                        continue
                    wait_s = (
                        self.wait_s
                        if deadline is None
                        else max(0.0, min(self.wait_s, deadline - time.monotonic()))
                    )
                    self._dispatch(pool, self._receive(min(room, 10), wait_s))
            except KeyboardInterrupt:
                logger.info("task worker stopping: waiting for %d run(s) in progress", len(self._in_flight))
            finally:
                self._stop.set()
                self._drain()
        logger.info("task worker stopped")

    def stop(self) -> None:
        """Ask ``start()`` to return (within ``wait_s``, after the runs in progress end)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def run_once(self, wait_s: float = 0.0) -> int:
        """Receive one batch (up to ``limit``, at most 10), handle each message to its end, and
        return how many were received.

        For tests, and for a function that consumes the tasks queue one batch per invocation.
        """
        messages = self._receive(min(self.limit, 10), wait_s)
        with ThreadPoolExecutor(self.limit, thread_name_prefix="overcast-task-worker") as pool:
            self._dispatch(pool, messages)
            self._drain()
        return len(messages)

    # -- receiving -------------------------------------------------------------------------------

    def _receive(self, max_messages: int, wait_s: float) -> list[Message]:
        return self.queue.receive(max_messages, visibility_s=self.visibility_s, wait_s=min(wait_s, 20))

    def _dispatch(self, pool: ThreadPoolExecutor, messages: list[Message]) -> None:
        now = time.monotonic()
        for message in messages:
            with self._changed:  # (held while submitting: the delivery is in flight before it can end)
                known = self._in_flight.get(message.id)
                if known is not None:  # delivered again while this worker still handles it
                    known.receipt = message.receipt
                    continue
                self._in_flight[message.id] = delivery = _Delivery(message, message.receipt, now)
                try:
                    pool.submit(self._process, delivery)
                except BaseException:
                    del self._in_flight[message.id]
                    raise

    def _tend(self) -> None:
        """Keep the messages of runs in progress hidden (extend each every third of the timeout)."""
        now = time.monotonic()
        with self._changed:
            due = [d for d in self._in_flight.values() if now - d.extended >= self._tend_s]
        for delivery in due:
            try:
                self.queue.extend(delivery.receipt, self.visibility_s)
                delivery.extended = now
            except Exception:
                logger.warning("could not extend message %s", delivery.message.id, exc_info=True)

    def _drain(self) -> None:
        """Wait for every delivery in progress to end, keeping their messages hidden meanwhile."""
        while True:
            with self._changed:
                if not self._in_flight:
                    return
                self._changed.wait(self._tend_s)
            self._tend()

    def _process(self, delivery: _Delivery) -> None:
        try:
            self._handle(delivery)
        except Exception:  # the message is left to be delivered again
            logger.exception("task worker could not handle message %s", delivery.message.id)
        finally:
            with self._changed:
                self._in_flight.pop(delivery.message.id, None)
                self._changed.notify_all()

    # -- one message -------------------------------------------------------------------------------

    def _handle(self, delivery: _Delivery) -> None:
        message = delivery.message
        try:
            body = json.loads(message.body)
            task_key, run_id, parameters = (
                body["task_key"],
                uuid.UUID(body["task_run_id"]),
                body["parameters"],
            )
        except (ValueError, KeyError, TypeError):
            # Left alone: after the queue's receive limit it moves to the dead-letter queue.
            logger.error(
                "task worker got a message that is not a background task run: %r", message.body[:200]
            )
            return
        task = self._tasks.get(task_key)
        if task is None:
            if task_key not in self._unserved:
                self._unserved.add(task_key)
                logger.warning("task worker does not serve task %r: passing its runs on", task_key)
            self._pass_on(delivery, body)
            return
        client = self.runtime.client
        try:
            run = client.read_task_run(run_id)
        except NotFoundError:
            # Not reported yet (or lost): try again later; repeated, it goes to the dead-letter queue.
            logger.warning("task run %s is not in the control plane yet; retrying later", run_id)
            self.queue.extend(delivery.receipt, min(2**message.receive_count, 60))
            return
        if run.state.is_final():
            logger.info("task run %s is already %s: skipped", run_id, run.state.name)
            self.queue.ack(delivery.receipt)
            return
        with self._changed:
            if run_id in self._running:  # another message for a run in progress here
                self.queue.extend(delivery.receipt, self.visibility_s)
                return
            self._running.add(run_id)
        try:
            if self._run(task, run, parameters, delivery, body):
                self.queue.ack(delivery.receipt)
        finally:
            with self._changed:
                self._running.discard(run_id)

    def _pass_on(self, delivery: _Delivery, body: dict[str, Any]) -> None:
        """Hand the message to other workers: a delayed copy (a fresh receive count), then ack."""
        passes = int(body.get("passes", 0)) + 1
        text = json.dumps({**body, "passes": passes})
        delay = min(2 ** (passes - 1), PASS_ON_MAX_DELAY_S)
        try:
            self.queue.send(text, delay_s=delay)
        except InvalidValueError:  # a FIFO SQS queue has no per-message delay
            self.queue.send(text)
        self.queue.ack(delivery.receipt)

    def _run(
        self,
        task: Task[..., Any],
        run: TaskRun,
        parameters: ResultReference,
        delivery: _Delivery,
        body: dict[str, Any],
    ) -> bool:
        """Run ``run``; return whether its message may be acknowledged (the run is over and reported)."""
        from overcast.results import load_result

        record = _resumed_record(run)
        try:
            call = load_result(parameters)
            args, kwargs, wait_for = tuple(call["args"]), dict(call["kwargs"]), list(call["wait_for"])
        except Exception as exc:  # gone, or not loadable here: the run can never start
            record.add(
                "FAILED", "Failed", message=f"its arguments could not be loaded: {type(exc).__name__}: {exc}"
            )
            return self._report(record, exc)
        if any(not future.done() for future in futures_in((wait_for, args, kwargs))):
            self._pass_on(delivery, body)  # an upstream run is not over: look again later
            return False
        for future in upstream_futures((wait_for, args, kwargs)):  # (not those under allow_failure)
            state = future.state
            if not state.is_completed():
                error = engine.UpstreamTaskError(
                    f"upstream task run {future.task_run_id} is {state.name}",
                    upstream_task_run_id=future.task_run_id,
                )
                record.add("FAILED", "Failed", message=str(error))
                return self._report(record, error)
        record.add("PENDING", "Pending")
        outcome: BaseException | None = None
        try:
            if contains_future(args) or contains_future(kwargs):
                args, kwargs = tuple(resolve(a) for a in args), {k: resolve(v) for k, v in kwargs.items()}
            state = engine.run_prepared(task, record, self._runs_runtime_of(), None, args, kwargs, True)
            outcome = state.__dict__.get("_exception")
        except BaseException as exc:  # the task's own outcome (even SystemExit) ends its run
            outcome = exc
        if record.state_type not in _UNSUCCESSFUL and record.state_type != "COMPLETED":
            # failed before an attempt started (its run name, its cache key)
            message = f"{type(outcome).__name__}: {outcome}" if outcome is not None else "it did not finish"
            record.add("FAILED", "Failed", message=message)
        return self._report(record, outcome)

    def _report(self, record: TaskRunRecord, exception: BaseException | None) -> bool:
        """Report the run's final state (an unsuccessful one with its exception) and flush."""
        if record.state_type in _UNSUCCESSFUL:
            entry = record.states[-1]
            if entry[4] is None and exception is not None:
                entry[4] = _persisted_exception(self.runtime.settings, record, exception)
            self.runtime.reporter.document(record.document())
        if not self.runtime.reporter.flush():
            logger.warning("task run %s could not be reported yet; its message will come again", record.id)
            return False
        logger.info("task run %s (%s) is %s", record.id, record.name, record.states[-1][1])
        return True

    def _runs_runtime_of(self) -> Runtime:
        """The runtime the background runs go through: the process's, with ``_WorkerReporter``."""
        if self._runs_runtime is None:
            base = self.runtime
            runtime = Runtime(
                base.client, base.settings, _WorkerReporter(base.reporter), portable=base.portable
            )
            runtime.records = base.records
            self._runs_runtime = runtime
        return self._runs_runtime


def _persisted_exception(settings: Settings, record: TaskRunRecord, exception: BaseException) -> Any:
    """A reference to the pickled exception, or ``None`` when it cannot be pickled (its message stays)."""
    try:
        return parameter_store(settings).persist(f"task-exception-{record.text}", exception)
    except Exception:
        logger.debug("the exception of task run %s cannot be persisted", record.id, exc_info=True)
        return None


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _resumed_record(run: TaskRun) -> TaskRunRecord:
    """The engine's record of an existing task run, so that its new states follow the stored ones.

    A state's id is derived from the run's id and the state's position in the record
    (``TaskRunRecord.state_id``), and the control plane ignores a state whose id it has seen.
    So the record starts with as many entries as the stored run has states (its current
    state's position is in its id): the states this worker adds get new ids, even when an
    earlier delivery got further before its worker died. Only their ids matter: the control
    plane knows the states already and ignores their content. Attempts (and so retries) count
    afresh: the control plane keeps the highest count it was told.
    """
    current = run.state
    entry = [current.type.value, current.name, _us(current.timestamp), current.message, current.data, None]
    position = ((current.id.int ^ run.id.int) & 0xFFFF) - 1
    if str(current.id)[:-4] == str(run.id)[:-4] and 0 <= position < _MAX_RESUMED_STATES:
        states = [list(entry) for _ in range(position + 1)]
    else:  # a state id not made by the engine: keep it as it is
        entry[5] = str(current.id)
        states = [entry]
    return TaskRunRecord.resume(
        run.id,
        run.task_key,
        run.name,
        run.flow_run_id,
        run.dynamic_key,
        list(run.tags),
        created_us=_us(run.created),
        states=states,
    )


def serve(*tasks: Task[..., Any], limit: int = 10, timeout: float | None = None) -> None:
    """Serve background runs of ``tasks`` in this process until Ctrl-C (or ``timeout`` seconds).

    Args:
        *tasks: the tasks whose ``delay()``/``apply_async()`` runs this process runs.
        limit: the most task runs at once.
        timeout: stop after this many seconds (``None``: run until interrupted).
    """
    TaskWorker(*tasks, limit=limit).start(timeout=timeout)
