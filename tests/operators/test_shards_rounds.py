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
from tests.operators.shard_helpers import FAST, TaskInstance, drive, shard_bodies
from tests.operators.test_create_rounds import check_billed_once, table_ids

pytestmark = pytest.mark.timeout(180)

DAY = 86400


def test_a_retry_after_expired_shards_sends_each_shards_remainder_only(
    dashscope_conn, dashscope_emulator, client, tmp_path
):
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstance()
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards", requests=shard_bodies(12), max_requests_per_shard=4, **FAST
    )

    def expire_with_two_answered_each() -> None:
        deadline = time.monotonic() + 60
        while len(list(client.list_batches())) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        dashscope_emulator.configure(processing_rate=2.5 / DAY)
        dashscope_emulator.advance(DAY + 10)

    thread = threading.Thread(target=expire_with_two_answered_each, daemon=True)
    thread.start()
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
