"""The adapter's cost checks: budget, region and thinking guard from the host query, before any upload."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.batch",
    reason="apache-airflow-providers-common-ai is not installed; it needs pydantic >= 2.12, and the "
    "Airflow 3.0 leg pins pydantic 2.11.7",
)

from airflow.providers.common.ai.batch.output_schema import build_output_spec
from airflow.providers.common.ai.exceptions import LLMBatchInputError

from airflow_provider_dashscope_batch.common_ai.adapter import DashScopeBatchAdapter, resolve_host


def validate(emulator, query: str, model: str = "qwen-plus", **kwargs) -> None:
    adapter = DashScopeBatchAdapter(api_key=emulator.api_key, base_url=f"{emulator.base_url}?{query}")
    try:
        adapter.validate_requests(
            [{"prompt": f"question {i}"} for i in range(20)],
            model=model,
            output_spec=build_output_spec(str),
            idempotency_key="0123456789abcdef",
            max_tokens=1000,
            **kwargs,
        )
    finally:
        adapter.close()


def test_budget_from_the_host_query(dashscope_emulator):
    dashscope_emulator.clear_request_counts()
    with pytest.raises(LLMBatchInputError, match=r"exceeds max_cost=0\.0001 CNY"):
        validate(dashscope_emulator, "max_cost=0.0001")
    validate(dashscope_emulator, "max_cost=1")
    assert "POST /files" not in dashscope_emulator.request_counts()


def test_region_and_thinking_guard_from_the_host_query(dashscope_emulator):
    with pytest.raises(
        LLMBatchInputError, match="model 'qwen-long' does not run in batch in region ap-southeast-1"
    ):
        validate(dashscope_emulator, "price_region=ap-southeast-1", model="qwen-long")
    with pytest.raises(LLMBatchInputError, match="thinks by default"):
        validate(dashscope_emulator, "workspace=ws", model="qwen3.5-plus")
    validate(dashscope_emulator, "on_default_thinking=warn", model="qwen3.5-plus")
    validate(dashscope_emulator, "", model="qwen3.5-plus", request_params={"enable_thinking": False})


def test_bad_cost_setting_is_named():
    with pytest.raises(ValueError, match="bad cost setting"):
        DashScopeBatchAdapter(api_key="k", base_url="cn-beijing?max_input_tokens=lots")
    assert resolve_host("cn-beijing?max_cost=2&workspace=w")[1] == "w"
