"""Overcast: a serverless, cloud-agnostic workflow orchestrator with Prefect 3's programming model.

This module stays light: importing ``overcast`` (which every ``overcast.*`` import does first)
loads no engine, no cloud SDK and no web framework. Public names are resolved lazily on first
access through ``__getattr__``, from the table below.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (relative to this package)
_LAZY: dict[str, str] = {
    "Artifact": "overcast.artifacts",
    "Flow": "overcast.flows",
    "Settings": "overcast.core.settings",
    "State": "overcast.core.states",
    "Task": "overcast.tasks",
    "Variable": "overcast.variables",
    "allow_failure": "overcast.futures",
    "create_image_artifact": "overcast.artifacts",
    "create_link_artifact": "overcast.artifacts",
    "create_markdown_artifact": "overcast.artifacts",
    "create_progress_artifact": "overcast.artifacts",
    "create_table_artifact": "overcast.artifacts",
    "emit_event": "overcast.events",
    "flow": "overcast.flows",
    "flush": "overcast._runtime",
    "get_run_context": "overcast.context",
    "get_run_logger": "overcast.logging",
    "quote": "overcast.futures",
    "runtime": "overcast.runtime",
    "tags": "overcast.context",
    "task": "overcast.tasks",
    "unmapped": "overcast.futures",
    "update_progress_artifact": "overcast.artifacts",
}

__all__ = [
    "Artifact",
    "Flow",
    "Settings",
    "State",
    "Task",
    "Variable",
    "__version__",
    "allow_failure",
    "create_image_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_progress_artifact",
    "create_table_artifact",
    "emit_event",
    "flow",
    "flush",
    "get_run_context",
    "get_run_logger",
    "quote",
    "runtime",
    "tags",
    "task",
    "unmapped",
    "update_progress_artifact",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'overcast' has no attribute {name!r}")
    imported = importlib.import_module(module)
    # a name that is a submodule (``runtime``) stands for the module itself
    value = imported if module == f"{__name__}.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
