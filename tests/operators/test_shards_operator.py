"""The sharding operators against the emulator: split, fan-out under the cap, resume, validation, timeout."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred
from shard_helpers import FAST, TaskInstance, drive, shard_bodies

from airflow_provider_dashscope_batch.operators.shards import (
    JOB_XCOM_KEY,
    DashScopeShardedBatchOperator,
    DashScopeSplitRequestsOperator,
)
from airflow_provider_dashscope_batch.validation.lines import MAX_LINE_BYTES


def test_input_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one"):
        DashScopeShardedBatchOperator(task_id="t", file="a.jsonl", csv="b.csv", model="m")
    with pytest.raises(ValueError, match="csv= needs model="):
        DashScopeSplitRequestsOperator(task_id="t", csv="b.csv", destination="/tmp/x")
    with pytest.raises(ValueError, match="max_active_batches"):
        DashScopeShardedBatchOperator(task_id="t", file="a.jsonl", max_active_batches=0)


def test_split_operator_writes_shards_and_describes_them(tmp_path):
    ti = TaskInstance()
    operator = DashScopeSplitRequestsOperator(
        task_id="split",
        requests=shard_bodies(250),
        destination=str(tmp_path / "shards"),
        max_requests_per_shard=100,
    )
    uris = operator.execute({"ti": ti})
    assert uris == [str(tmp_path / "shards" / f"shard-0000{i}.jsonl") for i in range(3)]
    split = ti.xcoms["split"]
    assert (split["requests"], split["model"]) == (250, "qwen-plus")
    assert [s["first_line"] for s in split["shards"]] == [1, 101, 201]


def test_the_cap_holds_back_shards_until_a_slot_frees(dashscope_conn, dashscope_emulator, client):
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        requests=shard_bodies(250),
        max_requests_per_shard=100,
        max_active_batches=1,
        **FAST,
    )
    ti = TaskInstance()
    result, triggers = drive(operator, {"ti": ti})
    assert [(t.until, len(t.batch_ids)) for t in triggers] == [("any", 1), ("any", 1), ("all", 1)]
    assert result["request_counts"] == {"total": 250, "completed": 250, "failed": 0}
    assert [s["requests"] for s in result["shards"]] == [100, 100, 50]
    assert dashscope_emulator.request_counts()["POST /batches"] == 3
    created = list(reversed(list(client.list_batches())))  # oldest first
    assert [b.id for b in created] == result["batch_ids"]  # one at a time, in input order
    assert all(str(b.metadata["idempotency_key"]).endswith("-g1") for b in created)
    # the job's estimate, also on the shards created after a deferral
    ceiling = Decimal(ti.xcoms["cost_estimate"]["cost_ceiling"])
    assert {b.metadata["airflow_estimated_cost"] for b in created} == {f"{ceiling:.4f} CNY ceiling"}


def test_a_new_try_re_attaches_to_running_batches(dashscope_conn, dashscope_emulator):
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstance()
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards", requests=shard_bodies(250), max_requests_per_shard=100, **FAST
    )
    with pytest.raises(TaskDeferred):
        make().execute({"ti": ti})
    first = [r["batch"]["id"] for r in ti.xcoms[JOB_XCOM_KEY]["runs"]]
    dashscope_emulator.configure(time_scale=1)  # the first try's worker died; the batches carry on
    result, _ = drive(make(), {"ti": ti})
    assert result["batch_ids"] == first
    assert dashscope_emulator.request_counts()["POST /batches"] == 3
    assert dashscope_emulator.request_counts()["POST /files"] == 3


def test_a_bad_line_creates_no_batch_and_deletes_this_tries_uploads(dashscope_conn, dashscope_emulator):
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(250, duplicate_at=240), max_requests_per_shard=100
    )
    with pytest.raises(
        AirflowFailException, match='line 240: duplicate_custom_id: custom_id "r0" already used on line 1'
    ):
        operator.execute({"ti": TaskInstance()})
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["DELETE /files/{file_id}"]) == (2, 2)
    assert "POST /batches" not in counts


def test_a_line_over_6_mib_fails_before_any_upload(dashscope_conn, dashscope_emulator, tmp_path):
    head = '{"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions", "body": {"model": '
    head += '"qwen-plus", "input": "'
    big = head + "x" * (MAX_LINE_BYTES + 1 - len(head) - 3) + '"}}'
    assert len(big) == MAX_LINE_BYTES + 1  # 6 MiB + 1 byte, then LF: the upload operator rejects it
    small = head.replace('"r2"', '"r1"') + 'hi"}}'
    (tmp_path / "in.jsonl").write_text(f"{small}\n{big}\n")
    operator = DashScopeShardedBatchOperator(task_id="run_shards", file=str(tmp_path / "in.jsonl"))
    with pytest.raises(
        AirflowFailException, match=r"in\.jsonl line 2: line_too_large: line is 6,291,457 bytes"
    ):
        operator.execute({"ti": TaskInstance()})
    counts = dashscope_emulator.request_counts()
    assert "POST /files" not in counts
    assert "POST /batches" not in counts


def test_a_malformed_response_format_fails_before_any_upload(dashscope_conn, dashscope_emulator):
    requests = shard_bodies(250)
    requests[180]["body"]["response_format"] = {"type": "json_schema", "json_schema": {"name": "v"}}
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=requests, max_requests_per_shard=100
    )
    with pytest.raises(
        AirflowFailException, match=r"line 181: invalid_response_format: body\.response_format"
    ):
        operator.execute({"ti": TaskInstance()})
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["DELETE /files/{file_id}"]) == (1, 1)  # the first shard's, deleted
    assert "POST /batches" not in counts


def test_a_files_lines_name_the_endpoint_as_for_the_upload_operator(dashscope_conn, client, tmp_path):
    lines = [
        {
            "custom_id": f"t{i}",
            "method": "POST",
            "url": "/v1/chat/ds-test",
            "body": {"model": "batch-test-model", "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(150)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    operator = DashScopeShardedBatchOperator(task_id="run_shards", file=str(tmp_path / "in.jsonl"), **FAST)
    result, _ = drive(operator, {"ti": TaskInstance()})
    assert [s["requests"] for s in result["shards"]] == [80, 70]  # the test model's own shard size
    assert {client.retrieve_batch(b).endpoint for b in result["batch_ids"]} == {"/v1/chat/ds-test"}


def test_a_timed_out_wait_cancels_the_running_batches(dashscope_conn, dashscope_emulator, client):
    dashscope_emulator.configure(time_scale=0)
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(150), max_requests_per_shard=100, wait_timeout=0.5, **FAST
    )
    with pytest.raises(AirflowException, match="deadline"):
        drive(operator, {"ti": TaskInstance()})
    assert dashscope_emulator.request_counts()["POST /batches/{batch_id}/cancel"] == 2
    assert {b.status for b in client.list_batches()} == {"cancelling"}
