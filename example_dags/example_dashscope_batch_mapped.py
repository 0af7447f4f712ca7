"""
Example DAG: one batch per input file with dynamic task mapping, all waiting in the triggerer, then a
summary of the request counts.

``DASHSCOPE_EXAMPLE_POLL_INTERVAL`` sets the seconds between status polls (default 60).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator

DAG_ID = "example_dashscope_batch_mapped"
INPUT_FILES = sorted(str(p) for p in (Path(__file__).parent / "data" / "mapped").glob("*.jsonl"))
POLL_INTERVAL = float(os.environ.get("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "60"))

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "dashscope"],
) as dag:
    # [START howto_operator_dashscope_mapped]
    upload_files = DashScopeUploadFileOperator.partial(
        task_id="upload_file", endpoint="/v1/chat/ds-test"
    ).expand(file=INPUT_FILES)

    create_batches = DashScopeCreateBatchOperator.partial(
        task_id="create_batch",
        endpoint="/v1/chat/ds-test",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    ).expand(input_file_id=upload_files.output)
    # [END howto_operator_dashscope_mapped]

    @task
    def summarize(batches: list[dict[str, Any]]) -> dict[str, int]:
        """Add up the request counts of every batch."""
        totals = {"batches": 0, "total": 0, "completed": 0, "failed": 0}
        for batch in batches:
            totals["batches"] += 1
            for key in ("total", "completed", "failed"):
                totals[key] += (batch.get("request_counts") or {}).get(key) or 0
        return totals

    summarize(create_batches.output)
