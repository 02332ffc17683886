"""``@flow``: a function whose calls are orchestrated flow runs.

Calling a flow creates a flow run in the control plane, runs the function on the caller's
thread (the main thread for a top-level flow), and reports the outcome. A flow called inside
another flow is a subflow: a child run, linked to a task run of its parent.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import ValidationError, create_model

from overcast import _flow_engine as engine
from overcast._options import HookedCallable, call_hook
from overcast.core.models import FlowRun
from overcast.core.states import State
from overcast.task_runners import TaskRunner, ThreadPoolTaskRunner

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger("overcast.flows")


class ParameterValidationError(TypeError):
    """Raised when a flow's arguments do not fit its signature's annotations."""


class Flow(HookedCallable, Generic[P, R]):
    """A flow: wraps a function so that each call is an orchestrated flow run.

    Args:
        fn: the function (sync or async).
        name: the flow's name (default: the function's name, ``_`` as ``-``).
        description: a description (default: the docstring).
        version: a version string.
        flow_run_name: a ``str.format`` template over the parameters, or a callable.
        retries: retries after a failed run (decided by the control plane).
        retry_delay_seconds: the pause before each retry.
        task_runner: where ``submit``/``map`` run tasks (default: a thread pool); a task
            runner class is instantiated with no arguments.
        timeout_seconds: fail the run (TimedOut) when it runs longer.
        validate_parameters: coerce and check arguments against the annotations (pydantic).
        log_prints: send ``print`` in the flow (and its tasks) to the run's log.
        tags: tags of every run.
        on_completion, on_failure, on_cancellation, on_crashed, on_running: hooks
            ``(flow, flow_run, state)``; a hook's exception is logged, never raised.
        persist_result: persist the flow's own result (its final state then holds a claim
            check that ``state.result()`` reads in any process) and the results of its tasks
            (those that do not say otherwise), recorded under their cache keys: a retried run
            then redoes only what did not complete. Left unset, the flow's result persists
            when ``result_storage`` or ``result_serializer`` is given.
        result_storage: where the flow's result goes, and the default ``result_storage`` of
            its tasks (a URL such as ``s3://bucket/prefix``; default: the settings' blob store).
        result_serializer: the serializer of the flow's result, and the default of its tasks.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        flow_run_name: str | Callable[..., str] | None = None,
        retries: int = 0,
        retry_delay_seconds: float = 0,
        task_runner: TaskRunner | type[TaskRunner] | None = None,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        log_prints: bool = False,
        tags: Iterable[str] | None = None,
        on_completion: list[Callable[..., Any]] | None = None,
        on_failure: list[Callable[..., Any]] | None = None,
        on_cancellation: list[Callable[..., Any]] | None = None,
        on_crashed: list[Callable[..., Any]] | None = None,
        on_running: list[Callable[..., Any]] | None = None,
        persist_result: bool | None = None,
        result_storage: Any = None,
        result_serializer: Any = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@flow needs a function, not {type(fn).__name__}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError("a flow cannot be a generator; make the generator a task")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "flow").replace("_", "-")
        for bad in "/%&><":
            if bad in self.name:
                raise ValueError(f"flow name {self.name!r} contains {bad!r}")
        self.description = description if description is not None else inspect.getdoc(fn)
        self.version = version
        self.flow_run_name = flow_run_name
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        if isinstance(task_runner, type):
            task_runner = task_runner()
        self.task_runner: TaskRunner = task_runner or ThreadPoolTaskRunner()
        self.timeout_seconds = timeout_seconds
        self.validate_parameters = validate_parameters
        self.log_prints = log_prints
        self.tags = sorted(set(tags or ()))
        self.on_completion_hooks = list(on_completion or [])
        self.on_failure_hooks = list(on_failure or [])
        self.on_cancellation_hooks = list(on_cancellation or [])
        self.on_crashed_hooks = list(on_crashed or [])
        self.on_running_hooks = list(on_running or [])
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        # Whether a run stores its own return value (a claim check in its final state): asked
        # for, or (left unset) implied by a result storage or serializer, as in Prefect.
        implied = result_storage is not None or result_serializer is not None
        self.persists_result = persist_result if persist_result is not None else implied
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        self.has_var_args = any(
            p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in self._signature.parameters.values()
        )
        self._model: Any = None
        self.__doc__ = self.description
        self.__wrapped__ = fn

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def __call__(
        self, *args: Any, return_state: bool = ..., wait_for: Iterable[Any] | None = ..., **kwargs: Any
    ) -> Any: ...

    def __call__(
        self, *args: Any, return_state: bool = False, wait_for: Iterable[Any] | None = None, **kwargs: Any
    ) -> Any:
        """Run the flow now and return its result (or its final state with ``return_state=True``).

        What the function returns decides the run's final state, as in Prefect: a returned
        state becomes it (``return Failed(message=...)`` fails the run); a returned future is
        resolved, and fails the run if its task run failed; a list, tuple, set or dict of
        states or futures fails the run ("1/3 states failed.") if any of them did not
        complete, else the futures are replaced by their results. Any other value completes it.

        Args:
            return_state: return the run's final state instead of its result (a failed run's
                state instead of raising).
            wait_for: futures (or states) of runs to wait for before this one starts.

        Raises:
            UpstreamTaskError: a run in ``wait_for`` did not complete; the flow does not run.
            ParameterValidationError: the arguments do not fit the signature.
        """
        if self.is_async:
            return engine.run_flow_async(self, args, kwargs, return_state, wait_for=wait_for)
        return engine.run_flow(self, args, kwargs, return_state, wait_for=wait_for)

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this flow from its function."""
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "flow_run_name": self.flow_run_name,
            "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds,
            "task_runner": self.task_runner,
            "timeout_seconds": self.timeout_seconds,
            "validate_parameters": self.validate_parameters,
            "log_prints": self.log_prints,
            "tags": self.tags,
            "on_completion": self.on_completion_hooks,
            "on_failure": self.on_failure_hooks,
            "on_cancellation": self.on_cancellation_hooks,
            "on_crashed": self.on_crashed_hooks,
            "on_running": self.on_running_hooks,
            "persist_result": self.persist_result,
            "result_storage": self.result_storage,
            "result_serializer": self.result_serializer,
        }

    def on_crashed(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: add a crash hook."""
        return self._add_hook("crashed", hook)

    def on_cancellation(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: add a cancellation hook."""
        return self._add_hook("cancellation", hook)

    # -- deployments ------------------------------------------------------------------------------

    def deploy(self, name: str, **options: Any) -> uuid.UUID:
        """Create (or update) the deployment ``<flow name>/<name>``; see ``overcast.deployments.deploy``."""
        from overcast.deployments import deploy

        return deploy(self, name, **options)

    def serve(self, name: str, **options: Any) -> None:
        """Deploy this flow and execute its runs in this process until Ctrl-C; see ``overcast.deployments.serve``."""
        from overcast.deployments import serve

        serve(self, name, **options)

    def parameter_schema(self) -> dict[str, Any] | None:
        """The JSON schema of the flow's parameters (``None`` when a parameter's type has none)."""
        try:
            return dict(self._parameter_model().model_json_schema())
        except Exception:  # an arbitrary type pydantic cannot describe: no schema to enforce
            return None

    def _parameter_model(self) -> Any:
        if self._model is None:
            fields = {
                name: (
                    p.annotation if p.annotation is not inspect.Parameter.empty else Any,
                    p.default if p.default is not inspect.Parameter.empty else ...,
                )
                for name, p in self._signature.parameters.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            }
            self._model = create_model(
                f"{self.name}-parameters", __config__={"arbitrary_types_allowed": True}, **fields
            )  # type: ignore[call-overload]
        return self._model

    # -- for the engine ---------------------------------------------------------------------------

    def validated_parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, defaults applied, coerced to the annotations.

        Raises:
            ParameterValidationError: an argument is missing, unexpected or of the wrong type.
        """
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ParameterValidationError(f"flow {self.name!r}: {exc}") from None
        bound.apply_defaults()
        parameters = dict(bound.arguments)
        if not self.validate_parameters or self.has_var_args:
            return parameters
        try:
            validated = self._parameter_model().model_validate(parameters)
        except ValidationError as exc:
            raise ParameterValidationError(f"flow {self.name!r} got invalid parameters:\n{exc}") from None
        return {name: getattr(validated, name) for name in parameters}

    def run_name(self, parameters: dict[str, Any]) -> str | None:
        """The run's name from ``flow_run_name`` and the parameters (``None``: generated)."""
        template = self.flow_run_name
        if template is None:
            return None
        if callable(template):
            return str(template())
        try:
            return template.format(**parameters)
        except (KeyError, IndexError) as exc:
            raise ValueError(
                f"flow_run_name {template!r} names {exc}, which is not a parameter of {self.name}"
            ) from None

    def run_hooks(self, hooks: list[Callable[..., Any]], run: FlowRun, client: Any, **outcome: Any) -> None:
        """Call state hooks (an async one runs to completion) with the run as stored now; a
        hook's exception is logged, never raised."""
        if not hooks:
            return
        current = client.read_flow_run(run.id)
        state: State = current.state
        state.attach(outcome.get("value"), outcome.get("exception"))
        for hook in hooks:
            try:
                call_hook(hook, self, current, state)
            except Exception:
                logger.exception("hook %s of flow %r raised", getattr(hook, "__name__", hook), self.name)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...


