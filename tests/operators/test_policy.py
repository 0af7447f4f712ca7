"""The outcome policy and the poll schedule: every branch, no I/O."""

from __future__ import annotations

import random

import pytest

from airflow_provider_dashscope_batch.policy import (
    BatchPoller,
    Outcome,
    OutcomePolicy,
    PollSchedule,
    is_terminal,
)


def batch(status: str, total: int = 10, completed: int = 10, failed: int = 0, **extra) -> dict:
    counts = {"total": total, "completed": completed, "failed": failed}
    return {"id": "batch_x", "status": status, "request_counts": counts, **extra}


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("validating", False),
        ("in_progress", False),
        ("finalizing", False),
        ("cancelling", False),
        ("some_new_status", False),
        (None, False),
        ("completed", True),
        ("failed", True),
        ("expired", True),
        ("cancelled", True),
    ],
)
def test_terminal_statuses(status, terminal):
    assert is_terminal(status) is terminal


@pytest.mark.parametrize(
    ("b", "expected"),
    [
        (batch("completed"), Outcome.SUCCESS),
        (batch("completed", completed=7, failed=3), Outcome.SUCCESS),
        (batch("completed", completed=0, failed=10), Outcome.FAIL),
        (batch("expired", completed=4, failed=0), Outcome.FAIL),
        (batch("cancelled", completed=2), Outcome.FAIL),
        (batch("failed", total=0, completed=0), Outcome.FAIL),
    ],
)
def test_safe_defaults(b, expected):
    assert OutcomePolicy().evaluate(b).outcome is expected


@pytest.mark.parametrize(
    ("param", "b"),
    [
        ("on_partial_failure", batch("completed", completed=7, failed=3)),
        ("on_all_failed", batch("completed", completed=0, failed=10)),
        ("on_expired", batch("expired")),
        ("on_cancelled", batch("cancelled")),
        ("on_failed", batch("failed")),
    ],
)
@pytest.mark.parametrize("outcome", ["success", "fail", "skip"])
def test_each_branch_follows_its_parameter(param, b, outcome):
    verdict = OutcomePolicy(**{param: outcome}).evaluate(b)
    assert verdict.outcome is Outcome(outcome)
    assert "batch_x" in verdict.reason


def test_clean_completion_is_always_success():
    policy = OutcomePolicy(on_partial_failure="fail", on_all_failed="skip")
    assert policy.evaluate(batch("completed")).outcome is Outcome.SUCCESS


def test_failed_reason_names_the_service_errors():
    errors = {"data": [{"code": "mismatched_model", "message": "two models", "line": 3}]}
    reason = OutcomePolicy().evaluate(batch("failed", errors=errors)).reason
    assert "mismatched_model (line 3): two models" in reason


def test_unfinished_batch_cannot_be_judged():
    with pytest.raises(ValueError, match="not finished"):
        OutcomePolicy().evaluate(batch("cancelling"))


def test_bad_outcome_name_is_rejected():
    with pytest.raises(ValueError, match="on_expired='retry'"):
        OutcomePolicy(on_expired="retry")


def poller(**kwargs) -> BatchPoller:
    schedule = kwargs.pop("schedule", PollSchedule(poll_interval=60, max_poll_interval=300, backoff=1.5))
    return BatchPoller(schedule, rng=random.Random(7), **kwargs)


def test_first_poll_is_jittered_within_bounds():
    delays = set()
    for seed in range(200):
        p = BatchPoller(PollSchedule(), rng=random.Random(seed))
        step = p.first_delay(now=0)
        assert step.action == "wait"
        assert 60 <= step.delay <= 240  # poll_interval × (1 + U(0, 3))
        delays.add(round(step.delay))
    assert len(delays) > 50  # spread, not one instant


def test_interval_grows_by_backoff_to_the_cap():
    p = BatchPoller(PollSchedule(jitter=0), rng=random.Random(1))
    p.first_delay(now=0)
    delays = [p.on_status("in_progress", now=0).delay for _ in range(8)]
    assert delays[:4] == pytest.approx([60, 90, 135, 202.5])
    assert delays[-3:] == [300, 300, 300]
    assert delays == sorted(delays)


def test_cancelling_keeps_waiting_and_terminal_stops():
    p = poller()
    p.first_delay(now=0)
    assert p.on_status("cancelling", now=0).action == "wait"
    assert p.on_status("cancelled", now=0).action == "done"


def test_retry_after_pushes_the_next_poll_out():
    p = poller()
    p.first_delay(now=0)
    step = p.on_error("429", transient=True, now=0, retry_after=900)
    assert step.action == "wait"
    assert step.delay == 900


def test_transient_error_budget():
    p = poller(error_budget=2)
    p.first_delay(now=0)
    assert p.on_error("503", transient=True, now=0).action == "wait"
    assert p.on_error("503", transient=True, now=0).action == "wait"
    assert p.on_status("in_progress", now=0).action == "wait"  # a good poll resets the budget
    assert p.on_error("503", transient=True, now=0).action == "wait"
    assert p.on_error("503", transient=True, now=0).action == "wait"
    step = p.on_error("503", transient=True, now=0)
    assert step.action == "error"
    assert "3 consecutive transient errors; last: 503" in step.message


def test_permanent_error_stops_at_once():
    step = poller().on_error("invalid_api_key", transient=False, now=0)
    assert (step.action, step.message) == ("error", "invalid_api_key")


def test_deadline_is_wall_clock_and_clips_the_wait():
    p = poller(deadline=1_000_100.0)
    assert p.first_delay(now=1_000_000.0).delay <= 100
    step = p.on_status("in_progress", now=1_000_090.0)
    assert (step.action, step.delay) == ("wait", pytest.approx(10))
    step = p.on_status("in_progress", now=1_000_100.0)
    assert step.action == "timeout"
    assert "deadline" in step.message
    assert p.on_status("completed", now=1_000_200.0).action == "done"  # terminal wins over the deadline


def test_deadline_already_passed():
    assert poller(deadline=5.0).first_delay(now=10.0).action == "timeout"


def test_schedule_rejects_nonsense():
    with pytest.raises(ValueError, match="poll_interval"):
        PollSchedule(poll_interval=100, max_poll_interval=10)
    with pytest.raises(ValueError, match="backoff"):
        PollSchedule(backoff=0.5)
