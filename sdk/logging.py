"""Run logs: ``get_run_logger()`` and ``log_prints``.

A run logger writes to the terminal like any logger (through the ``overcast`` logger's
handlers) and ships each line, tagged with its flow run and task run, to the control plane
through the reporter's write-behind buffer. ``print`` inside a run with ``log_prints`` goes
the same way (and still to stdout).
"""

from __future__ import annotations

import builtins
import logging
import sys
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from overcast.context import flow_run_context, task_run_context

_root = logging.getLogger("overcast")
_install_lock = threading.Lock()
_installed = False
_print = builtins.print


class RunLogHandler(logging.Handler):
    """Ships records that carry run ids to the reporter of the run's runtime."""

    def emit(self, record: logging.LogRecord) -> None:
        flow_run_id = getattr(record, "flow_run_id", None)
        task_run_id = getattr(record, "task_run_id", None)
        if flow_run_id is None and task_run_id is None:
            return
        flow_ctx = flow_run_context.get()
        if flow_ctx is not None:
            reporter = flow_ctx.runtime.reporter
        else:
            from overcast._runtime import get_runtime

            reporter = get_runtime().reporter
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not break the run
            message = str(record.msg)
        reporter.log(
            {
                "id": str(uuid.uuid4()),
                "flow_run_id": str(flow_run_id) if flow_run_id else None,
                "task_run_id": str(task_run_id) if task_run_id else None,
                "level": record.levelno,
                "name": record.name,
                "message": message[:32_000],
                "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            }
        )


def _install() -> None:
    global _installed  # noqa: PLW0603 - installed once per process
    with _install_lock:
        if _installed:
            return
        _root.addHandler(RunLogHandler())
        if (
            not any(isinstance(h, logging.StreamHandler) for h in _root.handlers)
            and not logging.getLogger().handlers
        ):
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(
                logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S")
            )
            _root.addHandler(console)
        if _root.level == logging.NOTSET:
            _root.setLevel(logging.INFO)
        builtins.print = _logging_print
        _installed = True


def get_run_logger(**extra: Any) -> logging.LoggerAdapter[logging.Logger]:
    """A logger for the current run: its lines go to the terminal and to the run's log.

    Raises:
        MissingContextError: called outside a flow or task.
    """
    from overcast.context import get_run_context

    get_run_context()  # raises outside a run
    _install()
    task_ctx = task_run_context.get()
    flow_ctx = flow_run_context.get()
    if task_ctx is not None:
        logger = logging.getLogger("overcast.task_runs")
        ids = {"task_run_id": task_ctx.task_run.id, "flow_run_id": task_ctx.task_run.flow_run_id}
        label = task_ctx.task_run.name
    else:
        assert flow_ctx is not None
        logger = logging.getLogger("overcast.flow_runs")
        ids = {"flow_run_id": flow_ctx.flow_run.id, "task_run_id": None}
        label = flow_ctx.flow_run.name
    return _RunLogger(logger, {**ids, "run_name": label, **extra})


class _RunLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return f"{self.extra['run_name']} - {msg}" if self.extra else msg, kwargs


def enable_log_prints() -> None:
    """Make ``print`` in runs with ``log_prints`` go to the run log (installed on first use)."""
    _install()


def _logging_print(*args: Any, **kwargs: Any) -> None:
    task_ctx = task_run_context.get()
    flow_ctx = flow_run_context.get()
    wanted = task_ctx.log_prints if task_ctx is not None else bool(flow_ctx and flow_ctx.log_prints)
    if not wanted or kwargs.get("file") not in (None, sys.stdout):
        _print(*args, **kwargs)
        return
    sep = kwargs.get("sep")
    text = (" " if sep is None else sep).join(str(a) for a in args)
    get_run_logger().info(text)
