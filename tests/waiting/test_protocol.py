"""The wait protocol: outcome policy, poll schedule, progress log, event and kill rule; no I/O."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest

from airflow_provider_dashscope_batch.client.errors import (
    APITimeoutError,
    AuthenticationError,
    RateLimitError,
    ServerError,
)
from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus
from airflow_provider_dashscope_batch.waiting.protocol import (
    BatchPoller,
    BatchWait,
    Outcome,
    OutcomePolicy,
    PollAction,
    PollSchedule,
    WaitEvent,
    WaitEventKind,
    kill_decision,
    wait_for_batch,
)


def batch(status: str, total: int = 10, completed: int = 10, failed: int = 0, **extra) -> Batch:
    counts = {"total": total, "completed": completed, "failed": failed}
    return Batch.model_validate({"id": "batch_x", "status": status, "request_counts": counts, **extra})


def server_error(retry_after: float | None = None) -> ServerError:
    return ServerError("boom", status_code=503, retry_after=retry_after)


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


@pytest.mark.parametrize("status", ["cancelling", "in_progress", "some_new_status"])
def test_unfinished_batch_cannot_be_judged(status):
    with pytest.raises(ValueError, match="not finished"):
        OutcomePolicy().evaluate(batch(status))


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
        assert step.action is PollAction.WAIT
        assert 60 <= step.delay <= 240  # poll_interval × (1 + U(0, 3))
        delays.add(round(step.delay))
    assert len(delays) > 50  # spread, not one instant


def test_interval_grows_by_backoff_to_the_cap():
    p = BatchPoller(PollSchedule(jitter=0), rng=random.Random(1))
    p.first_delay(now=0)
    delays = [p.on_status(BatchStatus.IN_PROGRESS, now=0).delay for _ in range(8)]
    assert delays[:4] == pytest.approx([60, 90, 135, 202.5])
    assert delays[-3:] == [300, 300, 300]
    assert delays == sorted(delays)


def test_cancelling_keeps_waiting_and_terminal_stops():
    p = poller()
    p.first_delay(now=0)
    assert p.on_status(BatchStatus.CANCELLING, now=0).action is PollAction.WAIT
    assert p.on_status(BatchStatus.CANCELLED, now=0).action is PollAction.DONE


def test_retry_after_pushes_the_next_poll_out():
    p = poller()
    p.first_delay(now=0)
    step = p.on_error(RateLimitError("slow down", status_code=429, retry_after=900), now=0)
    assert step.action is PollAction.WAIT
    assert step.delay == 900


@pytest.mark.parametrize(
    "error",
    [
        ServerError("boom", status_code=503),
        RateLimitError("slow down", status_code=429),
        APITimeoutError("read timed out"),
        AuthenticationError("request timeout", status_code=408, retryable=True),  # the error's own verdict
    ],
    ids=["503", "429", "timeout", "408"],
)
def test_retryable_errors_are_retried(error):
    p = poller()
    p.first_delay(now=0)
    assert p.on_error(error, now=0).action is PollAction.WAIT


def test_transient_error_budget():
    p = poller(error_budget=2)
    p.first_delay(now=0)
    assert p.on_error(server_error(), now=0).action is PollAction.WAIT
    assert p.on_error(server_error(), now=0).action is PollAction.WAIT
    assert p.on_status(BatchStatus.IN_PROGRESS, now=0).action is PollAction.WAIT  # a good poll resets it
    assert p.on_error(server_error(), now=0).action is PollAction.WAIT
    assert p.on_error(server_error(), now=0).action is PollAction.WAIT
    step = p.on_error(server_error(), now=0)
    assert step.action is PollAction.ERROR
    assert "3 consecutive transient errors; last: boom" in step.message


def test_permanent_error_stops_at_once():
    step = poller().on_error(AuthenticationError("invalid_api_key", status_code=401), now=0)
    assert step.action is PollAction.ERROR
    assert "invalid_api_key" in step.message


def test_deadline_is_wall_clock_and_clips_the_wait():
    p = poller(deadline=1_000_100.0)
    assert p.first_delay(now=1_000_000.0).delay <= 100
    step = p.on_status(BatchStatus.IN_PROGRESS, now=1_000_090.0)
    assert (step.action, step.delay) == (PollAction.WAIT, pytest.approx(10))
    step = p.on_status(BatchStatus.IN_PROGRESS, now=1_000_100.0)
    assert step.action is PollAction.TIMEOUT
    assert "deadline" in step.message
    assert p.on_status(BatchStatus.COMPLETED, now=1_000_200.0).action is PollAction.DONE  # terminal wins


def test_deadline_already_passed():
    assert poller(deadline=5.0).first_delay(now=10.0).action is PollAction.TIMEOUT


def test_schedule_rejects_nonsense():
    with pytest.raises(ValueError, match="poll_interval"):
        PollSchedule(poll_interval=100, max_poll_interval=10)
    with pytest.raises(ValueError, match="backoff"):
        PollSchedule(backoff=0.5)


# ----------------------------------------------------------------------------------------- event
@pytest.mark.parametrize(
    "event",
    [
        WaitEvent(WaitEventKind.TERMINAL, "batch_x", batch("completed"), "Batch batch_x is completed."),
        WaitEvent(WaitEventKind.TIMEOUT, "batch_x", batch("in_progress"), "deadline passed"),
        WaitEvent(WaitEventKind.ERROR, "batch_x", None, "HTTP 401"),
    ],
)
def test_event_round_trips_through_its_json_payload(event):
    payload = event.to_payload()
    assert payload["status"] == event.kind.value
    assert WaitEvent.from_payload(payload) == event


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {"status": "bogus", "batch_id": "b"},
        {"status": "terminal", "batch_id": "b", "batch": None, "message": ""},  # terminal needs its batch
        {"status": "terminal", "batch_id": "b", "batch": {"id": "b", "status": "in_progress"}},
        {"batch_id": "b"},
    ],
)
def test_malformed_payloads_are_rejected(payload):
    with pytest.raises(ValueError, match="Unexpected event"):
        WaitEvent.from_payload(payload)


# ------------------------------------------------------------------------------------------ wait
class Clock:
    """A fake clock for the in-process loop: ``sleep`` moves it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_wait(reads: list, *, deadline: float | None = None, interval: float = 60) -> WaitEvent:
    clock = Clock()
    pending = iter(reads)

    def read() -> Batch:
        item = next(pending)
        if isinstance(item, Exception):
            raise item
        return item

    schedule = PollSchedule(poll_interval=interval, max_poll_interval=interval, backoff=1, jitter=0)
    wait = BatchWait(
        "batch_x",
        BatchPoller(schedule, deadline=deadline, rng=random.Random(3)),
        logging.getLogger("test.wait"),
    )
    return wait_for_batch(read, wait, sleep=clock.sleep, clock=lambda: clock.now)


