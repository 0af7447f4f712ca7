"""The sharded operator's retries keep every shard's answers and send only its remainder."""

from __future__ import annotations

import threading
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)
from tests.operators.operator_helpers import check_billed_once, table_ids
from tests.operators.shard_helpers import FAST, TaskInstance, drive, shard_bodies

pytestmark = pytest.mark.timeout(180)

DAY = 86400


def expire_with_two_answered_each(emulator, client, then_fast: bool = False) -> threading.Thread:
    """Once the three shards' batches exist, let each answer two requests and expire."""

    def act() -> None:
        deadline = time.monotonic() + 60
        while len(list(client.list_batches())) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        emulator.configure(processing_rate=2.5 / DAY)
        emulator.advance(DAY + 10)
        if then_fast:
            emulator.configure(time_scale=1, processing_rate=1000)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_expired_shards_are_finished_by_one_round_of_their_remainders(
    dashscope_conn, dashscope_emulator, client
):
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstance()
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(12), max_requests_per_shard=4, **FAST
    )
    thread = expire_with_two_answered_each(dashscope_emulator, client, then_fast=True)
    result, _ = drive(operator, {"ti": ti})
    thread.join()
    batch_ids = ti.xcoms["batch_ids"]
    batches = [client.retrieve_batch(b) for b in batch_ids]
    assert [(b.status, b.request_counts.total) for b in batches] == [("expired", 4), ("completed", 2)] * 3
    assert [s["generation"] for s in result["shards"]] == [2, 2, 2]
    assert batches[1].metadata["idempotency_key"].endswith("-g2")
    assert check_billed_once(client, batch_ids) == {f"r{i}" for i in range(12)}


def test_a_retry_after_expired_shards_sends_each_shards_remainder_only(
    dashscope_conn, dashscope_emulator, client, tmp_path
):
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstance()
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards", requests=shard_bodies(12), max_requests_per_shard=4, resubmit_rounds=0, **FAST
    )
    thread = expire_with_two_answered_each(dashscope_emulator, client)
    with pytest.raises(AirflowException, match="expired"):
        drive(make(), {"ti": ti})
    thread.join()
    dashscope_emulator.configure(time_scale=1, processing_rate=1000)
    result, _ = drive(make(), {"ti": ti})
    batch_ids = ti.xcoms["batch_ids"]
    assert result["batch_ids"] == batch_ids
    batches = [client.retrieve_batch(b) for b in batch_ids]
    assert [(b.status, b.request_counts.total) for b in batches] == [("expired", 4), ("completed", 2)] * 3
    assert check_billed_once(client, batch_ids) == {f"r{i}" for i in range(12)}
    transfer = DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer", batch_ids=batch_ids, destination=tmp_path.as_uri(), result_set="job"
    )
    transfer.execute({"ti": TaskInstance()})
    rows = table_ids(tmp_path / "job", "jsonl")
    assert sorted(rows["output"]) == sorted(f"r{i}" for i in range(12))
    assert rows["errors"] == []
