"""The flow-run rules, one decision at a time (pure: no store, no clock but the one given)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from overcast.core.models import FlowRun, RetryPolicy, flow_id_for
from overcast.core.orchestration import Decision, apply, decide
from overcast.core.states import (
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    Late,
    Paused,
    Pending,
    Running,
    Scheduled,
    State,
    StateType,
    Suspended,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def run_in(state: State, *, retries: int = 0, run_count: int = 0, deployment: bool = False) -> FlowRun:
    return FlowRun(
        name="r",
        flow_id=flow_id_for("f"),
        flow_name="f",
        state=state,
        retry_policy=RetryPolicy(retries=retries, retry_delay_seconds=30),
        run_count=run_count,
        expected_start_time=NOW,
        deployment_id=uuid.uuid4() if deployment else None,
    )


@pytest.mark.parametrize(
    ("current", "proposed", "decision"),
    [
        (Pending(), Running(), Decision.ACCEPT),
        (Running(), Completed(), Decision.ACCEPT),
        (Running(), Failed("boom"), Decision.ACCEPT),
        (Scheduled(NOW), Pending(), Decision.ACCEPT),
        (Pending(), Pending(), Decision.ABORT),  # another runner claimed it
        (Running(), Pending(), Decision.ABORT),
        (Running(), Running(), Decision.ABORT),  # another runner started it
        (Completed(), Running(), Decision.ABORT),
        (Failed(), Completed(), Decision.ABORT),
        (Completed(), Scheduled(NOW), Decision.ABORT),  # no deployment to run it again
        (Cancelling(), Completed(), Decision.ABORT),
        (Cancelling(), Cancelled(), Decision.ACCEPT),
        (Running(), Late(NOW), Decision.REJECT),
        (Scheduled(NOW), Late(NOW), Decision.ACCEPT),
        (Pending(), Paused(), Decision.REJECT),
        (Running(), Paused(timeout_s=60), Decision.ACCEPT),
        (Paused(), Running(), Decision.ACCEPT),
    ],
)
def test_transition_table(current: State, proposed: State, decision: Decision) -> None:
    verdict = decide(run_in(current), proposed, now=NOW)
    assert verdict.decision is decision, verdict.reason
    assert (verdict.write is not None) == (decision is Decision.ACCEPT)
    if decision is not Decision.ACCEPT:
        assert verdict.reason


def test_a_replayed_state_is_rejected_without_writing() -> None:
    current = Running()
    verdict = decide(run_in(current), current, now=NOW)
    assert verdict.decision is Decision.REJECT and verdict.write is None
    same_transition = Completed()
    same_transition.details.transition_id = uuid.uuid4()
    stored = same_transition.model_copy(update={"id": uuid.uuid4()})
    assert decide(run_in(stored), same_transition, now=NOW).decision is Decision.REJECT


def test_a_finished_deployment_run_may_be_scheduled_again() -> None:
    verdict = decide(run_in(Failed(), deployment=True), Scheduled(NOW), now=NOW)
    assert verdict.decision is Decision.ACCEPT


def test_starting_before_the_scheduled_time_waits() -> None:
    verdict = decide(run_in(Scheduled(NOW + timedelta(minutes=10))), Running(), now=NOW)
    assert verdict.decision is Decision.WAIT
    assert verdict.wait_s == pytest.approx(600)
    assert (
        decide(run_in(Scheduled(NOW + timedelta(milliseconds=500))), Running(), now=NOW).decision
        is Decision.ACCEPT
    )


def test_cancelling_a_run_with_no_process_cancels_it_at_once() -> None:
    for idle in (Scheduled(NOW), Suspended()):
        verdict = decide(run_in(idle), Cancelling(), now=NOW)
        assert verdict.decision is Decision.ACCEPT and verdict.write is not None
        assert verdict.write.type is StateType.CANCELLED
    running = decide(run_in(Running()), Cancelling(), now=NOW)
    assert running.write is not None and running.write.type is StateType.CANCELLING


@pytest.mark.parametrize("failure", [Failed("boom"), Crashed("lease lapsed")])
def test_failures_with_retries_left_become_awaiting_retry(failure: State) -> None:
    verdict = decide(run_in(Running(), retries=2, run_count=2), failure, now=NOW)
    assert verdict.decision is Decision.REJECT
    assert verdict.write is not None
    assert (verdict.write.type, verdict.write.name) == (StateType.SCHEDULED, "AwaitingRetry")
    assert verdict.write.details.scheduled_time == NOW + timedelta(seconds=30)
    assert "attempt 2 of 3" in (verdict.write.message or "")
    out_of_retries = decide(run_in(Running(), retries=2, run_count=3), failure, now=NOW)
    assert out_of_retries.decision is Decision.ACCEPT


def test_a_failure_marked_not_retriable_is_not_retried() -> None:
    failure = Failed("bad input")
    failure.details.retriable = False
    assert decide(run_in(Running(), retries=5, run_count=1), failure, now=NOW).decision is Decision.ACCEPT


def test_force_overrides_the_rules_but_not_duplicates() -> None:
    assert decide(run_in(Completed()), Running(), now=NOW, force=True).decision is Decision.ACCEPT
    state = Running()
    assert decide(run_in(state), state, now=NOW, force=True).decision is Decision.REJECT


def test_written_states_carry_the_deciders_clock() -> None:
    proposed = Running().model_copy(update={"timestamp": NOW - timedelta(days=3)})
    verdict = decide(run_in(Pending()), proposed, now=NOW)
    assert verdict.write is not None and verdict.write.timestamp == NOW


def test_apply_counts_runs_and_times() -> None:
    run = run_in(Pending())
    run = apply(run, Running().model_copy(update={"timestamp": NOW}), NOW)
    assert (run.run_count, run.start_time) == (1, NOW)
    later = NOW + timedelta(seconds=90)
    run = apply(run, Paused().model_copy(update={"timestamp": later}), later)
    run = apply(
        run, Running().model_copy(update={"timestamp": later}), later
    )  # a resume is not a new attempt
    assert run.run_count == 1
    end = later + timedelta(seconds=10)
    run = apply(run, Completed(), end)
    assert run.end_time == end and run.total_run_time == timedelta(seconds=100)
    rescheduled = apply(run_in(Failed(), deployment=True), Scheduled(NOW + timedelta(hours=1)), NOW)
    assert rescheduled.expected_start_time == NOW + timedelta(hours=1)


def test_state_names_must_match_their_type() -> None:
    with pytest.raises(ValueError, match="must be SCHEDULED"):
        State(type=StateType.RUNNING, name="AwaitingRetry")
    assert State(type=StateType.RUNNING, name="MyCustomName").name == "MyCustomName"
