"""The caller's side of background tasks: where runs are queued, and ``Task.delay`` itself.

``schedule`` persists a call's arguments, reports its task run as Scheduled and sends it to the
tasks queue (``task_queue_url``); ``overcast.task_worker`` holds the worker that runs it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from overcast._records import TaskRunRecord
from overcast._runtime import get_runtime
from overcast.context import flow_run_context, merge_tags, tags_context
from overcast.core.errors import BackendError
from overcast.core.settings import Settings
from overcast.futures import (
    OvercastDistributedFuture,
    OvercastFuture,
    allow_failure,
    contains_future,
    quote,
    unmapped,
)

if TYPE_CHECKING:
    from overcast.core.ports import Queue
    from overcast.results import ResultStore
    from overcast.tasks import Task

logger = logging.getLogger("overcast.task_worker")

TASKS_QUEUE = "tasks"
"""The name of the background tasks' queue, next to the settings' queue."""


def task_queue_url(settings: Settings) -> str:
    """Return the URL of the background tasks' queue: the settings' queue, named ``tasks``.

    ``local:///PATH`` becomes ``local:///PATH?name=tasks`` (a queue named ``Q`` gives
    ``Q-tasks``), ``memory://NAME`` becomes ``memory://NAME-tasks`` and ``sqs://NAME``
    becomes ``sqs://NAME-tasks`` (``NAME-tasks.fifo`` for a FIFO queue), a queue that must
    exist. Callers and workers that share settings agree on it.
    """
    base, _, query = settings.queue_url.partition("?")
    scheme, _, rest = base.partition("://")
    if scheme == "local":  # a path, and the queue's name as a parameter
        params = dict(parse_qsl(query))
        name = params.get("name")
        params["name"] = f"{name}-{TASKS_QUEUE}" if name else TASKS_QUEUE
        return f"{base}?{urlencode(params)}"
    name, slash, path = rest.partition("/")  # memory://NAME, sqs://NAME: the name is the netloc
    suffix = ".fifo" if name.endswith(".fifo") else ""
    name = name.removesuffix(suffix)
    name = f"{name}-{TASKS_QUEUE}{suffix}" if name else TASKS_QUEUE
    return f"{scheme}://{name}{slash}{path}" + (f"?{query}" if query else "")


_queues: dict[str, Queue] = {}
_queues_lock = threading.Lock()


def queue_at(url: str) -> Queue:
    """The queue ``url`` names, opened once per process."""
    with _queues_lock:
        queue = _queues.get(url)
        if queue is None:
            from overcast.adapters.factory import open_queue

            queue = _queues[url] = open_queue(url)
        return queue


def parameter_store(settings: Settings) -> ResultStore:
    from overcast.results import ResultStore

    return ResultStore(settings.blobs_url, "pickle", settings=settings)


# -- the caller's side ----------------------------------------------------------------------------


def schedule(
    task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any = None
) -> OvercastDistributedFuture[Any]:
    """Create a Scheduled task run of ``task`` for a task worker to run; return its future.

    What ``Task.delay`` and ``Task.apply_async`` do (see them).

    Raises:
        TypeError: a generator task; arguments the function does not take; a future of a
            submitted (in-process) run among the arguments or in ``wait_for``.
        SerializationError: an argument cannot be pickled.
        BackendError: the Scheduled run could not be reported to the control plane.
    """
    if task.is_generator or task.is_async_generator:
        raise TypeError(f"generator task {task.name!r} cannot run in the background; call it and iterate")
    task.parameters(args, kwargs)  # a call the function would refuse fails here, not in a worker
    upstream = list(wait_for) if wait_for is not None else []
    _refuse_local_futures(task, (args, kwargs, upstream))
    flow_ctx = flow_run_context.get()
    runtime = flow_ctx.runtime if flow_ctx is not None else get_runtime()
    extra_tags = tags_context.get()
    tags = merge_tags(task.tags, extra_tags) if extra_tags else list(task.tags)
    # Not part of the calling flow run's graph (as in Prefect): a run of its own.
    record = TaskRunRecord(task.task_key, task.name, None, "0", tags)
    if task.task_run_name is not None:
        record.name = task.run_name(args, kwargs)
    call = {"args": args, "kwargs": kwargs, "wait_for": upstream}
    parameters = parameter_store(runtime.settings).persist(f"task-parameters-{record.text}", call)
    record.add("SCHEDULED", "Scheduled", message="waiting for a task worker")
    runtime.reporter.task_run(record)
    if not runtime.reporter.flush():  # a worker in another process must find the run
        raise BackendError(f"task run {record.id} of {task.name!r} could not be reported; nothing was queued")
    body = {"task_key": task.task_key, "task_run_id": record.text, "parameters": parameters}
    queue_at(task_queue_url(runtime.settings)).send(json.dumps(body))
    return OvercastDistributedFuture(record.id, runtime.client)


def _refuse_local_futures(task: Task[..., Any], value: Any) -> None:
    """Raise ``TypeError`` when ``value`` holds the future of a run submitted in this process."""
    for future in futures_in(value, quoted=True):
        if not isinstance(future, OvercastDistributedFuture):
            raise TypeError(
                f"{task.name}.delay() got the future of task run {future.task_run_id}, which runs in "
                "this process; pass its result, or the future of a background run (.delay())"
            )


def futures_in(value: Any, *, quoted: bool = False) -> Iterator[OvercastFuture[Any]]:
    """Every future in ``value`` (in lists, tuples, sets, dicts, annotations; under ``quote`` too
    when ``quoted``)."""
    if not contains_future(value):
        return
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, OvercastFuture):
            yield item
        elif isinstance(item, unmapped | allow_failure) or (quoted and isinstance(item, quote)):
            stack.append(item.value)
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


# -- the worker's side ----------------------------------------------------------------------------
