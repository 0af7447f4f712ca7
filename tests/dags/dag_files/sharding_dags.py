"""
DAGs for the sharding tests: the two fan-out designs over one small input (250 requests, 100 per shard),
and the sharded operator carrying a CSV's columns into one merged table.

``SHARDING_TEST_INPUT`` is the JSONL input, ``SHARDING_TEST_SHARDS`` the folder the mapped design's split
writes to; ``SHARDING_TEST_CSV``, ``SHARDING_TEST_COLUMNS`` and ``SHARDING_TEST_RESULTS`` the CSV input, the
carried columns' folder and the results' folder; ``SHARDING_TEST_MIN_SUCCESS`` the judged job's
``min_success_ratio``; ``DASHSCOPE_EXAMPLE_POLL_INTERVAL`` the poll interval.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import (
    DashScopeShardedBatchOperator,
    DashScopeSplitRequestsOperator,
)
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

INPUT = os.environ.get("SHARDING_TEST_INPUT", "/nonexistent.jsonl")
SHARDS = os.environ.get("SHARDING_TEST_SHARDS", "/nonexistent")
POLL_INTERVAL = float(os.environ.get("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "60"))
ARGS = {"start_date": datetime(2025, 1, 1)}

# (b) one operator owns every shard and waits for all of them in one deferral
with DAG("sharding_one_operator", schedule=None, default_args=ARGS) as one_operator:
    DashScopeShardedBatchOperator(
        task_id="run_shards",
        file=INPUT,
        max_requests_per_shard=100,
        max_active_batches=2,
        poll_interval=POLL_INTERVAL,
    )

# (b) judged as one job: min_success_ratio over every shard's rounds
MIN_SUCCESS = float(os.environ.get("SHARDING_TEST_MIN_SUCCESS", "0"))
with DAG("sharding_job_verdict", schedule=None, default_args=ARGS) as job_verdict:
    DashScopeShardedBatchOperator(
        task_id="run_shards",
        file=INPUT,
        max_requests_per_shard=100,
        min_success_ratio=MIN_SUCCESS,
        poll_interval=POLL_INTERVAL,
    )

# (a) a split task drives dynamic task mapping over the upload and create operators
with DAG("sharding_mapped", schedule=None, default_args=ARGS) as mapped:
    split = DashScopeSplitRequestsOperator(
        task_id="split", file=INPUT, destination=SHARDS + "/{{ run_id }}", max_requests_per_shard=100
    )
    upload = DashScopeUploadFileOperator.partial(task_id="upload_file").expand(file=split.output)
    DashScopeCreateBatchOperator.partial(
        task_id="create_batch", deferrable=True, poll_interval=POLL_INTERVAL, max_active_tis_per_dagrun=2
    ).expand(input_file_id=upload.output)

# (b) with input columns: a CSV's columns carried per shard into one merged table
CSV = os.environ.get("SHARDING_TEST_CSV", "/nonexistent.csv")
COLUMNS = os.environ.get("SHARDING_TEST_COLUMNS", "/nonexistent")
RESULTS = os.environ.get("SHARDING_TEST_RESULTS", "/nonexistent")
with DAG("sharding_carried_columns", schedule=None, default_args=ARGS) as carried_columns:
    run_shards = DashScopeShardedBatchOperator(
        task_id="run_shards",
        csv=CSV,
        id_column="sku",
        template="Describe {name}.",
        model="qwen-plus",
        max_requests_per_shard=100,
        carry_columns=["name", "price"],
        carry_columns_to=COLUMNS,
        poll_interval=POLL_INTERVAL,
    )
    DashScopeBatchResultsToObjectStorageOperator(
        task_id="results",
        batch_ids=run_shards.output["batch_ids"],
        destination=RESULTS,
        result_set="job",
        output_format="parquet",
        input_columns=COLUMNS,
    )
