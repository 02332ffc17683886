"""Registering a project with a deployed stack's API: its work pools, deployments and automations.

Two work pools point at the stack's runners:

- ``aws-queue`` (type ``queue``): runs are sent to the stack's runs queue, whose event source
  mapping hands them to the runner function;
- ``aws-lambda`` (type ``aws-lambda``): the control plane invokes the runner function itself.

A project's deployments and automations are whatever its registration script creates: the
script runs as ``python SCRIPT`` would, from the project's directory, with the SDK's client
pointed at the deployed API, so its ``flow.deploy(...)``, ``deploy(...)`` and
``Automation(...).create()`` calls land there. The package puts the project at the functions'
code root (``/var/task``), so each deployment is recorded as found from there, whatever
directory it was registered from.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overcast.core.errors import NotFoundError, OvercastError
from overcast.core.work_pools import AwsLambdaPoolCreate, QueuePoolCreate, WorkPoolUpdate

if TYPE_CHECKING:
    from overcast.client import Client
    from overcast.core.deployments import Deployment, DeploymentCreate
    from overcast.core.work_pools import WorkPoolRequest

LAMBDA_TASK_ROOT = "/var/task"
"""Where Lambda unpacks the code package (the project's files are at its root)."""
QUEUE_POOL = "aws-queue"
LAMBDA_POOL = "aws-lambda"


class RegistrationError(OvercastError):
    """Raised when a project cannot be registered (its script failed, a flow is outside it)."""


@dataclass
class Registered:
    """What a registration did: the pools made ready and the deployments created or updated."""

    pools: list[str] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)


def stack_pools(outputs: dict[str, str], region: str) -> list[WorkPoolRequest]:
    """The work pools of a stack whose outputs are ``outputs`` (see the module's docstring)."""
    return [
        QueuePoolCreate.model_validate(
            {
                "name": QUEUE_POOL,
                "description": "Runs go through the stack's runs queue to its runner function",
                "config": {"url": f"sqs://{outputs['RunsQueueName']}?region={region}"},
            }
        ),
        AwsLambdaPoolCreate.model_validate(
            {
                "name": LAMBDA_POOL,
                "description": "The control plane invokes the stack's runner function for each run",
                "config": {"function": outputs["RunnerFunction"], "region": region},
            }
        ),
    ]


def ensure_pools(client: Client, pools: list[WorkPoolRequest]) -> list[str]:
    """Create each pool, or set its config when it exists; return their names."""
    for pool in pools:
        try:
            client.read_work_pool(pool.name)
        except NotFoundError:
            client.create_work_pool(pool)
        else:  # the stack's names may have changed (a stack made anew)
            config = pool.config.model_dump(mode="json") if pool.config is not None else None
            client.update_work_pool(pool.name, WorkPoolUpdate.model_validate({"config": config}))
    return [pool.name for pool in pools]


def register_project(
    client: Client, script: Path, *, project: Path, code_root: str = LAMBDA_TASK_ROOT
) -> list[Deployment]:
    """Run the registration ``script`` against ``client``; return the deployments it made.

    Args:
        script: a Python file of the project calling ``flow.deploy(...)`` and friends.
        project: the project's directory (the package's root): the script runs from there.
        code_root: where the project is when the functions run it.

    Raises:
        RegistrationError: the script failed, or deploys a flow whose file is not in the project.
    """
    from overcast._runtime import Runtime, use_runtime

    project = project.resolve()
    script = script if script.is_absolute() else project / script
    if not script.is_file():
        raise RegistrationError(f"registration script {script} does not exist")
    packaged = _PackagedClient(client, project, code_root)
    runtime = Runtime(packaged)  # a Client in all but name (it forwards what it does not change)
    try:
        with _running_from(project), use_runtime(runtime):
            runpy.run_path(str(script), run_name="__main__")
    except OvercastError:
        raise
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise RegistrationError(f"{script.name} exited with {exc.code}") from exc
    except Exception as exc:
        raise RegistrationError(f"{script.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        runtime.close()
    return packaged.deployments


@contextlib.contextmanager
def _running_from(project: Path) -> Iterator[None]:
    """Run the block from ``project``, with it first on ``sys.path`` (as ``python script`` would)."""
    previous = Path.cwd()
    os.chdir(project)
    sys.path.insert(0, str(project))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(project))
        os.chdir(previous)


class _PackagedClient:
    """A client that records deployments as found from the code root, and remembers them."""

    def __init__(self, inner: Client, project: Path, code_root: str) -> None:
        self._inner = inner
        self._project = project
        self._code_root = code_root
        self.deployments: list[Deployment] = []

    def create_deployment(self, request: DeploymentCreate) -> Deployment:
        where, _, attribute = (request.entrypoint or "").rpartition(":")
        if where.endswith(".py") or "/" in where:
            file = (self._project / where).resolve()
            if not file.is_relative_to(self._project):
                raise RegistrationError(
                    f"deployment {request.name!r}: {request.entrypoint!r} is outside the project "
                    f"{self._project}, so it is not in the package"
                )
            entrypoint = f"{file.relative_to(self._project).as_posix()}:{attribute}"
            request = request.model_copy(update={"entrypoint": entrypoint})
        deployment = self._inner.create_deployment(request.model_copy(update={"path": self._code_root}))
        self.deployments.append(deployment)
        return deployment

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
