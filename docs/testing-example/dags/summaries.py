"""Summarise documents with a DashScope batch and land the results in object storage."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

# Production defaults; a test points them at a temporary directory and polls faster.
RESULTS = os.environ.get("SUMMARIES_RESULTS", "s3://aws_default@my-bucket/summaries")
POLL_INTERVAL = float(os.environ.get("SUMMARIES_POLL_INTERVAL", "60"))

with DAG(dag_id="summaries", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    upload = DashScopeUploadFileOperator(
        task_id="upload",
        requests=[
            {"custom_id": f"doc-{i}", "body": {"messages": [{"role": "user", "content": f"Summarise {i}"}]}}
            for i in range(3)
        ],
        model="qwen-plus",
    )
    batch = DashScopeCreateBatchOperator(
        task_id="batch", input_file_id=upload.output, deferrable=True, poll_interval=POLL_INTERVAL
    )
    results = DashScopeBatchResultsToObjectStorageOperator(
        task_id="results",
        batch_id="{{ ti.xcom_pull(task_ids='batch', key='batch_id') }}",
        destination=RESULTS,
    )
    upload >> batch >> results
