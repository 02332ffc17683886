"""``overcast task-worker MODULE:TASK ...``: serve background tasks until Ctrl-C.

Runs the task runs that ``task.delay()`` queues (``overcast.task_worker``) for the tasks named,
imported from modules on ``sys.path`` (the working directory first, as ``python -m`` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from overcast.infra.cli.runs import _fail

if TYPE_CHECKING:
    from overcast.tasks import Task


def register(app: typer.Typer) -> None:
    """Add ``task-worker`` to the root app."""
    app.command("task-worker")(task_worker)


def task_worker(
    tasks: Annotated[
        list[str],
        typer.Argument(
            metavar="MODULE:TASK", help="Tasks to serve, as module:task (e.g. shop.emails:send_receipt)."
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, max=256, help="The most task runs at once.")] = 10,
) -> None:
    """Serve background tasks: run the task runs their .delay() queues, until Ctrl-C."""
    import logging
    import signal

    from overcast.task_worker import TaskWorker

    served = [_load_task(spec) for spec in tasks]
    worker = TaskWorker(*served, limit=limit)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    if not logging.getLogger().handlers:  # say what it serves, and each run it ends (not httpx's chatter)
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("overcast").setLevel(logging.INFO)
    worker.start()


def _load_task(spec: str) -> Task[..., Any]:
    """Import ``module:attribute`` (the attribute may be dotted) and check that it is a task."""
    import importlib
    import sys
    from pathlib import Path

    from overcast.tasks import Task

    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        _fail(f"{spec!r}: name a task as module:task, e.g. shop.emails:send_receipt")
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        _fail(f"{spec!r}: cannot import {module_name}: {exc}")
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not isinstance(found, Task):
        _fail(f"{spec!r}: {attribute} in {module_name} is not a @task")
    return found  # type: ignore[no-any-return]
