"""Cost through ``dag.test()`` against the emulator: estimate at upload, actual cost in the manifest."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.dags.dag_helpers import TEST_DAGS, load_dag_file

pytestmark = pytest.mark.timeout(300)


def _input(path: Path, n: int, model: str = "qwen-plus") -> Path:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"请把第 {i} 句翻译成英文: the quick brown fox {i}"},
                ],
                "max_tokens": 100,
            },
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.fixture
def cost_dags(airflow_db, dashscope_conn, dashscope_emulator, monkeypatch, tmp_path):
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
    dashscope_emulator.configure(processing_rate=1e6)
    monkeypatch.setenv("COST_TEST_INPUT", str(_input(tmp_path / "in.jsonl", 10)))
    monkeypatch.setenv("COST_TEST_RESULTS", (tmp_path / "results").as_uri())
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,fine\n,no id\n3,\n4,fine too\n5\n")
    monkeypatch.setenv("COST_TEST_CSV", str(bad))

    def load(max_cost: str | None = None):
        if max_cost is not None:
            monkeypatch.setenv("COST_TEST_MAX_COST", max_cost)
        return load_dag_file("cost_dags", TEST_DAGS / "cost_dags.py")

    return load


def _manifest(run, task_id: str = "transfer") -> dict:
    return run.get_task_instance(task_id).xcom_pull(task_ids=task_id)


def test_single_job_manifest_has_actual_cost_beside_the_estimate(cost_dags, states, dashscope_emulator):
    run = cost_dags().single.test()
    assert states(run) == {"upload": "success", "create": "success", "transfer": "success"}
    estimate = run.get_task_instance("upload").xcom_pull(task_ids="upload", key="cost_estimate")
    manifest = _manifest(run)
    cost = manifest["cost"]
    actual = cost["actual"]
    shard = manifest["shards"][0]
    assert shard["cost"]["requests"] == actual["requests"] == 10
    assert actual["currency"] == "CNY"
    # the actual cost is billed from the usage the service reported, not from the estimate
    assert actual["input_tokens"] == shard["usage"]["prompt_tokens"] > 0
    assert cost["estimated_input_tokens"] == estimate["input_tokens"]
    assert cost["estimates"][0]["file_id"] == shard["input_file_id"]
    expected = (
        (
            Decimal(actual["input_tokens"]) * Decimal("0.0008")
            + Decimal(actual["output_tokens"]) * Decimal("0.002")
        )
        / 1000
        * Decimal("0.5")
    )
    assert Decimal(actual["cost"]) == expected.quantize(Decimal("0.000001"))
    assert Decimal(cost["estimated_cost_ceiling"]) >= Decimal(actual["cost"]) > 0


def test_budget_exceeded_fails_before_upload_in_a_dag(cost_dags, states, dashscope_emulator):
    dashscope_emulator.clear_request_counts()
    run = cost_dags(max_cost="0.0000001").single.test()
    assert states(run)["upload"] == "failed"
    counts = dashscope_emulator.request_counts()
    assert "POST /files" not in counts
    assert "POST /batches" not in counts


def test_sharded_job_merged_manifest_sums_every_shard(cost_dags, states):
    run = cost_dags().sharded.test()
    assert states(run) == {"run_shards": "success", "transfer": "success"}
    estimate = run.get_task_instance("run_shards").xcom_pull(task_ids="run_shards", key="cost_estimate")
    manifest = _manifest(run)
    shard_costs = [s["cost"] for s in manifest["shards"]]
    assert len(shard_costs) == 3  # 10 requests, 4 per shard
    actual = manifest["cost"]["actual"]
    assert actual["requests"] == sum(c["requests"] for c in shard_costs) == 10
    assert Decimal(actual["cost"]) == sum(Decimal(c["cost"]) for c in shard_costs) > 0
    assert manifest["cost"]["estimated_input_tokens"] == estimate["input_tokens"]
    assert actual["input_tokens"] == sum(s["usage"]["prompt_tokens"] for s in manifest["shards"])
    # each shard's cost recorded for the batches page, as the manifest has it
    recorded = run.get_task_instance("transfer").xcom_pull(task_ids="transfer", key="dashscope_batch_costs")
    assert recorded == {
        s["batch_id"]: {
            "cost": str(Decimal(s["cost"]["cost"])),
            "currency": "CNY",
            "requests": s["cost"]["requests"],
            "input_tokens": s["cost"]["input_tokens"],
            "output_tokens": s["cost"]["output_tokens"],
            "complete": True,
        }
        for s in manifest["shards"]
    }


def test_a_csv_with_three_bad_rows_fails_once_naming_each_row(
    cost_dags, states, dashscope_emulator, tmp_path
):
    run = cost_dags().csv_upload.test()
    assert states(run) == {"upload": "failed"}
    ti = run.get_task_instance("upload")
    assert ti.try_number == 1  # AirflowFailException: the two retries are not used
    assert "POST /files" not in dashscope_emulator.request_counts()