@overload
def flow(**options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Callable[P, R] | None = None, **options: Any) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(retries=2, ...)`` (options of ``Flow``)."""
    if __fn is not None:
        return Flow(__fn, **options)
    return lambda fn: Flow(fn, **options)


def load_flow_from_entrypoint(entrypoint: str, *, base: str | None = None) -> Flow[..., Any]:
    """Load the flow an entrypoint names: ``path/to/file.py:flow_name`` or ``package.module:flow_name``.

    A file path is imported as a module of its own (a relative one from ``base``, else from the
    working directory; also from the working directory when ``base`` does not exist here, as
    when a function runs a deployment made on a laptop); a dotted name is imported from
    ``sys.path``.

    Raises:
        ValueError: a malformed entrypoint, or one that names something other than a flow.
        FileNotFoundError: the file does not exist.
        ImportError: the module cannot be imported.
    """
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    where, sep, attribute = entrypoint.rpartition(":")
    if not sep or not where or not attribute:
        raise ValueError(f"entrypoint {entrypoint!r} must be 'path/to/file.py:flow' or 'module:flow'")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = (Path(base) / where if base and not Path(where).is_absolute() else Path(where)).resolve()
        if not path.is_file() and base and not Path(where).is_absolute() and not Path(base).is_dir():
            # deployed where ``base`` (the deploying machine's folder) does not exist: a
            # function's package holds the project at its working directory
            path = Path(where).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"entrypoint {entrypoint!r}: no file {path}")
        name = f"overcast_entrypoint_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"entrypoint {entrypoint!r}: cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            sys.path.insert(0, str(path.parent))  # its sibling modules import as they would when run
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
    else:
        module = importlib.import_module(where)
    target = getattr(module, attribute, None)
    if not isinstance(target, Flow):
        raise ValueError(f"entrypoint {entrypoint!r} names {type(target).__name__}, not a @flow")
    return target
