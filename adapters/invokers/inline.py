"""The inline invoker: handlers run in the calling process (tests and the embedded default)."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from overcast.adapters.invokers._handlers import (
    MAX_SYNC_PAYLOAD,
    encode_payload,
    lookup_handler,
    run_handler,
    unwrap,
)
from overcast.adapters.invokers._local import LocalFunctions
from overcast.core.errors import FunctionCrashedError

logger = logging.getLogger(__name__)


class InlineInvoker(LocalFunctions):
    """Runs handlers in the calling process: on the caller's thread, or a background one for ``wait=False``.

    Inline cannot stop a handler that runs too long (a Python thread cannot be interrupted), so
    the timeout is not enforced; the context's remaining time still counts down from it, so
    handlers that watch it behave as deployed. Use ``LocalProcessInvoker`` where a timeout or a
    crash must be contained.

    Args:
        functions: function name to handler path (``module:attr`` or ``module.attr``); an
            unregistered name that contains ``:`` is taken as a handler path itself.
        timeout_s: the timeout the context counts down from.
    """

    def __init__(self, functions: Mapping[str, str] | None = None, *, timeout_s: float = 900) -> None:
        super().__init__(functions, timeout_s=timeout_s, threads=8, thread_name="overcast-inline")

    def invoke(self, function: str, payload: Any, *, wait: bool = True, request_id: str | None = None) -> Any:
        """Invoke ``function`` with ``payload`` (see ``overcast.core.ports.Invoker``).

        Args:
            function: a registered name, or a ``module:attr`` handler path.
            payload: a JSON value, the handler's event.
            wait: return the result; ``False`` runs it on a background thread and returns ``None``.
            request_id: the context's ``aws_request_id`` (a fresh UUID when omitted).

        Returns:
            The handler's result after a JSON round trip, or ``None`` when ``wait`` is false.

        Raises:
            FunctionNotFoundError: no such function, or its handler cannot be imported.
            FunctionError: the handler raised (also when its result is not JSON).
            FunctionCrashedError: the handler called ``sys.exit``.
            InvalidValueError: the payload is not JSON or is over Lambda's size limit.
        """
        handler = lookup_handler(self.functions, function)
        event_json = encode_payload(function, payload, wait=wait)
        request_id = request_id or str(uuid.uuid4())
        if not wait:
            call = functools.partial(self._run, function, handler, event_json, request_id, None)
            self._background.submit(function, request_id, call)
            return None
        return self._run(function, handler, event_json, request_id, MAX_SYNC_PAYLOAD)

    def _run(self, function: str, handler: str, event_json: str, request_id: str, limit: int | None) -> Any:
        timeout_s = self.timeout_for(function)
        try:
            outcome = run_handler(
                function,
                handler,
                event_json,
                timeout_s=timeout_s,
                request_id=request_id,
                max_result_bytes=limit,
            )
        except SystemExit as exc:
            # In a sandbox this ends the process; here it must not end the caller's thread.
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            raise FunctionCrashedError(function, code, "the handler called sys.exit") from exc
        return unwrap(function, outcome)

    def close(self) -> None:
        """Drop ``wait=False`` invocations that have not started (call ``drain`` first to keep them)."""
        self._background.shutdown()

    def __enter__(self) -> InlineInvoker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
