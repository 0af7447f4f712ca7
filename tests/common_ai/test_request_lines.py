"""The adapter's request lines: the input-file limits and response_format, checked before sending."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.batch",
    reason="apache-airflow-providers-common-ai is not installed; it needs pydantic >= 2.12, and the "
    "Airflow 3.0 leg pins pydantic 2.11.7",
)

from adapter_helpers import validate
from airflow.providers.common.ai.batch.output_schema import build_output_spec
from airflow.providers.common.ai.exceptions import (
    LLMBatchInputError,
    LLMBatchLimitExceededError,
    LLMBatchModelMismatchError,
)


def test_more_requests_than_a_batch_holds_are_refused_with_the_expand_remedy(adapter):
    with pytest.raises(LLMBatchLimitExceededError, match=r"at most 100 requests.*got 101.*\.expand\(\)"):
        validate(adapter, ["hi"] * 101, model="batch-test-model")
    with pytest.raises(LLMBatchLimitExceededError, match=r"at most 50000 requests.*got 50001"):
        validate(adapter, [{"prompt": "hi"}] * 50_001)


def test_a_file_over_the_size_limit_is_refused_naming_its_size(adapter):
    # batch-test-model files are limited to 1 MB: 20 requests of 60 kB are over it.
    with pytest.raises(LLMBatchLimitExceededError, match=r"at most 1 MB.*20 requests is \d+ bytes.*expand"):
        validate(adapter, ["x" * 60_000] * 20, model="batch-test-model")


def test_a_request_over_6_mb_is_refused(adapter):
    with pytest.raises(LLMBatchLimitExceededError, match=r"Request 1 is larger than .* 6 MB"):
        validate(adapter, ["small", "x" * (6 * 2**20)], output_type=str)


def test_one_model_per_batch(adapter):
    with pytest.raises(LLMBatchModelMismatchError, match="one model per batch"):
        validate(adapter, ["a", {"prompt": "b", "model": "dashscope:qwen-max"}])
    with pytest.raises(LLMBatchModelMismatchError, match="'dashscope:<model>'"):
        validate(adapter, [{"prompt": "b", "model": "openai:gpt-5"}])


def test_one_thinking_mode_per_batch(adapter):
    with pytest.raises(LLMBatchInputError, match="Request 1 sets enable_thinking differently"):
        validate(adapter, ["a", {"prompt": "b", "params": {"enable_thinking": True}}], output_type=str)


def test_structured_output_in_thinking_mode_is_refused(adapter):
    with pytest.raises(LLMBatchInputError, match="thinking mode"):
        validate(adapter, ["a"], request_params={"enable_thinking": True})


def test_custom_ids_over_256_characters_are_refused(adapter):
    spec = build_output_spec(str)
    with pytest.raises(LLMBatchLimitExceededError, match="256-character limit"):
        adapter.validate_requests(["a"], model="qwen-plus", output_spec=spec, idempotency_key="k" * 256)


def test_validation_sends_nothing(adapter, dashscope_emulator):
    with pytest.raises(LLMBatchLimitExceededError):
        validate(adapter, ["x" * 60_000] * 20, model="batch-test-model")
    validate(adapter, ["fine"])
    assert not dashscope_emulator.request_counts()


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "mine", "schema": {"type": "object"}}},
        {"type": "text"},
        {"type": "json_object", "strict": True},
    ],
)
def test_a_users_response_format_with_structured_output_is_an_error(
    adapter, dashscope_emulator, response_format
):
    with pytest.raises(LLMBatchInputError, match=r"Request 0 sets response_format .* output_type Verdict"):
        validate(adapter, ["a"], request_params={"response_format": response_format})
    assert not dashscope_emulator.request_counts()


def test_a_malformed_response_format_is_refused_before_anything_is_sent(adapter, dashscope_emulator):
    bad = {"type": "json_schema", "json_schema": {"name": "mine", "schema": '{"type": "object"}'}}
    with pytest.raises(
        LLMBatchInputError, match=r"Request 0 .*invalid_response_format.*schema must be a JSON"
    ):
        validate(adapter, ["a"], output_type=str, request_params={"response_format": bad})
    assert not dashscope_emulator.request_counts()
