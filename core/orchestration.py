"""The rules that decide a proposed flow-run state: accept, reject, wait or abort.

``decide`` is pure: given the run as stored and the proposed state, it returns a ``Verdict``
naming the decision, the reason, and the state to write (if any). ``apply`` then folds a
written state into the run (run count, start and end times, run time). The service that calls
them writes under the run's version, so two proposers racing for one transition get one
ACCEPT between them and the loser, re-deciding against the new state, an ABORT.

Decisions:

- ``ACCEPT`` — the proposed state (possibly adjusted) is written.
- ``REJECT`` — the proposal is refused; the run keeps its state, or moves to the state the
  rules chose instead (a failure with retries left becomes AwaitingRetry).
- ``WAIT`` — too early: propose again after ``wait_s`` seconds.
- ``ABORT`` — the proposer must stop working on this run (someone else has it, or it is over).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from overcast.core.models import FlowRun
from overcast.core.states import AwaitingRetry, Cancelled, State, StateType

RUN_LEASE_S = 60.0
"""How long a runner's heartbeat vouches for its running flow run (see ``services.leases``)."""

# A run may start this early without being told to wait (clocks of runners and the API differ).
SCHEDULE_TOLERANCE = timedelta(seconds=1)
SLOT_WAIT_SECONDS = 10.0
"""How long a run that found its deployment's concurrency limit reached waits before proposing again."""


class Decision(StrEnum):
    """The orchestration decision on a proposed state."""

    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    WAIT = "WAIT"
    ABORT = "ABORT"


class CollisionStrategy(StrEnum):
    """What happens to a deployment's run that finds the deployment's concurrency limit reached.

    ``ENQUEUE``: it waits (``WAIT``) and proposes again until a slot frees up.
    ``CANCEL_NEW``: it is cancelled.
    """

    ENQUEUE = "ENQUEUE"
    CANCEL_NEW = "CANCEL_NEW"


@dataclass(frozen=True, slots=True)
class DeploymentSlots:
    """A deployment's concurrency limit as orchestration sees it.

    Attributes:
        limit: how many of its runs may hold a slot at once.
        strategy: what happens to a run that finds them all taken.
        holders: ids (as text) of the runs holding a slot now.
    """

    limit: int
    strategy: CollisionStrategy = CollisionStrategy.ENQUEUE
    holders: frozenset[str] = field(default_factory=frozenset)


