"""The wait protocol: outcome policy, poll schedule, progress log, event and kill rule; no I/O."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from enum import Enum
from typing import Any

import pytest

from airflow_provider_dashscope_batch.client.errors import (
    APITimeoutError,
    AuthenticationError,
    RateLimitError,
    ServerError,
)
from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus
from airflow_provider_dashscope_batch.triggers.base import task_instance_state
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


# Exact reasons and log lines, both sides of each schedule limit, seeded jitter, null request counts, a
# deadline met while retrying, the kill rule for every task state.
def batch_with_counts(status: str, counts: dict[str, int] | None = None, **extra: Any) -> Batch:
    return Batch.model_validate({"id": "batch_x", "status": status, "request_counts": counts, **extra})


def counts(total: int, completed: int, failed: int) -> dict[str, int]:
    return {"total": total, "completed": completed, "failed": failed}


# --------------------------------------------------------------------------------------- outcome
@pytest.mark.parametrize(
    ("b", "reason"),
    [
        (
            batch_with_counts("completed", counts(10, 10, 0)),
            "Batch batch_x completed (10 of 10 requests succeeded, 0 failed).",
        ),
        (
            batch_with_counts("completed", None),
            "Batch batch_x completed (0 of 0 requests succeeded, 0 failed).",
        ),
        (
            batch_with_counts("expired", None),
            "Batch batch_x expired before finishing (0 of 0 requests succeeded, 0 failed).",
        ),
        (batch_with_counts("failed", None), "Batch batch_x failed."),
        (batch_with_counts("failed", None, errors={"data": []}), "Batch batch_x failed."),
    ],
    ids=["clean", "null-counts", "null-counts-expired", "failed-no-errors", "failed-empty-errors"],
)
def test_reasons_in_full(b: Batch, reason: str) -> None:
    assert OutcomePolicy().evaluate(b).reason == reason


def test_failed_reason_lists_five_errors_then_how_many_more() -> None:
    data = [{"code": f"e{i}", "message": f"m{i}", "line": i} for i in range(1, 8)]
    reason = OutcomePolicy().evaluate(batch_with_counts("failed", errors={"data": data})).reason
    shown = "; ".join(f"e{i} (line {i}): m{i}" for i in range(1, 6))
    assert reason == f"Batch batch_x failed: {shown}; ... and 2 more"
    five = OutcomePolicy().evaluate(batch_with_counts("failed", errors={"data": data[:5]})).reason
    assert five == f"Batch batch_x failed: {shown}"


def test_failed_reason_with_partial_errors() -> None:
    data = [{"code": "too_many_tasks"}, {"message": "bad line", "line": 2}, {"code": "x", "message": "y"}]
    reason = OutcomePolicy().evaluate(batch_with_counts("failed", errors={"data": data})).reason
    assert reason == "Batch batch_x failed: too_many_tasks:; error (line 2): bad line; x: y"


# --------------------------------------------------------------------------------------- polling
@pytest.mark.parametrize(
    "kwargs",
    [
        {"poll_interval": 0, "max_poll_interval": 0},
        {"poll_interval": 0.5, "max_poll_interval": 0.5},
        {"first_poll_jitter": 0},
        {"first_poll_jitter": 0.5},
        {"jitter": 0},
        {"backoff": 1},
    ],
)
def test_schedule_accepts_its_limits(kwargs: dict[str, float]) -> None:
    PollSchedule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poll_interval": -1}, "Need 0 <= poll_interval <= max_poll_interval."),
        ({"jitter": -0.1}, "Need backoff >= 1 and non-negative jitter."),
        ({"first_poll_jitter": -0.1}, "Need backoff >= 1 and non-negative jitter."),
    ],
)
def test_schedule_rejects_each_bad_value_alone(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        PollSchedule(**kwargs)


def test_jitter_stretches_each_interval_by_its_own_draw() -> None:
    """With jitter on, every delay is ``interval × (1 + U(0, jitter))`` for the seeded draws, in order."""
    schedule = PollSchedule(
        poll_interval=10, max_poll_interval=100, backoff=2, first_poll_jitter=3, jitter=0.5
    )
    p, expected = BatchPoller(schedule, rng=random.Random(11)), random.Random(11)
    assert p.first_delay(now=0).delay == 10 * (1 + expected.uniform(0, 3))
    delays = [p.on_status(BatchStatus.IN_PROGRESS, now=0).delay for _ in range(5)]
    assert delays == [base * (1 + expected.uniform(0, 0.5)) for base in (10, 20, 40, 80, 100)]
    assert all(d > base for d, base in zip(delays, (10, 20, 40, 80, 100), strict=True))


def test_polls_are_counted_into_the_timeout_message() -> None:
    p = BatchPoller(PollSchedule(jitter=0), deadline=1000.0, rng=random.Random(1))
    p.first_delay(now=0)
    for _ in range(3):
        p.on_status(BatchStatus.IN_PROGRESS, now=10)
    step = p.on_status(BatchStatus.IN_PROGRESS, now=1000)
    assert step.message == "Stopped waiting: the deadline (epoch 1000) passed after 4 polls."


def test_less_than_a_second_before_the_deadline_still_waits() -> None:
    p = BatchPoller(PollSchedule(jitter=0), deadline=100.5, rng=random.Random(1))
    step = p.first_delay(now=100)
    assert (step.action, step.delay) == (PollAction.WAIT, 0.5)


def test_an_error_without_retry_after_waits_the_interval_clipped_by_the_deadline() -> None:
    schedule = PollSchedule(poll_interval=0.5, max_poll_interval=0.5, first_poll_jitter=0, jitter=0)
    p = BatchPoller(schedule, deadline=1000.0, rng=random.Random(1))
    p.first_delay(now=0)
    assert p.on_error(ServerError("boom", status_code=503), now=10).delay == 0.5
    assert p.on_error(ServerError("boom", status_code=503, retry_after=30), now=990).delay == 10


# ------------------------------------------------------------------------------------------ wait
class ClockAt1000:
    def __init__(self) -> None:
        self.now = 1000.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_wait(deadline: float | None = None) -> BatchWait:
    schedule = PollSchedule(poll_interval=60, max_poll_interval=60, backoff=1, first_poll_jitter=0, jitter=0)
    poller = BatchPoller(schedule, deadline=deadline, rng=random.Random(3))
    return BatchWait("batch_x", poller, logging.getLogger("test.wait.edges"))


def test_the_loop_retries_under_a_deadline_and_ends_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.wait.edges")
    clock, reads = (
        ClockAt1000(),
        iter([ServerError("boom", status_code=503), batch_with_counts("completed", counts(10, 7, 2))]),
    )

    def read() -> Batch:
        item = next(reads)
        if isinstance(item, Exception):
            raise item
        return item

    event = wait_for_batch(read, make_wait(deadline=5000.0), sleep=clock.sleep, clock=lambda: clock.now)
    assert (event.kind, event.batch_id, event.message) == (
        WaitEventKind.TERMINAL,
        "batch_x",
        "Batch batch_x is completed.",
    )
    assert event.batch == batch_with_counts("completed", counts(10, 7, 2))
    assert [r.getMessage() for r in caplog.records] == [
        "Polling batch batch_x failed (boom (HTTP 503)); next poll in 60 s",
        "Batch batch_x is completed: 9 of 10 requests done, 2 failed",
    ]


def test_a_permanent_error_is_not_logged_as_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.wait.edges")
    wait = make_wait()
    step = wait.on_error(AuthenticationError("invalid_api_key", status_code=401), now=0)
    assert step.action is PollAction.ERROR
    assert caplog.records == []
    event = wait.event(step)
    assert (event.kind, event.batch_id, event.message) == (
        WaitEventKind.ERROR,
        "batch_x",
        "Waiting for batch batch_x failed: invalid_api_key (HTTP 401)",
    )


def test_a_timeout_between_progress_lines_keeps_the_last_read() -> None:
    wait = make_wait(deadline=1100.0)
    wait.start(1000)
    assert (
        wait.on_read(
            BatchStatus.IN_PROGRESS, 1060, lambda: batch_with_counts("in_progress", counts(10, 1, 0))
        ).delay
        == 40
    )
    step = wait.on_read(
        BatchStatus.IN_PROGRESS, 1100, lambda: batch_with_counts("in_progress", counts(10, 5, 0))
    )
    event = wait.event(step)
    assert (event.kind, event.batch_id) == (WaitEventKind.TIMEOUT, "batch_x")
    assert event.batch == batch_with_counts("in_progress", counts(10, 5, 0))


# ----------------------------------------------------------------------------------------- event
def test_terminal_event_needs_its_terminal_batch_and_says_so() -> None:
    message = "A terminal event for batch batch_x needs its terminal batch."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        WaitEvent(WaitEventKind.TERMINAL, "batch_x", None, "")


def test_payload_is_plain_json_and_message_defaults_to_empty() -> None:
    payload = WaitEvent(
        WaitEventKind.TERMINAL, "batch_x", batch_with_counts("completed"), "done"
    ).to_payload()
    assert type(payload["batch"]["status"]) is str  # JSON mode: no enum crosses the triggerer boundary
    del payload["message"]
    assert WaitEvent.from_payload(payload).message == ""
    message = "Unexpected event from the DashScope batch trigger: ['terminal'] (not a mapping)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        WaitEvent.from_payload(["terminal"])


# ------------------------------------------------------------------------------------- user action
@pytest.mark.parametrize(
    ("state", "cancel", "why"),
    [
        ("failed", True, "Cancelling batch b1: the task was marked failed."),
        *(
            (
                state,
                False,
                f"The task was marked {state} while batch b1 is unfinished: the batch keeps running and its "
                "results stay downloadable; cancel it (DashScopeCancelBatchOperator) if they are not wanted.",
            )
            for state in ("success", "skipped")
        ),
        (None, False, "Not cancelling batch b1: the task's state is unknown, so a new try may own it."),
        *(
            (
                state,
                False,
                f"Not cancelling batch b1: the task instance is now '{state}' (cleared, retried or shutting "
                "down), and its next try re-attaches to the batch.",
            )
            for state in ("running", "up_for_retry", "scheduled", "restarting")
        ),
    ],
)
def test_kill_decision_for_each_task_state(state: str | None, cancel: bool, why: str) -> None:
    assert kill_decision(state, "b1") == (cancel, why)


class TaskState(Enum):  # like Airflow's TaskInstanceState, read by its value
    FAILED = "failed"


class StateReader:
    """A task instance as the Task SDK hands it over: ids, and ``get_task_states`` over the API channel.

    A stand-in for the channel (a real one needs a running task runner); the real path is exercised by the
    operator and trigger ``on_kill`` tests.
    """

    def __init__(self, map_index: int | None, states: dict[str, dict[str, Any]]) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "d", "t", "r1", map_index
        self.states, self.calls = states, []

    def get_task_states(self, **query: Any) -> dict[str, dict[str, Any]]:
        self.calls.append(query)
        return self.states


@pytest.mark.parametrize(
    ("map_index", "key"), [(None, "t"), (-1, "t"), (0, "t_0"), (3, "t_3")], ids=["unmapped", "-1", "0", "3"]
)
def test_task_instance_state_reads_the_instances_own_key(map_index: int | None, key: str) -> None:
    ti = StateReader(map_index, {"r1": {key: TaskState.FAILED, "other": "success"}, "r0": {key: "success"}})
    assert task_instance_state(ti) == "failed"  # an enum is read by its value
    assert ti.calls == [{"dag_id": "d", "task_ids": ["t"], "run_ids": ["r1"], "map_index": map_index}]
    assert task_instance_state(StateReader(map_index, {"r1": {key: "up_for_retry"}})) == "up_for_retry"
    assert task_instance_state(StateReader(map_index, {"r1": {"other": "failed"}})) is None
    assert task_instance_state(StateReader(map_index, {})) is None


def test_task_instance_state_is_unknown_outside_a_task_runner() -> None:
    class Record:  # a workload record without get_task_states; no Task SDK channel in a test process
        dag_id, task_id, run_id, map_index = "d", "t", "r1", None

    assert task_instance_state(Record()) is None