def test_the_loop_ends_in_a_terminal_event():
    event = run_wait([batch("in_progress", completed=3), server_error(), batch("completed")])
    assert event.kind is WaitEventKind.TERMINAL
    assert event.batch == batch("completed")


def test_the_loop_ends_in_an_error_event_on_a_permanent_error():
    event = run_wait([batch("in_progress"), AuthenticationError("invalid_api_key", status_code=401)])
    assert event.kind is WaitEventKind.ERROR
    assert event.batch == batch("in_progress")  # the last batch read
    assert "invalid_api_key" in event.message


def test_the_loop_ends_in_a_timeout_event():
    event = run_wait([batch("in_progress")] * 100, deadline=1_000_000.0 + 3600)
    assert event.kind is WaitEventKind.TIMEOUT
    assert "deadline" in event.message


def test_progress_is_logged_on_change_and_at_most_every_few_minutes(caplog):
    caplog.set_level(logging.INFO, logger="test.wait")
    reads = [batch("validating", completed=0)] + [
        batch("in_progress", total=1000, completed=n, failed=0) for n in range(1, 200)
    ]
    reads.append(batch("completed", total=1000, completed=1000))
    run_wait(reads, interval=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.wait"]
    # 201 polls 10 s apart: a line per status change (3) plus one per 300 s of the 2000 s in progress
    assert lines[0] == "Batch batch_x is validating: 0 of 10 requests done, 0 failed"
    assert lines[1] == "Batch batch_x is in_progress: 1 of 1000 requests done, 0 failed"
    assert lines[2] == "Batch batch_x is in_progress: 31 of 1000 requests done, 0 failed"  # 300 s later
    assert lines[-1] == "Batch batch_x is completed: 1000 of 1000 requests done, 0 failed"
    assert len(lines) == 3 + 6


# ------------------------------------------------------------------------------------- user action
@pytest.mark.parametrize(
    ("state", "cancels"),
    [
        ("failed", True),  # mark failed (task or run)
        ("success", False),  # mark success: the batch keeps running, with a warning naming it
        ("skipped", False),
        (None, False),  # cleared (state reset) or unreadable
        ("scheduled", False),  # cleared: the next try is on its way
        ("queued", False),
        ("running", False),  # the next try runs (trigger) or the worker shuts down (in-process)
        ("deferred", False),  # the next try re-attached and deferred again
        ("restarting", False),  # cleared while running in-process
        ("up_for_retry", False),
    ],
)
def test_only_a_task_marked_failed_cancels_its_batch(state, cancels):
    cancel, why = kill_decision(state, "batch_x")
    assert cancel is cancels
    assert "batch_x" in why


def test_a_read_known_by_its_status_builds_the_batch_only_when_the_wait_needs_it(caplog):
    caplog.set_level(logging.INFO, logger="test.wait")
    schedule = PollSchedule(poll_interval=5, max_poll_interval=5, backoff=1, jitter=0)
    poller = BatchPoller(schedule, rng=random.Random(3))
    wait = BatchWait("batch_x", poller, logging.getLogger("test.wait"), progress_interval=60)
    built: list[str] = []

    def builder(status: str, completed: int) -> Callable[[], Batch]:
        def build() -> Batch:
            built.append(f"{status}:{completed}")
            return batch(status, total=10, completed=completed)

        return build

    now = 1_000_000.0
    for status, completed in [("validating", 0), ("in_progress", 1), ("in_progress", 2), ("in_progress", 3)]:
        now += 5
        step = wait.on_read(BatchStatus(status), now, builder(status, completed))
        assert step.action is PollAction.WAIT
    assert built == ["validating:0", "in_progress:1"]  # each status change, for its progress line
    assert wait.batch is None  # and nothing kept while the wait goes on
    now += 61
    wait.on_read(BatchStatus.IN_PROGRESS, now, builder("in_progress", 7))
    assert built[-1] == "in_progress:7"  # a minute of silence: built for the progress line
    step = wait.on_read(BatchStatus.COMPLETED, now + 5, builder("completed", 10))
    assert step.action is PollAction.DONE
    assert wait.batch == batch("completed", total=10, completed=10)  # the end: kept for the event
    assert wait.event(step).batch == wait.batch
    assert len([r for r in caplog.records if r.name == "test.wait"]) == 4