def holds_slot(state: State) -> bool:
    """Whether a run in ``state`` occupies a deployment concurrency slot.

    A slot is taken on the way to PENDING or RUNNING and kept through RUNNING, CANCELLING and
    PAUSED; a run that leaves them (finishes, is rescheduled, or is Suspended: its process
    exits) gives it back.
    """
    if state.type is StateType.PAUSED:
        return not state.details.pause_reschedule
    return state.type in (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision with its reason and the state to write (``None``: nothing is written)."""

    decision: Decision
    write: State | None = None
    reason: str | None = None
    wait_s: float | None = None


def _accept(state: State) -> Verdict:
    return Verdict(Decision.ACCEPT, state)


def _reject(reason: str, write: State | None = None) -> Verdict:
    return Verdict(Decision.REJECT, write, reason)


def _abort(reason: str) -> Verdict:
    return Verdict(Decision.ABORT, None, reason)


Rule = Callable[[FlowRun, State, datetime], Verdict | None]


def _deployment_concurrency(run: FlowRun, proposed: State, slots: DeploymentSlots) -> Verdict | None:
    if not holds_slot(proposed) or str(run.id) in slots.holders:
        return None
    if len(slots.holders) < slots.limit:
        return None
    taken = f"its deployment's concurrency limit of {slots.limit} is reached ({len(slots.holders)} running)"
    if slots.strategy is CollisionStrategy.CANCEL_NEW:
        return _reject(f"{taken}; the run is cancelled (CANCEL_NEW)", write=Cancelled(f"Cancelled: {taken}"))
    return Verdict(Decision.WAIT, None, f"{taken}; waiting for a slot", SLOT_WAIT_SECONDS)


def _duplicate(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    current = run.state
    same_transition = (
        proposed.details.transition_id is not None
        and proposed.details.transition_id == current.details.transition_id
    )
    if proposed.id == current.id or same_transition:
        return _reject("this transition was already applied")
    return None


def _terminal(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    current = run.state
    if not current.is_terminal:
        return None
    if proposed.type is StateType.SCHEDULED and run.deployment_id is not None:
        return None  # a deployment's run may be scheduled again (a manual retry)
    return _abort(f"the run is already {current.name}; a finished run cannot become {proposed.name}")


def _cancelling(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    if run.state.type is not StateType.CANCELLING:
        return None
    if proposed.type in (StateType.CANCELLED, StateType.CRASHED):
        return None
    return _abort(f"the run is being cancelled; it may only become Cancelled, not {proposed.name}")


def _cancel_without_process(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    # A scheduled or suspended run has no process to stop: cancelling it cancels it.
    idle = run.state.type is StateType.SCHEDULED or (
        run.state.type is StateType.PAUSED and run.state.details.pause_reschedule
    )
    if proposed.type is StateType.CANCELLING and idle:
        return _accept(proposed.model_copy(update={"type": StateType.CANCELLED, "name": "Cancelled"}))
    return None


def _claimed(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    current = run.state.type
    if proposed.type is StateType.PENDING and current in (
        StateType.PENDING,
        StateType.RUNNING,
        StateType.CANCELLING,
        StateType.CANCELLED,
    ):
        return _abort(f"the run is already {run.state.name}: another runner claimed it")
    if proposed.type is StateType.RUNNING and current is StateType.RUNNING:
        return _abort("the run is already Running: another runner started it")
    return None


def _too_early(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    scheduled = run.state.details.scheduled_time
    if run.state.type is not StateType.SCHEDULED or scheduled is None:
        return None
    if proposed.type in (StateType.PENDING, StateType.RUNNING) and scheduled - now > SCHEDULE_TOLERANCE:
        wait = (scheduled - now).total_seconds()
        return Verdict(Decision.WAIT, None, f"the run is scheduled for {scheduled.isoformat()}", wait)
    return None


def _late(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    if proposed.name == "Late" and run.state.type is not StateType.SCHEDULED:
        return _reject(f"only a scheduled run can be Late; this one is {run.state.name}")
    return None


def _pause(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    if proposed.type is StateType.PAUSED and run.state.type is not StateType.RUNNING:
        return _reject(f"only a running run can pause; this one is {run.state.name}")
    return None


def _retry(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
    if proposed.type not in (StateType.FAILED, StateType.CRASHED):
        return None
    if run.state.type not in (StateType.RUNNING, StateType.PENDING) or proposed.details.retriable is False:
        return None
    policy = run.retry_policy
    attempts = max(run.run_count, 1)  # a run that failed has made at least one attempt
    if attempts > policy.retries:
        return None
    attempt = f"attempt {attempts} of {policy.retries + 1}"
    retry = AwaitingRetry(
        policy.retry_delay_seconds,
        now=now,
        message=f"{proposed.name} ({attempt}): {proposed.message or ''}".rstrip(": "),
    )
    return _reject(f"the run has retries left ({attempt}); it will run again", write=retry)


RULES: tuple[Rule, ...] = (
    _duplicate,
    _terminal,
    _cancelling,
    _cancel_without_process,
    _claimed,
    _too_early,
    _late,
    _pause,
    _retry,
)
"""The flow-run rules, in order; the first with an opinion decides."""


def decide(
    run: FlowRun,
    proposed: State,
    *,
    now: datetime,
    force: bool = False,
    slots: DeploymentSlots | None = None,
) -> Verdict:
    """Decide a proposed state for ``run``.

    Args:
        run: the run as stored.
        proposed: the proposed state.
        now: the current time.
        force: accept whatever is proposed (an operator's override); duplicates still no-op.
        slots: the concurrency limit of the run's deployment, when it has one. A run that
            needs a slot (it proposes PENDING or RUNNING and holds none) and finds them all
            taken waits (ENQUEUE) or is cancelled (CANCEL_NEW); the rules before it (a claimed
            or finished run, a run proposed too early) decide first.

    Returns:
        The verdict; its ``write`` is the state to store (stamped ``now``), or ``None``.
    """
    for rule in (_duplicate,) if force else _rules(slots):
        verdict = rule(run, proposed, now)
        if verdict is not None:
            return _stamped(verdict, now)
    return _stamped(_accept(proposed), now)


def _rules(slots: DeploymentSlots | None) -> tuple[Rule, ...]:
    if slots is None:
        return RULES
    at = RULES.index(_too_early) + 1  # a run told to wait for its time takes no slot yet

    def concurrency(run: FlowRun, proposed: State, now: datetime) -> Verdict | None:
        return _deployment_concurrency(run, proposed, slots)

    return (*RULES[:at], concurrency, *RULES[at:])


def _stamped(verdict: Verdict, now: datetime) -> Verdict:
    # The API's clock orders a run's states, so a runner's skewed clock cannot reorder history.
    if verdict.write is None:
        return verdict
    return Verdict(
        verdict.decision, verdict.write.model_copy(update={"timestamp": now}), verdict.reason, verdict.wait_s
    )


def apply(run: FlowRun, state: State, now: datetime) -> FlowRun:
    """Return ``run`` after entering ``state`` at ``now``: counts, times and schedule updated."""
    previous = run.state
    update: dict[str, object] = {"state": state, "updated": now}
    if state.type is StateType.RUNNING and previous.type is not StateType.PAUSED:
        update["run_count"] = run.run_count + 1
    if state.type is StateType.RUNNING and run.start_time is None:
        update["start_time"] = now
    if previous.type is StateType.RUNNING and state.type is not StateType.RUNNING:
        update["total_run_time"] = run.total_run_time + max(now - previous.timestamp, timedelta(0))
    if state.is_terminal:
        update["end_time"] = now
    if state.type is StateType.SCHEDULED and state.details.scheduled_time is not None:
        update["expected_start_time"] = state.details.scheduled_time
    return run.model_copy(update=update)
