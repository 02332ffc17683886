"""The ``overcast`` command.

One module per command or command group (``server``, later ``flow_run``, ``logs``, ``worker``
…), each with a ``register(app)`` that adds its commands to the root app. Add a module's
dotted name to ``COMMANDS`` to ship it. A command imports what it runs (uvicorn, the API, a
cloud SDK) inside its function, so ``overcast --help`` and ``overcast version`` start fast
and ``import overcast`` never pays for the CLI.
"""

from __future__ import annotations

import importlib
import platform

import typer

from overcast import __version__

# modules with a ``register(app: typer.Typer) -> None``, in the order --help lists them
COMMANDS: tuple[str, ...] = (
    "overcast.infra.cli.server",
    "overcast.infra.cli.runs",
    "overcast.infra.cli.dev",
    "overcast.infra.cli.cloud",
    "overcast.infra.cli.storage",
    "overcast.infra.cli.deployments",
    "overcast.infra.cli.artifacts",
    "overcast.infra.cli.variables",
    "overcast.infra.cli.concurrency",
    "overcast.infra.cli.work_pools",
    "overcast.infra.cli.workers",
    "overcast.infra.cli.task_worker",
    "overcast.infra.cli.events",
    "overcast.infra.cli.automations",
)


def version() -> None:
    """Print Overcast's version (and the Python that runs it)."""
    typer.echo(f"overcast {__version__} (Python {platform.python_version()}, {platform.system()})")


def _root() -> None:
    """Overcast: a serverless workflow orchestrator for Python."""


def build() -> typer.Typer:
    """Build the root ``overcast`` app with every command module registered."""
    app = typer.Typer(
        name="overcast",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    # a callback keeps ``overcast`` a group even while it has a single command
    app.callback()(_root)
    app.command()(version)
    for name in COMMANDS:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    """Run the ``overcast`` command line (the console script's entry point)."""
    build()(prog_name="overcast")
