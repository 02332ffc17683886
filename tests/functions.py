"""Handlers the invoker conformance suite runs, in Lambda's ``handler(event, context)`` shape.

Worker processes import this module by name, so it must stay importable from ``tests/``.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

FUNCTIONS: dict[str, str] = {
    "echo": "functions:echo",
    "fail": "functions:fail",
    "bad-result": "functions:bad_result",
    "sleep": "functions:sleep",
    "crash": "functions:crash",
    "touch": "functions.touch",  # Lambda's dotted form
    "no-module": "functions_that_do_not_exist:handler",
    "no-attr": "functions:not_a_handler",
}
"""Function name -> handler path, as a deployment would register them."""


def echo(event: Any, context: Any) -> dict[str, Any]:
    """Return the event and what the context says about this invocation."""
    return {
        "event": event,
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def fail(event: Any, context: Any) -> None:
    """Raise the ``ValueError`` the event asks for."""
    raise ValueError(event.get("message", "boom"))


def bad_result(event: Any, context: Any) -> Any:
    """Return a value JSON cannot encode."""
    return {1, 2, 3}


def sleep(event: Any, context: Any) -> dict[str, Any]:
    """Sleep ``event["seconds"]``, then say which process ran it."""
    time.sleep(event["seconds"])
    return {"pid": os.getpid(), "slept": event["seconds"]}


def crash(event: Any, context: Any) -> None:
    """End the process as ``event["how"]`` says: ``exit`` (status ``code``), ``kill`` or ``segfault``."""
    how = event["how"]
    if how == "exit":
        os._exit(event.get("code", 3))
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the working tree
        ctypes.string_at(0)
    raise AssertionError(f"unknown crash {how!r}")


def touch(event: Any, context: Any) -> str:
    """After ``event["delay"]`` seconds, write ``event["data"]`` as JSON to ``event["path"]``.

    A side effect a test can wait for.
    """
    time.sleep(event.get("delay", 0))
    path = Path(event["path"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(event.get("data")))
    tmp.replace(path)  # atomic, so a reader never sees half a file
    return str(path)
