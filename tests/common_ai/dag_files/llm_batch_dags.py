"""
common.ai's ``LLMBatchOperator`` example, with ``model_id="dashscope:qwen-plus"``, and its variants.

``QWEN_LLM_BATCH_RESULT_ROOT`` (read at parse time) is where results land; ``qwen`` is the connection.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Literal

from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator
from airflow.providers.common.compat.sdk import ObjectStoragePath, dag, task
from pydantic import BaseModel, Field

RESULT_ROOT = os.environ.get("QWEN_LLM_BATCH_RESULT_ROOT", "file:///tmp/qwen-llm-batch")
REVIEWS = [
    "Absolutely loved it, would buy again.",
    "Broke after one use, very disappointed.",
    "Does what it says on the box. Nothing special.",
]


# [START howto_qwen_llm_batch_output_type]
class Sentiment(BaseModel):
    """Structured output requested from every request in the batch."""

    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)
    reason: str


# [END howto_qwen_llm_batch_output_type]


@task
def summarize_manifest(manifest: dict) -> dict[str, int]:
    """Read the landed JSONL rows back; the XCom value is only the manifest."""
    rows = [
        json.loads(line)
        for line in ObjectStoragePath(manifest["result_uri"]).read_text().splitlines()
        if line
    ]
    by_label: dict[str, int] = {}
    for row in rows:
        if row["status"] == "success":
            by_label[row["output"]["label"]] = by_label.get(row["output"]["label"], 0) + 1
    return by_label


def classify(requests: list, **kwargs) -> LLMBatchOperator:
    # [START howto_qwen_llm_batch_operator]
    return LLMBatchOperator(
        task_id="classify_reviews",
        requests=requests,
        result_path=f"{RESULT_ROOT}/classify",
        llm_conn_id="qwen",
        model_id="dashscope:qwen-plus",
        system_prompt="Classify the sentiment of this product review.",
        output_type=Sentiment,
        deferrable=True,
        **kwargs,
    )
    # [END howto_qwen_llm_batch_operator]


@dag(schedule=None, start_date=datetime(2025, 1, 1))
def qwen_llm_batch_operator():
    summarize_manifest(classify([f"Review: {review!r}" for review in REVIEWS]).output)


@dag(schedule=None, start_date=datetime(2025, 1, 1))
def qwen_llm_batch_strict():
    classify([f"Review: {review!r}" for review in REVIEWS], fail_on_partial_error=True)


@dag(schedule=None, start_date=datetime(2025, 1, 1))
def qwen_llm_batch_two_models():
    classify(["fine", {"prompt": "another model", "model": "dashscope:qwen-max"}])


@dag(schedule=None, start_date=datetime(2025, 1, 1))
def qwen_llm_batch_long():
    classify([f"Review {i}" for i in range(20)])


@dag(schedule=None, start_date=datetime(2025, 1, 1))
def qwen_llm_batch_in_the_worker():
    """Waited for in the worker (``deferrable=False``), where the adapter holds the request lines."""
    LLMBatchOperator(
        task_id="classify_reviews",
        requests=[f"Review: {review!r}" for review in REVIEWS],
        result_path=f"{RESULT_ROOT}/classify",
        llm_conn_id="qwen",
        model_id="dashscope:qwen-plus",
        output_type=Sentiment,
        deferrable=False,
    )


operator = qwen_llm_batch_operator()
in_the_worker = qwen_llm_batch_in_the_worker()
strict = qwen_llm_batch_strict()
two_models = qwen_llm_batch_two_models()
long = qwen_llm_batch_long()
