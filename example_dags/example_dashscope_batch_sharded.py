"""
Example DAG: more requests than one batch takes (120,000 by default), run as one job.

A CSV of product names becomes requests, split into shards within the service's per-file limits
(40,000 requests each by default), one batch per shard, all waited for in one deferral, then one merged
result set with one manifest.

Environment (all optional):

* ``DASHSCOPE_SHARDED_INPUT``: the CSV (``sku,name``; default ``file://<tmp>/dashscope-sharded/products.csv``,
  written by the first task if it does not exist, e.g. ``s3://aws_default@my-bucket/products.csv``).
* ``DASHSCOPE_SHARDED_REQUESTS``: rows the first task writes when the CSV does not exist (default 120,000).
* ``DASHSCOPE_RESULTS_DESTINATION``: where the merged results land (default
  ``file://<tmp>/dashscope-batch-results``).
* ``DASHSCOPE_EXAMPLE_POLL_INTERVAL``: seconds between status polls (default 60).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, task

from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

DAG_ID = "example_dashscope_batch_sharded"
TMP = Path(tempfile.gettempdir())
INPUT = os.environ.get("DASHSCOPE_SHARDED_INPUT", f"file://{TMP / 'dashscope-sharded' / 'products.csv'}")
REQUESTS = int(os.environ.get("DASHSCOPE_SHARDED_REQUESTS", "120000"))
DESTINATION = os.environ.get("DASHSCOPE_RESULTS_DESTINATION", f"file://{TMP / 'dashscope-batch-results'}")
POLL_INTERVAL = float(os.environ.get("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "60"))

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "dashscope"],
) as dag:

    @task
    def product_csv(uri: str, rows: int) -> str:
        """The demo's input: ``rows`` product names, written once, streamed."""
        path = ObjectStoragePath(uri)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as f:
                f.write("sku,name\n")
                for i in range(rows):
                    f.write(f"sku-{i:06d},product {i}\n")
        return uri

    # [START howto_operator_dashscope_sharded]
    run_shards = DashScopeShardedBatchOperator(
        task_id="run_shards",
        csv=product_csv(INPUT, REQUESTS),
        model="qwen-plus",
        id_column="sku",
        template="Write a one-line shop description of {name}.",
        body_params={"max_tokens": 64},
        max_active_batches=10,  # running batches of this job; the rest start as these finish
        min_success_ratio=0.99,  # the job fails if more than 1 % of all requests failed
        poll_interval=POLL_INTERVAL,
    )

    merge_results = DashScopeBatchResultsToObjectStorageOperator(
        task_id="merge_results",
        batch_ids=run_shards.output["batch_ids"],
        destination=DESTINATION,
        delete_remote_files=True,  # every shard's input, output and error file: the account holds 10,000
    )
    # [END howto_operator_dashscope_sharded]

    run_shards >> merge_results
