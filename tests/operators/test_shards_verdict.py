"""The sharded operator judges the job after its last round; a retry's replacement round is cost-guarded."""

from __future__ import annotations

import re
import threading
import time
from decimal import Decimal

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from tests.operators.operator_helpers import check_billed_once
from tests.operators.shard_helpers import FAST, TaskInstance, drive, shard_bodies
from tests.operators.test_shards_rounds import DAY, expire_with_two_answered_each

pytestmark = pytest.mark.timeout(180)


def expire_the_first_shard_with_two_answered(emulator, client) -> threading.Thread:
    """Once the first shard's batch exists, let it answer two requests and expire; then run fast."""

    def act() -> None:
        deadline = time.monotonic() + 60
        while not list(client.list_batches()) and time.monotonic() < deadline:
            time.sleep(0.05)
        emulator.configure(processing_rate=2.5 / DAY)
        emulator.advance(DAY + 10)
        emulator.configure(time_scale=1, processing_rate=1000)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def run_two_shards(emulator, client, capsys, **kwargs) -> tuple[TaskInstance, dict | None, str]:
    """8 requests in 2 shards, one at a time: the first expires with r0, r1 answered, the second completes."""
    emulator.configure(time_scale=0)
    ti = TaskInstance()
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        requests=shard_bodies(8),
        max_requests_per_shard=4,
        max_active_batches=1,
        on_expired="success",
        **FAST,
        **kwargs,
    )
    thread = expire_the_first_shard_with_two_answered(emulator, client)
    try:
        result, _ = drive(operator, {"ti": ti})
        message = capsys.readouterr().out  # the task logger writes to stdout
    except AirflowException as exc:
        result, message = None, str(exc)
    thread.join()
    return ti, result, message


@pytest.mark.parametrize("ratio", [0.7, 0.8])
def test_an_expired_shard_and_a_complete_one_are_judged_as_one_job(
    dashscope_conn, dashscope_emulator, client, capsys, ratio
):
    ti, result, message = run_two_shards(
        dashscope_emulator, client, capsys, resubmit_rounds=0, min_success_ratio=ratio
    )
    assert "Job over 2 batch(es): 6 answered, 0 permanently failed, 2 unanswered." in message
    if ratio == 0.8:
        assert result is None
        assert "Only 75.00% of requests succeeded (6 of 8 requests succeeded over 2 shards)" in message
    else:
        assert result is not None
        assert result["request_counts"] == {"total": 8, "completed": 6, "failed": 2}
    answered = check_billed_once(client, ti.xcoms["batch_ids"])
    assert answered == {"r0", "r1", "r4", "r5", "r6", "r7"}


def test_the_job_ratio_counts_every_round_of_a_shard(dashscope_conn, dashscope_emulator, client, capsys):
    """
    Round 2 of the expired shard answers r2 and fails r3 for good: 7 of 8 answered (87.5 %), where the
    shards' latest batches alone would say 5 of 6 (83.3 %).
    """
    dashscope_emulator.fail_requests(r"^r3$", status=400)
    ti, result, message = run_two_shards(
        dashscope_emulator, client, capsys, resubmit_rounds=1, min_success_ratio=0.85
    )
    assert result is not None, message
    assert result["request_counts"] == {"total": 8, "completed": 7, "failed": 1}
    assert "Job over 3 batch(es): 7 answered, 1 permanently failed, 0 unanswered." in message
    assert "round 2 of ≤2: 2 requests re-sent in 1 shard(s) (6 answered, 0 permanently failed)" in message
    assert check_billed_once(client, ti.xcoms["batch_ids"]) == {f"r{i}" for i in range(8)} - {"r3"}


def test_a_retry_whose_remainders_are_over_budget_uploads_and_creates_nothing(
    dashscope_conn, dashscope_emulator, client
):
    """
    The whole input's estimate fits ``max_cost``; the remainders' estimate plus what the answers so far
    actually cost (their output is longer than the one token expected) does not.
    """
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstance()
    make = lambda **cost: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards",
        requests=shard_bodies(12),
        max_requests_per_shard=4,
        resubmit_rounds=0,
        expected_output_tokens=1,
        **FAST,
        **cost,
    )
    thread = expire_with_two_answered_each(dashscope_emulator, client)
    with pytest.raises(AirflowException, match="expired"):
        drive(make(), {"ti": ti})
    thread.join()
    dashscope_emulator.configure(time_scale=1, processing_rate=1000)
    whole = Decimal(str(ti.xcoms["cost_estimate"]["cost_expected"]))
    before = dashscope_emulator.request_counts()
    with pytest.raises(AirflowFailException) as failed:
        drive(make(max_cost=whole), {"ti": ti})
    assert re.search(
        rf"The next round's estimate [\d.]+ plus the [\d.]+ the answers so far cost exceeds max_cost={whole}",
        str(failed.value),
    )
    assert "(6 answered, 0 permanently failed, 6 unanswered)" in str(failed.value)
    after = dashscope_emulator.request_counts()
    assert after.get("POST /files", 0) == before.get("POST /files", 0)
    assert after.get("POST /batches", 0) == before.get("POST /batches", 0)
    batch_ids = [b.id for b in client.list_batches()]
    assert len(batch_ids) == 3
    assert check_billed_once(client, batch_ids) == {f"r{i}" for i in range(12) if i % 4 < 2}
