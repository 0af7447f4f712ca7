"""Result lines as common.ai's items: error shapes, absent content, JSON in a code fence."""

from __future__ import annotations

import json

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.batch",
    reason="apache-airflow-providers-common-ai is not installed; it needs pydantic >= 2.12, and the "
    "Airflow 3.0 leg pins pydantic 2.11.7",
)

from airflow.providers.common.ai.batch.output_schema import build_output_spec, validate_extracted_output
from pydantic import BaseModel

from airflow_provider_dashscope_batch.common_ai.adapter import DashScopeBatchAdapter
from airflow_provider_dashscope_batch.common_ai.result_items import parse_result_line


class Verdict(BaseModel):
    label: str
    score: float


@pytest.mark.parametrize(
    ("line", "status", "code", "message"),
    [
        # the error-file shape of the docs: no response, error {code, message}
        (
            {"custom_id": "k-3", "response": None, "error": {"code": "Arrearage", "message": "overdue"}},
            "errored",
            "Arrearage",
            "overdue",
        ),
        # Alibaba's own scripts read error_code / error_message
        (
            {"custom_id": "k-3", "error": {"error_code": "InvalidParameter", "error_message": "bad"}},
            "errored",
            "InvalidParameter",
            "bad",
        ),
        # an OpenAI-shaped error body under a non-200 response
        (
            {
                "custom_id": "k-3",
                "response": {"status_code": 400, "body": {"error": {"code": "x", "message": "y"}}},
                "error": None,
            },
            "errored",
            "x",
            "y",
        ),
        (
            {"custom_id": "k-3", "error": {"code": "batch_expired", "message": "expired"}},
            "expired",
            "batch_expired",
            "expired",
        ),
    ],
)
def test_error_line_shapes(line, status, code, message):
    item = parse_result_line(json.dumps(line).encode())
    assert (item.index, item.provider_status) == (3, status)
    assert (item.error["provider_code"], item.error["message"]) == (code, message)


def test_content_without_text_is_absent_and_keeps_the_reasoning():
    line = {
        "custom_id": "k-0",
        "response": {
            "status_code": 200,
            "body": {
                "choices": [
                    {
                        "message": {"content": "", "reasoning_content": "thinking..."},
                        "finish_reason": "length",
                    }
                ]
            },
        },
        "error": None,
    }
    item = parse_result_line(json.dumps(line).encode())
    extracted = DashScopeBatchAdapter(api_key="sk-test").extract_output(item, build_output_spec(str))
    assert (extracted.kind, extracted.text, item.finish_reason) == ("absent", "thinking...", "length")


def test_a_json_answer_in_a_code_fence_is_unwrapped():
    line = {
        "custom_id": "k-0",
        "response": {
            "status_code": 200,
            "body": {"choices": [{"message": {"content": '```json\n{"label": "a", "score": 1}\n```'}}]},
        },
    }
    item = parse_result_line(json.dumps(line).encode())
    spec = build_output_spec(Verdict)
    outcome = validate_extracted_output(
        DashScopeBatchAdapter(api_key="sk-test").extract_output(item, spec), spec
    )
    assert outcome.value == {"label": "a", "score": 1.0}
