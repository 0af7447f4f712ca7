"""The cost checks of every entry point against the emulator: nothing is sent when one fails."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from tests.operators.operator_helpers import TaskInstanceStub


class _TI:
    """Records XCom pushes (the operators' only use of the task instance here)."""

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def _lines(path: Path, contents: list[str], model: str = "qwen-plus", **body: object) -> Path:
    rows = [
        {
            "custom_id": str(i),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": c}], **body},
        }
        for i, c in enumerate(contents)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _sent(emulator) -> dict[str, int]:
    counts = emulator.request_counts()
    return {k: v for k, v in counts.items() if k in ("POST /files", "POST /batches")}


@pytest.fixture
def fresh(dashscope_emulator):
    dashscope_emulator.clear_request_counts()
    return dashscope_emulator


def test_upload_over_budget_fails_before_upload_with_the_estimate(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hello"] * 20, max_tokens=1000)
    task = DashScopeUploadFileOperator(task_id="u", file=str(source), max_cost="0.01")
    with pytest.raises(AirflowFailException) as failure:
        task.execute({})
    message = str(failure.value)
    assert "exceeds max_cost=0.01 CNY" in message
    assert "Cost estimate of" in message  # the table rides along
    assert "<=128K" in message
    assert _sent(fresh) == {}


def test_max_input_tokens_binds_too(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hello world"] * 5)
    with pytest.raises(AirflowFailException, match="exceeds max_input_tokens=10"):
        DashScopeUploadFileOperator(task_id="u", file=str(source), max_input_tokens=10).execute({})
    assert _sent(fresh) == {}


def test_budget_basis_expected_lets_a_cheap_job_through(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hello"] * 20, max_tokens=1000)
    ti = _TI()
    task = DashScopeUploadFileOperator(
        task_id="u", file=str(source), max_cost="0.01", expected_output_tokens=20
    )
    file_id = task.execute({"ti": ti})
    estimate = ti.xcom["cost_estimate"]
    assert estimate["file_id"] == file_id
    assert Decimal(estimate["cost_ceiling"]) > Decimal("0.01") > Decimal(estimate["cost_expected"])
    assert _sent(fresh) == {"POST /files": 1}


def test_one_request_past_128k_changes_only_its_own_price(dashscope_conn, fresh, tmp_path):
    long = "word " * 140_000  # ~140K tokens
    ti = _TI()
    source = _lines(tmp_path / "in.jsonl", ["hello", long, "hello"], max_tokens=10)
    DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": ti})
    tiers = {t["tier"]: t for t in ti.xcom["cost_estimate"]["tiers"]}
    assert tiers["<=128K"]["requests"] == 2
    assert tiers["128K-256K"]["requests"] == 1
    assert Decimal(tiers["<=128K"]["input_price"]) == Decimal("0.0008")
    assert Decimal(tiers["128K-256K"]["input_price"]) == Decimal("0.0024")
    big = tiers["128K-256K"]
    expected = (big["input_tokens"] * Decimal("0.0024") + 10 * Decimal("0.02")) / 1000 * Decimal("0.5")
    assert Decimal(big["cost_ceiling"]) == expected.quantize(Decimal("0.000001"))


def test_thinking_by_default_is_an_error_with_the_fix(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hi"], model="qwen3.5-plus")
    with pytest.raises(AirflowFailException, match='Set "enable_thinking": false') as failure:
        DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({})
    assert "on_default_thinking='warn'" in str(failure.value)
    assert _sent(fresh) == {}


def test_thinking_guard_as_a_warning_uploads(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hi"], model="qwen3.5-plus")
    ti = _TI()
    DashScopeUploadFileOperator(task_id="u", file=str(source), on_default_thinking="warn").execute({"ti": ti})
    assert ti.xcom["cost_estimate"]["thinking"] is True
    assert any("thinks by default" in w for w in ti.xcom["cost_estimate"]["warnings"])
    assert _sent(fresh) == {"POST /files": 1}


def test_explicit_enable_thinking_passes_the_guard(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hi"], model="qwen3.5-plus", enable_thinking=False)
    DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({})
    assert _sent(fresh) == {"POST /files": 1}


def test_region_without_the_model_in_batch_fails_before_upload(dashscope_conn, fresh, tmp_path):
    dashscope_conn(region="ap-southeast-1")  # base_url still points at the emulator
    source = _lines(tmp_path / "in.jsonl", ["hi"], model="qwen-long")
    with pytest.raises(
        AirflowFailException, match="model 'qwen-long' does not run in batch in region ap-southeast-1"
    ):
        DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({})
    assert _sent(fresh) == {}


def test_intl_region_prices_in_usd(dashscope_conn, fresh, tmp_path):
    dashscope_conn(region="ap-southeast-1")
    ti = _TI()
    source = _lines(tmp_path / "in.jsonl", ["hi"], model="qwen-plus", max_tokens=100)
    DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": ti})
    estimate = ti.xcom["cost_estimate"]
    assert estimate["currency"] == "USD"
    expected = (estimate["input_tokens"] * Decimal("0.4") + 100 * Decimal("1.2")) / 1_000_000 * Decimal("0.5")
    assert Decimal(estimate["cost_ceiling"]) == expected.quantize(Decimal("0.000001"))


PRICE = {"tiers": [{"max_input_tokens": None, "input": "1", "output": "2"}], "max_output_tokens": 10}


def test_connection_catalog_prices_and_task_prices_win(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hi"], model="my-model")
    entry = {"max_output_tokens": 10, "prices": {"cn-beijing": PRICE["tiers"]}}
    dashscope_conn(models=json.dumps({"my-model": entry}))
    ti = _TI()
    DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": ti})
    by_connection = ti.xcom["cost_estimate"]
    tokens = by_connection["input_tokens"]
    assert Decimal(by_connection["cost_ceiling"]) == ((tokens * 1 + 10 * 2) * Decimal("0.5") / 1000).quantize(
        Decimal("0.000001")
    )
    assert "connection extra 'models'" in by_connection["price_source"]
    task_price = {"my-model": {**PRICE, "tiers": [{"max_input_tokens": None, "input": "3", "output": "4"}]}}
    DashScopeUploadFileOperator(task_id="u", file=str(source), prices=task_price).execute({"ti": ti})
    by_task = ti.xcom["cost_estimate"]
    assert Decimal(by_task["cost_ceiling"]) == ((tokens * 3 + 10 * 4) * Decimal("0.5") / 1000).quantize(
        Decimal("0.000001")
    )


def test_unpriced_model_with_a_budget_is_an_error(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hi"], model="my-model")
    with pytest.raises(AirflowFailException, match="model 'my-model' is unpriced in region 'cn-beijing'"):
        DashScopeUploadFileOperator(task_id="u", file=str(source), max_cost=1).execute({})
    assert _sent(fresh) == {}


def test_create_over_budget_creates_nothing(dashscope_conn, fresh, tmp_path, client):
    source = _lines(tmp_path / "in.jsonl", ["hello"] * 20, max_tokens=1000)
    ti = _TI()
    file_id = DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": ti})
    create = DashScopeCreateBatchOperator(
        task_id="c", input_file_id=file_id, cost_estimate=ti.xcom["cost_estimate"], max_cost="0.001"
    )
    with pytest.raises(AirflowFailException, match=r"exceeds max_cost=0\.001"):
        create.execute({"ti": ti})
    assert "POST /batches" not in fresh.request_counts()


def test_a_created_batch_carries_its_estimate_for_the_batches_page(dashscope_conn, fresh, tmp_path, client):
    source = _lines(tmp_path / "in.jsonl", ["hello"] * 20, max_tokens=1000)
    ti = _TI()
    file_id = DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": ti})
    estimate = ti.xcom["cost_estimate"]
    create = DashScopeCreateBatchOperator(
        task_id="c", input_file_id=file_id, cost_estimate=estimate, wait_for_completion=False
    )
    batch = client.retrieve_batch(create.execute({"ti": TaskInstanceStub()})["id"])
    ceiling = Decimal(estimate["cost_ceiling"])
    assert batch.metadata["airflow_estimated_cost"] == f"{ceiling:.4f} CNY ceiling"
    assert batch.metadata["ds_name"] == "c"  # the job's name, which its later rounds extend
    long_id = DashScopeCreateBatchOperator(task_id="t" * 250, input_file_id=file_id)
    assert long_id._create_kwargs("k", file_id, 2, {"ti": TaskInstanceStub()}, None)["metadata"][
        "ds_name"
    ] == (
        "t" * 92 + " round 2"  # the service's 100 characters
    )


def test_create_with_a_budget_needs_an_estimate(dashscope_conn, fresh):
    create = DashScopeCreateBatchOperator(task_id="c", input_file_id="file-batch-x", max_cost="1")
    with pytest.raises(AirflowFailException, match="no cost estimate was found"):
        create.execute({"ti": _TI()})
    assert "POST /batches" not in fresh.request_counts()


def test_sharded_over_budget_uploads_and_creates_nothing(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hello"] * 30, max_tokens=1000)
    task = DashScopeShardedBatchOperator(
        task_id="s", file=str(source), max_requests_per_shard=10, max_cost="0.001"
    )
    with pytest.raises(AirflowFailException, match="exceeds max_cost"):
        task.execute({"ti": _TI()})
    assert _sent(fresh) == {}
    assert not any(k.startswith("GET /batches") for k in fresh.request_counts())  # failed before listing


def test_sharded_thinking_guard_without_estimate_reads_the_first_line_only(dashscope_conn, fresh, tmp_path):
    source = _lines(tmp_path / "in.jsonl", ["hi"] * 3, model="qwen3.5-flash")
    with source.open("a") as f:
        f.write("not json\n")  # never read: the check fails on line 1
    task = DashScopeShardedBatchOperator(task_id="s", file=str(source), estimate_cost=False)
    with pytest.raises(AirflowFailException, match="thinks by default"):
        task.execute({"ti": _TI()})
    assert _sent(fresh) == {}
