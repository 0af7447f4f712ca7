"""A sharded job's keys, the lookup of earlier batches, and the outcome over all shards."""

from __future__ import annotations

import json

import pytest

from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.sharding.job import (
    JobOutcomePolicy,
    ShardJob,
    ShardRun,
    job_token,
    latest_batches,
    shard_key_base,
)
from airflow_provider_dashscope_batch.sharding.split import Shard
from airflow_provider_dashscope_batch.waiting.protocol import Outcome, OutcomePolicy

SHARD = Shard(index=1, first_line=101, requests=100, bytes=1000, sha256="ab" * 32, uri="shard-00001.jsonl")


def _batch(
    batch_id: str, status: str = "completed", *, key: str | None = None, total=100, completed=100, failed=0
):
    return Batch.model_validate(
        {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-batch-1",
            "completion_window": "24h",
            "status": status,
            "created_at": 1,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": None if key is None else {"idempotency_key": key},
        }
    )


def test_keys_depend_on_the_task_instance_and_the_shard_content():
    token = job_token("dag", "task", "run", -1)
    assert token == job_token("dag", "task", "run", -1)
    assert len({token, job_token("dag", "task", "run", 0), job_token("dag", "task", "run2", -1)}) == 3
    base = shard_key_base(token, SHARD)
    assert base.startswith("airflow-")
    assert len(base) == len("airflow-") + 40
    changed = Shard(1, 101, 100, 1000, "cd" * 32, "shard-00001.jsonl")
    assert shard_key_base(token, changed) != base
    assert ShardRun(SHARD, base, generation=2).idempotency_key == f"{base}-g2"


def test_latest_batches_keeps_the_highest_generation_of_each_shard():
    base = shard_key_base("t", SHARD)
    found = latest_batches(
        [
            _batch("b3", key=f"{base}-g2"),
            _batch("b1", key=f"{base}-g1", status="failed"),
            _batch("other", key="airflow-not-a-shard-key"),
            _batch("none"),
        ]
    )
    assert list(found) == [base]
    assert (found[base][0], found[base][1].id) == (2, "b3")


def test_shard_run_round_trips_through_json():
    run = ShardRun(SHARD, "airflow-" + "0" * 40, 1, "file-1", _batch("b1"))
    assert ShardRun.from_dict(run.to_dict()) == run
    assert not run.running
    assert ShardRun(SHARD, "k", batch=_batch("b2", "in_progress")).running


def test_the_job_fails_if_any_shard_fails():
    verdict = JobOutcomePolicy().evaluate([_batch("a"), _batch("b", completed=0, failed=100)])
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reason.startswith("1 shard(s) failed (100 of 200 requests succeeded over 2 shards)")


def test_the_job_needs_its_success_ratio():
    batches = [_batch("a"), _batch("b", completed=97, failed=3)]
    assert JobOutcomePolicy(min_success_ratio=0.98).evaluate(batches).outcome is Outcome.SUCCESS
    verdict = JobOutcomePolicy(min_success_ratio=0.99).evaluate(batches)
    assert verdict.outcome is Outcome.FAIL
    assert "98.50%" in verdict.reason
    with pytest.raises(ValueError, match="min_success_ratio"):
        JobOutcomePolicy(min_success_ratio=1.5)


def test_the_job_is_skipped_only_if_every_shard_is():
    policy = JobOutcomePolicy(OutcomePolicy(on_expired=Outcome.SKIP))
    expired = _batch("b", "expired", completed=10, failed=0)
    assert policy.evaluate([expired, expired]).outcome is Outcome.SKIP
    assert policy.evaluate([expired, _batch("a")]).outcome is Outcome.SUCCESS


def test_a_job_survives_its_xcom_round_trip():
    base = shard_key_base("t" * 16, SHARD)
    job = ShardJob(
        "t" * 16,
        "/v1/chat/completions",
        1_700_000_000.5,
        (
            ShardRun(SHARD, base, 2, "file-1", _batch("b1", completed=90, failed=10)),
            ShardRun(SHARD, base, 1, "file-2", _batch("b2", "in_progress", total=50, completed=5)),
            ShardRun(SHARD, base, 1, None),
        ),
    )
    again = ShardJob.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job
