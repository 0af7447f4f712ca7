"""The wait protocol at its edges: exact reasons and log lines, both sides of each schedule limit, jitter
on (seeded), null request counts, a deadline met while retrying, and the kill rule for every task state.

Found by mutation testing (``.ci/mutation waiting``): each test pins a behaviour a changed constant or
condition would break unnoticed by ``test_waiting.py``.
"""

from __future__ import annotations

import logging
import random
import re
from enum import Enum
from typing import Any

import pytest

from airflow_provider_dashscope_batch.client.errors import AuthenticationError, ServerError
from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus
from airflow_provider_dashscope_batch.triggers.base import task_instance_state
from airflow_provider_dashscope_batch.waiting.protocol import (
    BatchPoller,
    BatchWait,
    OutcomePolicy,
    PollAction,
    PollSchedule,
    WaitEvent,
    WaitEventKind,
    kill_decision,
    wait_for_batch,
)


def batch(status: str, counts: dict[str, int] | None = None, **extra: Any) -> Batch:
    return Batch.model_validate({"id": "batch_x", "status": status, "request_counts": counts, **extra})


def counts(total: int, completed: int, failed: int) -> dict[str, int]:
    return {"total": total, "completed": completed, "failed": failed}


# --------------------------------------------------------------------------------------- outcome
@pytest.mark.parametrize(
    ("b", "reason"),
    [
        (
            batch("completed", counts(10, 10, 0)),
            "Batch batch_x completed (10 of 10 requests succeeded, 0 failed).",
        ),
        (batch("completed", None), "Batch batch_x completed (0 of 0 requests succeeded, 0 failed)."),
        (
            batch("expired", None),
            "Batch batch_x expired before finishing (0 of 0 requests succeeded, 0 failed).",
        ),
        (batch("failed", None), "Batch batch_x failed."),
        (batch("failed", None, errors={"data": []}), "Batch batch_x failed."),
    ],
    ids=["clean", "null-counts", "null-counts-expired", "failed-no-errors", "failed-empty-errors"],
)
def test_reasons_in_full(b: Batch, reason: str) -> None:
    assert OutcomePolicy().evaluate(b).reason == reason


def test_failed_reason_lists_five_errors_then_how_many_more() -> None:
    data = [{"code": f"e{i}", "message": f"m{i}", "line": i} for i in range(1, 8)]
    reason = OutcomePolicy().evaluate(batch("failed", errors={"data": data})).reason
    shown = "; ".join(f"e{i} (line {i}): m{i}" for i in range(1, 6))
    assert reason == f"Batch batch_x failed: {shown}; ... and 2 more"
    five = OutcomePolicy().evaluate(batch("failed", errors={"data": data[:5]})).reason
    assert five == f"Batch batch_x failed: {shown}"


def test_failed_reason_with_partial_errors() -> None:
    data = [{"code": "too_many_tasks"}, {"message": "bad line", "line": 2}, {"code": "x", "message": "y"}]
    reason = OutcomePolicy().evaluate(batch("failed", errors={"data": data})).reason
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
class Clock:
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
    clock, reads = Clock(), iter([ServerError("boom", status_code=503), batch("completed", counts(10, 7, 2))])

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
    assert event.batch == batch("completed", counts(10, 7, 2))
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
        wait.on_read(BatchStatus.IN_PROGRESS, 1060, lambda: batch("in_progress", counts(10, 1, 0))).delay
        == 40
    )
    step = wait.on_read(BatchStatus.IN_PROGRESS, 1100, lambda: batch("in_progress", counts(10, 5, 0)))
    event = wait.event(step)
    assert (event.kind, event.batch_id) == (WaitEventKind.TIMEOUT, "batch_x")
    assert event.batch == batch("in_progress", counts(10, 5, 0))


# ----------------------------------------------------------------------------------------- event
def test_terminal_event_needs_its_terminal_batch_and_says_so() -> None:
    message = "A terminal event for batch batch_x needs its terminal batch."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        WaitEvent(WaitEventKind.TERMINAL, "batch_x", None, "")


def test_payload_is_plain_json_and_message_defaults_to_empty() -> None:
    payload = WaitEvent(WaitEventKind.TERMINAL, "batch_x", batch("completed"), "done").to_payload()
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
