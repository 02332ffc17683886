"""The runner: executes flow runs named by messages, as a function invocation would.

One message names one flow run (``{"flow_run_id": "…"}``). For each, the runner claims the run
with a version-guarded transition (PENDING, then the engine's RUNNING), loads its flow from the
deployment's entrypoint, runs it with the engine on this thread, and flushes the bookkeeping
before answering (a frozen Lambda sandbox would lose what is still buffered).

Delivery is at least once, so a message may come again, or twice at once: the claim makes the
second delivery find the run already claimed (or over) and do nothing. A message that cannot
be read, or whose run failed to *start* because the control plane was unreachable, is reported
as failed so that the queue redelivers it (and, after its retries, parks it in the DLQ); a
flow that ran and failed is not a failed message: its retries are the control plane's.

The cloud entry points (``overcast.handlers.aws.runner``, the GCP Pub/Sub entry, the local
function host) only translate their events into ``RunRequest``s and answers.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from overcast._flow_engine import RunAbortedError, execute_flow_run
from overcast._runtime import get_runtime
from overcast.core.errors import NotFoundError, OvercastError
from overcast.core.states import Pending, StateType
from overcast.flows import load_flow_from_entrypoint

logger = logging.getLogger("overcast.runner")

Outcome = Literal["completed", "failed", "cancelled", "skipped", "retry"]
"""What became of one message: the run ended (``completed``/``failed``/``cancelled``), there was nothing to
do (``skipped``: claimed elsewhere, over, unknown, or unreadable with no hope of a retry), or
the message should come again (``retry``)."""


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One message: the run it names, and the id its transport knows it by."""

    message_id: str
    flow_run_id: uuid.UUID | None
    problem: str | None = None  # why the message could not be read


def parse_message(message_id: str, body: Any) -> RunRequest:
    """Read a message body (JSON text or an already decoded object) naming a flow run."""
    try:
        payload = json.loads(body) if isinstance(body, str | bytes) else body
        run_id = uuid.UUID(str(payload["flow_run_id"]))
    except (ValueError, TypeError, KeyError) as exc:
        return RunRequest(message_id, None, f"not a flow-run message: {type(exc).__name__}: {exc}")
    return RunRequest(message_id, run_id)


def handle(requests: list[RunRequest]) -> dict[str, Outcome]:
    """Run every request's flow run, one after another; return each message's outcome by id.

    Bookkeeping is flushed before returning, whatever happened.
    """
    outcomes: dict[str, Outcome] = {}
    try:
        for request in requests:
            outcomes[request.message_id] = _run_one(request)
    finally:
        get_runtime().reporter.flush()
    return outcomes


def _run_one(request: RunRequest) -> Outcome:
    if request.flow_run_id is None:
        logger.error("message %s refused: %s", request.message_id, request.problem)
        return "retry"  # poison: redelivered until the queue parks it in its DLQ
    client = get_runtime().client
    run_id = request.flow_run_id
    try:
        run = client.read_flow_run(run_id)
        if run.state.is_terminal or run.state.type in (StateType.RUNNING, StateType.CANCELLING):
            logger.info("flow run %s is %s already: nothing to do", run_id, run.state.name)
            return "skipped"
        if run.deployment_id is None:
            logger.error("flow run %s has no deployment: a runner cannot know its flow", run_id)
            return "skipped"
        deployment = client.read_deployment(run.deployment_id)
        if run.state.type is not StateType.PENDING:
            answer = client.set_flow_run_state(run_id, Pending())
            if answer.status.value != "ACCEPT":
                logger.info("flow run %s claimed elsewhere (%s)", run_id, answer.reason)
                return "skipped"
            run = client.read_flow_run(run_id)
    except NotFoundError as exc:
        logger.error("flow run %s: %s", run_id, exc)
        return "skipped"
    except OvercastError:
        logger.exception("flow run %s could not be started; the message will come again", run_id)
        return "retry"
    try:
        flow = load_flow_from_entrypoint(deployment.entrypoint, base=deployment.path)
    except Exception as exc:  # the deployment's code is broken: the run fails, the message is done
        from overcast.core.states import Failed

        message = f"could not load {deployment.entrypoint!r}: {type(exc).__name__}: {exc}"
        client.set_flow_run_state(run_id, Failed(message), force=True)
        logger.error("flow run %s: %s", run_id, message)
        return "failed"
    try:
        state = execute_flow_run(flow, run, return_state=True)
    except RunAbortedError as exc:
        logger.info("flow run %s: %s", run_id, exc)
        return "skipped"
    except BaseException:
        logger.exception("flow run %s crashed in the runner", run_id)
        raise
    if state.is_completed():
        return "completed"
    return "cancelled" if state.is_cancelled() else "failed"
