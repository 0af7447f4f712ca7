"""
DAGs for the cost tests: upload -> create (wait) -> transfer, and a sharded job -> merged transfer.

``COST_TEST_INPUT`` is the JSONL input, ``COST_TEST_RESULTS`` the results folder URL,
``COST_TEST_MAX_COST`` the upload's ``max_cost`` (unset: no budget), ``COST_TEST_CSV`` the CSV input of
``cost_csv`` (an upload with retries, for input errors that must not be retried).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

INPUT = os.environ.get("COST_TEST_INPUT", "/nonexistent.jsonl")
RESULTS = os.environ.get("COST_TEST_RESULTS", "file:///nonexistent")
MAX_COST = os.environ.get("COST_TEST_MAX_COST") or None
CSV = os.environ.get("COST_TEST_CSV", "/nonexistent.csv")
ARGS = {"start_date": datetime(2025, 1, 1)}

with DAG("cost_single", schedule=None, default_args=ARGS) as single:
    upload = DashScopeUploadFileOperator(
        task_id="upload", file=INPUT, max_cost=MAX_COST, expected_output_tokens=50
    )
    create = DashScopeCreateBatchOperator(
        task_id="create", input_file_id=upload.output, poll_interval=0.2, max_cost=MAX_COST
    )
    DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer",
        batch_id="{{ ti.xcom_pull(task_ids='create', key='batch_id') }}",
        destination=RESULTS,
    ).set_upstream([upload, create])

with DAG("cost_sharded", schedule=None, default_args=ARGS) as sharded:
    shards = DashScopeShardedBatchOperator(
        task_id="run_shards", file=INPUT, max_requests_per_shard=4, poll_interval=0.2, max_cost=MAX_COST
    )
    DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer",
        batch_ids="{{ ti.xcom_pull(task_ids='run_shards', key='batch_ids') }}",
        destination=RESULTS,
        result_set="job",
    ).set_upstream(shards)

with DAG("cost_csv", schedule=None, default_args=ARGS) as csv_upload:
    DashScopeUploadFileOperator(
        task_id="upload",
        csv=CSV,
        model="qwen-plus",
        text_column="text",
        retries=2,
        retry_delay=timedelta(seconds=0),
    )
